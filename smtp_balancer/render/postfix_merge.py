"""`render postfix --postconf`: the rendered config as postconf(1) commands that keep
the operator's own settings.

``render postfix --part main`` prints whole parameters. Pasted into a main.cf that
already sets ``smtpd_recipient_restrictions`` or ``transport_maps``, they replace the
operator's restrictions and maps. Here each list parameter is merged instead: our
item goes first or last in the list the running Postfix has (``postconf -h``), and
an item of ours from an earlier run is taken out first, so the script can run again.
Pure functions: the current values come in, shell text goes out.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.render.postfix import (
    HEADER,
    QMGR_REWRITE,
    REWRITE_NOMAP,
    maps_dir,
    master_entries,
    milter_item,
    notice_options,
    policy_service,
    policy_target,
    table_map,
)


@dataclass(frozen=True)
class Setting:
    """One main.cf parameter: ``ours`` goes first or last in the operator's list, or
    replaces the value (set). ``mark``: what an item of ours contains, to find an
    earlier run's."""

    param: str
    ours: str
    merge: Literal["first", "last", "set"]
    mark: str


def main_settings(config: BalancerConfig) -> list[Setting]:
    """The main.cf parameters ``main_cf`` renders, as merges into an existing config."""
    # short queue IDs are reused: decisions and outcomes are tied together by queue ID
    out = [Setting("enable_long_queue_ids", "yes", "set", "yes")]
    if config.policyd.enabled:
        policy, target = policy_service(config), policy_target(config)
        if config.policyd.collect_recipients:
            # first: a check after permit_mynetworks is never reached for mynetworks clients
            out.append(Setting("smtpd_recipient_restrictions", policy, "first", target))
        # last: a message your own checks reject spends no warm-up quota
        out.append(Setting("smtpd_end_of_data_restrictions", policy, "last", target))
    if config.milter.enabled:
        milter, maps = milter_item(config), maps_dir(config)
        if config.milter_decides_smtpd:
            out.append(Setting("smtpd_milters", milter, "last", config.milter.listen))
        out.append(Setting("non_smtpd_milters", milter, "last", config.milter.listen))
        for name in ("milter_header_checks", "header_checks"):
            ours = f"regexp:{maps}/{name}"
            out.append(Setting(name, ours, "first", ours))
    if config.requeue.enabled:
        # the rewrite-nomap service (master.cf) must exist before this points at it
        out.append(Setting("rewrite_service_name", REWRITE_NOMAP, "set", REWRITE_NOMAP))
        out.append(Setting("transport_maps", table_map(config), "first", table_map(config)))
    return out


def split_list(value: str) -> list[str]:
    """A Postfix list value's items: separated by commas or white space, except inside
    ``{ ... }`` (a policy service's or milter's own settings)."""
    items, current, depth = [], "", 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        if depth == 0 and (ch == "," or ch.isspace()):
            if current:
                items.append(current)
            current = ""
            continue
        current += ch
    if current:
        items.append(current)
    return items


def without_ours(value: str, mark: str) -> list[str]:
    """The operator's items: ``value`` less every item of ours (``mark`` inside it),
    with the ``check_policy_service`` word in front of a policy item of ours."""
    items = split_list(value)
    kept: list[str] = []
    for item in items:
        if mark in item:
            if kept and kept[-1] == "check_policy_service":
                kept.pop()
            continue
        kept.append(item)
    return kept


def merged(setting: Setting, current: str) -> str:
    if setting.merge == "set":
        return setting.ours
    theirs = without_ours(current, setting.mark)
    items = [setting.ours, *theirs] if setting.merge == "first" else [*theirs, setting.ours]
    return ", ".join(items)


def postconf_script(
    config: BalancerConfig,
    current: Mapping[str, str],
    config_dir: str,
    source: str = "the smtp-balancer config",
) -> str:
    """Shell commands that apply the rendered config to the Postfix in ``config_dir``,
    whose current main.cf values are ``current`` (``postconf -h``, unexpanded)."""
    postconf = f"postconf -c {shlex.quote(config_dir)}"
    theirs_maps = ", ".join(without_ours(current.get("transport_maps", ""), table_map(config)))
    lines = [
        "#!/bin/sh",
        HEADER.format(source=source),
        f"# Against {config_dir} as it was when rendered: render again after changing it by hand.",
        "# Each list keeps your own items; running this again changes nothing.",
        "set -e",
        "# master.cf: one service per endpoint, and the services those need (postconf -M",
        "# replaces an entry of the same name whole, options included)",
    ]
    # rewrite-nomap keeps the operator's transport_maps for smtpd and the rest
    entries = master_entries(config, theirs_maps if config.requeue.enabled else None)
    for entry in entries:
        key = f"{entry.service}/unix"
        lines.append(f"{postconf} -M {shlex.quote(f'{key}={entry.service} {entry.fields}')}")
        for name, value in entry.options:
            lines.append(f"{postconf} -P {shlex.quote(f'{key}/{name}={value}')}")
    services = {e.service for e in entries}
    if "sb-notice-cleanup" in services:
        lines.append("# Postfix's notices (bounces, delay notices, traces) through the notice cleanup")
        lines += [f"{postconf} -P {shlex.quote(f'{s}/{n}={v}')}" for s, n, v in notice_options()]
    lines.append("# main.cf: our item first or last in each list you have")
    for setting in main_settings(config):
        value = merged(setting, current.get(setting.param, ""))
        lines.append(f"{postconf} -e {shlex.quote(f'{setting.param} = {value}')}")
    if config.requeue.enabled:
        # after rewrite_service_name: qmgr alone goes back to `rewrite`, with the table
        service, name, value = QMGR_REWRITE
        lines.append("# qmgr alone resolves with the table")
        lines.append(f"{postconf} -P {shlex.quote(f'{service}/{name}={value}')}")
    return "\n".join(lines) + "\n"


def clashes(config: BalancerConfig, services: set[str], options: Mapping[str, str]) -> list[str]:
    """master.cf services of the operator's that ours would replace (``postconf -M``
    replaces an entry whole): an entry of ours carries its own syslog_name."""
    out = []
    for entry in master_entries(config):
        key = f"{entry.service}/unix"
        ours = dict(entry.options).get("syslog_name")
        if key in services and options.get(f"{key}/syslog_name") != ours:
            out.append(
                f"master.cf already has a service {entry.service!r} that render did not write:"
                f" rename the endpoint, or that service, before applying"
            )
    return out


def params_read(config: BalancerConfig) -> list[str]:
    """The main.cf parameters whose current value the script merges with."""
    return [s.param for s in main_settings(config) if s.merge != "set"]
