"""The generation of the MTA files ``render`` writes, and the marker they carry.

Postfix sends it as the policy service's ``policy_context`` (Postfix 3.1 and later),
Exim as a ``policy_context`` attribute of its ``${readsocket}`` request. The policy
daemon compares it with its own: a request without it, or with an older one, comes
from files an earlier release rendered, which lack what this daemon relies on (for
example Exim's ``sent_at``, without which a frozen daemon spends quota on mail Exim
already sent by default). Raise GENERATION whenever a change to the rendered files
must reach the MTAs for the daemons to work as documented.

1: files that carry no marker (every release before the marker).
2: the marker; Exim's request carries sent_at; Postfix uses long queue IDs.
3: Exim's ACL freezes a message whose answer says EXIM_HOLD (a held tenant's).
"""

from __future__ import annotations

import re
from typing import Final

GENERATION: Final = 3
MARKER: Final = f"smtp-balancer/{GENERATION}"
ATTRIBUTE: Final = "policy_context"
# after Exim's action (FILTER <route>: or DUNNO), followed by the tenant: the message's
# tenant is held, and the rendered ACL freezes the message with its route kept
EXIM_HOLD: Final = "HOLD-TENANT"

_MARKED = re.compile(r"smtp-balancer/([0-9]{1,6})")


def generation_of(value: str | None) -> int:
    """The generation a request's marker names: 1 without one (or with another's)."""
    if value is None:
        return 1
    found = _MARKED.fullmatch(value)
    return int(found[1]) if found else 1
