"""``smtp-balancer tenant hold|release|list``: a tenant's new mail held in Postfix's
hold queue (the policy daemon answers HOLD) or frozen in Exim's queue (the rendered
ACL freezes it), and let go again."""

from __future__ import annotations

import argparse
import sys

from smtp_balancer.cli.common import config_of
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.durations import format_duration, parse_duration
from smtp_balancer.requeue.exim_queue import EximQueue, EximQueueError, default_binary
from smtp_balancer.requeue.postfix_queue import PostfixQueue, PostfixQueueError
from smtp_balancer.state.audit import AuditTrail
from smtp_balancer.state.client import sync_client
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.tenant_holds import TenantHolds


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    client = sync_client(config.redis)
    keys = KeySchema(config.redis.prefix)
    holds = TenantHolds(client, keys, AuditTrail(client, keys, args.clock))
    if args.action == "list":
        held, moved = holds.holds(), holds.moves()
        if not held and not moved:
            print("no tenant is held or moved")
        for tenant, (left, reason) in sorted(held.items()):
            print(f"{tenant:30} {format_duration(left) if left >= 0 else 'no end':>10}  held: {reason}")
        for tenant, (left, pool, reason) in sorted(moved.items()):
            print(
                f"{tenant:30} {format_duration(left) if left >= 0 else 'no end':>10}  pool {pool}: {reason}"
            )
        return 0
    if not args.tenant:
        raise ValueError(f"tenant {args.action} needs the tenant: tenant {args.action} TENANT")
    tenant = args.tenant.lower().rstrip(".")
    if tenant not in config.tenants:
        raise ValueError(
            f"{tenant} is not one of the configured tenants ({', '.join(config.tenants) or 'none'})"
        )
    if args.action == "hold":
        seconds = parse_duration(args.for_)
        placed = holds.hold(tenant, seconds, args.reason or "held by hand", "cli")
        print(
            f"tenant {tenant} held for {format_duration(seconds)}"
            if placed
            else f"tenant {tenant} is held already"
        )
        return 0
    if args.action == "move":
        if args.pool not in config.pools:
            raise ValueError(f"tenant move needs --pool, one of the pools ({', '.join(config.pools)})")
        seconds = parse_duration(args.for_)
        placed = holds.move(tenant, args.pool, seconds, args.reason or "moved by hand", "cli")
        print(
            f"tenant {tenant} moved to pool {args.pool} for {format_duration(seconds)}"
            if placed
            else f"tenant {tenant} is moved already (tenant release, then move it again)"
        )
        return 0
    released = holds.release(tenant)
    print(f"tenant {tenant} released" if released else f"tenant {tenant} was not held or moved")
    table = TenantTable(config.tenants)
    if args.exim or args.exim_config or config.feedback.log_format == "exim":
        return _thaw(EximQueue(args.exim or default_binary(), args.exim_config), table, tenant)
    try:
        queue = PostfixQueue(args.postfix_dir or config.requeue.postfix_config_dir)
        theirs = [queue_id for queue_id, sender in queue.held() if table.of(sender) == tenant]
        freed = queue.release(theirs)
    except PostfixQueueError as exc:
        print(f"smtp-balancer: the hold queue was not released: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(freed)} held message{'s' if len(freed) != 1 else ''} of {tenant} released from the hold queue"
    )
    return 0


def _thaw(queue: EximQueue, table: TenantTable, tenant: str) -> int:
    """Exim: the tenant's frozen messages are thawed; they leave at the next queue run."""
    try:
        theirs = [message_id for message_id, sender in queue.frozen() if table.of(sender) == tenant]
        thawed = queue.thaw(theirs)
    except EximQueueError as exc:
        print(f"smtp-balancer: Exim's frozen messages were not thawed: {exc}", file=sys.stderr)
        return 1
    n = len(thawed)
    print(
        f"{n} frozen message{'s' if n != 1 else ''} of {tenant} thawed (they leave at Exim's next queue run)"
    )
    return 0
