"""Spam complaints: ARF feedback reports (RFC 5965) in, complaint rates and actions out."""
