"""``smtp-balancer shadow report``: where and why the candidate of shadow mode
(``shadow.config``) would have routed differently, from the decision lines.

``ShadowTally`` is sans I/O: decision lines in (logfmt or JSON), counts out.
Lines that are not decision lines, and decision lines with a shadow field but
not all of them, are counted and named in the report, never fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtp_balancer.cli.common import log_lines
from smtp_balancer.cli.report import printable
from smtp_balancer.observe.log_reader import parse_fields

SHADOW_FIELDS = ("shadow_outcome", "shadow_rule", "shadow_pool", "shadow_endpoint", "shadow_reason")
TOP = 10


def _route(outcome: str, endpoint: str) -> str:
    """An endpoint, or the outcome when the message got none (default, defer, no_rule)."""
    return endpoint or outcome or "?"


@dataclass
class ShadowTally:
    lines: int = 0
    decisions: int = 0
    unshadowed: int = 0  # decision lines without shadow fields (shadow mode off then)
    incomplete: int = 0  # some shadow fields but not all: a cut or hand-edited line
    same: int = 0
    different: int = 0
    by_rule_pool: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # live route -> candidate's
    where: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # rule, pool -> theirs
    why: Counter[tuple[str, str]] = field(default_factory=Counter)  # live reason -> candidate's

    def add(self, line: str) -> None:
        self.lines += 1
        fields = parse_fields(line)
        if fields is None or fields.get("msg") != "decision":
            return
        self.decisions += 1
        present = [name in fields for name in SHADOW_FIELDS]
        if not any(present):
            self.unshadowed += 1
            return
        if not all(present):
            self.incomplete += 1
            return
        live = _route(fields.get("outcome", ""), fields.get("endpoint", ""))
        theirs = _route(fields["shadow_outcome"], fields["shadow_endpoint"])
        rule, pool = fields.get("rule", ""), fields.get("pool", "")
        same = (fields.get("outcome", ""), fields.get("endpoint", "")) == (
            fields["shadow_outcome"],
            fields["shadow_endpoint"],
        )
        self.by_rule_pool[(rule, pool, same)] += 1
        if same:
            self.same += 1
            return
        self.different += 1
        self.moves[(live, theirs)] += 1
        self.where[(rule, pool, fields["shadow_rule"], fields["shadow_pool"])] += 1
        self.why[(fields.get("reason", ""), fields["shadow_reason"])] += 1

    def add_all(self, lines: Iterable[str]) -> ShadowTally:
        for line in lines:
            self.add(line)
        return self

    @property
    def shadowed(self) -> int:
        return self.same + self.different

    def as_dict(self) -> dict[str, object]:
        rules: dict[tuple[str, str], dict[str, int]] = {}
        for (rule, pool, same), n in self.by_rule_pool.items():
            rules.setdefault((rule, pool), {"same": 0, "different": 0})["same" if same else "different"] += n
        return {
            "lines": self.lines,
            "decision_lines": self.decisions,
            "without_shadow": self.unshadowed,
            "incomplete_shadow": self.incomplete,
            "shadowed": self.shadowed,
            "same": self.same,
            "different": self.different,
            "by_rule_and_pool": [
                {"rule": r, "pool": p, **counts} for (r, p), counts in sorted(rules.items())
            ],
            "moves": [{"live": a, "candidate": b, "messages": n} for (a, b), n in self.moves.most_common()],
            "where": [
                {"rule": r, "pool": p, "candidate_rule": cr, "candidate_pool": cp, "messages": n}
                for (r, p, cr, cp), n in self.where.most_common()
            ],
            "why": [{"live": a, "candidate": b, "messages": n} for (a, b), n in self.why.most_common()],
        }


def render(tally: ShadowTally) -> str:
    out = [f"{tally.lines} lines read: {tally.decisions} decision lines, {tally.shadowed} shadowed"]
    if tally.unshadowed:
        out.append(f"  {tally.unshadowed} decision lines without one (shadow mode was off, or broken)")
    if tally.incomplete:
        out.append(
            f"  {tally.incomplete} decision lines with only some shadow fields (cut or edited): skipped"
        )
    if not tally.shadowed:
        out.append(
            "no shadow decisions: is shadow.config set, and are these the policy daemon's or milter's logs?"
        )
        return "\n".join(out)
    share = 100 * tally.same / tally.shadowed
    out.append(f"the candidate agrees on {tally.same} ({share:.1f}%), differs on {tally.different}")
    out.append("")
    out.append(f"{'rule':20} {'pool':16} {'same':>8} {'different':>9}")
    rows: dict[tuple[str, str], list[int]] = {}
    for (rule, pool, same), n in tally.by_rule_pool.items():
        rows.setdefault((rule, pool), [0, 0])[0 if same else 1] += n
    for (rule, pool), (same_n, diff_n) in sorted(rows.items()):
        out.append(f"{printable(rule)[:20]:20} {printable(pool)[:16]:16} {same_n:>8} {diff_n:>9}")
    if tally.moves:
        out += ["", "where the candidate sends them instead (live -> candidate):"]
        out += [f"  {n:>8}  {printable(a)} -> {printable(b)}" for (a, b), n in tally.moves.most_common(TOP)]
        out += ["", "rule and pool (live -> candidate):"]
        out += [
            f"  {n:>8}  {printable(r)}/{printable(p)} -> {printable(cr) or '-'}/{printable(cp) or '-'}"
            for (r, p, cr, cp), n in tally.where.most_common(TOP)
        ]
        out += ["", "why (live reason -> candidate's reason):"]
        out += [f"  {n:>8}  {printable(a)} -> {printable(b)}" for (a, b), n in tally.why.most_common(TOP)]
    return "\n".join(out)


def report(args: argparse.Namespace) -> int:
    """``shadow report LOG...``: the logs named, or ``-`` for standard input."""
    paths = args.logs or ["-"]
    tally = ShadowTally()
    try:
        tally.add_all(log_lines(paths))
    except ValueError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(tally.as_dict(), indent=2) if args.json else render(tally))
    return 0
