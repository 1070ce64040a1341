"""What every command shares: exit codes, the config, the Redis-backed admin and status readers."""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING

from smtp_balancer.config import BalancerConfig, load_config
from smtp_balancer.config.endpoints import same_host

if TYPE_CHECKING:
    from smtp_balancer.observe.status import StatusReader
    from smtp_balancer.state.admin import StateAdmin

EXIT_CONFIG = 2
EXIT_REDIS = 3
EXIT_USAGE = 4
EXIT_LISTEN = 5
EXIT_POSTFIX = 6  # postconf could not read the Postfix configuration

DRAINED = "drained by operator"  # a drain's reason when none is given


def package_version() -> str:
    try:
        return metadata.version("smtp-balancer")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def config_of(args: argparse.Namespace) -> BalancerConfig:
    return load_config(args.config)


def admin_of(args: argparse.Namespace) -> StateAdmin:
    # imported here, as in status_of and selected: a command that needs no Redis
    # (render, say) starts without loading Redis's client, half of a start's time
    from smtp_balancer.state.admin import StateAdmin
    from smtp_balancer.state.client import sync_client

    config = config_of(args)
    return StateAdmin(sync_client(config.redis), config, args.clock)


def status_of(admin: StateAdmin) -> StatusReader:
    from smtp_balancer.observe.status import StatusReader

    return StatusReader(admin.r, admin.config, admin.clock)


def selected(args: argparse.Namespace, config: BalancerConfig, provider_slot: bool = False) -> list[str]:
    """The endpoints a write applies to: the one named, or those --pool, --host, --tag
    and --all select (all of them together). ``provider_slot``: with a selector, the
    first word is the provider (``suspend --pool bulk google``)."""
    from smtp_balancer.state.admin import AdminError

    chosen = {"pool": args.pool, "host": args.host, "tag": args.tag}
    if not any(chosen.values()) and not args.all:
        if args.endpoint is None:
            raise AdminError("name an endpoint, or select some with --pool, --host, --tag or --all")
        return [args.endpoint]
    if args.endpoint is not None:
        if not provider_slot or args.provider_arg is not None:
            raise AdminError(f"{args.endpoint!r}: name an endpoint or select some, not both")
        args.provider_arg, args.endpoint = args.endpoint, None
    names = list(config.endpoints)
    if args.pool:
        if args.pool not in config.pools:
            raise AdminError(f"unknown pool {args.pool!r} (known: {', '.join(sorted(config.pools))})")
        members = {m.endpoint for m in config.pools[args.pool].endpoints}
        names = [n for n in names if n in members]
    if args.host:
        names = [n for n in names if (h := config.endpoints[n].host) and same_host(h, args.host)]
    if args.tag:
        names = [n for n in names if args.tag in config.endpoints[n].tags]
    if not names:
        tags = sorted({t for ep in config.endpoints.values() for t in ep.tags})
        picked = ", ".join(f"--{k} {v}" for k, v in chosen.items() if v)
        raise AdminError(
            f"no endpoint is selected by {picked or '--all'} (tags in the YAML: {', '.join(tags) or 'none'})"
        )
    return names


def log_lines(paths: list[str]) -> Iterator[str]:
    """Each log's lines: plain or gzipped files, or ``-`` for standard input."""
    for path in paths:
        if path == "-":
            yield from io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
            continue
        try:
            with open(path, "rb") as probe:
                gzipped = probe.read(2) == b"\x1f\x8b"
            opener = gzip.open if gzipped else open
            with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                yield from f
        except (OSError, EOFError, zlib.error) as exc:  # a gzip file cut short or corrupt
            why = getattr(exc, "strerror", None) or exc
            raise ValueError(f"cannot read log {path}: {why}") from exc
