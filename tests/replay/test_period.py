"""A period replayed from streams: the same result as from whole lists, retries past
the look-ahead still reach their message, and what is held stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.replay.inputs import Attempt, Message
from smtp_balancer.replay.period import replay_period
from smtp_balancer.replay.replies import AHEAD_S, BACK_S, ReplyModel
from smtp_balancer.replay.simulate import Simulator, actual_volumes
from tests.replay.scenario import T0, config, delivery, logged


def test_streamed_as_read_the_period_gives_what_whole_lists_give():
    messages, attempts = logged()
    whole = Simulator(config(), ReplyModel.of(attempts), "live").replay(messages)
    model = ReplyModel()
    sim = Simulator(config(), model, "live")
    actual = replay_period(
        iter(messages), iter(sorted(attempts, key=lambda a: a.at)), model, [sim], Planner(config())
    )
    assert sim.run.volumes == whole.volumes and sim.run.replies == whole.replies
    assert [(f.rule, f.at) for f in sim.run.fired] == [(f.rule, f.at) for f in whole.fired]
    assert actual.volumes == actual_volumes(messages, Planner(config())).volumes


def test_a_retry_long_after_the_look_ahead_still_reaches_its_message():
    at = T0
    facts = Facts(sender="a@shop.test", recipients=("u@yahoo.com",), queue_id="QR")
    probe = Simulator(config(), ReplyModel(), "probe").decide(Message(at, "QR", facts, "", "", ""))
    endpoint = probe.endpoint or ""
    message = Message(at, "QR", facts, "route", endpoint, probe.rule or "", probe.r)
    deferred = delivery("QR", endpoint, "yahoo.com", refused=True)
    sent = delivery("QR", endpoint, "yahoo.com", refused=False)
    later = [
        Attempt(at + 0.5, deferred),
        Attempt(at + 3 * AHEAD_S, deferred),
        Attempt(at + 9 * AHEAD_S, sent),
    ]
    model = ReplyModel()
    sim = Simulator(config(), model, "live")
    replay_period([message], later, model, [sim], Planner(config()))
    assert sim.run.replies == {(endpoint, "yahoo", "deferred"): 2, (endpoint, "yahoo", "sent"): 1}
    assert sim._awaiting == {}  # the message left: nothing more is awaited for it


def synthetic(n: int) -> tuple[Iterator[Message], Iterator[Attempt]]:
    """``n`` messages ten a second, each delivered 2 s after its decision."""
    planner = Simulator(config(), ReplyModel(), "probe")
    decided: list[tuple[Message, str]] = []

    def messages() -> Iterator[Message]:
        for k in range(n):
            at = T0 + k / 10
            facts = Facts(sender="a@shop.test", recipients=(f"u{k}@yahoo.com",), queue_id=f"S{k}")
            d = planner.decide(Message(at, facts.queue_id, facts, "", "", ""))
            message = Message(at, facts.queue_id, facts, d.outcome, d.endpoint or "", d.rule or "", d.r)
            decided.append((message, d.endpoint or ""))
            yield message

    def attempts() -> Iterator[Attempt]:
        for k in range(n):
            yield Attempt(
                T0 + k / 10 + 2, delivery(f"S{k}", ["out1", "out2"][k % 2], "yahoo.com", refused=False)
            )

    return messages(), attempts()


def test_what_is_held_does_not_grow_with_the_period():
    most: dict[int, int] = {}
    for n in (5_000, 20_000):
        messages, attempts = synthetic(n)
        model = ReplyModel()
        sims = [Simulator(config(), model, "live"), Simulator(config(), model, "candidate")]
        held = [0]

        def sample(
            m: Message, model: ReplyModel = model, sims: list[Simulator] = sims, held: list[int] = held
        ) -> None:
            size = len(model.by_queue_id) + sum(len(s._pending) + len(s._awaiting) for s in sims)
            held[0] = max(held[0], size)

        replay_period(messages, attempts, model, sims, Planner(config()), sample)
        most[n] = held[0]
    # the look-ahead and BACK_S of replies at ten a second, and the replies queued in it
    assert most[5_000] == most[20_000] <= 3 * (AHEAD_S + BACK_S) * 10
