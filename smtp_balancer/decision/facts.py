"""What the engine is told about a message (Facts) and what it answers (Decision)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

from smtp_balancer.decision.providers import domain_of

# route: an endpoint was chosen; default: let the MTA use its default transport;
# defer: the pool's overflow policy says to try later; no_rule: no rule matched
# inbound: a recipient's domain is one this host receives mail for (inbound_domains)
Outcome = Literal["route", "default", "defer", "no_rule", "inbound"]


# The per-message records below are not frozen (never changed after they are made,
# all the same) and have their own __init__: compiled (setup.py), a frozen
# dataclass's generated __init__ is Python that sets each field through
# object.__setattr__, about ten times the cost of the compiled one.


@dataclass(slots=True, init=False)
class Facts:
    sender: str = ""
    recipients: tuple[str, ...] = ()
    sasl_username: str = ""
    client_address: str = ""
    size: int | None = None
    message_class: str | None = None
    queue_id: str = ""
    # Postfix reports the count even when it cannot list every recipient
    recipient_count: int | None = None
    # the MTA routes each recipient apart (Exim's routers): a route is then for the
    # remote recipients only, and the inbound ones are left to the MTA. Postfix's
    # FILTER is for every recipient: one inbound recipient means no route at all
    per_recipient: bool = False

    def __init__(
        self,
        sender: str = "",
        recipients: tuple[str, ...] = (),
        sasl_username: str = "",
        client_address: str = "",
        size: int | None = None,
        message_class: str | None = None,
        queue_id: str = "",
        recipient_count: int | None = None,
        per_recipient: bool = False,
    ) -> None:
        self.sender = sender
        self.recipients = recipients
        self.sasl_username = sasl_username
        self.client_address = client_address
        self.size = size
        self.message_class = message_class
        self.queue_id = queue_id
        self.recipient_count = recipient_count
        self.per_recipient = per_recipient

    @property
    def sender_domain(self) -> str:
        return domain_of(self.sender) if "@" in self.sender else ""

    @property
    def quota_count(self) -> int:
        """How many deliveries this message costs against warm-up caps."""
        # two-argument max compiles natively; three go through builtins.max
        return max(max(self.recipient_count or 0, len(self.recipients)), 1)


@dataclass(frozen=True, slots=True)
class Route:
    transport: str
    nexthop: str = ""  # empty: deliver to the recipient domain's MX

    @property
    def filter_target(self) -> str:
        """The ``transport:nexthop`` argument of a Postfix FILTER action."""
        return f"{self.transport}:{self.nexthop}"


@dataclass(frozen=True, slots=True)
class EndpointVerdict:
    """Why one endpoint could or could not take a message (explain output)."""

    pool: str
    endpoint: str
    weight: int
    eligible: bool
    detail: str


_ids: Final = random.Random()  # seeded from os.urandom once; ids name decisions, they guard nothing


# ids are made 64 at a time: three calls into the generator and the bytes code per
# message were more cold code than the rest of the id. A list, popped from its end:
# compiled, pop and extend are each one C call, atomic between the milter's threads
# (no two share an id), where a deque's methods are Python method calls.
_ID_BATCH: Final = 64
_id_batch: Final[list[str]] = []


def new_decision_id() -> str:
    """16 random hex digits: unique enough to grep one decision across a fleet's logs."""
    try:
        return _id_batch.pop()
    except IndexError:
        digits = _ids.getrandbits(64 * _ID_BATCH).to_bytes(8 * _ID_BATCH, "big").hex()
        _id_batch.extend([digits[i : i + 16] for i in range(16, len(digits), 16)])
        return digits[:16]


@dataclass(slots=True, init=False)
class Decision:
    outcome: Outcome
    reason: str
    route: Route | None = None
    endpoint: str | None = None
    pool: str | None = None
    rule: str | None = None
    degraded: bool = False
    verdicts: tuple[EndpointVerdict, ...] = ()
    # the experiment and arm that chose the pool (experiments:), when one ran
    experiment: str | None = None
    arm: str | None = None
    # names this decision in the log line and the milter's info header
    decision_id: str = ""  # __init__ makes a new one unless given
    # shadow mode: the same message decided under the candidate config (never routed)
    shadow: Decision | None = None
    # the message's uniform value, which chose among the weights (logged as `draw`:
    # a replay of the log decides with it again)
    r: float | None = None

    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        route: Route | None = None,
        endpoint: str | None = None,
        pool: str | None = None,
        rule: str | None = None,
        degraded: bool = False,
        verdicts: tuple[EndpointVerdict, ...] = (),
        experiment: str | None = None,
        arm: str | None = None,
        decision_id: str = "",
        shadow: Decision | None = None,
        r: float | None = None,
    ) -> None:
        self.outcome = outcome
        self.reason = reason
        self.route = route
        self.endpoint = endpoint
        self.pool = pool
        self.rule = rule
        self.degraded = degraded
        self.verdicts = verdicts
        self.experiment = experiment
        self.arm = arm
        self.decision_id = decision_id or new_decision_id()  # a new one unless given
        self.shadow = shadow
        self.r = r
