"""A private Redis Sentinel set on loopback: one master, one replica, three sentinels.

Every process is ours, started here and killed by PID. Sentinels decide a
master is down after ``down_after_ms`` and fail over to the replica.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from integration.redis_server import RedisServer, real_time_env
from integration.sink import free_port

SERVICE = "mymaster"


class SentinelSet:
    def __init__(self, base: Path, down_after_ms: int = 1000) -> None:
        self.base = base
        self.down_after_ms = down_after_ms
        self.master_port, self.replica_port = free_port(), free_port()
        self.master = RedisServer(base / "master", extra={"port": str(self.master_port)})
        self.replica = RedisServer(
            base / "replica",
            extra={"port": str(self.replica_port), "replicaof": ["127.0.0.1", str(self.master_port)]},
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            workdir = self.base / f"sentinel{i}"
            workdir.mkdir(parents=True, exist_ok=True)
            conf = workdir / "sentinel.conf"  # sentinels rewrite their config: one file each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                # a split election is retried after twice this: short, so a test's
                # failover rarely waits long on one (loopback promotes in milliseconds)
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=real_time_env(),
                )
            )
        self._wait(lambda: self.master_address() == ("127.0.0.1", self.master_port), "sentinels to agree")
        self._wait(self._replica_in_sync, "the replica to sync")
        self._wait(lambda: self._replicas_known() >= 1, "the sentinels to find the replica")

    def _wait(self, check, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sentinel set: timed out waiting for {what}")

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=2, decode_responses=True)

    def master_address(self, port: int | None = None) -> tuple[str, int] | None:
        client = self._sentinel(port or self.sentinel_ports[0])
        try:
            addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        finally:
            client.close()
        return (addr[0], int(addr[1])) if addr else None

    def _replica_in_sync(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _replicas_known(self) -> int:
        client = self._sentinel(self.sentinel_ports[0])
        try:
            return len(client.execute_command("SENTINEL", "REPLICAS", SERVICE))
        finally:
            client.close()

    def kill_master(self) -> None:
        """SIGKILL the master: no goodbye, writes not yet replicated are lost."""
        self.master.stop()

    def wait_failover(self, timeout: float = 30) -> None:
        """Until every sentinel names the replica as master."""
        replica = ("127.0.0.1", self.replica_port)
        self._wait(
            lambda: all(self.master_address(port) == replica for port in self.sentinel_ports),
            "the failover to the replica",
            timeout,
        )

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.sentinels.clear()
        self.replica.stop()
        self.master.stop()
