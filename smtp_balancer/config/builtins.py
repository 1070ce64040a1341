"""The built-in tables a config can name without defining: mailbox providers (by
their public mail domains and MX host suffixes) and warm-up schedules.

They are data, below everything that reads them: the config's reference checks
and the deciders' provider and cap tables.

Where the warm-up numbers come from: mailbox providers publish no numbers, only
the advice to ramp volume gradually from an engaged audience (Gmail's
and Yahoo's sender guidelines, 2024). ESPs that warm IPs automatically
(SendGrid's automated warm-up, Amazon SES managed warm-up, Infobip) start in
the tens to low hundreds of messages a day and roughly double daily or every
few days over two to six weeks. The built-in curves below are our own
doubling curves in that range; they are deliberately conservative, and an
operator with a better-known audience defines their own in YAML.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OTHER = "other"  # the provider of every domain no table knows


@dataclass(frozen=True)
class ProviderSpec:
    domains: tuple[str, ...] = ()
    mx_suffixes: tuple[str, ...] = ()


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "google": ProviderSpec(
        domains=("gmail.com", "googlemail.com"),
        mx_suffixes=("google.com", "googlemail.com"),
    ),
    "microsoft": ProviderSpec(
        domains=(
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "hotmail.co.uk",
            "hotmail.fr",
            "hotmail.de",
            "hotmail.it",
            "live.co.uk",
            "outlook.de",
        ),
        mx_suffixes=("protection.outlook.com", "outlook.com", "hotmail.com"),
    ),
    "yahoo": ProviderSpec(
        domains=(
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "yahoo.co.uk",
            "yahoo.fr",
            "yahoo.de",
            "yahoo.co.jp",
            "aol.com",
            "aim.com",
        ),
        mx_suffixes=("yahoodns.net",),
    ),
    "apple": ProviderSpec(domains=("icloud.com", "me.com", "mac.com"), mx_suffixes=("icloud.com",)),
    "united-internet": ProviderSpec(
        domains=("gmx.de", "gmx.net", "gmx.com", "web.de", "mail.com"),
        mx_suffixes=("gmx.net", "web.de", "mail.com"),
    ),
    "yandex": ProviderSpec(
        domains=("yandex.ru", "yandex.com", "ya.ru"), mx_suffixes=("yandex.net", "yandex.ru")
    ),
    "mailru": ProviderSpec(domains=("mail.ru", "bk.ru", "inbox.ru", "list.ru"), mx_suffixes=("mail.ru",)),
    "proton": ProviderSpec(domains=("proton.me", "protonmail.com", "pm.me"), mx_suffixes=("protonmail.ch",)),
    "zoho": ProviderSpec(domains=("zoho.com", "zohomail.com"), mx_suffixes=("zoho.com", "zoho.eu")),
    "fastmail": ProviderSpec(domains=("fastmail.com", "fastmail.fm"), mx_suffixes=("messagingengine.com",)),
    "comcast": ProviderSpec(domains=("comcast.net",), mx_suffixes=("comcast.net",)),
}


# (daily cap, hourly cap) per day of age
Steps = tuple[tuple[int, int | None], ...]


def _doubling(start: int, days: int, growth: float, hourly_share: float) -> Steps:
    steps = []
    daily = float(start)
    for _ in range(days):
        cap = int(round(daily, -1)) if daily >= 100 else int(daily)
        steps.append((cap, max(1, int(cap * hourly_share))))
        daily *= growth
    return tuple(steps)


BUILTIN_SCHEDULES: dict[str, Steps] = {
    # 50/day doubling for 14 days: ~400k/day on day 14, then uncapped
    "standard": _doubling(50, 14, 2.0, 0.125),
    # 20/day, x1.5 a day for 30 days: for low-reputation or cold audiences
    "conservative": _doubling(20, 30, 1.5, 0.125),
    # 200/day doubling for 10 days: for IPs joining an already-reputable domain
    "fast": _doubling(200, 10, 2.0, 0.2),
}


def provider_names(configured: Iterable[str]) -> set[str]:
    """Every provider a name can refer to: the built-in ones and those ``configured``."""
    return set(BUILTIN_PROVIDERS) | set(configured)
