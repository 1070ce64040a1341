"""The decision line: the same fields from the policy daemon and the milter."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from smtp_balancer.decision.facts import Decision, Facts, Route, new_decision_id
from smtp_balancer.observe.decision_log import (
    FIELDS,
    MAX_DOMAINS,
    decode_domains,
    encode_domains,
    log_decision,
    render_ids,
)


def routed(decision_id: str, **more: str) -> Decision:
    """A route to out2 by the rule news in the pool bulk; ``more``: experiment and arm."""
    return Decision(
        outcome="route",
        reason="weighted draw",
        route=Route("out2"),
        endpoint="out2",
        pool="bulk",
        rule="news",
        decision_id=decision_id,
        **more,  # type: ignore[arg-type]
    )


def test_decision_line_names_the_decision_and_the_queue_id(caplog):
    decision = routed("0123456789abcdef")
    facts = Facts(sender="a@shop.test", recipients=("x@gmail.com", "y@yahoo.com"), queue_id="4XyZ1")
    with caplog.at_level(logging.INFO, logger="smtp_balancer.decision"):
        log_decision("policyd", facts, decision, action="FILTER out2:")
    (rec,) = caplog.records
    assert rec.fields == {
        "decision_id": "0123456789abcdef",
        "via": "policyd",
        "queue_id": "4XyZ1",
        "sender_domain": "shop.test",
        "rcpt_domains": "gmail.com,yahoo.com",
        "size": None,
        "draw": None,
        "outcome": "route",
        "rule": "news",
        "pool": "bulk",
        "endpoint": "out2",
        "degraded": False,
        "nrcpt": 2,
        "reason": "weighted draw",
        "action": "FILTER out2:",
    }


def test_no_line_below_info(caplog):
    with caplog.at_level(logging.WARNING, logger="smtp_balancer.decision"):
        log_decision("milter", Facts(), Decision(outcome="default", reason="x"))
    assert caplog.records == []


def test_decision_ids_are_16_hex_digits_and_distinct():
    ids = {new_decision_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and set(i) <= set("0123456789abcdef") for i in ids)


def test_threads_never_share_a_decision_id():
    """The milter decides in threads; ids come from a shared batch."""
    import threading

    made: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_decision_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in made for i in out]
    assert len(every) == 40_000 and len(set(every)) == 40_000


def test_the_documented_fields_are_those_of_a_full_line(caplog):
    """FIELDS (which docs/reference/logs.md is generated from) names each field a line
    can carry: an experiment's message decided by the policy daemon for Exim has all."""
    shadow = routed(new_decision_id())
    decision = replace(routed(new_decision_id(), experiment="ab", arm="a"), shadow=shadow)
    facts = Facts(sender="a@shop.test", recipients=("x@gmail.com",), queue_id="4XyZ1")
    with caplog.at_level(logging.INFO, logger="smtp_balancer.decision"):
        log_decision("policyd", facts, decision, action="FILTER out2:", message_class="bulk")
    (rec,) = caplog.records
    assert list(rec.fields) == list(FIELDS)


def test_recipient_domains_are_written_once_each_with_their_counts_and_read_back():
    rcpts = ["a@Gmail.com", "b@yahoo.com", "c@gmail.com", "d@gmail.com"]
    assert encode_domains(rcpts) == "gmail.com*3,yahoo.com"
    assert decode_domains("gmail.com*3,yahoo.com") == ([("gmail.com", 3), ("yahoo.com", 1)], 0)
    assert encode_domains(["x@[IPv6:2001:db8::1]"]) == "[ipv6:2001:db8::1]"
    assert encode_domains([]) == "" and decode_domains("") == ([], 0)
    many = [f"u@d{i}.test" for i in range(MAX_DOMAINS + 5)] + ["v@d0.test"]
    pairs, rest = decode_domains(encode_domains(many))
    assert len(pairs) == MAX_DOMAINS and pairs[0] == ("d0.test", 2) and rest == 5
    assert sum(n for _, n in pairs) + rest == len(many)


@pytest.mark.parametrize("hostile", ["a@x,y*3.test", "a@+7", "a@evil*0", "a@\u00e9.test", 'a@"x y"'])
def test_a_recipient_cannot_forge_the_domain_list(hostile: str):
    for _ in range(2):  # checked, then from the cache of checked domains
        text = encode_domains([hostile, "b@gmail.com"])
        assert text == "?,gmail.com"
        assert decode_domains(text) == ([("?", 1), ("gmail.com", 1)], 0)


def test_the_cache_of_checked_domains_is_bounded() -> None:
    from smtp_balancer.observe import decision_log

    for i in range(decision_log.CHECKED_MAX + 10):
        assert encode_domains([f"u@d{i}.test"]) == f"d{i}.test"
    assert len(decision_log._checked) <= decision_log.CHECKED_MAX
    long = "a@" + "x" * 300 + ".test"  # longer than any DNS name: checked, never kept
    assert encode_domains([long]) == long[2:] and long[2:] not in decision_log._checked


@pytest.mark.parametrize("junk", ["gmail.com*", "gmail.com*0", "*3", "a,,b", "gmail.com*\u0663"])
def test_a_domain_list_no_daemon_writes_is_refused(junk: str):
    with pytest.raises(ValueError, match="not a recipient domain list"):
        decode_domains(junk)


def test_the_ids_render_as_the_generic_logfmt_pairs_would(caplog):
    """render_ids is render_pairs of the line's per-message fields, written out: the
    same text for hostile values (quotes, spaces, newlines, non-ASCII, None), and the
    same fields in the same order as the line's fields where logging renders it."""
    from smtp_balancer.observe.logfmt import render_pairs

    with caplog.at_level(logging.INFO, logger="smtp_balancer.decision"):
        log_decision("policyd", Facts(sender="a@shop.test", recipients=("x@gmail.com",)), routed("0" * 16))
    (rec,) = caplog.records
    ids = list(rec.fields)[: list(rec.fields).index("outcome")]  # what precedes the repeated tail

    rng = random.Random(36)
    texts = ["", "a", "abc123", 'q"x', "sp ace", "new\nline", "é", "a=b", "[::1]", "x\\y", "\x00"]
    for _ in range(3_000):
        values = {
            "decision_id": rng.choice([new_decision_id(), *texts]),
            "via": rng.choice(["policyd", "milter", *texts]),
            "queue_id": rng.choice([None, "4F2A1B3C", *texts]),
            "sender_domain": rng.choice(texts),
            "rcpt_domains": rng.choice(["gmail.com*2,yahoo.com", "?", *texts]),
            "size": rng.choice([None, 0, 312, 10**12]),
            "draw": rng.choice([None, 0.0, rng.random(), 1e-9]),
        }
        assert list(values) == ids
        assert render_ids(*values.values()) == render_pairs(values.items()), values


def test_a_deferred_decision_line_is_the_line_logging_writes_in_its_place():
    """Under the daemons' own handler a decision line is deferred and rendered with
    the next ones (lines.LineWriter.defer); through logging (another handler on the
    logger) it is formatted at once. The two lines are the same but their time, and
    the deferred one comes first."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from smtp_balancer.decision.facts import Decision, Facts\n"
        "from smtp_balancer.observe import lines, logs\n"
        "from smtp_balancer.observe.decision_log import log_decision\n"
        "logs.configure('logfmt', 'info')\n"
        "assert lines.direct_writer() is not None\n"
        "facts = Facts(sender='a@shop.test', recipients=('b@gmail.com', 'c@gmail.com', 'd@x.test'),"
        " size=10, queue_id='1A2B3C')\n"
        "d = Decision('route', 'weight 1 in pool \"main\"', endpoint='out1', pool='main', rule='all',"
        " r=0.5, experiment='e', arm='a', decision_id='ab12cd34ab12cd34')\n"
        "log_decision('policyd', facts, d, action='FILTER out1:')\n"
        "assert len(lines.direct_writer().deferred) == 1\n"
        "logging.getLogger('smtp_balancer.decision').addHandler(logging.NullHandler())\n"
        "log_decision('policyd', facts, d, action='FILTER out2:')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    lines = [line.split(" ", 1)[1] for line in out.splitlines() if "msg=decision" in line]  # drop ts
    assert len(lines) == 2, out
    assert 'action="FILTER out1:"' in lines[0] and lines[0] == lines[1].replace("out2:", "out1:")
    for field in ("decision_id=ab12cd34ab12cd34", "queue_id=1A2B3C", 'rcpt_domains="gmail.com*2,x.test"'):
        assert field in lines[0], lines[0]
    assert 'reason="weight 1 in pool \\"main\\""' in lines[0] and "experiment=e arm=a" in lines[0]
