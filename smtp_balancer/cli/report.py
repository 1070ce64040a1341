"""Plain-text reports for the CLI: explain and status. Formatting only, no I/O."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.durations import format_duration
from smtp_balancer.observe.status import EndpointStatus, Snapshot
from smtp_balancer.state.audit import AuditEntry
from smtp_balancer.state.reputation import HeldRecord
from smtp_balancer.state.status_reads import TENANT_HOURS

# C0 and C1 controls and DEL: a reason written into Redis could otherwise move the
# cursor, recolour the terminal or draw a fake row with a newline
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with every control character shown as \\xNN."""
    return text.translate(_CONTROLS)


# audit entries status reads for each endpoint's last change
AUDIT_SCAN = 2000


def describe_entry(entry: AuditEntry, now: float) -> str:
    """One audit entry as a line: when, who, what, before -> after, and why."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.at))
    ago = format_duration(max(0, int(now - entry.at)))
    who = entry.who + (f" (sudo from {entry.sudo})" if entry.sudo else "")
    why = f": {entry.reason!r}" if entry.reason else ""
    return f"{when} UTC ({ago} ago) {who}: {entry.verb} {entry.target}: {entry.old} -> {entry.new}{why}"


def status_json(
    snapshot: Snapshot, changes: Mapping[str, AuditEntry], here: Mapping[str, str] | None = None
) -> dict[str, object]:
    """``status --json``: the snapshot as status.schema.json describes it; ``here``: the
    endpoints this host's deciders leave out (``left_out``)."""
    out = asdict(snapshot)
    out["left_out_here"] = dict(here or {})
    out["taken_at"] = snapshot.taken_at.isoformat()
    for pool, status in zip(out["pools"], snapshot.pools, strict=True):
        for member, m in zip(pool["members"], status.members, strict=True):
            member["weight"] = m.weight
    out["last_change"] = {ep: entry.as_json() for ep, entry in changes.items()}
    return out


def short_entry(entry: AuditEntry, now: float) -> str:
    """An audit entry in a status row: how long ago, who, what; the reason is in `audit`."""
    who = entry.who + (f" (sudo {entry.sudo})" if entry.sudo else "")
    ago = format_duration(max(0, int(now - entry.at)))
    return _short(f"{ago} ago {who}: {entry.verb} {entry.target}: {entry.old} -> {entry.new}", 84)


def last_changes(entries: list[AuditEntry], endpoints: set[str]) -> dict[str, AuditEntry]:
    """endpoint -> the newest entry that changed it (a weight's target is pool/endpoint)."""
    out: dict[str, AuditEntry] = {}
    for entry in entries:  # oldest first: a later one replaces
        parts = entry.target.split("/")
        name = parts[1] if entry.verb == "weight" and len(parts) == 2 else parts[0]
        if name in endpoints:
            out[name] = entry
    return out


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def left_out(unplumbed: Mapping[str, str], foreign: Mapping[str, str], host: str) -> dict[str, str]:
    """The endpoints a host's deciders leave out of every plan, each with why: its bind
    address is not on the host (name -> address), or another host owns it (name -> that
    host). ``explain`` and ``status`` say the same."""
    out = {
        name: f"bind address {address} is not on this host (decision.bind_check_s)"
        for name, address in unplumbed.items()
    }
    out.update({name: f"an endpoint of host {owner}, not of {host}" for name, owner in foreign.items()})
    return dict(sorted(out.items()))


def reputation_line(record: HeldRecord) -> str:
    """One imported record, as explain and trace show it."""
    about = f" for {record.subject}" if record.subject else ""
    said = f"{record.source} {record.signal} {record.value}{about} on {record.day}"
    return f"{record.name} ({record.provider}): {said}"


def reputation_about(
    records: Iterable[HeldRecord],
    endpoints: Iterable[str],
    providers: Iterable[str] | None,
    sender_domain: str,
) -> list[HeldRecord]:
    """The records about these endpoints (for these providers; None: any) and about the
    sender's domain or a parent of it."""
    eps, wanted = set(endpoints), None if providers is None else set(providers)
    domain = sender_domain.lower().rstrip(".")
    out = []
    for r in records:
        if r.scope == "endpoint":
            if r.name in eps and (wanted is None or r.provider in wanted):
                out.append(r)
        elif domain == r.name or domain.endswith("." + r.name):
            out.append(r)
    return out


def explain_report(
    facts: Facts,
    decision: Decision,
    unplumbed: Mapping[str, str] | None = None,
    foreign: Mapping[str, str] | None = None,
    host: str = "",
    providers: Mapping[str, int] | None = None,
    reputation: Iterable[HeldRecord] = (),
    held: str = "",
    moved: str = "",
) -> str:
    """``unplumbed``: endpoints left out of every plan on this host (name -> bind address);
    ``foreign``: another fleet host's endpoints (name -> that host); ``host``: the one
    decided for; ``providers``: recipients per mailbox provider, as the deciders see them;
    ``reputation``: the imported records in force (those about the endpoints weighed,
    for the message's providers, and about its sender's domain are shown); ``held``:
    why the sender's tenant is held ("" when it is not); ``moved``: the pool it is
    moved to, and why (the dry run decided in that pool then)."""
    by_provider = ",".join(f"{p}:{n}" for p, n in (providers or {}).items()) or "-"
    out = [
        f"facts:     sender={facts.sender or '<>'} recipients={','.join(facts.recipients) or '-'}"
        f" providers={by_provider}"
        f" sasl={facts.sasl_username or '-'} client={facts.client_address or '-'}"
        f" size={facts.size if facts.size is not None else '-'} class={facts.message_class or '-'}",
        f"rule:      {decision.rule or '(none matched)'}",
        f"pool:      {decision.pool or '-'}",
    ]
    if decision.arm:
        # a real message's arm comes from its queue id; without --queue-id, from the envelope
        by = f"queue id {facts.queue_id}" if facts.queue_id else "this dry run's envelope"
        out.append(f"arm:       {decision.arm} of experiment {decision.experiment} (by {by})")
    if decision.verdicts:
        out.append("endpoints:")
        rows = [["POOL", "ENDPOINT", "WEIGHT", "ELIGIBLE", "WHY"]]
        rows += [
            [v.pool, v.endpoint, str(v.weight), "yes" if v.eligible else "no", v.detail]
            for v in decision.verdicts
        ]
        out += table(rows)
    for name, why in left_out(unplumbed or {}, foreign or {}, host).items():
        out.append(f"left out:  {name}: {why}")
    if held:
        out.append(f"held:      the sender's tenant is held; its mail waits in the hold queue: {held}")
    if moved:
        out.append(f"moved:     the sender's tenant is moved: {moved}")
    weighed = [v.endpoint for v in decision.verdicts]
    for record in reputation_about(reputation, weighed, list(providers or {}), facts.sender_domain):
        out.append(f"reputation: {reputation_line(record)}")
    if decision.outcome == "route" and decision.route:
        pick = f"{decision.endpoint} -> FILTER {decision.route.filter_target}"
    else:
        pick = {
            "default": "none: MTA default transport (DUNNO)",
            "defer": "none: defer (try later)",
            "no_rule": "none: no rule matched (DUNNO)",
            "inbound": "none: mail this host receives (DUNNO)",
        }[decision.outcome]
    out.append(f"pick:      {pick}")
    out.append(f"reason:    {decision.reason}{' [DEGRADED: Redis not used]' if decision.degraded else ''}")
    out = [printable(line) for line in out]
    out.append("(dry run: no quota consumed)")
    return "\n".join(out)


def _section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A titled table, or nothing when it has no rows."""
    return [f"\n{title}", *table([header, *rows])] if rows else []


def _factor(factor: float | None) -> str:
    return "junk (ignored)" if factor is None else f"{factor:g}"


def _left(ttl_s: int) -> str:
    return "no expiry" if ttl_s < 0 else format_duration(ttl_s)


def _count(count: int | None, cap: int | None) -> str:
    shown = "junk!" if count is None else str(count)
    return f"{shown}/{cap}" if cap is not None else shown


@dataclass(frozen=True)
class Shown:
    """What `status` shows: every pool, endpoint and provider unless narrowed."""

    pools: frozenset[str] | None = None
    endpoints: frozenset[str] | None = None
    provider: str | None = None

    def endpoint(self, name: str) -> bool:
        return self.endpoints is None or name in self.endpoints

    def pair(self, endpoint: str, provider: str) -> bool:
        return self.endpoint(endpoint) and (self.provider is None or provider in (self.provider, "all"))


REASON_WIDTH = 32  # a reason in a table cell; --json has it whole


def _short(text: str, width: int = REASON_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _out_of_service(ep: EndpointStatus, now: float) -> list[str]:
    """A drained or quarantined endpoint's row: who, when, when it lifts, why."""
    since = "-" if ep.state_since is None else f"{format_duration(max(0, int(now - ep.state_since)))} ago"
    lifts = "at undrain" if ep.until is None else f"in {format_duration(max(0, int(ep.until - now)))}"
    state = ep.state + (" (requeue)" if ep.requeue else "")
    return [ep.name, state, ep.state_by or "-", since, lifts, _short(ep.reason, 40)]


def _state_cell(ep: EndpointStatus) -> str:
    if ep.state_junk:
        return "active (junk state ignored)"
    return "active (quarantine lifted)" if ep.lifted else ep.state


def status_report(
    snapshot: Snapshot, shown: Shown | None = None, here: Mapping[str, str] | None = None
) -> str:
    """``here``: the endpoints this host's deciders leave out (``left_out``)."""
    shown = shown or Shown()
    now = snapshot.taken_at.timestamp()
    out = [f"smtp-balancer status at {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC"]
    for pool in snapshot.pools:
        members = [m for m in pool.members if shown.endpoint(m.endpoint)]
        if (shown.pools is not None and pool.name not in shown.pools) or not members:
            continue
        sticky = f", sticky by {pool.stickiness} (spread {pool.spread})" if pool.stickiness != "none" else ""
        out.append(f"\npool {pool.name} (overflow {pool.overflow}{sticky})")
        rows = [["ENDPOINT", "WEIGHT", "STATE", "TODAY/CAP", "HOUR/CAP", "WARM-UP"]]
        for m in members:
            ep = snapshot.endpoints[m.endpoint]
            if m.junk_weight is not None:
                weight = f"{m.weight} (yaml; junk {m.junk_weight[:12]!r} ignored)"
            else:
                weight = str(m.weight) + (" (yaml)" if m.live_weight is None else "")
            warm = (
                "warm"
                if ep.warmup_day is None
                else (f"day {ep.warmup_day}" if ep.warmup_day > 0 else "not started")
            )
            if ep.warmup_why:  # its first word here, the whole judgement below
                warm += f" ({ep.warmup_why.split(':', 1)[0].split(' ', 1)[0]})"
            rows.append(
                [
                    m.endpoint,
                    weight,
                    _state_cell(ep),
                    _count(ep.day_count, ep.day_cap),
                    _count(ep.hour_count, ep.hour_cap),
                    warm,
                ]
            )
        out += table(rows)
    out_of_service = [
        ep for name, ep in snapshot.endpoints.items() if ep.state != "active" and shown.endpoint(name)
    ]
    out += _section(
        "out of service (every message avoids them):",
        ["ENDPOINT", "STATE", "BY", "SET", "LIFTS", "REASON"],
        [_out_of_service(ep, now) for ep in out_of_service],
    )
    out += _section(
        "left out on this host (its deciders never pick them):",
        ["ENDPOINT", "WHY"],
        [[name, why] for name, why in (here or {}).items() if shown.endpoint(name)],
    )
    judged = [(name, ep) for name, ep in snapshot.endpoints.items() if ep.warmup_why and shown.endpoint(name)]
    if judged:
        out.append("\nmanaged warm-ups (the feedback daemon's last judgement):")
        out += [f"  {name}: day {ep.warmup_day}: {ep.warmup_why}" for name, ep in judged]
    suspensions = [
        (name, s)
        for name, ep in snapshot.endpoints.items()
        for s in ep.suspensions
        if shown.pair(name, s.provider)
    ]
    out += _section(
        "suspensions (the endpoint takes none of the provider's mail):",
        ["ENDPOINT", "PROVIDER", "LEFT", "REASON"],
        [[name, s.provider, _left(s.ttl_s), _short(s.reason, 48)] for name, s in suspensions],
    )
    throttles = [t for t in snapshot.throttles if shown.pair(t.endpoint, t.provider)]
    out += _section(
        "throttles (the endpoint keeps FACTOR of its share for the provider):",
        ["ENDPOINT", "PROVIDER", "FACTOR", "LEFT", "REASON"],
        [
            [t.endpoint, t.provider, _factor(t.factor), _left(t.ttl_s), _short(t.reason, 40)]
            for t in throttles
        ],
    )
    limits = [lim for lim in snapshot.limits if shown.pair(lim.endpoint, lim.provider)]
    if limits:
        out.append("\nlimits per provider (warm-up caps beside the total, rate caps a minute, fleet-wide):")
        rows = [["ENDPOINT", "PROVIDER", "TODAY/CAP", "HOUR/CAP", "LAST MINUTE/RATE CAP"]]
        for lim in limits:
            if lim.rate_cap is None:
                rows.append(
                    [
                        lim.endpoint,
                        lim.provider,
                        _count(lim.day_count, lim.day_cap),
                        _count(lim.hour_count, lim.hour_cap) if lim.hour_cap is not None else "-",
                        "-",
                    ]
                )
                continue
            rate = _count(lim.rate_count, lim.rate_cap)
            if lim.slow_factor is not None:
                slowed = max(1, int(lim.rate_cap * lim.slow_factor))
                left = format_duration(lim.slow_ttl_s)
                rate += f", slowed to {slowed} ({left} left): {_short(lim.slow_reason)}"
            rows.append([lim.endpoint, lim.provider, "-", "-", rate])
        out += table(rows)
    adaptive = [a for a in snapshot.adaptive if shown.pair(a.endpoint, a.provider)]
    out += _section(
        "adaptive factors (weight x factor for the provider, in pools with adaptive: true):",
        ["ENDPOINT", "PROVIDER", "FACTOR", "LEFT", "CAUSE"],
        [
            [a.endpoint, a.provider, _factor(a.factor), format_duration(a.ttl_s), _short(a.reason, 40)]
            for a in adaptive
        ],
    )
    if snapshot.queued is None:
        out.append("\nqueued: unknown (no `smtp-balancer requeue` daemon reports)")
    else:
        hosts = f"{snapshot.queued_hosts} host{'s' if snapshot.queued_hosts != 1 else ''}"
        out.append(f"\nqueued (deferred messages bound to each endpoint, {hosts}):")
        queued = sorted((ep, n) for ep, n in snapshot.queued.items() if shown.endpoint(ep))
        out.append("  " + ", ".join(f"{ep} {n}" for ep, n in queued))
    if snapshot.tenants:
        out.append(f"\ntenants (last {TENANT_HOURS} h, every feedback daemon and `fbl` report):")
        rows = [["TENANT", "SENT", "DEFERRED", "BOUNCED", "COMPLAINTS", "COMPLAINT RATE"]]
        for name, n in snapshot.tenants.items():
            rate = f"{100 * n['complained'] / n['sent']:.2f}%" if n["sent"] else "-"
            bounced = n["bounced"] + n["expired"]
            rows.append([name, str(n["sent"]), str(n["deferred"]), str(bounced), str(n["complained"]), rate])
        out += table(rows)
    if snapshot.tenant_holds:
        out.append("\ntenants held (their new mail goes to Postfix's hold queue; `tenant release` ends it):")
        rows = [["TENANT", "LEFT", "WHY"]]
        for name, (left, why) in sorted(snapshot.tenant_holds.items()):
            rows.append([name, format_duration(left) if left >= 0 else "no end", _short(why, 60)])
        out += table(rows)
    out += _section(
        "tenants moved (their new mail goes to the pool, whatever its rule; `tenant release` ends it):",
        ["TENANT", "POOL", "LEFT", "WHY"],
        [
            [name, pool, format_duration(left) if left >= 0 else "no end", _short(why, 60)]
            for name, (left, pool, why) in sorted(snapshot.tenant_moves.items())
        ],
    )
    held = [r for r in snapshot.reputation if r.scope == "domain" or shown.endpoint(r.name)]
    out += _section(
        "reputation (the providers' exports, `reputation import`; records recent enough to act):",
        ["ENDPOINT/DOMAIN", "PROVIDER", "SIGNAL", "ABOUT", "DAY", "VALUE"],
        [[r.name, r.provider, f"{r.source} {r.signal}", r.subject or "-", r.day, r.value] for r in held],
    )
    return "\n".join(out)
