"""Observations -> records: an IP (or an SNDS range) to the endpoints that send from
it, a source to the provider it speaks for. Sans I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.config.reputation import SOURCE_PROVIDER
from smtp_balancer.reputation.exports import IP, Observation, Skipped
from smtp_balancer.state.reputation import Record


class Attributor:
    def __init__(self, config: BalancerConfig) -> None:
        self.by_ip: dict[IP, str] = config.endpoints_by_ip()

    def endpoints(self, first: IP, last: IP) -> list[tuple[IP, str]]:
        """Our addresses from ``first`` to ``last``, with their endpoints."""
        if first == last:
            name = self.by_ip.get(first)
            return [(first, name)] if name else []
        return sorted(
            (
                (ip, name)
                for ip, name in self.by_ip.items()
                if ip.version == first.version and first <= ip <= last
            ),  # type: ignore[operator]
            key=lambda pair: pair[0],
        )

    def records(self, observations: Iterable[Observation], skipped: Skipped) -> Iterator[Record]:
        for o in observations:
            provider = SOURCE_PROVIDER[o.source]
            fact = (provider, o.source, o.signal, o.day, o.value)
            if o.first is None or o.last is None:
                yield Record(*fact, domain=o.domain, subject=o.subject, detail=o.detail)
                continue
            ours = self.endpoints(o.first, o.last)
            if not ours:
                skipped.note(f"{o.source} {o.signal} about an IP no endpoint sends from")
            for ip, endpoint in ours:
                yield Record(*fact, endpoint=endpoint, subject=str(ip), detail=o.detail)
