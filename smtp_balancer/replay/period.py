"""A period replayed: messages and the MTA's replies, both in time order, read side by
side; the log of replies kept ``AHEAD_S`` ahead of the messages; each message decided
by every simulator in turn. Holds no more than that look-ahead, so memory stays flat
however long the period. Sans I/O: the caller opens the logs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from smtp_balancer.decision.planner import Planner
from smtp_balancer.replay.inputs import Attempt, Message
from smtp_balancer.replay.replies import AHEAD_S, ReplyModel
from smtp_balancer.replay.simulate import Run, Simulator, count_actual


def replay_period(
    messages: Iterable[Message],
    attempts: Iterable[Attempt],
    model: ReplyModel,
    simulators: list[Simulator],
    planner: Planner,
    each: Callable[[Message], None] = lambda m: None,
) -> Run:
    """Every message decided by each of ``simulators`` (built on ``model``); returns
    what the log says actually happened. ``each`` is told of every message (progress)."""
    actual = Run("actual")
    replies = iter(attempts)
    next_reply = next(replies, None)
    for message in messages:
        horizon = message.at + AHEAD_S
        while next_reply is not None and next_reply.at <= horizon:
            model.read(next_reply)
            next_reply = next(replies, None)
        count_actual(actual, message, planner)
        for simulator in simulators:
            simulator.step(message)
        each(message)
    while next_reply is not None:  # retries after the last message: read, a little at a time
        model.read(next_reply)
        model.reach(next_reply.at - AHEAD_S)
        next_reply = next(replies, None)
    for simulator in simulators:
        simulator.finish()
    return actual
