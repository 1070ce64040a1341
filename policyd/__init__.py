"""The Postfix policy-delegation daemon (also answers Exim ${readsocket})."""

import smtp_balancer  # noqa: F401 - first: it keeps stale compiled modules from loading (native.py)
