"""Relay endpoint health: an SMTP probe, and the up/down state with thresholds.

``RelayHealth`` is pure: consecutive failures mark a relay down after
``fail_after``, consecutive successes mark it up after ``recover_after``. The
probe connects from the endpoint's own source address, reads the 220 banner,
says EHLO with the endpoint's HELO name and QUITs.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass

from smtp_balancer.config.base import parse_nexthop
from smtp_balancer.config.endpoints import EndpointConfig


@dataclass
class RelayHealth:
    fail_after: int
    recover_after: int
    up: bool = True
    failures: int = 0
    successes: int = 0

    def record(self, ok: bool) -> str | None:
        """Record one probe; returns "down" or "up" when the state changes."""
        if ok:
            self.failures = 0
            self.successes += 1
            if not self.up and self.successes >= self.recover_after:
                self.up = True
                return "up"
        else:
            self.successes = 0
            self.failures += 1
            if self.up and self.failures >= self.fail_after:
                self.up = False
                return "down"
        return None


def probe(endpoint: EndpointConfig, timeout_s: float) -> tuple[bool, str]:
    """(ok, detail). Never raises."""
    assert endpoint.nexthop is not None
    host, port = parse_nexthop(endpoint.nexthop)
    source = (endpoint.bind_address, 0) if endpoint.bind_address else None
    try:
        with smtplib.SMTP(
            timeout=timeout_s, source_address=source, local_hostname=endpoint.helo_name or None
        ) as smtp:
            code, banner = smtp.connect(host, port)
            if code != 220:
                return False, f"banner {code} {banner.decode(errors='replace')[:80]}"
            code, _ = smtp.ehlo()
            if code != 250:
                return False, f"EHLO answered {code}"
        return True, "ok"
    except (OSError, smtplib.SMTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:160]
