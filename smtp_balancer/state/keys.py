"""The Redis key schema: a public interface that operators edit with redis-cli.

Every key starts with ``{<prefix>}:`` (default ``{sb}:``). The braces are a
Redis Cluster hash tag, so all keys one decision touches share a slot.

  {sb}:pool:<pool>:weights             HASH  endpoint -> integer weight (overrides YAML)
  {sb}:endpoint:<endpoint>:state       HASH  state=active|drained|quarantined, reason, since, by
  {sb}:suspend:<endpoint>:<provider>   STRING reason, with a TTL; provider "all" covers every provider
  {sb}:count:<endpoint>:day:<YYYYMMDD> HASH  total and one field per provider (UTC day, kept 3 days)
  {sb}:count:<endpoint>:hour:<YYYYMMDDHH> HASH the same per UTC hour (kept 2 days)
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_PROVIDERS = "all"
ADMIN_STATES = ("active", "drained", "quarantined")


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "sb"

    @property
    def base(self) -> str:
        return "{" + self.prefix + "}"

    def pool_weights(self, pool: str) -> str:
        return f"{self.base}:pool:{pool}:weights"

    def endpoint_state(self, endpoint: str) -> str:
        return f"{self.base}:endpoint:{endpoint}:state"

    def suspension(self, endpoint: str, provider: str) -> str:
        return f"{self.base}:suspend:{endpoint}:{provider}"

    def suspension_prefix(self) -> str:
        return f"{self.base}:suspend:"

    def suspension_pattern(self, endpoint: str = "") -> str:
        """SCAN pattern for one endpoint's suspensions, or for every suspension."""
        return f"{self.suspension_prefix()}{endpoint}:*" if endpoint else f"{self.suspension_prefix()}*"

    def day_counter(self, endpoint: str, bucket: str) -> str:
        return f"{self.base}:count:{endpoint}:day:{bucket}"

    def hour_counter(self, endpoint: str, bucket: str) -> str:
        return f"{self.base}:count:{endpoint}:hour:{bucket}"
