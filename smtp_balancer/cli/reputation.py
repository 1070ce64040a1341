"""``smtp-balancer reputation import|show``: the providers' exports in, what they say
of each endpoint out (``smtp_balancer/reputation``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from smtp_balancer.cli.common import config_of
from smtp_balancer.reputation.importer import import_files
from smtp_balancer.state.client import sync_client
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import ReputationStore


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    client = sync_client(config.redis)
    if args.action == "show":
        return _show(ReputationStore(client, KeySchema(config.redis.prefix), 1), args.json)
    if not args.files:
        print("smtp-balancer: reputation import needs one or more export files", file=sys.stderr)
        return 2
    today = datetime.fromtimestamp(args.clock.wall(), UTC).date()
    result = import_files([Path(f) for f in args.files], args.format, config, client, today)
    report = {
        "files": len(args.files),
        "kinds": dict(result.kinds),
        "observations": result.observations,
        "records": result.records,
        "changed": result.changed,
        "too_old_to_act": result.stale,
        "not_used": dict(result.skipped.reasons),
        "actions": result.actions,
        "errors": result.errors,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{result.observations} observations, {result.records} records,"
            f" {result.changed} changed ({result.stale} too old to act)"
        )
        for why, n in sorted(result.skipped.reasons.items()):
            print(f"  {n} not used: {why}")
        for a in result.actions:
            scope = f"tenant {a['tenant']}" if "tenant" in a else f"{a['endpoint']}, {a['provider']}"
            print(f"{a['outcome']}: {a['action']} ({scope}): {a['reason']}")
    for error in result.errors:
        print(f"smtp-balancer: cannot import {error}", file=sys.stderr)
    return 1 if result.errors else 0


def _show(store: ReputationStore, as_json: bool) -> int:
    records = store.endpoint_records()
    if as_json:
        out = [
            {"endpoint": e, "provider": p, "records": fields} for (e, p), fields in sorted(records.items())
        ]
        print(json.dumps(out, indent=2))
        return 0
    if not records:
        print("no reputation records (smtp-balancer reputation import FILE...)")
    for (endpoint, provider), fields in sorted(records.items()):
        for name, text in sorted(fields.items()):
            print(f"{endpoint:14} {provider:10} {name:40} {text}")
    return 0
