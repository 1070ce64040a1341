"""Names an endpoint must not take, and the names it takes once rendered.

An endpoint's name is its Postfix master.cf service name and, as ``sb_<name>`` with
hyphens as underscores, its Exim transport name. A master.cf line named after one of
Postfix's own services replaces that service; two endpoints whose Exim names agree
cannot both be rendered.
"""

from __future__ import annotations

# the services of Postfix's own master.cf (Debian's, Postfix 3.7), the submission
# listeners operators add, and the services `render postfix` adds itself
POSTFIX_SERVICES = frozenset(
    {
        "smtp", "smtpd", "submission", "submissions", "smtps", "628", "postscreen", "dnsblog",
        "tlsproxy", "pickup", "cleanup", "qmgr", "oqmgr", "tlsmgr", "rewrite", "bounce", "defer",
        "trace", "verify", "flush", "proxymap", "proxywrite", "relay", "showq", "error", "retry",
        "discard", "local", "virtual", "lmtp", "anvil", "scache", "postlog", "maildrop", "uucp",
        "ifmail", "bsmtp", "scalemail-backend", "mailman", "sendmail", "postdrop",
        "rewrite-nomap", "sb-notice-cleanup",
    }
)  # fmt: skip
# the Exim transport `render exim` adds for a routes file without transport=
EXIM_GENERIC_TRANSPORT = "sb_smtp"


def exim_transport_name(endpoint: str) -> str:
    """The Exim transport of one endpoint: its name is what Exim's log shows (T=), so
    the feedback daemon can tell which endpoint a delivery, deferral or bounce used."""
    return "sb_" + endpoint.replace("-", "_")
