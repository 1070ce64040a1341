"""Experiments in Redis: ``{sb}:experiment:<name>`` (state, started, stopped, since),
``{sb}:expstats:<experiment>:<arm>`` (each arm's decisions and outcomes) and
the day books of arm records (``state/arm_book.py``). The operator's start and stop, the
report's read, and the reads the feedback side makes; what they mean is
``experiments/``'s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from smtp_balancer.state import arm_book, scripts
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import hash_texts, text_of


class ExperimentStore:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.r, self.keys = client, keys

    def record(self, name: str) -> dict[str, str]:
        """The experiment's hash: state, started, stopped, since (each where set)."""
        return hash_texts(self.r.hgetall(self.keys.experiment(name)))

    def start(self, name: str, arms: Sequence[str], now: float, reset: bool) -> None:
        """Running from ``now``; ``reset``: its arms' counts start again from zero, and
        outcomes of messages decided before ``now`` no longer count (``since``)."""
        key = self.keys.experiment(name)
        fields = {"state": "running", "started": f"{now:.0f}"}
        if reset:
            self.r.delete(*(self.keys.expstats(name, a) for a in arms))
            fields["since"] = f"{now:.0f}"
        self.r.hset(key, mapping=fields)
        self.r.hdel(key, "stopped")

    def stop(self, name: str, now: float) -> None:
        self.r.hset(self.keys.experiment(name), mapping={"state": "stopped", "stopped": f"{now:.0f}"})

    def stats(self, name: str, arms: Sequence[str]) -> tuple[str | None, list[dict[str, str]]]:
        """The experiment's state and each arm's counts, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(self.keys.experiment(name), "state")
        for arm in arms:
            pipe.hgetall(self.keys.expstats(name, arm))
        state, *raws = pipe.execute()
        return text_of(state), [hash_texts(raw) for raw in raws]

    def since(self, names: Iterable[str]) -> dict[str, object]:
        """experiment -> the raw ``since`` of its hash, where set."""
        ordered = sorted(names)
        if not ordered:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for name in ordered:
            pipe.hget(self.keys.experiment(name), "since")
        return {n: raw for n, raw in zip(ordered, pipe.execute(), strict=True) if raw is not None}

    def arm_records(self, queue_ids: Sequence[str], wall: float) -> list[object]:
        """The raw arm record of each queue id (None where there is none), looked up at
        ``wall`` (the reader's clock: which day books are current)."""
        if not queue_ids:
            return []
        keys, args = arm_book.read_call(self.keys, wall, queue_ids)
        return list(self.r.eval(scripts.ARM_READ.text, len(keys), *keys, *args))
