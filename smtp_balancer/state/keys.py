"""The Redis key schema: a public interface that operators edit with redis-cli.

Every key starts with ``{<prefix>}:`` (default ``{sb}:``). The braces are a
Redis Cluster hash tag, so all keys one decision touches share a slot.

  {sb}:pool:<pool>:weights             HASH  endpoint -> integer weight (overrides YAML)
  {sb}:endpoint:<endpoint>:state       HASH  state=active|drained|quarantined, reason, since, by,
                                        requeue=1 (`drain --requeue`: move its queued mail too)
  {sb}:suspend:<endpoint>:<provider>   STRING reason, with a TTL; provider "all" covers every provider
  {sb}:count:<endpoint>:day:<YYYYMMDD> HASH  total and one field per provider (UTC day, kept 3 days)
  {sb}:count:<endpoint>:hour:<YYYYMMDDHH> HASH the same per UTC hour (kept 2 days)
  {sb}:throttle:<endpoint>:<provider>  STRING "<factor> <reason>", with a TTL: weight x factor
  {sb}:warmup:<endpoint>               HASH  step, day (YYYYMMDD it applies to), why, judged: the warm-up
                                        step of an endpoint with advance: sending_days or hold_on
  {sb}:daily:<endpoint>:<YYYYMMDD>     HASH  sent/deferred/bounced/expired/complained per UTC day (3 days)
  {sb}:experiment:<name>               HASH  state=running|stopped, started, stopped, since (the last
                                        start --reset: earlier messages' outcomes don't count); epoch s
  {sb}:armdir:<day>                    HASH  level, split, n: a UTC day's book of arm records
  {sb}:arms:<day>:<bucket>             HASH  queue id -> "<experiment> <arm> <decided at, epoch s>" of
                                        a message: its outcomes' arm (state/armbook.lua), kept 5
                                        days after the day; <day>: days since the epoch
  {sb}:expstats:<experiment>:<arm>     HASH  decided, and the arm's delivery outcomes: sent, deferred,
                                        bounced, expired, class:<class>, latency buckets le:<s>
  {sb}:adaptive:<endpoint>:<provider>  STRING "<factor> <reason>", with a TTL: weight x factor in the
                                        pools with `adaptive: true` (written by the feedback daemon)
  {sb}:rate:<endpoint>:<provider>      ZSET  messages routed in the last minute (score: ms), for
                                        endpoints.*.rate_caps; provider "all" counts every message
  {sb}:slow:<endpoint>:<provider>      STRING "<factor> <reason>", with a TTL: the rate cap x factor
  {sb}:outcomes:<endpoint>:<provider>:<YYYYMMDDHHMM> HASH sent/deferred/bounced/expired per UTC minute,
                                        and complained (spam complaints that arrived that minute)
  {sb}:tenant:<tenant>:<YYYYMMDDHH>    HASH  the same per tenant (sender domain) and UTC hour
  {sb}:fbl:totals                      HASH  `smtp-balancer fbl` counters since the start:
                                        report:<result>, complaint:<endpoint>:<provider>:<tenant>
  {sb}:hits:<rule>:<endpoint>:<provider>     ZSET  recent matches of a counted response rule
  {sb}:strikes:<rule>:<endpoint>:<provider>  STRING times the rule acted within its window
  {sb}:tripped:<rule>:<endpoint>:<provider>  STRING a rate rule that tripped and has not recovered
  {sb}:feedback:<instance>:position    STRING the log follower's saved position
  {sb}:feedback:<instance>:batch       STRING the last applied batch's mark (run id, batch id)
  {sb}:requeue:<endpoint>:<provider>   STRING reason, TTL of its suspension: move queued mail for
                                        this scope too (`suspend --requeue`); provider "all" too
  {sb}:pin:<address>                   HASH  endpoint, provider, units, reason: the route moved mail
                                        for this recipient leaves by (the Postfix table answers it)
  {sb}:queued:<instance>               HASH  endpoint -> deferred messages bound to it on that host

The endpoint state hash may carry ``until`` (epoch seconds): a quarantine set by
a response rule lifts by itself then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

ALL_PROVIDERS = "all"
ADMIN_STATES = ("active", "drained", "quarantined")

# -- lifetimes and windows: one constant each; Lua scripts get them as the constants
# prelude state/scripts.py sends before each script (no literal in a script) --------
DAY_TTL_S = 3 * 86_400  # a UTC day's keys (counters, outcomes): yesterday's outlive a late judgement
HOUR_TTL_S = 2 * 86_400  # a UTC hour's counters
EXPSTATS_TTL_S = 90 * 86_400  # an experiment's counts outlive any sensible experiment
ARM_RECORD_TTL_S = 5 * 86_400  # Postfix's maximal_queue_lifetime: a message's last outcome
TENANT_TTL_S = 25 * 3600  # per tenant and hour: a day of hours, and the hour being judged
MINUTE_S = 60  # the width of an outcomes bucket
RATE_WINDOW_S = 60  # a rate cap counts the messages of any 60 s
LUA_CONSTANTS = {
    "DAY_TTL_S": DAY_TTL_S,
    "HOUR_TTL_S": HOUR_TTL_S,
    "MINUTE_S": MINUTE_S,
    "RATE_WINDOW_S": RATE_WINDOW_S,
}


# -- time buckets (UTC), as the keys above name them ----------------------------------
def minute_bucket(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(epoch))


def hour_bucket(now: datetime) -> str:
    return now.strftime("%Y%m%d%H")


def day_bucket(now: datetime) -> str:
    return now.strftime("%Y%m%d")


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "sb"

    @property
    def base(self) -> str:
        return "{" + self.prefix + "}"

    def pool_weights(self, pool: str) -> str:
        """[hash] endpoint -> integer weight; overrides the YAML weight; `0` takes the endpoint out of
        that pool"""
        return f"{self.base}:pool:{pool}:weights"

    def endpoint_state(self, endpoint: str) -> str:
        """[hash] `state` = `active` / `drained` / `quarantined`, plus `reason`, `since`, `by`; missing
        = active"""
        return f"{self.base}:endpoint:{endpoint}:state"

    def suspension(self, endpoint: str, provider: str) -> str:
        """[string + TTL] the reason; the endpoint takes no mail for that provider (`all` = every
        provider) until the key expires"""
        return f"{self.base}:suspend:{endpoint}:{provider}"

    def suspension_prefix(self) -> str:
        return f"{self.base}:suspend:"

    def suspension_pattern(self, endpoint: str = "") -> str:
        """SCAN pattern for one endpoint's suspensions, or for every suspension."""
        return scoped_pattern(self.suspension_prefix(), endpoint)

    def ttl_of(self, counter: str) -> int:
        """The lifetime of a counter key count.lua creates: a day or hour counter, or an
        experiment's stats (read from the key's own structure)."""
        kind, _, rest = counter.removeprefix(self.base + ":").partition(":")
        if kind == "expstats":
            return EXPSTATS_TTL_S
        if kind == "count":
            bucket_kind = rest.rsplit(":", 2)[-2:][0]
            if bucket_kind == "day":
                return DAY_TTL_S
            if bucket_kind == "hour":
                return HOUR_TTL_S
        raise ValueError(f"not a counter key: {counter!r}")

    def day_counter(self, endpoint: str, bucket: str) -> str:
        """[hash] deliveries today: `total` plus one field per provider; kept 3 days"""
        return f"{self.base}:count:{endpoint}:day:{bucket}"

    def hour_counter(self, endpoint: str, bucket: str) -> str:
        """[hash] the same per UTC hour; kept 2 days"""
        return f"{self.base}:count:{endpoint}:hour:{bucket}"

    def throttle(self, endpoint: str, provider: str) -> str:
        """[string + TTL] `"<factor> <reason>"`: the endpoint keeps `factor` of its share for that
        provider"""
        return f"{self.base}:throttle:{endpoint}:{provider}"

    def throttle_prefix(self) -> str:
        return f"{self.base}:throttle:"

    def throttle_pattern(self, endpoint: str = "") -> str:
        return scoped_pattern(self.throttle_prefix(), endpoint)

    def warmup(self, endpoint: str) -> str:
        """[hash] a managed warm-up's `step`, the UTC `day` it applies to, `why` and the day `judged`
        (feedback daemon; `advance: sending_days` or `hold_on`); `hold` = `1` keeps the step
        (`warmup hold`)"""
        return f"{self.base}:warmup:{endpoint}"

    def daily(self, endpoint: str, day: str) -> str:
        """[hash] `sent`/`deferred`/`bounced`/`expired`/`complained` per endpoint and UTC day, for
        `hold_on`; kept 3 days"""
        return f"{self.base}:daily:{endpoint}:{day}"

    def experiment(self, name: str) -> str:
        """[hash] `state` = `running` / `stopped`, `started`, `stopped`, `since` (epoch seconds):
        `experiment start` / `stop`; `since` is the last `start --reset`, and messages decided
        before it do not count"""
        return f"{self.base}:experiment:{name}"

    def join(self, instance: str) -> str:
        """[hash + TTL] with `policyd.workers` above 1: a message's RCPT recipients (policy
        `instance`), so the worker that gets its END-OF-MESSAGE decides with all of them;
        `policyd.join_ttl_s`"""
        return f"{self.base}:join:{instance}"

    def arm_dir(self, day: int) -> str:
        """[hash + TTL] the book of a UTC day's arm records (`day`: days since the epoch): `level`,
        `split` and `n` (records) of its linear hashing (`state/armbook.lua`); kept 5 days after
        the day ends"""
        return f"{self.base}:armdir:{day}"

    def arm_bucket(self, day: int, bucket: int) -> str:
        """[hash + TTL] a bucket of that book: queue id -> `"<experiment> <arm> <decided at>"`
        (epoch seconds) of a message in an experiment; the feedback daemon copies a record to a
        requeued message's new queue id. Found by `arm_read.lua` (the bucket is the queue id's
        hash under the day's `level` and `split`)"""
        return f"{self.base}:arms:{day}:{bucket}"

    def arm_record(self, queue_id: str) -> str:
        """[string + TTL] a message's arm record as releases before the day books wrote it; still
        read (for 5 days after an upgrade), never written. A record of two words counts in every
        run"""
        return f"{self.base}:arm:{queue_id}"

    def expstats(self, experiment: str, arm: str) -> str:
        """[hash] `decided`, and its outcomes: `sent`, `deferred`, `bounced`, `expired`,
        `class:<class>` (deferrals and bounces), `bounced:<class>` (bounces and expiries),
        `lat:<seconds>` (deliveries in that latency bucket), `complained` (`fbl`); 90 days"""
        return f"{self.base}:expstats:{experiment}:{arm}"

    def adaptive(self, endpoint: str, provider: str) -> str:
        """[string + TTL] `"<factor> <cause>"`: in pools with `adaptive: true` the endpoint keeps
        `factor` of its share for that provider; written by the feedback daemon"""
        return f"{self.base}:adaptive:{endpoint}:{provider}"

    def adaptive_prefix(self) -> str:
        return f"{self.base}:adaptive:"

    def adaptive_pattern(self, endpoint: str = "") -> str:
        return scoped_pattern(self.adaptive_prefix(), endpoint)

    def rate(self, endpoint: str, provider: str) -> str:
        """[hash] a rate cap's window: messages routed per epoch second (`<second>`), their `sum`
        and the oldest second it holds (`low`); provider `all` counts every message; written
        by `select.lua` and the deciders' rate leases (`window.lua`). It replaced the sorted
        set `rate:<endpoint>:<provider>`, whose size grew with the cap"""
        return f"{self.base}:ratesec:{endpoint}:{provider}"

    def slow(self, endpoint: str, provider: str) -> str:
        """[string + TTL] `"<factor> <reason>"`: the rate cap for that provider is `factor` of the
        configured one (at least 1) until the key expires"""
        return f"{self.base}:slow:{endpoint}:{provider}"

    def slow_prefix(self) -> str:
        return f"{self.base}:slow:"

    def tracked_prefixes(self) -> tuple[str, ...]:
        """The keys a local decision reads: weights, admin states, suspensions, throttles,
        adaptive factors."""
        return (
            f"{self.base}:pool:",
            f"{self.base}:endpoint:",
            self.suspension_prefix(),
            self.throttle_prefix(),
            self.adaptive_prefix(),
            f"{self.base}:warmup:",
            f"{self.base}:experiment:",
        )

    def tracked_key(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        """Which tracked key a name is: ("weights", (pool,)), ("state", (endpoint,)),
        ("suspend", (endpoint, provider)), ("throttle", (endpoint, provider)) or
        ("adaptive", (endpoint, provider))."""
        for kind, head, tail in (
            ("weights", f"{self.base}:pool:", ":weights"),
            ("state", f"{self.base}:endpoint:", ":state"),
            ("warmup", f"{self.base}:warmup:", ""),
            ("experiment", f"{self.base}:experiment:", ""),
        ):
            if name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail):
                scope = name[len(head) : len(name) - len(tail)]
                if ":" not in scope:
                    return kind, (scope,)
        for kind, head in (
            ("suspend", self.suspension_prefix()),
            ("throttle", self.throttle_prefix()),
            ("adaptive", self.adaptive_prefix()),
        ):
            scoped = split_scoped(name, head)
            if scoped is not None:
                return kind, scoped
        return None

    def outcomes(self, endpoint: str, provider: str, minute: str) -> str:
        """[hash] `sent`/`deferred`/`bounced`/`expired` per UTC minute (feedback daemon), and
        `complained` (`fbl`: complaints that arrived that minute); kept `rate_retention`"""
        return f"{self.base}:outcomes:{endpoint}:{provider}:{minute}"

    def tenant_hold(self, tenant: str) -> str:
        """[string + TTL] why the tenant's new mail goes to the hold queue (the policy daemon
        answers HOLD) until the key expires or `tenant release` deletes it"""
        return f"{self.base}:tenanthold:{tenant}"

    def tenant_hold_prefix(self) -> str:
        return f"{self.base}:tenanthold:"

    def tenant_pool(self, tenant: str) -> str:
        """[string + TTL] `<pool> <why>`: the tenant's new mail goes to that pool, whatever
        rule it matches (a quarantine pool, or a slow one), until the key expires or
        `tenant release` deletes it"""
        return f"{self.base}:tenantpool:{tenant}"

    def tenant_pool_prefix(self) -> str:
        return f"{self.base}:tenantpool:"

    def tenant_outcomes(self, tenant: str, hour: str) -> str:
        """[hash] the same fields per tenant and UTC hour; kept `rate_retention`, at least 25 h"""
        return f"{self.base}:tenant:{tenant}:{hour}"

    def fbl_totals(self) -> str:
        """[hash] `fbl`'s counters since the start: `report:<result>`,
        `complaint:<ep>:<provider>:<tenant>`, `arm:<experiment>:<arm>`; exported by every feedback
        daemon"""
        return f"{self.base}:fbl:totals"

    def hits(self, rule: str, endpoint: str, provider: str) -> str:
        """[sorted set] recent matches of a counted response rule"""
        return f"{self.base}:hits:{rule}:{endpoint}:{provider}"

    def reputation(self, endpoint: str, provider: str) -> str:
        """[hash, expires after its newest day + reputation.retention_days] what a provider's export
        (`reputation import`) said of the endpoint: `<source>:<signal>:<ip>` = `<day> <value> <detail>`"""
        return f"{self.base}:reputation:{endpoint}:{provider}"

    def reputation_pattern(self) -> str:
        """SCAN pattern for every endpoint's reputation records."""
        return f"{self.base}:reputation:*"

    def domain_reputation(self, domain: str, provider: str) -> str:
        """[hash, expires as `reputation`] what a provider's export said of a sending domain:
        `<source>:<signal>[:<feedback loop id>]` = `<day> <value> <detail>`"""
        return f"{self.base}:domainrep:{domain}:{provider}"

    def domain_reputation_pattern(self) -> str:
        """SCAN pattern for every sending domain's reputation records."""
        return f"{self.base}:domainrep:*"

    def tripped(self, rule: str, endpoint: str, provider: str) -> str:
        """[string + TTL] a rate rule that tripped and has not recovered"""
        return f"{self.base}:tripped:{rule}:{endpoint}:{provider}"

    def feedback_position(self, instance: str) -> str:
        """[string] the log follower's saved position"""
        return f"{self.base}:feedback:{instance}:position"

    def feedback_batch(self, instance: str) -> str:
        """[string] the last applied batch's mark (a random run id and the batch id): a retry after a
        lost reply finds it"""
        return f"{self.base}:feedback:{instance}:batch"

    def feedback_owner(self, instance: str) -> str:
        """[string + TTL] the feedback daemon that follows this instance's log: `host=`, `pid=`,
        `boot=`, `pidns=`, `run=`; renewed while it runs, deleted when it stops. Another daemon
        with the same `feedback.instance` waits until it is gone"""
        return f"{self.base}:feedback:{instance}:owner"

    def requeue(self, endpoint: str, provider: str) -> str:
        """[string + TTL] `suspend --requeue`: move mail queued on the endpoint for that provider
        (`all` too); same TTL as the suspension"""
        return f"{self.base}:requeue:{endpoint}:{provider}"

    def requeue_prefix(self) -> str:
        return f"{self.base}:requeue:"

    def requeue_pattern(self, endpoint: str = "") -> str:
        return scoped_pattern(self.requeue_prefix(), endpoint)

    def pin(self, address: str) -> str:
        """[hash + TTL] `endpoint`, `provider`, `units`, `reason`, `since`: the route a moved recipient
        leaves by; kept `requeue.pin_ttl`"""
        return f"{self.base}:pin:{address.lower()}"

    def queued(self, instance: str) -> str:
        """[hash + TTL] endpoint -> deferred messages bound to it on that host, from its requeue daemon"""
        return f"{self.base}:queued:{instance}"

    def queued_pattern(self) -> str:
        return f"{self.base}:queued:*"

    def audit(self) -> str:
        """[stream] every CLI write: `who`, `sudo`, `verb`, `target`, `old`, `new`, `reason` (the entry
        id is when, in ms); the newest 10,000 are kept"""
        return f"{self.base}:audit"


def scoped_pattern(prefix: str, endpoint: str = "") -> str:
    """SCAN pattern for ``<prefix><endpoint>:<provider>`` keys: one endpoint's, or all."""
    return f"{prefix}{endpoint}:*" if endpoint else f"{prefix}*"


def split_scoped(name: str, prefix: str) -> tuple[str, str] | None:
    """``<prefix><endpoint>:<provider>`` -> (endpoint, provider); None for another key."""
    if not name.startswith(prefix):
        return None
    endpoint, sep, provider = name[len(prefix) :].partition(":")
    return (endpoint, provider) if sep else None
