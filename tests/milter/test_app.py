"""The milter's pure helpers: who is trusted with the class header, SIZE parsing."""

from smtp_balancer_milter.app import Envelope, MilterSettings, _size, facts_for, info_header, milter_factory

from smtp_balancer.config.services import MilterConfig
from smtp_balancer.decision.facts import Decision, Facts

S = MilterSettings.from_config(
    MilterConfig(trusted_networks=["10.0.0.0/8", "::1/128"], decision_timeout_ms=250)
)


def test_trust():
    assert S.is_trusted("10.1.2.3", "")
    assert S.is_trusted("::1", "")
    assert not S.is_trusted("192.0.2.9", "")
    assert S.is_trusted("192.0.2.9", "app-user")  # SASL-authenticated
    assert S.is_trusted("", "")  # local submission (sendmail / pickup)
    assert not S.is_trusted("not-an-ip", "")
    assert S.decision_timeout_s == 0.25


def test_size_from_esmtp_params():
    assert _size(("BODY=8BITMIME", "SIZE=12345")) == 12345
    assert _size(("size=7",)) == 7
    assert _size(("SIZE=big",)) is None and _size(()) is None
    # digits str.isdigit() takes but int() refuses ('²') or reads (Arabic-Indic): not a size
    assert _size(("SIZE=\u00b2",)) is None and _size(("SIZE=\u0661\u0662",)) is None


def test_facts_from_the_envelope():
    env = Envelope("10.1.2.3", "a@shop.test", ["x@gmail.com", "y@yahoo.com"], "app", 2048)
    facts = facts_for(env, "bulk", "ABC123")
    assert facts == Facts(
        sender="a@shop.test",
        recipients=("x@gmail.com", "y@yahoo.com"),
        sasl_username="app",
        client_address="10.1.2.3",
        size=2048,
        message_class="bulk",
        queue_id="ABC123",
    )


def test_info_header_names_the_decision():
    d = Decision(outcome="route", reason="r", endpoint="out2", pool="bulk", rule="rest", decision_id="ab12")
    assert (
        info_header(d, "bulk", "default class") == "id=ab12; pool=bulk; rule=rest; class=bulk (default class)"
    )
    degraded = Decision(outcome="route", reason="r", pool="p", rule="x", degraded=True, decision_id="cd")
    assert info_header(degraded, "tx", "header").endswith("class=tx (header); degraded")


def test_the_factory_shares_one_engine():
    engine = object()
    make = milter_factory(engine, S)  # type: ignore[arg-type]
    first, second = make(), make()
    assert first is not second and first.engine is second.engine is engine and first.settings is S
