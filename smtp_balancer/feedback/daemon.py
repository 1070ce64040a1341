"""Run the feedback daemon: ``smtp-balancer feedback -c /etc/smtp-balancer/config.yaml``.

One thread follows the log and applies each batch to Redis; another runs the
DNSBL checks and relay probes. Redis trouble stops the log at its position
(nothing is lost or counted twice) and the batch is retried.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import redis
from redis.client import Pipeline

from smtp_balancer.clock import utc_now
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.feedback import metrics
from smtp_balancer.feedback.adaptive_store import AdaptiveRounds, AdaptiveStore
from smtp_balancer.feedback.arms import ArmAttribution
from smtp_balancer.feedback.checks import HealthChecks
from smtp_balancer.feedback.classify import BounceClassifier
from smtp_balancer.feedback.exporter import StateExporter
from smtp_balancer.feedback.follower import LogFollower, Position
from smtp_balancer.feedback.instance import dead_here, this_process
from smtp_balancer.feedback.processor import Processor
from smtp_balancer.feedback.reporting import BatchReport, count_arm_outcomes
from smtp_balancer.feedback.responses import ResponseMatcher, applied_rules
from smtp_balancer.feedback.warmup_store import WarmupRecords
from smtp_balancer.observe.metrics import serve_metrics
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.observe.sdnotify import Notifier
from smtp_balancer.observe.stalls import StallWatch
from smtp_balancer.render.exim import transport_names
from smtp_balancer.state.client import describe, sync_client
from smtp_balancer.state.feedback_store import FeedbackStore, OwnerChanged
from smtp_balancer.state.instance_owner import InstanceOwner, Ownership
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.rates import RateResult, evaluate_rates

log = logging.getLogger("smtp_balancer.feedback")
RETRY_S = 1.0
COMPLAINT_RULES_EVERY_S = 60.0
WARMUP_DAYS_EVERY_S = 60.0  # managed warm-ups move to the new UTC day within a minute
POSITION_CHECK_S = 5.0  # while the log is quiet: how often the saved position is compared with ours
# one daemon per feedback.instance: the owner key's lease, and how often it is renewed (the
# margin covers a slow batch); a crashed daemon's successor on the same host does not wait it out
OWNER_LEASE_S = 30.0
OWNER_RENEW_S = 5.0


class InstanceTaken(Exception):
    """Another feedback daemon holds this one's instance now: stop reading, wait."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class FeedbackDaemon:
    def __init__(self, config: BalancerConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        fb = config.feedback
        self.stop = stop or threading.Event()
        self.instance = fb.instance or socket.gethostname()
        self.r = sync_client(config.redis)
        self.endpoints = set(config.endpoints)
        rules = applied_rules(fb)
        exim = transport_names(config) if fb.log_format == "exim" else None
        self.processor = Processor(
            ProviderTable.from_config(config),
            ResponseMatcher(rules),
            self.endpoints,
            exim,
            BounceClassifier.from_config(fb),
            TenantTable(config.tenants),
        )
        self.store = FeedbackStore(self.r, KeySchema(config.redis.prefix), self.instance, fb.rate_retention)
        self.holder = this_process()
        self.owner = InstanceOwner(
            self.r, self.store.keys, self.instance, self.holder, int(OWNER_LEASE_S * 1000)
        )
        self._owner_due = 0.0
        self.follower: LogFollower | None = None
        self._rotated_batches = 0
        # a log full of garbage must not flood our own log: a few lines a minute, then a count
        self.notes = LogLimiter(log)
        self.report = BatchReport(self.endpoints, self.notes)
        self.where = describe(config.redis)
        self.notifier = Notifier()
        self._next_ping = 0.0
        # complaint rules read a day of minute buckets per pair: at most once a minute here
        # (`fbl` runs them at once for each complaint; this run re-arms them)
        self.complaint_rules = fb.complaint_rules
        self.per_batch_rules = [r for r in fb.rate_rules if r not in self.complaint_rules]
        self._complaint_pairs: set[tuple[str, str]] = set()
        self._complaints_due = 0.0
        self.warmup = WarmupRecords(self.r, config)
        self.arms = (
            ArmAttribution(self.r, self.store.keys, self.endpoints, config.experiment_arms)
            if config.experiments
            else None
        )
        self._warmup_due = 0.0
        self._position_due = 0.0
        self._told_unwatched = False  # the ACL user may not WATCH: said once
        adaptive = config.adaptive_endpoints
        self.adaptive = (
            AdaptiveRounds(AdaptiveStore(self.r, self.store.keys, config.adaptive), adaptive)
            if adaptive
            else None
        )

    def complaint_rates(self, pairs: set[tuple[str, str]]) -> list[RateResult]:
        if not self.complaint_rules:
            return []
        self._complaint_pairs |= pairs
        if time.monotonic() < self._complaints_due or not self._complaint_pairs:
            return []
        rates = evaluate_rates(self.store.r, self.store.keys, self.complaint_rules, self._complaint_pairs)
        self._complaint_pairs = set()
        self._complaints_due = time.monotonic() + COMPLAINT_RULES_EVERY_S
        return rates

    # -- start ---------------------------------------------------------------------
    def load_position(self) -> Position | None:
        """The saved position; a junk value is reported by ValueError."""
        raw = self.store.load_position()
        return None if raw is None else Position.decode(raw)

    def saved_position(self) -> Position | None:
        while not self.stop.is_set():
            try:
                return self.load_position()
            except ValueError as exc:
                log.error(
                    "saved log position is unreadable (%s); starting at the %s",
                    exc,
                    self.config.feedback.start_at,
                )
                return None
            except redis.RedisError as exc:
                self.notes.emit(
                    logging.ERROR,
                    "redis error",
                    "Redis at %s: %s; waiting to read the saved log position",
                    self.where,
                    exc,
                )
                self.alive()
                self.stop.wait(RETRY_S)
        return None

    def open_log(self) -> LogFollower:
        fb = self.config.feedback
        position = self.saved_position()
        follower = LogFollower(fb.log_file, position, fb.start_at)
        where = f"offset {position.offset}" if position else f"the {fb.start_at}"
        log.info("following %s from %s (instance %s)", fb.log_file, where, self.instance)
        return follower

    # -- one daemon per instance ----------------------------------------------------------
    def claim_instance(self) -> Ownership:
        """Claim or renew this daemon's instance; a holder that is a dead process on this
        host (the daemon this one restarts) is replaced at once."""
        got = self.owner.claim()
        if got.outcome == "held" and dead_here(got.found, self.holder):
            got = self.owner.claim(stale=got.found)
            if got.ours:
                log.info(
                    "feedback instance %r was held by %s, which no longer runs; taken over",
                    self.instance,
                    got.found,
                )
        elif got.outcome == "replaced":
            log.warning(
                "feedback instance %r: replaced %r at %s, which no feedback daemon wrote (a daemon's"
                " value is a string with a TTL)",
                self.instance,
                got.found,
                self.owner.key,
            )
        if got.ours:
            self._owner_due = time.monotonic() + OWNER_RENEW_S
        return got

    def take_instance(self) -> bool:
        """Wait until this daemon holds its instance; False when told to stop first."""
        waited = False
        while not self.stop.is_set():
            try:
                got = self.claim_instance()
            except redis.RedisError as exc:
                metrics.REDIS_ERRORS.inc()
                self.notes.emit(
                    logging.ERROR,
                    "redis error",
                    "Redis at %s: %s; waiting to claim feedback instance %r",
                    self.where,
                    exc,
                    self.instance,
                )
            else:
                if got.ours:
                    if waited:
                        log.info("feedback instance %r is this daemon's now", self.instance)
                    metrics.INSTANCE_WAITING.set(0)
                    return True
                waited = True
                self.notes.emit(
                    logging.ERROR,
                    "instance held",
                    "feedback instance %r is held by another feedback daemon (%s; its lease runs out in"
                    " %.0f s unless renewed): waiting, reading no log. Each feedback daemon needs its"
                    " own feedback.instance (the default is the host name)",
                    self.instance,
                    got.found,
                    got.ttl_ms / 1000,
                )
                metrics.INSTANCE_WAITING.set(1)  # after the line, which says why
            self.alive()
            self.stop.wait(RETRY_S)
        return False

    def keep_instance(self) -> None:
        """Renew the instance every OWNER_RENEW_S. InstanceTaken: another daemon holds it
        now (this one's lease ran out while Redis was away, or a failover lost the key)."""
        if time.monotonic() < self._owner_due:
            return
        try:
            got = self.claim_instance()
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            log.debug("feedback instance not renewed: %s", exc)
            return  # the batches wait for Redis too; the next renewal tells
        if not got.ours:
            raise InstanceTaken(got.found)

    def stand_down(self, taken: InstanceTaken) -> None:
        log.error(
            "feedback instance %r is held by another feedback daemon now (%s): this one stops"
            " reading the log and waits. Each feedback daemon needs its own feedback.instance",
            self.instance,
            taken.holder,
        )
        metrics.INSTANCE_WAITING.set(1)

    def release_instance(self) -> None:
        try:
            self.owner.release()
        except redis.RedisError as exc:  # the lease runs out by itself
            log.debug("feedback instance not released: %s", exc)

    # -- the loop ---------------------------------------------------------------------
    def step(self) -> int:
        """Read and apply one batch; returns the number of lines read (0: idle)."""
        assert self.follower is not None
        before = self.follower.position
        lines = self.follower.read_lines(self.config.feedback.batch_lines)
        self.report_notes()
        self.notes.flush()
        self.adaptive_round()
        self.warmup_round()
        if not lines:
            self.late_arms()
            self.quiet_position_check()
            return 0
        uid = f"{self.instance}:{before.inode}:{before.offset}"
        if self.follower.reading_rotated:
            # a rotated file's lines do not move the saved position: number its batches
            self._rotated_batches += 1
            uid += f"+r{self._rotated_batches}"
        batch = self.processor.process(lines, uid)
        failed = False
        while True:
            try:
                # at every attempt, the first too: the warm-up, adaptive and arm rounds use
                # this client as well, and whichever command first met a failed-over master
                # reconnected it, so this batch's own attempt may see no error at all
                # the owner key is watched from its check to the EXEC: a daemon that claims
                # the instance in between counts this batch itself, and this EXEC does nothing
                with self.store.watching_owner() as watched:
                    if watched is None and not self._told_unwatched:
                        self._told_unwatched = True
                        log.warning(
                            "Redis at %s refused WATCH to this daemon's user: log batches are applied"
                            " without checking at EXEC that no other daemon claimed instance %r"
                            " meanwhile. Add +watch +unwatch to its ACL user (Security: Redis ACL"
                            " users)",
                            self.where,
                            self.instance,
                        )
                    if self.lost_batches(before, watched):
                        return 0  # this batch is read again with the lost ones
                    if failed and self.store.applied(batch):
                        # the failed attempt's transaction ran, and only its reply was lost
                        # (the master failed over, say): applied again it would count twice.
                        # Its rule hits took effect in Redis; what each did was in the lost reply
                        results = []
                        log.warning(
                            "batch %s was applied before Redis dropped the connection; not applied"
                            " again (%d response-rule matches took effect, their results are"
                            " unknown: see `smtp-balancer status`)",
                            batch.uid,
                            len(batch.hits),
                        )
                        break
                    if self.arms is not None:
                        # looked up before the batch's transaction, added inside it: exactly once
                        batch.arm_records = self.arms.inherit(batch.requeued)
                        batch.arm_outcomes = self.arms.collect(batch.deliveries, batch.arm_records)
                    results = self.store.apply(batch, self.follower.position.encode(), watched)
                break
            except OwnerChanged:
                # another daemon claimed the instance (the next attempt's owner check finds
                # it), or the connection broke while watched, after which the EXEC may have
                # run: the next attempt checks the batch's mark, as after any failure
                failed = True
                continue
            except redis.RedisError as exc:
                metrics.REDIS_ERRORS.inc()
                failed = True
                # once a second while Redis is away: a few lines a minute, then a count
                self.notes.emit(
                    logging.ERROR, "redis error", "Redis at %s: %s; retrying the batch", self.where, exc
                )
                self.alive()  # waiting on Redis is not frozen: a restart would not help
                if self.stop.wait(RETRY_S):
                    raise SystemExit(0) from exc
        # rates are re-evaluated with every batch that touches a pair: a failure here
        # is logged, never retried (the batch itself is applied, and must not be twice)
        try:
            rates = evaluate_rates(self.store.r, self.store.keys, self.per_batch_rules, batch.pairs)
            rates += self.complaint_rates(batch.pairs)
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            log.error("Redis at %s: %s; rate rules skipped for this batch", self.where, exc)
            rates = []
        self.report.batch(batch, results, rates)
        if self.adaptive is not None:
            self.adaptive.note(batch.pairs)
        return len(lines)

    def quiet_position_check(self) -> None:
        """While the log is quiet, every POSITION_CHECK_S: batches a failover lost just
        before the log went quiet would otherwise wait for the next line to be noticed."""
        if time.monotonic() < self._position_due:
            return
        self._position_due = time.monotonic() + POSITION_CHECK_S
        assert self.follower is not None
        try:
            self.lost_batches(self.follower.position)
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            log.debug("saved log position not compared: %s", exc)

    def lost_batches(self, before: Position, watched: Pipeline | None = None) -> bool:
        """Did Redis lose batches it had applied (a failover to a replica that had not
        received them)? The saved position, which moves in the same transaction as
        each batch's counts, is then behind the one this batch starts at. The
        follower goes back to it, so those lines are read and counted again: outcome
        counts stay exactly once. A rotated file's lines cannot be read again.
        InstanceTaken: another daemon holds this one's instance now."""
        raw, owner = self.store.load_position_and_owner(watched)  # RedisError: the caller retries
        if owner is not None and owner != self.holder:
            # checked with every batch, in the same round trip: a daemon that lost its
            # lease applies no batch once another holds the instance
            raise InstanceTaken(owner)
        try:
            saved = None if raw is None else Position.decode(raw)
        except ValueError:  # a junk position: nothing to compare with
            return False
        assert self.follower is not None
        if (
            saved is None
            or self.follower.reading_rotated
            or saved.inode != before.inode
            or saved.offset >= before.offset
        ):
            return False
        log.warning(
            "Redis at %s lost %d bytes of applied log batches (a failover before they reached"
            " the replica); reading them again from offset %d",
            self.where,
            before.offset - saved.offset,
            saved.offset,
        )
        metrics.REREAD_BYTES.inc(before.offset - saved.offset)
        self.follower.close()
        self.follower = LogFollower(self.config.feedback.log_file, saved, self.config.feedback.start_at)
        return True

    def late_arms(self) -> None:
        """While idle: outcomes whose arm record appeared after their batch was applied,
        and moved messages whose old id's record appeared after the move."""
        if self.arms is None or not (self.arms.pending or self.arms.pending_moves):
            return
        try:
            records = self.arms.inherit([])
            late = self.arms.collect((), records)
            self.store.add_arm_outcomes(late, records)
            count_arm_outcomes(late)
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            log.debug("arm outcomes not written: %s", exc)

    def warmup_round(self) -> None:
        """Judge managed warm-ups' days, at most once a minute, busy or idle."""
        if not self.warmup.managed or time.monotonic() < self._warmup_due:
            return
        self._warmup_due = time.monotonic() + WARMUP_DAYS_EVERY_S
        try:
            judged = self.warmup.judge_days(utc_now().date())
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            self._warmup_due = 0.0  # again at the next step
            self.notes.emit(
                logging.ERROR, "redis error", "Redis at %s: %s; warm-up days not judged", self.where, exc
            )
            return
        for j in judged:
            level = logging.INFO if j.why.startswith(("advanced", "step 1", "warm")) else logging.WARNING
            log.log(level, "warm-up of %s: step %d, %s", j.endpoint, j.step, j.why)

    def adaptive_round(self) -> None:
        """Recompute adaptive factors every adaptive.interval, busy or idle."""
        if self.adaptive is None:
            return
        try:
            self.adaptive.maybe_run()
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            self.notes.emit(
                logging.ERROR, "redis error", "Redis at %s: %s; adaptive factors not updated", self.where, exc
            )

    def report_notes(self) -> None:
        assert self.follower is not None
        for note in self.follower.notes:
            if note.event == "waiting":
                log.info("%s", note.text)
                continue
            log.warning("%s", note.text)
            metrics.LOG_EVENTS.labels(note.event).inc()
        self.follower.notes.clear()

    def alive(self) -> None:
        """WATCHDOG=1 at most twice per systemd's interval, from the working loop."""
        interval = self.notifier.interval_s
        if interval is not None and (now := time.monotonic()) >= self._next_ping:
            self.notifier.ping()
            self._next_ping = now + interval

    def run(self) -> None:
        # ready before Redis answers: waiting for it is this daemon's normal work
        self.notifier.ready("following the MTA log")
        checks = HealthChecks(self.config, self.r, self.stop)
        exporter = StateExporter(self.config, self.r)
        checker = threading.Thread(
            target=checks.run, args=(exporter.round,), name="health-checks", daemon=True
        )
        checker.start()
        watch = StallWatch("feedback daemon").watch_thread
        threading.Thread(target=watch, args=(self.stop,), name="stall-watch", daemon=True).start()
        poll = self.config.feedback.poll_interval_ms / 1000
        try:
            while self.take_instance():
                self.follower = self.open_log()
                try:
                    while not self.stop.is_set():
                        self.keep_instance()
                        self.alive()
                        if self.step() == 0:
                            self.stop.wait(poll)
                except InstanceTaken as taken:
                    self.follower.close()
                    self.follower = None  # before the gauge says that no log is read
                    self.stand_down(taken)
        except SystemExit:
            pass
        finally:
            self.notifier.stopping()
            self.notes.flush(everything=True)
            if self.follower is not None:
                self.follower.close()
            self.release_instance()
            checker.join(timeout=5)
            self.r.close()


def run(config: BalancerConfig) -> int:
    serve_metrics(config.feedback.metrics_listen, log, "feedback.metrics_listen")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    FeedbackDaemon(config, stop).run()
    log.info("stopped")
    return 0
