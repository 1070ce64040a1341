"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas
(`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`), each
node killed by its PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from integration.redis_server import RedisServer, real_time_env
from integration.sink import free_port
from smtp_balancer.state.cluster import prefix_slot

NODE_TIMEOUT_MS = 1000  # how long a master may be silent before its replica takes over


class RedisCluster:
    def __init__(self, base: Path, masters: int = 3) -> None:
        self.base = base
        self.ports = [free_port() for _ in range(2 * masters)]
        self.nodes = {
            port: RedisServer(
                base / f"node{port}",
                extra={
                    "port": str(port),
                    "bind": "127.0.0.1",
                    "cluster-enabled": "yes",
                    # the bus port from our block too: its default (port + 10000) can be taken
                    "cluster-port": str(free_port()),
                    "cluster-config-file": str(base / f"node{port}" / "nodes.conf"),
                    "cluster-node-timeout": str(NODE_TIMEOUT_MS),
                },
            )
            for port in self.ports
        }
        self.killed: set[int] = set()

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        for node in self.nodes.values():
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *self.hosts, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            env=real_time_env(),
            timeout=60,
        )
        self.wait(lambda: all(self._state(p) == "ok" for p in self.ports), "every node to see the cluster ok")
        self.wait(lambda: self.master_port("sb") is not None, "a master for the slot")

    def _state(self, port: int) -> str:
        try:
            info = self.client(port).execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return "down"
        text = info if isinstance(info, str) else str(info)
        return "ok" if "cluster_state:ok" in text else "fail"

    def master_port(self, prefix: str, asking: int | None = None) -> int | None:
        """The port of the master that serves ``prefix``'s slot, as a live node says."""
        slot = prefix_slot(prefix)
        for port in [asking] if asking else [p for p in self.ports if p not in self.killed]:
            try:
                slots = self.client(port).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for entry in slots:
                if int(entry[0]) <= slot <= int(entry[1]):
                    return int(entry[2][1])
        return None

    def is_master(self, port: int) -> bool:
        try:
            return self.client(port).execute_command("ROLE")[0] == "master"
        except redis.RedisError:
            return False

    def kill(self, port: int) -> None:
        self.killed.add(port)
        self.nodes[port].stop()

    def wait(self, check: Callable[[], object], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def wait_failover(self, old: int, prefix: str = "sb") -> int:
        """Wait until a live node names another master for the slot; its port."""
        found: list[int] = []

        def moved_on() -> bool:
            port = self.master_port(prefix)
            if port is not None and port != old and self._state(port) == "ok":
                found.append(port)
                return True
            return False

        self.wait(moved_on, "a replica to take over the slot")
        return found[-1]

    def stop(self) -> None:
        for port, node in self.nodes.items():
            if port not in self.killed:
                node.stop()
