"""``smtp-balancer trace``: one message's decision, delivery attempts and outcome,
put together from the daemons' logs and the MTA's log. Sans I/O: lines in, a
Trace out; the CLI reads the files and Redis.

A message is found by its queue id (Postfix or Exim), the decision id (in the
decision line and the milter's info header) or its Message-ID. Postfix mail that
the requeue daemon moved gets a new queue id; pickup logs ``orig_id=`` and the
trace follows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.classify import BounceClassifier
from smtp_balancer.feedback.delivery_log import Delivery, LogLineError, parse_line
from smtp_balancer.feedback.exim_log import parse_exim_line
from smtp_balancer.observe.log_reader import parse_fields

_POSTFIX = re.compile(r"postfix[\w/.-]*\[\d+\]: (?P<qid>[0-9A-Za-z]+): (?P<rest>.*)$")
_EXIM_ARRIVAL = re.compile(
    r"^\S+ \S+ (?P<qid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) <= .* id=(?P<mid>\S+)"
)
_STAMP = re.compile(r"^(\w{3} +\d{1,2} [\d:]{8}|\d{4}-\d\d-\d\d[T ][\d:.]+\S*)")
DECISION_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class Attempt:
    at: str
    endpoint: str
    relay: str
    status: str
    dsn: str
    bounce_class: str
    response: str


@dataclass
class Trace:
    query: str
    queue_ids: list[str] = field(default_factory=list)
    message_id: str = ""
    decisions: list[dict[str, str]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    removed: bool = False
    suspensions: list[str] = field(default_factory=list)  # filled by the caller, from Redis
    reputation: list[str] = field(default_factory=list)  # likewise: imported records in force

    @property
    def outcome(self) -> str:
        final = [a.status for a in self.attempts if a.status in ("sent", "bounced", "expired")]
        if final:
            return final[-1]
        if self.attempts:
            return "deferred, still queued" if not self.removed else "removed"
        return "no delivery attempt logged"

    def as_json(self) -> str:
        data = asdict(self)
        data["outcome"] = self.outcome
        return json.dumps(data, indent=2, ensure_ascii=False)


class Tracer:
    def __init__(
        self,
        providers: ProviderTable,
        classifier: BounceClassifier,
        exim_transports: Mapping[str, str] | None = None,
    ) -> None:
        self.providers = providers
        self.classifier = classifier
        self.exim_transports = exim_transports or {}

    def find_ids(self, query: str, lines: Iterable[str]) -> tuple[set[str], str]:
        """Pass 1: every queue id the message had, and its Message-ID."""
        want = query.strip()
        is_mid = "@" in want or want.startswith("<")
        mid = want if want.startswith("<") or not is_mid else f"<{want}>"
        ids: set[str] = set()
        orig: dict[str, str] = {}  # new queue id -> the one it was requeued from
        message_id = mid if is_mid else ""
        mids: dict[str, str] = {}
        for line in lines:
            fields = parse_fields(line)
            if fields is not None:
                names = (fields.get("decision_id"), fields.get("queue_id"))
                if fields.get("msg") == "decision" and want in names and fields.get("queue_id"):
                    ids.add(fields["queue_id"])
                continue
            m = _POSTFIX.search(line)
            if m:
                qid, rest = m.group("qid"), m.group("rest")
                if rest.startswith("message-id="):
                    mids[qid] = rest[len("message-id=") :].split()[0]
                elif " orig_id=" in rest:
                    orig[qid] = rest.rsplit(" orig_id=", 1)[1].split()[0]
                if qid == want:
                    ids.add(qid)
                continue
            e = _EXIM_ARRIVAL.search(line)
            if e:
                mids[e.group("qid")] = e.group("mid")
            elif f" {want} " in line and re.search(
                r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}", want
            ):
                ids.add(want)
        if is_mid:
            ids |= {qid for qid, m in mids.items() if m == mid}
        for qid in list(ids):
            message_id = message_id or mids.get(qid, "")
        if message_id:  # a requeued message keeps its Message-ID under a new queue id
            ids |= {qid for qid, m in mids.items() if m == message_id}
        changed = True
        while changed:  # follow orig_id both ways
            before = len(ids)
            ids |= {new for new, old in orig.items() if old in ids}
            ids |= {old for new, old in orig.items() if new in ids}
            changed = len(ids) != before
        return ids, message_id

    def collect(self, trace: Trace, ids: set[str], lines: Iterable[str]) -> None:
        """Pass 2: the decision lines and the delivery lines of those queue ids."""
        for line in lines:
            fields = parse_fields(line)
            if fields is not None:
                if fields.get("msg") == "decision" and fields.get("queue_id") in ids:
                    trace.decisions.append(fields)
                continue
            delivery = self._delivery(line)
            if delivery is not None and delivery.queue_id in ids:
                stamp = _STAMP.match(line)
                trace.attempts.append(
                    Attempt(
                        at=stamp.group(1) if stamp else "",
                        endpoint=delivery.endpoint or "(default)",
                        relay=delivery.relay_host,
                        status=delivery.status,
                        dsn=delivery.dsn,
                        bounce_class=self.classifier.classify(
                            delivery.status, delivery.dsn, delivery.response
                        ),
                        response=delivery.response,
                    )
                )
                continue
            m = _POSTFIX.search(line)
            if m and m.group("qid") in ids and m.group("rest") == "removed":
                trace.removed = True

    def _delivery(self, line: str) -> Delivery | None:
        try:
            return parse_line(line, self.providers) or parse_exim_line(
                line, self.providers, self.exim_transports
            )
        except LogLineError:
            return None


def render(trace: Trace) -> str:
    out = [f"trace {trace.query}"]
    out.append(f"  queue ids:  {', '.join(sorted(trace.queue_ids)) or '(none found)'}")
    if trace.message_id:
        out.append(f"  message-id: {trace.message_id}")
    if not trace.decisions:
        out.append("  decision:   none logged (the policy daemon's or milter's log was not given?)")
    for d in trace.decisions:
        degraded = " DEGRADED (made without Redis)" if d.get("degraded") == "true" else ""
        out.append(
            f"  decision:   {d.get('decision_id', '?')} via {d.get('via', '?')}:"
            f" outcome {d.get('outcome', '?')}, rule {d.get('rule') or '-'}, pool {d.get('pool') or '-'},"
            f" endpoint {d.get('endpoint') or '-'}{degraded}"
        )
        out.append(f"              reason: {d.get('reason', '')}")
    out.append(f"  attempts:   {len(trace.attempts)}")
    for i, a in enumerate(trace.attempts, 1):
        out.append(f"    {i}. {a.at}  {a.endpoint}  {a.status} {a.dsn} [{a.bounce_class}]  {a.relay}")
        out.append(f"       {a.response[:200]}")
    out.append(f"  outcome:    {trace.outcome}")
    for s in trace.suspensions:
        out.append(f"  in force:   {s}")
    for r in trace.reputation:
        out.append(f"  reputation: {r}")
    return "\n".join(out)
