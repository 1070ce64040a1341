"""Fixtures for end-to-end tests: real redis-server, Postfix, policy daemon and sink.

``mail_system(extra_config)`` starts all four and always tears them down, in
reverse order, even when the test fails.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from integration.configs import deep_merge, topology
from integration.daemons import (
    CLI,
    DaemonProcess,
    HandingOverPolicyd,
    PolicydProcess,
    listen_ready,
    metric_sum,
    tcp_ready,
)
from integration.exim import (
    EXIM_RELAY_HOST,
    EXIM_RELAY_SOURCE,
    EXIM_SINK_HOST,
    EximInstance,
    EximSystem,
    readme_render_command,
)
from integration.postfix import PostfixInstance, make_shared_dir
from integration.redis_server import RedisServer
from integration.sink import Sink, free_port
from integration.submit import build_message, send_many


def base_config(redis_url: str, policy_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "redis": {"url": redis_url, "connect_timeout_ms": 500},
        # a healthy local Redis answers in well under this; outages are refused at once
        "decision": {"budget_ms": 500, "retry_after_ms": 200},
        # the test domains resolve through a private hosts file, never through DNS
        "mx_lookup": {"enabled": False},
        "policyd": {
            "listen": [f"inet:127.0.0.1:{policy_port}"],
            "metrics_listen": f"127.0.0.1:{metrics_port}",
            "postfix_timeout_s": 10,
        },
        **topology(),
    }


def start_redis(base: Path, started: list[Callable[[], None]], password: str | None = None) -> RedisServer:
    redis_server = RedisServer(base / "redis", password=password)
    redis_server.start()
    started.append(redis_server.stop)
    return redis_server


def write_config(base: Path, *layers: dict[str, Any] | None) -> Path:
    """``base/config.yaml``: the layers merged in order, each over the one before."""
    config: dict[str, Any] = {}
    for layer in layers:
        config = deep_merge(config, layer or {})
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def render(config_path: Path, part: str, host: str | None = None) -> str:
    """master.cf / main.cf text from our own CLI: the harness uses what operators use.
    ``host``: as that fleet host renders it (``--host``)."""
    command = [CLI, "-c", str(config_path), "render", "postfix", "--part", part]
    out = subprocess.run([*command, *(["--host", host] if host else [])], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"render failed: {out.stderr}")
    return out.stdout


def rendered_postfix(
    base: Path,
    config_path: Path,
    sink_port: int,
    started: list[Callable[[], None]],
    smtpd_port: int | None = None,
    **more: Any,
) -> PostfixInstance:
    """A Postfix with main.cf and master.cf parts from ``render postfix`` of
    ``config_path``, started, its stop in ``started``; ``more``: PostfixInstance's."""
    postfix = PostfixInstance(
        base / "postfix",
        smtpd_port=smtpd_port or free_port(),
        sink_port=sink_port,
        master_cf_extra=render(config_path, "master"),
        main_cf_extra=render(config_path, "main"),
        **more,
    )
    started.append(postfix.stop)
    postfix.start()
    return postfix


@contextlib.contextmanager
def torn_down() -> Iterator[tuple[list[Callable[[], None]], list[Path]]]:
    """For a test that starts its own processes: what it starts goes into ``started``,
    stopped newest first at the end, even when it fails; its folders into ``bases``,
    removed when it passed and kept to read when it failed."""
    started: list[Callable[[], None]] = []
    bases: list[Path] = []
    ok = False
    try:
        yield started, bases
        ok = True
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception as exc:  # keep tearing down the rest
                print(f"teardown: {exc}", file=sys.stderr)
        if ok:
            for base in bases:
                shutil.rmtree(base, ignore_errors=True)


def postconf_command(config_path: Path, config_dir: Path, host: str | None = None) -> list[str]:
    """``smtp-balancer render postfix --postconf [--host H]`` against the harness's Postfix."""
    command = [CLI, "-c", str(config_path), "render", "postfix", "--postconf"]
    return [*command, *(["--host", host] if host else []), "--postfix-dir", str(config_dir)]


def apply_postconf(config_path: Path, config_dir: Path, host: str | None = None) -> str:
    """The documented way into an existing main.cf: ``render postfix --postconf`` against
    that Postfix (``--host H`` on a fleet, docs/fleet.md), then its commands run with sh.
    Returns the script."""
    out = subprocess.run(postconf_command(config_path, config_dir, host), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"render --postconf failed: {out.stderr}")
    subprocess.run(["sh", "-e"], input=out.stdout, text=True, check=True, capture_output=True)
    return out.stdout


@dataclass
class MailSystem:
    base: Path
    redis: RedisServer
    sink: Sink
    postfix: PostfixInstance
    policyd: PolicydProcess
    config_path: Path
    metrics_port: int
    rdb: redis.Redis
    milter: DaemonProcess
    feedback: DaemonProcess
    requeue: DaemonProcess
    table: DaemonProcess

    def send(
        self,
        sender: str,
        recipients: list[str],
        seq: int = 0,
        tag: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        with smtplib.SMTP("127.0.0.1", self.postfix.smtpd_port, timeout=30) as smtp:
            smtp.send_message(build_message(seq, sender, recipients, tag, headers), sender, recipients)

    def sendmail(
        self, sender: str, recipients: list[str], seq: int, headers: dict[str, str] | None = None
    ) -> None:
        """Submit through Postfix's sendmail(1) -> pickup: the non_smtpd_milters path."""
        msg = build_message(seq, sender, recipients, headers=headers)
        subprocess.run(
            ["sendmail", "-C", str(self.postfix.config_dir), "-f", sender, "--", *recipients],
            input=msg.as_bytes(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def send_many(self, count: int, **kwargs: Any) -> list[str]:
        """Send ``count`` messages through Postfix; see ``submit.send_many``."""
        return send_many(self.postfix.smtpd_port, count, **kwargs)

    def by_source_ip(self) -> Counter[str]:
        return Counter(m.peer_ip for m in self.sink.messages)

    def metric(self, series: str) -> float:
        """The policy daemon's /metrics: the sum of the samples whose line starts with ``series``."""
        return metric_sum(self.metrics_port, series)


@pytest.fixture
def mail_system(request: pytest.FixtureRequest) -> Iterator[Callable[..., MailSystem]]:
    if shutil.which("postfix") is None or shutil.which("redis-server") is None:
        pytest.fail("postfix and redis-server must be installed (make test installs them)")
    started: list[Callable[[], None]] = []
    bases: list[Path] = []
    sinks: list[Sink] = []

    def make(
        extra: dict[str, Any] | None = None,
        *,
        policy: bool = True,
        milter: bool = False,
        feedback: bool = False,
        domains: list[str] | None = None,
        log_format: str = "logfmt",
        redis_password: str | None = None,
        redis_setup: Callable[[RedisServer], None] | None = None,
        env: dict[str, dict[str, str]] | None = None,
        requeue: bool = False,
        dual_stack: str = "",
        postfix_main: str = "",
        postconf_apply: bool = False,
        skip_steps: tuple[str, ...] = (),
    ) -> MailSystem:
        """``redis_password``: requirepass for the default user; ``redis_setup`` runs
        before any daemon starts (ACL users); ``env``: per daemon name, added variables."""
        base = make_shared_dir("sb-it-")
        bases.append(base)
        env = env or {}
        redis_server = start_redis(base, started, redis_password)
        if redis_setup is not None:
            redis_setup(redis_server)
        sink = Sink(also=(dual_stack,) if dual_stack else ())
        sink.start()
        sinks.append(sink)
        started.append(sink.stop)
        policy_port, metrics_port, smtpd_port = free_port(), free_port(), free_port()
        milter_socket = base / "milter" / "milter.sock"
        feedback_metrics = free_port()
        requeue_metrics, table_port = free_port(), free_port()
        harness = {
            "policyd": {"enabled": policy},
            "milter": {
                "enabled": milter,
                "listen": f"unix:{milter_socket}",
                "postfix_maps_dir": str(base / "maps"),
                "metrics_listen": f"127.0.0.1:{free_port()}",
            },
            "feedback": {
                "log_file": str(base / "postfix" / "postfix.log"),
                "start_at": "beginning",
                "instance": "it",
                "metrics_listen": f"127.0.0.1:{feedback_metrics}",
                "poll_interval_ms": 100,
            },
            # requeue=True: the delivery-time table and the requeue daemon, sweeping each second
            "requeue": {
                "enabled": requeue,
                "table_listen": f"127.0.0.1:{table_port}",
                "table_metrics_listen": f"127.0.0.1:{free_port()}",
                "postfix_config_dir": str(base / "postfix" / "etc"),
                "interval": 1,
                "instance": "it",
                "metrics_listen": f"127.0.0.1:{requeue_metrics}",
            },
        }
        config_path = write_config(
            base, base_config(redis_server.url, policy_port, metrics_port), harness, extra
        )
        # restartable by SIGUSR2 (policyd/handover.py) as well as by stop and start
        policyd = HandingOverPolicyd(
            config_path, policy_port, base / "policyd.log", log_format=log_format, env=env.get("policyd")
        )
        if policy:
            policyd.start()
            started.append(policyd.stop)
        milter_process = DaemonProcess(
            "milter",
            config_path,
            base / "milter.log",
            listen_ready(yaml.safe_load(config_path.read_text())["milter"]["listen"]),  # a test's own too
            log_format=log_format,
            env=env.get("milter"),
        )
        if milter:
            subprocess.run(
                [CLI, "-c", str(config_path), "render", "postfix", "--write-maps", str(base / "maps")],
                check=True,
                capture_output=True,
            )
            milter_process.start()
            started.append(milter_process.stop)
        postfix = PostfixInstance(
            base / "postfix",
            smtpd_port=smtpd_port,
            sink_port=sink.port,
            master_cf_extra="" if postconf_apply else render(config_path, "master"),
            main_cf_extra=postfix_main + ("" if postconf_apply else render(config_path, "main")),
            domains=domains,
            dual_stack=dual_stack,
            skip_steps=skip_steps,
            configure=(lambda pf: apply_postconf(config_path, pf.config_dir)) if postconf_apply else None,
        )
        started.append(postfix.stop)
        postfix.start()
        feedback_process = DaemonProcess(
            "feedback",
            config_path,
            base / "feedback.log",
            tcp_ready(feedback_metrics),
            env=env.get("feedback"),
        )
        if feedback:
            feedback_process.start()
            started.append(feedback_process.stop)
        requeue_process = DaemonProcess(
            "requeue", config_path, base / "requeue.log", tcp_ready(requeue_metrics), env=env.get("requeue")
        )
        table_process = DaemonProcess(
            "table", config_path, base / "table.log", tcp_ready(table_port), env=env.get("table")
        )
        if requeue:
            table_process.start()
            started.append(table_process.stop)
            requeue_process.start()
            started.append(requeue_process.stop)
        rdb = redis_server.client()
        started.append(rdb.close)
        return MailSystem(
            base,
            redis_server,
            sink,
            postfix,
            policyd,
            config_path,
            metrics_port,
            rdb,
            milter_process,
            feedback_process,
            requeue_process,
            table_process,
        )

    yield make
    # no test may ever see our routing header reach a recipient (issue #4)
    leaked = [m for sink in sinks for m in sink.messages if m.header("X-Egress-Route") is not None]
    _teardown(request, started, bases)
    assert not leaked, f"{len(leaked)} message(s) reached the sink with an X-Egress-Route header"


def _teardown(request: pytest.FixtureRequest, started: list[Callable[[], None]], bases: list[Path]) -> None:
    """Stop what was started, newest first; keep the files of a failed test to read."""
    failed = getattr(request.node, "rep_call", None)
    for stop in reversed(started):
        try:
            stop()
        except Exception as exc:  # keep tearing down the rest
            print(f"teardown: {exc}", file=sys.stderr)
    if not (failed and failed.failed):
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def exim_system(request: pytest.FixtureRequest) -> Iterator[Callable[..., EximSystem]]:
    """Redis, the policy daemon, two sinks (direct and relay) and a private Exim
    configured by ``render exim``: the Exim twin of ``mail_system``."""
    started: list[Callable[[], None]] = []
    bases: list[Path] = []

    def make(
        extra: dict[str, Any] | None = None,
        requeue: bool = False,
        dual_stack: str = "",
        operator: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> EximSystem:
        """``requeue``: the delivery-time table daemon too (routers re-decide at retries);
        ``dual_stack``: an IPv6 address the sink's name also resolves to, where the sink
        listens too (see ``EximInstance``); ``operator``: more of the operator's own Exim
        config, ``EximInstance``'s ``own_router``, ``own_transport`` and ``relay_domains``;
        ``env``: variables added to the policy daemon's environment."""
        base = make_shared_dir("sb-exim-")
        bases.append(base)
        redis_server = start_redis(base, started)
        sink = Sink(EXIM_SINK_HOST, also=(dual_stack,) if dual_stack else ())
        relay_sink = Sink(EXIM_RELAY_HOST)
        for s in (sink, relay_sink):
            s.start()
            started.append(s.stop)
        policy_port, metrics_port = free_port(), free_port()
        # relay1 stands for an internal relay (kind: relay): its mail must reach relay_sink
        relay = {
            "kind": "relay",
            "nexthop": f"{EXIM_RELAY_HOST}:{relay_sink.port}",
            "bind_address": EXIM_RELAY_SOURCE,
            "helo_name": "relay1.test",
        }
        table_port = free_port()
        harness = {
            "endpoints": {"relay1": relay},
            "requeue": {
                "enabled": requeue,
                "table_listen": f"127.0.0.1:{table_port}",
                "table_metrics_listen": f"127.0.0.1:{free_port()}",
            },
        }
        config_path = write_config(
            base, base_config(redis_server.url, policy_port, metrics_port), harness, extra
        )
        rendered = base / "exim-rendered"
        # what the README has an operator run, word for word but for the folder
        command = readme_render_command(rendered)
        subprocess.run([CLI, "-c", str(config_path), *command[1:]], check=True, capture_output=True)
        policyd = HandingOverPolicyd(config_path, policy_port, base / "policyd.log", env=env)
        policyd.start()
        started.append(policyd.stop)
        table = DaemonProcess("table", config_path, base / "table.log", tcp_ready(table_port))
        if requeue:
            table.start()
            started.append(table.stop)
        exim = EximInstance(
            base / "exim",
            free_port(),
            rendered,
            EXIM_SINK_HOST,
            sink.port,
            dual_stack=dual_stack,
            **(operator or {}),
        )
        started.append(exim.stop)
        exim.start()
        rdb = redis_server.client()
        started.append(rdb.close)
        return EximSystem(base, redis_server, sink, relay_sink, exim, policyd, config_path, rdb, table)

    yield make
    _teardown(request, started, bases)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
