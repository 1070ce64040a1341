"""From policy requests to engine facts and back to actions, sans I/O.

At END-OF-MESSAGE Postfix sends ``recipient`` empty when a message has more than
one recipient, so the daemon is also asked at RCPT, answers DUNNO there, and
joins the recipients by the ``instance`` attribute (unique per message per
smtpd). Exim's ``${readsocket}`` sends one END-OF-MESSAGE request with the
recipient list in ``recipients`` (comma-separated), our extension.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mypy_extensions import mypyc_attr

from policyd import metrics
from policyd.protocol import PolicyRequest
from smtp_balancer.decision.classes import MessageClasses
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.engine import Pending
from smtp_balancer.generation import ATTRIBUTE
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.state.values import parse_int

DUNNO: Final = "DUNNO"
DEFER_ACTION: Final = "DEFER_IF_PERMIT 4.7.1 Egress capacity exhausted, try again later"
MAX_RECIPIENTS_PER_INSTANCE: Final = 10_000
# the oldest open message's age is looked at this often at most, not at every RCPT: a
# join outlives join_ttl_s (10 s at least) by under a second
AGE_CHECK_S: Final = 1.0


class _Pending:
    """One open message's recipients (a plain class: a dataclass's generated __init__
    runs as Python even in a compiled module)."""

    def __init__(self, recipients: list[str], touched: float, size: int = 0) -> None:
        self.recipients = recipients
        self.touched = touched
        self.size = size  # bytes of the instance name and recipients held


class InstanceJoin:
    """Recipients per open message; bounded in count, bytes and age, so abandoned
    transactions (client gone after RCPT) cannot grow it without end. The oldest
    message goes first."""

    def __init__(
        self,
        max_instances: int = 50_000,
        ttl_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.max_instances = max_instances
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._open: OrderedDict[str, _Pending] = OrderedDict()
        self._aged_at = float("-inf")  # when the oldest message's age was last looked at

    def __len__(self) -> int:
        return len(self._open)

    def add(self, instance: str, recipient: str) -> None:
        now = self.clock()
        pending = self._open.get(instance)
        if pending is None:
            pending = self._open[instance] = _Pending([], now, len(instance))
            self.bytes += pending.size
        else:
            self._open.move_to_end(instance)
            pending.touched = now
        if recipient and len(pending.recipients) < MAX_RECIPIENTS_PER_INSTANCE:
            pending.recipients.append(recipient)
            pending.size += len(recipient)
            self.bytes += len(recipient)
        self._expire(now)

    def take(self, instance: str) -> list[str]:
        # get and del: compiled, native dict operations (pop with a default is a method call)
        pending = self._open.get(instance)
        if pending is None:
            return []
        del self._open[instance]
        self.bytes -= pending.size
        return pending.recipients

    def _expire(self, now: float) -> None:
        while self._open:
            within = len(self._open) <= self.max_instances and self.bytes <= self.max_bytes
            if within and now - self._aged_at < AGE_CHECK_S:
                return  # the oldest's age was looked at less than a second ago
            instance, oldest = next(iter(self._open.items()))
            if within and now - oldest.touched < self.ttl_s:
                self._aged_at = now
                return
            del self._open[instance]
            self.bytes -= oldest.size
            metrics.JOINS_EVICTED.inc()


# numeric attributes: the project's one decimal grammar (ASCII digits only; str.isdigit()
# alone also takes '²', which int() refuses, and Arabic-Indic digits, which int() reads)
NUMBER_DIGITS: Final = 15
TIME_DIGITS: Final = 20  # sent_at: microseconds since the epoch


@dataclass(frozen=True)
class Immediate:
    """Answer without deciding; ``note`` explains odd requests for the log."""

    action: str
    note: str = ""


@dataclass(frozen=True)
class ShareRecipient:
    """A RCPT to write to the shared join (policyd.workers) before its answer (DUNNO,
    or HOLD for a held tenant) goes back."""

    instance: str
    recipient: str
    action: str = DUNNO


@dataclass(frozen=True)
class Incomplete:
    """END-OF-MESSAGE with fewer recipients than Postfix counted, in worker mode: the
    others' RCPT requests may have reached another worker (the shared join has them)."""

    request: PolicyRequest
    collected: list[str]


@dataclass(frozen=True)
class Drawn:
    """END-OF-MESSAGE whose draw only Redis can settle (the engine's Pending); its
    request tells, once it is decided, whether its client still waits."""

    request: PolicyRequest
    pending: Pending


ANSWER_DUNNO: Final = Immediate(DUNNO)  # one for every RCPT: a frozen dataclass is slow to make

# what cannot be answered inside data_received: the connection waits on it
Later = Drawn | ShareRecipient | Incomplete


# headers Exim's ACL sends for classification (our extension): attribute -> header name
EXIM_HEADERS: Final = (
    ("header_precedence", "Precedence"),
    ("header_list_unsubscribe", "List-Unsubscribe"),
    ("header_list_id", "List-Id"),
)


# every attribute the daemon reads of a request: its parser keeps only these
# (tests/policyd/test_session.py checks that policyd's sources read no other)
READ_ATTRIBUTES: Final = frozenset(
    (
        "request",
        "protocol_state",
        "instance",
        "recipient",
        "recipients",
        "recipient_count",
        "sender",
        "sasl_username",
        "client_address",
        "size",
        "queue_id",
        "sent_at",
        "header_class",
        *(attr for attr, _ in EXIM_HEADERS),
        ATTRIBUTE,  # which release rendered the MTA's files
    )
)


def exim_class(request: PolicyRequest, classes: MessageClasses) -> str | None:
    """The message class from the headers an Exim request carries (the milter's
    classification); None for a request without them (Postfix's)."""
    if "header_class" not in request:
        return None
    headers = [(classes.classifier.class_header, request["header_class"])]
    headers += [(name, request[attr]) for attr, name in EXIM_HEADERS if request.get(attr)]
    message_class, _ = classes.classify(
        headers, request.get("client_address", ""), request.get("sasl_username", "")
    )
    return message_class


def handle(
    request: PolicyRequest,
    join: InstanceJoin,
    classes: MessageClasses | None = None,
    notes: LogLimiter | None = None,
    shared: Callable[[str], bool] | None = None,
) -> Facts | Immediate | ShareRecipient | Incomplete:
    """What to do with one request: decide (Facts) or answer at once. ``notes``: where
    a message whose RCPT recipients are missing is logged. ``shared``: in worker mode,
    whether a message's recipients can be shared (its instance name is)."""
    if request.get("request") != "smtpd_access_policy":
        return Immediate(DUNNO, f"not an smtpd_access_policy request: {request.get('request', '')[:40]!r}")
    state = request.get("protocol_state", "")
    if state != "RCPT" and state != "END-OF-MESSAGE":  # as Postfix sends them: no new string
        state = state.upper()
    instance = request.get("instance", "")
    if state == "RCPT":
        if instance:
            recipient = request.get("recipient", "")
            join.add(instance, recipient)
            if shared is not None and recipient and shared(instance):
                return ShareRecipient(instance, recipient)
        return ANSWER_DUNNO
    if state != "END-OF-MESSAGE":
        return ANSWER_DUNNO
    collected = join.take(instance) if instance else []
    if shared is not None and shared(instance):
        count = parse_int(request.get("recipient_count"), NUMBER_DIGITS)
        if count is not None and len(collected) < count:
            return Incomplete(request, collected)
    return facts_of(request, collected, classes, notes)


def facts_of(
    request: PolicyRequest,
    collected: list[str],
    classes: MessageClasses | None = None,
    notes: LogLimiter | None = None,
) -> Facts:
    """An END-OF-MESSAGE request's facts, with the recipients its RCPT requests gave."""
    listed = request.get("recipients")
    extra = request.get("recipient", "").strip()
    if listed is None and (not extra or (len(collected) == 1 and collected[0] == extra)):
        # Postfix's usual message: the recipients are the join's (no list to merge)
        unique = tuple(collected) if len(collected) < 2 else tuple(dict.fromkeys(collected))
    else:
        # a dict keeps first-seen order and de-duplicates in linear time
        recipients = dict.fromkeys(collected)
        for more in (extra, *(listed or "").split(",")):
            more = more.strip()
            if more:
                recipients[more] = None
        unique = tuple(recipients)
    count = parse_int(request.get("recipient_count"), NUMBER_DIGITS)
    # Postfix counts a repeated RCPT TO, and so does the join: compare before de-duplicating
    known = max(len(collected), len(unique))
    if count is not None and known < count:
        unknown_recipients(request, known, count, notes)
    return Facts(
        sender=request.get("sender", ""),
        recipients=unique,
        sasl_username=request.get("sasl_username", ""),
        client_address=request.get("client_address", ""),
        size=parse_int(request.get("size"), NUMBER_DIGITS),
        queue_id=request.get("queue_id", ""),
        recipient_count=count,
        message_class=exim_class(request, classes) if classes is not None else None,
        # Exim (our `recipients` extension) routes each recipient with its own routers
        per_recipient=listed is not None,
    )


def unknown_recipients(request: PolicyRequest, known: int, count: int, notes: LogLimiter | None) -> None:
    """A message decided without some recipients' domains (its quota counts them all)."""
    metrics.RECIPIENTS_UNKNOWN.inc()
    if notes is not None:
        notes.warning(
            "recipients unknown",
            "queue id %s: %d of %d recipients known at END-OF-MESSAGE; routing cannot see the"
            " others' domains (their RCPT requests reached another process, or their join was"
            " evicted)",
            request.get("queue_id") or "-",
            known,
            count,
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class Client:
    """What the connection can tell about the client of a request being answered;
    these answers are for a client nothing is known of. A base class, not a Protocol:
    compiled callers call a compiled connection's methods natively."""

    def gone(self) -> bool:
        """It has closed its side already (end-of-file is waiting to be read)."""
        return False

    def waited_s(self) -> float | None:
        """Seconds since the request's last bytes arrived (TCP_INFO); None if unknown."""
        return None

    def arrived_within(self, seconds: float) -> bool:
        """The request's last bytes provably arrived less than ``seconds`` ago, known
        without a system call (see policyd/loop.py); False when not known."""
        return False


# Below this age a request counts as waited for without asking the kernel: a
# Postfix that closed within it (its smtpd killed mid-request) costs one unit.
RECENT_S = 0.5


def from_readsocket(request: PolicyRequest) -> bool:
    """Exim's request (its ACL lists the recipients, our extension): ${readsocket} sends
    one per connection, and takes the answer only at end-of-file."""
    return "recipients" in request


def abandoned(
    request: PolicyRequest,
    now: float,
    exim_timeout_s: float,
    postfix_timeout_s: float,
    client: Client,
    margin_s: float = 0.0,
) -> str:
    """Why the client no longer waits for this decision ("" while it does); ``now``
    (the host's wall clock) is read only for a request that carries ``sent_at``.

    A daemon that was frozen reads requests its clients gave up on: deciding them
    would spend warm-up quota on mail that leaves by the default transport.
    - Exim's request carries ``sent_at`` ($tod_epoch_l, microseconds): past its
      readsocket timeout, Exim has stopped waiting, and within ``margin_s`` of it (the
      time to decide and answer) the answer may arrive after Exim gave up. Exim shuts
      its side down after the request, so a closed connection means nothing there.
    - Postfix keeps its connection open while it waits, but after a timeout it may
      keep it too (it closes it only before a retry): a request that arrived
      longer ago than its timeout, or whose client has closed, is not waited for.
      Both take a system call; a request that provably arrived under RECENT_S ago
      is waited for without them.
    """
    sent_at = parse_int(request.get("sent_at"), TIME_DIGITS)
    if sent_at is not None:
        age = now - sent_at / 1e6
        if age < exim_timeout_s - margin_s:
            return ""
        left = f"{margin_s:g}s of it to decide and answer"
        return f"Exim sent it {age:.1f}s ago (timeout {exim_timeout_s:g}s, {left})"
    if from_readsocket(request):  # an Exim request rendered before sent_at: half-closed by design
        return ""
    if client.arrived_within(min(RECENT_S, postfix_timeout_s)):
        return ""  # a loop that keeps up: no system call for the checks below
    waited = client.waited_s()
    if waited is not None and waited >= postfix_timeout_s:
        return f"it arrived {waited:.1f}s ago and Postfix waits {postfix_timeout_s:g}s"
    return "Postfix closed the connection before the answer" if client.gone() else ""


def action_for(decision: Decision) -> str:
    if decision.outcome == "route" and decision.route is not None:
        return f"FILTER {decision.route.filter_target}"
    if decision.outcome == "defer":
        return DEFER_ACTION
    return DUNNO
