"""Scheduled health checks: DNSBL listings and relay probes, written as endpoint states.
The same thread runs the state exporter's rounds (``exporter.py``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from smtp_balancer.clock import SYSTEM
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.feedback import metrics
from smtp_balancer.feedback.dnsbl import LISTED, DnsblChecker, DnsblResult
from smtp_balancer.feedback.probe import RelayHealth, probe
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.quarantine import set_health_state

log = logging.getLogger("smtp_balancer.feedback")
DNSBL_BY = "dnsbl"
PROBE_BY = "relay-probe"


def dnsbl_targets(config: BalancerConfig) -> dict[str, tuple[str, ...]]:
    """endpoint -> the public IPs to look up: its configured public_ip and public_ip6
    (behind NAT the bind address is not what receivers see, so it is never guessed)."""
    return {name: ep.public_ips for name, ep in config.endpoints.items() if ep.public_ips}


class HealthChecks:
    def __init__(self, config: BalancerConfig, client: redis.Redis, stop: threading.Event) -> None:
        self.config = config
        self.r = client
        self.keys = KeySchema(config.redis.prefix)
        self.stop = stop
        fb = config.feedback
        self.dnsbl = DnsblChecker(fb.dnsbl) if fb.dnsbl.zones else None
        self.targets = dnsbl_targets(config)
        self.relays = {
            name: RelayHealth(fb.probes.fail_after, fb.probes.recover_after)
            for name, ep in config.endpoints.items()
            if ep.kind == "relay"
        }
        for name in self.relays:
            metrics.RELAY_UP.labels(name).set(1)

    def set_state(self, endpoint: str, state: str, reason: str, by: str) -> bool:
        return set_health_state(self.r, self.keys, endpoint, state, reason, by, SYSTEM.wall())

    # -- DNSBL ---------------------------------------------------------------------
    def dnsbl_round(self) -> list[DnsblResult]:
        assert self.dnsbl is not None
        results = []
        zones = self.config.feedback.dnsbl.zones
        for endpoint, ips in self.targets.items():
            # each address of the endpoint (IPv4 and IPv6) in each zone
            checked = [(ip, self.dnsbl.check(ip, zone)) for ip in ips for zone in zones]
            found = [res for _, res in checked]
            results.extend(found)
            for zone in zones:
                listed_here = any(r.zone == zone.zone and r.verdict == LISTED for r in found)
                metrics.DNSBL_LISTED.labels(endpoint, zone.zone).set(1 if listed_here else 0)
            for ip, res in checked:
                metrics.DNSBL_CHECKS.labels(res.zone, res.verdict).inc()
                if res.verdict == "error":
                    log.warning(
                        "DNSBL %s for %s (%s): %s; state unchanged", res.zone, endpoint, ip, res.detail
                    )
            listed = [(ip, r) for ip, r in checked if r.verdict == LISTED]
            if listed:
                reason = "; ".join(f"{ip} listed on {r.zone} ({r.detail})" for ip, r in listed)
                if self.set_state(endpoint, "quarantined", reason, DNSBL_BY):
                    log.warning("endpoint %s quarantined: %s", endpoint, reason)
            elif all(r.verdict != "error" for r in found) and self.set_state(
                endpoint, "active", f"delisted from {len(found)} zone(s)", DNSBL_BY
            ):
                log.warning("endpoint %s restored: %s no longer listed", endpoint, " and ".join(ips))
        return results

    # -- relay probes ----------------------------------------------------------------
    def probe_round(self) -> None:
        timeout = self.config.feedback.probes.timeout_ms / 1000
        for name, health in self.relays.items():
            ok, detail = probe(self.config.endpoints[name], timeout)
            metrics.RELAY_PROBES.labels(name, "ok" if ok else "failed").inc()
            change = health.record(ok)
            if not ok:
                log.info("relay %s probe failed (%d in a row): %s", name, health.failures, detail)
            if change == "down":
                reason = f"relay down: {health.failures} failed probes, last: {detail}"
                self.set_state(name, "quarantined", reason, PROBE_BY)
                log.warning("relay endpoint %s marked down: %s", name, detail)
            elif change == "up":
                self.set_state(name, "active", f"relay up after {health.successes} probes", PROBE_BY)
                log.warning("relay endpoint %s marked up", name)
            metrics.RELAY_UP.labels(name).set(1 if health.up else 0)

    def run(self, state_round: Callable[[], None]) -> None:
        """The schedules in one thread, with the exporter's ``state_round``; a failing
        round is logged and retried next time."""
        fb = self.config.feedback
        due = {"dnsbl": 0.0, "probes": 0.0, "state": 0.0}
        while not self.stop.is_set():
            now = time.monotonic()
            for name, interval, job, wanted in (
                ("dnsbl", fb.dnsbl.interval, self.dnsbl_round, self.dnsbl is not None and self.targets),
                ("probes", fb.probes.interval, self.probe_round, bool(self.relays)),
                ("state", fb.state_interval, state_round, True),
            ):
                if not wanted or now < due[name]:
                    continue
                due[name] = now + interval
                try:
                    job()
                except redis.RedisError as exc:
                    log.error("%s round: Redis unavailable (%s); retrying next round", name, exc)
                except Exception:
                    log.exception("%s round failed; retrying next round", name)
            self.stop.wait(0.2)
