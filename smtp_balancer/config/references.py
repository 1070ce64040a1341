"""Cross-section checks on the raw YAML mapping.

They run on the raw data, not on validated models, so that a dangling
reference is reported together with every field error in one pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from smtp_balancer.config.builtins import BUILTIN_SCHEDULES, OTHER, provider_names
from smtp_balancer.config.names import EXIM_GENERIC_TRANSPORT, POSTFIX_SERVICES, exim_transport_name

ConfigError = tuple[str, str]  # (path, message)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def reference_errors(raw: Mapping[str, Any]) -> Iterator[ConfigError]:
    endpoints = _mapping(raw.get("endpoints"))
    pools = _mapping(raw.get("pools"))
    schedules = set(BUILTIN_SCHEDULES) | set(_mapping(raw.get("warmup_schedules")))
    providers = provider_names(_mapping(raw.get("providers"))) | {OTHER}
    known = ", ".join(sorted(providers))

    def unknown_provider(name: str) -> str:
        return f"unknown provider {name!r}; known: {known} (or add it under providers:)"

    yield from _endpoint_name_errors(endpoints)
    yield from _address_errors(endpoints)
    reordered = {
        ref
        for exp in _list(raw.get("experiments"))
        for arm in _list(_mapping(exp).get("arms"))
        for ref in _list(_mapping(arm).get("rule_order"))
    }
    yield from _unreachable_rules(_list(raw.get("rules")), reordered)

    for name in _mapping(raw.get("providers")):
        if name in ("all", "total"):
            # "all" scopes every provider; "total" is the counter hashes' sum field
            yield (f"providers.{name}", f"{name!r} is a reserved word, not a provider name")

    for name, endpoint in endpoints.items():
        warmup = _mapping(_mapping(endpoint).get("warmup"))
        schedule = warmup.get("schedule")
        if isinstance(schedule, str) and schedule not in schedules:
            yield (f"endpoints.{name}.warmup.schedule", f"unknown warm-up schedule {schedule!r}")
        for provider, steps in _mapping(warmup.get("providers")).items():
            path = f"endpoints.{name}.warmup.providers.{provider}"
            if provider not in providers:
                yield (path, unknown_provider(provider))
            if isinstance(steps, str) and steps not in schedules:
                yield (path, f"unknown warm-up schedule {steps!r}")
        for provider in _mapping(_mapping(endpoint).get("rate_caps")):
            if provider not in providers and provider != "all":
                yield (f"endpoints.{name}.rate_caps.{provider}", unknown_provider(provider))

    for pool_name, pool in pools.items():
        pool = _mapping(pool)
        seen: set[str] = set()
        for i, member in enumerate(_list(pool.get("endpoints"))):
            ref = _mapping(member).get("endpoint")
            if not isinstance(ref, str):
                continue
            path = f"pools.{pool_name}.endpoints[{i}].endpoint"
            if ref not in endpoints:
                yield (path, f"unknown endpoint {ref!r}")
            elif ref in seen:
                yield (path, f"endpoint {ref!r} is listed twice")
            seen.add(ref)
        overflow = pool.get("overflow")
        if isinstance(overflow, str) and overflow.startswith("pool:"):
            target = overflow.removeprefix("pool:")
            if target not in pools:
                yield (f"pools.{pool_name}.overflow", f"unknown pool {target!r}")
    yield from _overflow_cycles(pools)

    rule_names: set[str] = set()
    for i, rule in enumerate(_list(raw.get("rules"))):
        rule = _mapping(rule)
        pool = rule.get("pool")
        if isinstance(pool, str) and pool not in pools:
            yield (f"rules[{i}].pool", f"unknown pool {pool!r}")
        for j, provider in enumerate(_list(rule.get("provider"))):
            if isinstance(provider, str) and provider not in providers:
                yield (f"rules[{i}].provider[{j}]", unknown_provider(provider))
        name = rule.get("name")
        if isinstance(name, str):
            if name in rule_names:
                yield (f"rules[{i}].name", f"rule name {name!r} is used twice")
            rule_names.add(name)

    split_rules: dict[str, str] = {}
    experiment_names: set[str] = set()
    for i, exp in enumerate(_list(raw.get("experiments"))):
        exp = _mapping(exp)
        name, rule = exp.get("name"), exp.get("rule")
        if isinstance(name, str):
            if name in experiment_names:
                yield (f"experiments[{i}].name", f"experiment name {name!r} is used twice")
            experiment_names.add(name)
        if isinstance(rule, str):
            if rule not in rule_names:
                yield (f"experiments[{i}].rule", f"unknown rule {rule!r}")
            elif rule in split_rules:
                yield (f"experiments[{i}].rule", f"rule {rule!r} is already split by {split_rules[rule]!r}")
            split_rules[rule] = str(name)
        for j, provider in enumerate(_list(_mapping(exp.get("match")).get("provider"))):
            if isinstance(provider, str) and provider not in providers:
                yield (f"experiments[{i}].match.provider[{j}]", unknown_provider(provider))
        for j, arm in enumerate(_list(exp.get("arms"))):
            pool = _mapping(arm).get("pool")
            if isinstance(pool, str) and pool not in pools:
                yield (f"experiments[{i}].arms[{j}].pool", f"unknown pool {pool!r}")
            for k, ref in enumerate(_list(_mapping(arm).get("rule_order"))):
                if isinstance(ref, str) and ref not in rule_names:
                    yield (f"experiments[{i}].arms[{j}].rule_order[{k}]", f"unknown rule {ref!r}")

    milter, policyd = _mapping(raw.get("milter")), _mapping(raw.get("policyd"))
    if milter.get("enabled") is True and milter.get("smtpd") is True and policyd.get("enabled", True) is True:
        yield (
            "milter.smtpd",
            "the policy daemon already decides SMTP mail (policyd.enabled): deciding each message "
            "twice reserves its warm-up quota twice; set policyd.enabled or milter.smtpd to false",
        )

    feedback = _mapping(raw.get("feedback"))
    hold_pool = _mapping(_mapping(feedback.get("complaints")).get("tenant_hold")).get("pool")
    if isinstance(hold_pool, str) and hold_pool not in pools:
        yield ("feedback.complaints.tenant_hold.pool", f"unknown pool {hold_pool!r}")
    for i, rule in enumerate(_list(_mapping(raw.get("reputation")).get("rules"))):
        pool = _mapping(rule).get("pool")
        if isinstance(pool, str) and pool not in pools:
            yield (f"reputation.rules[{i}].pool", f"unknown pool {pool!r}")
    for section in ("response_rules", "rate_rules"):
        for i, rule in enumerate(_list(feedback.get(section))):
            for j, provider in enumerate(_list(_mapping(rule).get("providers"))):
                if isinstance(provider, str) and provider not in providers:
                    yield (f"feedback.{section}[{i}].providers[{j}]", unknown_provider(provider))
    rate_capped = {p for e in endpoints.values() for p in _mapping(_mapping(e).get("rate_caps"))}
    for section in ("response_rules", "rate_rules"):
        for i, rule in enumerate(_list(feedback.get(section))):
            rule = _mapping(rule)
            wanted = set(_list(rule.get("providers"))) or providers
            if rule.get("action") == "slow" and not (rate_capped & (wanted | {"all"})):
                # slow lowers a rate cap: with none for these providers it would do nothing
                yield (
                    f"feedback.{section}[{i}].action",
                    "slow lowers a rate cap, and no endpoint has rate_caps for "
                    + (", ".join(sorted(wanted)) if rule.get("providers") else "any provider"),
                )
    reporters = _mapping(_mapping(feedback.get("complaints")).get("reporters"))
    for domain, provider in reporters.items():
        if isinstance(provider, str) and provider not in providers:
            yield (f"feedback.complaints.reporters.{domain}", unknown_provider(provider))


def _endpoint_name_errors(endpoints: Mapping[str, Any]) -> Iterator[ConfigError]:
    """Names that would replace a Postfix service, or share an Exim transport, once rendered."""
    exim: dict[str, str] = {}
    for name in endpoints:
        if not isinstance(name, str):
            continue
        path = f"endpoints.{name}"
        if name in POSTFIX_SERVICES:
            yield (
                path,
                f"{name!r} is a Postfix service name: its master.cf line would replace Postfix's own"
                f" {name!r} service; rename the endpoint (for example {name + '-out'!r})",
            )
        transport = exim_transport_name(name)
        if transport == EXIM_GENERIC_TRANSPORT:
            yield (path, f"{name!r} renders as Exim transport {transport}, which render exim uses itself")
        elif transport in exim:
            yield (
                path,
                f"endpoints {exim[transport]!r} and {name!r} both render as Exim transport {transport}"
                " (hyphens become underscores); rename one",
            )
        exim.setdefault(transport, name)


def _address_errors(endpoints: Mapping[str, Any]) -> Iterator[ConfigError]:
    """One source address, one endpoint: warm-up caps, suspensions and reputation are the
    address's, so two endpoints sharing it would each get the full share."""
    owner: dict[str, str] = {}
    for name, endpoint in endpoints.items():
        for key in ("bind_address", "bind_address6"):
            value = _mapping(endpoint).get(key)
            if not isinstance(value, str):
                continue
            try:
                address = str(ipaddress.ip_address(value))
            except ValueError:
                continue  # the field check reports it
            if address in owner:
                yield (
                    f"endpoints.{name}.{key}",
                    f"{address} is already endpoint {owner[address]!r}'s address: one address, one endpoint",
                )
            else:
                owner[address] = name


def _unreachable_rules(rules: list[Any], reordered: set[Any]) -> Iterator[ConfigError]:
    """A rule after a catch-all (a rule without conditions) can never match: first match
    wins. An experiment arm's rule_order may put it first, so those rules are spared."""
    for i, rule in enumerate(rules):
        conditions = {k: v for k, v in _mapping(rule).items() if k not in ("name", "pool")}
        if not any(v not in (None, [], {}) for v in conditions.values()):
            for j in range(i + 1, len(rules)):
                later = _mapping(rules[j]).get("name", f"rules[{j}]")
                if later in reordered:
                    continue
                yield (
                    f"rules[{j}]",
                    f"rule {later!r} can never match: rule {_mapping(rule).get('name')!r} (rules[{i}]) has"
                    " no conditions and matches every message first; move it last",
                )
            return


def _overflow_cycles(pools: Mapping[str, Any]) -> Iterator[ConfigError]:
    for start in pools:
        seen = [start]
        current = start
        while True:
            overflow = _mapping(pools.get(current)).get("overflow")
            if not (isinstance(overflow, str) and overflow.startswith("pool:")):
                break
            current = overflow.removeprefix("pool:")
            if current not in pools:
                break
            if current in seen:
                if current == start:
                    chain = " -> ".join([*seen, current])
                    yield (f"pools.{start}.overflow", f"overflow loops back: {chain}")
                break
            seen.append(current)
