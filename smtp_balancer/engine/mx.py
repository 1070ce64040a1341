"""Decision-time provider lookup by MX, for domains the built-in table does not know.

Hosted domains (Google Workspace, Microsoft 365, ...) only show their provider
in their MX records. The lookup has a strict time budget: past it the message
is decided with provider "other", and the answer, when it comes, is cached for
the next message. Answers are cached by their TTL (clamped); failures briefly,
so a dead resolver is not asked once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from smtp_balancer.config.feedback import parse_nameserver
from smtp_balancer.config.services import MxLookupConfig
from smtp_balancer.decision.providers import OTHER, ProviderTable

log = logging.getLogger("smtp_balancer.engine.mx")


def provider_of_exchanges(exchanges: Iterable[tuple[int, str]], providers: ProviderTable) -> str:
    """The provider of the most preferred MX host that names one."""
    for _, host in sorted(exchanges):
        name = providers.for_mx(host)
        if name != OTHER:
            return name
    return OTHER


class MxProviders:
    def __init__(self, config: MxLookupConfig, providers: ProviderTable) -> None:
        self.config = config
        self.providers = providers
        self.cache: OrderedDict[str, tuple[str, float]] = OrderedDict()  # domain -> (provider, expiry)
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.resolver = dns.asyncresolver.Resolver(configure=not config.nameservers)
        if config.nameservers:
            self.resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in config.nameservers
            ]
        self.resolver.lifetime = config.lookup_timeout_ms / 1000

    def cached(self, domain: str, now: float | None = None) -> str | None:
        hit = self.cache.get(domain)
        if hit is None:
            return None
        if hit[1] < (time.monotonic() if now is None else now):
            self.cache.pop(domain, None)
            return None
        with contextlib.suppress(KeyError):  # another thread (the milter's) evicted it meanwhile
            self.cache.move_to_end(domain)
        return hit[0]

    def knows(self, domains: Iterable[str]) -> bool:
        """Every domain's provider is known now: deciding needs no lookup."""
        now = time.monotonic()
        for domain in domains:
            if domain not in self.providers.by_domain:
                hit = self.cache.get(domain)
                if hit is None or hit[1] < now:
                    return False
        return True

    def _store(self, domain: str, provider: str, ttl: float) -> None:
        self.cache[domain] = (provider, time.monotonic() + ttl)
        self.cache.move_to_end(domain)
        while len(self.cache) > self.config.cache_size:
            self.cache.popitem(last=False)

    async def _lookup(self, domain: str) -> None:
        cfg = self.config
        try:
            answer = await self.resolver.resolve(domain, "MX")
            exchanges = [(r.preference, r.exchange.to_text()) for r in answer]
            ttl = min(max(answer.rrset.ttl if answer.rrset else 0, cfg.min_ttl_s), cfg.max_ttl_s)
            self._store(domain, provider_of_exchanges(exchanges, self.providers), ttl)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._store(domain, OTHER, cfg.negative_ttl_s)
        except dns.exception.DNSException as exc:
            log.debug("MX lookup for %s failed: %s", domain, exc)
            self._store(domain, OTHER, cfg.failure_ttl_s)
        finally:
            self.pending.pop(domain, None)

    async def learn(self, domains: Iterable[str]) -> None:
        """Look up the unknown domains, waiting at most the budget; late answers still land."""
        waiting = []
        for domain in domains:
            if domain in self.providers.by_domain or self.cached(domain) is not None:
                continue
            task = self.pending.get(domain)
            if task is None:
                if len(self.pending) >= self.config.max_pending:
                    continue  # a lookup storm: decide these as "other" rather than queue up
                task = self.pending[domain] = asyncio.ensure_future(self._lookup(domain))
            waiting.append(task)
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.budget_ms / 1000)

    async def close(self) -> None:
        for task in list(self.pending.values()):
            task.cancel()
