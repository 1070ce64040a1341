"""The ``smtp-balancer`` command: parse, run, and turn each kind of failure into its exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from smtp_balancer.cli.common import EXIT_CONFIG, EXIT_LISTEN, EXIT_POSTFIX, EXIT_REDIS, EXIT_USAGE
from smtp_balancer.cli.parser import build_parser
from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config import ConfigInvalid, load_config
from smtp_balancer.observe import logs


def main(argv: Sequence[str] | None = None, clock: Clock = SYSTEM) -> int:
    """``clock`` is for tests: warm-up ages and counter buckets derive from it."""
    logs.configure("logfmt", logging.WARNING)
    args = build_parser().parse_args(argv)
    args.clock = clock
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `status | head`: the reader is gone; say nothing more, also not at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigInvalid as exc:
        print(f"smtp-balancer: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        code = exit_code(exc, args)
        if code is None:
            raise
        return code


def raised(exc: BaseException, module: str, name: str) -> bool:
    """Whether ``exc`` is a ``module.name``. A module never imported cannot have raised
    it, so none is imported here: each command loads only what it uses (``render``
    neither Redis's client nor Prometheus's)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def exit_code(exc: Exception, args: argparse.Namespace) -> int | None:
    """Print what went wrong in one line and give the exit code; None: not ours to catch."""
    if (
        raised(exc, "smtp_balancer.state.admin", "AdminError")
        or isinstance(exc, ValueError)
        or raised(exc, "smtp_balancer.experiments.stats", "StatsUnavailable")
    ):
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if raised(exc, "smtp_balancer.observe.metrics", "ListenError"):
        for handler in logging.root.handlers:  # buffered log lines first: the cause comes last
            handler.flush()
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    if raised(exc, "smtp_balancer.postconf", "PostconfError"):
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_POSTFIX
    if raised(exc, "smtp_balancer.state.client", "RedisSetupError"):
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_REDIS
    if raised(exc, "redis.exceptions", "RedisError"):
        from redis import ConnectionError as RedisConnectionError

        from smtp_balancer.state.client import describe, tls_hint

        redis_cfg = load_config(args.config).redis if Path(args.config).exists() else None
        where = describe(redis_cfg) if redis_cfg else "?"
        hint = tls_hint(redis_cfg) if redis_cfg and isinstance(exc, RedisConnectionError) else ""
        print(f"smtp-balancer: Redis at {where}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_REDIS
    return None


if __name__ == "__main__":
    sys.exit(main())
