"""A logged period for replay tests: 300 messages a second apart through the test
topology, out3 warming (a day cap of 20, 3 of them Google), and Gmail deferring
out2 with 421 4.7.28 from the 100th message on. The 'actual' decisions are the
real model's under the live config; each routed message got one reply."""

from __future__ import annotations

from datetime import UTC, datetime

from integration.configs import deep_merge, topology
from smtp_balancer.config import BalancerConfig, validate_config
from smtp_balancer.decision.facts import Facts
from smtp_balancer.feedback.delivery_log import Delivery
from smtp_balancer.replay.inputs import Attempt, Message
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.simulate import Simulator

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
T0 = START.timestamp()
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com")
PROVIDER = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft"}
THROTTLED_FROM = 100
GMAIL_421 = "host gmail.com said: 421-4.7.28 unusual rate of unsolicited mail - gsmtp"
LIVE = {
    "mx_lookup": {"enabled": False},
    **topology(),
    "endpoints": {
        **topology()["endpoints"],
        "out3": {
            **topology()["endpoints"]["out3"],
            "warmup": {"start": START.date().isoformat(), "schedule": [20], "providers": {"google": [3]}},
        },
    },
}


def config(extra: dict | None = None) -> BalancerConfig:
    return validate_config(deep_merge(LIVE, extra or {}))


def logged(n: int = 300) -> tuple[list[Message], list[Attempt]]:
    """The period as the logs hold it: messages with their actual routes and draws, and
    one reply each. Made in two passes, as the period itself went: the first finds the
    routes without replies, its 421s make the second suspend (out2, google), and the
    second's routes (each message's draw kept) are what the logs hold."""
    facts = [
        Facts(sender="news@shop.test", recipients=(f"u{i}@{DOMAINS[i % 3]}",), queue_id=f"Q{i}")
        for i in range(n)
    ]
    messages = [Message(T0 + i, f.queue_id, f, "", "", "") for i, f in enumerate(facts)]
    attempts: list[Attempt] = []
    for _ in range(2):
        live = Simulator(config(), ReplyModel.of(attempts), "actual")
        decided = [(m, live.step(m)) for m in messages]
        live.finish()
        messages = [
            Message(m.at, m.queue_id, m.facts, d.outcome, d.endpoint or "", d.rule or "", d.r)
            for m, d in decided
        ]
        attempts = [
            Attempt(
                m.at + 0.5,
                delivery(
                    m.queue_id,
                    m.endpoint,
                    domain,
                    m.endpoint == "out2" and domain == "gmail.com" and i >= THROTTLED_FROM,
                ),
            )
            for i, m in enumerate(messages)
            if m.endpoint
            for domain in [m.facts.recipients[0].rpartition("@")[2]]
        ]
    return messages, attempts


def delivery(queue_id: str, endpoint: str, domain: str, refused: bool) -> Delivery:
    return Delivery(
        queue_id=queue_id,
        endpoint=endpoint,
        program="smtp",
        recipient=f"u@{domain}",
        relay_host=domain,
        relay_addr="127.0.0.1",
        relay_port=25,
        delay_s=0.1,
        delays=(0.0, 0.0, 0.05, 0.05),
        dsn="4.7.28" if refused else "2.0.0",
        status="deferred" if refused else "sent",
        response=GMAIL_421 if refused else "250 2.0.0 Ok",
        provider=PROVIDER[domain],
    )
