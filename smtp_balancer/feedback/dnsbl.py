"""DNSBL checks of each endpoint's public IP: query building and answer meaning.

``interpret`` is pure; ``DnsblChecker`` asks the resolvers with dnspython.
Return codes matter: Spamhaus answers 127.255.255.252-255 when it refuses a
query (public resolver, rate limit, unregistered DQS key). That is an error,
never a listing, or a resolver problem would quarantine every IP at once.
Answers outside 127.0.0.0/8 (a hijacking resolver) are errors too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.resolver

from smtp_balancer.config.feedback import DnsblConfig, DnsblZone, parse_nameserver

LISTED, CLEAN, ERROR = "listed", "clean", "error"


@dataclass(frozen=True)
class DnsblResult:
    zone: str
    ip: str
    verdict: str  # listed | clean | error
    detail: str  # the answer codes, or the error


def query_name(ip: str, zone: str) -> str:
    """1.2.3.4 in zen.spamhaus.org -> 4.3.2.1.zen.spamhaus.org (nibbles for IPv6)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        labels = ".".join(reversed(str(addr).split(".")))
    else:
        labels = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{labels}.{zone.strip('.')}"


def interpret(zone: DnsblZone, ip: str, answers: list[str]) -> DnsblResult:
    if not answers:
        return DnsblResult(zone.zone, ip, CLEAN, "no record")
    listed, refused, odd = [], [], []
    for a in answers:
        try:
            addr = ipaddress.IPv4Address(a)
        except ValueError:
            odd.append(a)
            continue
        if zone.listed:
            (listed if a in zone.listed else odd).append(a)
        elif addr in ipaddress.IPv4Network("127.255.255.0/24"):
            refused.append(a)
        elif addr in ipaddress.IPv4Network("127.0.0.0/8") and addr != ipaddress.IPv4Address("127.0.0.1"):
            listed.append(a)
        else:
            odd.append(a)
    if listed:
        return DnsblResult(zone.zone, ip, LISTED, ",".join(listed))
    if refused:
        return DnsblResult(zone.zone, ip, ERROR, f"query refused by the list ({','.join(refused)})")
    return DnsblResult(zone.zone, ip, ERROR, f"unexpected answer {','.join(odd)}")


class DnsblChecker:
    def __init__(self, config: DnsblConfig) -> None:
        self.config = config
        if config.nameservers:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in config.nameservers
            ]
        else:
            self.resolver = dns.resolver.Resolver()
        self.resolver.lifetime = config.timeout_ms / 1000
        self.resolver.timeout = config.timeout_ms / 1000
        self.resolver.cache = None  # every round asks afresh: a delisting must show

    def check(self, ip: str, zone: DnsblZone) -> DnsblResult:
        try:
            answer = self.resolver.resolve(query_name(ip, zone.zone), "A")
        except dns.resolver.NXDOMAIN:
            return interpret(zone, ip, [])
        except dns.resolver.NoAnswer:
            return interpret(zone, ip, [])
        except dns.exception.Timeout:
            return DnsblResult(zone.zone, ip, ERROR, "timeout")
        except dns.exception.DNSException as exc:
            return DnsblResult(zone.zone, ip, ERROR, f"{type(exc).__name__}: {exc}")
        return interpret(zone, ip, [r.to_text() for r in answer])
