"""Reputation signals in: the providers' exports (Google Postmaster Tools, Microsoft
SNDS) read, recorded per endpoint and sending domain, and acted on by rules."""
