"""The ``smtp-balancer`` command: parse, run, and turn each kind of failure into its exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

from smtp_balancer import postconf
from smtp_balancer.cli.common import EXIT_CONFIG, EXIT_LISTEN, EXIT_POSTFIX, EXIT_REDIS, EXIT_USAGE
from smtp_balancer.cli.parser import build_parser
from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config import ConfigInvalid, load_config
from smtp_balancer.experiments.stats import StatsUnavailable
from smtp_balancer.observe import logs
from smtp_balancer.observe.metrics import ListenError
from smtp_balancer.state.admin import AdminError
from smtp_balancer.state.client import RedisSetupError, describe, tls_hint


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
    except (AdminError, ValueError, StatsUnavailable) as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as exc:
        for handler in logging.root.handlers:  # buffered log lines first: the cause comes last
            handler.flush()
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    except postconf.PostconfError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_POSTFIX
    except RedisSetupError as exc:
        print(f"smtp-balancer: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except redis.RedisError as exc:
        redis_cfg = load_config(args.config).redis if Path(args.config).exists() else None
        where = describe(redis_cfg) if redis_cfg else "?"
        hint = tls_hint(redis_cfg) if redis_cfg and isinstance(exc, redis.ConnectionError) else ""
        print(f"smtp-balancer: Redis at {where}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_REDIS


if __name__ == "__main__":
    sys.exit(main())
