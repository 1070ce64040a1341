"""A private Exim 4 for tests: its own config, spool and logs, loopback only.

Debian's exim4 packages conflict with postfix, so ``.ci/install`` extracts
exim4-daemon-light with ``dpkg -x`` (DESIGN.md). Found by the traps there:
- Exim needs the ``Debian-exim`` user and ``exim_path`` pointing at the binary;
- ``-oP`` because the default pid file lives in /run/exim4;
- ``-C`` makes Exim drop root for deliveries, so spool and log belong to Debian-exim.

The config is the README's "One configuration file" snippet, taken from the
README as it stands: the files ``render exim --write`` made are ``.include``d
into their sections, after the test's own main options and around a plain router
and transport that stand for the operator's existing ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from integration.daemons import DaemonProcess, PolicydProcess, tcp_ready
from integration.redis_server import RedisServer
from integration.sink import Sink, free_port
from integration.submit import send_many
from integration.waits import START_S

EXIM_ROOT = Path(os.environ.get("SB_EXIM_ROOT", "/opt/smtp-balancer/exim4"))
EXIM_USER = "Debian-exim"
# where the harness's sinks listen: not 127.0.0.1, which Exim listens on itself and
# would take for "self" (it defers mail to itself without allow_localhost)
EXIM_SINK_HOST = "127.0.0.10"
EXIM_RELAY_HOST = "127.0.0.11"
EXIM_RELAY_SOURCE = "127.0.0.5"  # the harness's relay endpoint binds here
DUAL_STACK_MX = "mx.dual.test"  # dual_stack: the smarthost's name, with an A and an AAAA record


class EximError(RuntimeError):
    pass


def exim_binary() -> Path:
    binary = EXIM_ROOT / "usr" / "sbin" / "exim4"
    if not binary.is_file():
        raise EximError(
            f"no Exim at {binary}: run .ci/install, which extracts Debian's exim4-daemon-light "
            "there (or point SB_EXIM_ROOT at an extracted tree)"
        )
    return binary


README = Path(__file__).resolve().parents[1] / "docs" / "exim.md"
README_DIR = "/etc/exim4/smtp-balancer"  # where the README writes the rendered files


def readme_render_command(rendered: Path) -> list[str]:
    """The README's own `render exim --write` line, with its folder replaced."""
    text = README.read_text()
    section = text[text.index("## Enabling it on an Exim server") :]
    line = next(x for x in section.splitlines() if x.startswith("smtp-balancer render exim --write"))
    return line.split("#", 1)[0].replace(README_DIR, str(rendered)).split()


def readme_exim_snippet() -> str:
    """The README's "One configuration file" block, as an operator would paste it."""
    text = README.read_text()
    block = text[text.index("**One configuration file.**") :]
    block = block[block.index("```\n") + 4 :]
    return block[: block.index("```\n")]


# the operator's own parts around the README's lines: main options, the RCPT ACL,
# a router and transport for mail without a route, and retry rules
MAIN = """\
exim_path = {binary}
spool_directory = {spool}
log_file_path = {logs}/%slog
primary_hostname = mta.test
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
exim_user = {user}
exim_group = {user}
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment =
domainlist local_domains = {local_domains}
domainlist relay_to_domains = {relay_domains}
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_check_data
acl_not_smtp = sb_route_local
# deliver every message at once, however many arrive on one connection
smtp_accept_queue_per_connection = 0
smtp_accept_max = 200
# the delivery time on each delivery line (DT=): the latency the feedback daemon reads
log_selector = +deliver_time
{smarthost}SB_SMTP_PORT = {sink_port}
"""
RCPT_ACL = """\
acl_rcpt:
  accept hosts = 127.0.0.0/8
  deny
"""
OWN_ROUTER = """\
# the operator's own router: mail without a route
plain:
  driver = manualroute
  domains = ! +local_domains
  route_list = * {sink_host}
  transport = plain_smtp
"""
OWN_TRANSPORT_AND_RETRY = """\
plain_smtp:
  driver = smtp
  port = {sink_port}

begin retry
* * F,1h,2s
"""


def config_text(rendered: Path, own_router: str = "", own_transport: str = "") -> str:
    """The harness's Exim config: the README's snippet, literally, with its folder
    replaced by ``rendered`` and its ``...`` by the operator's own router (and
    ``own_router`` before it; ``own_transport`` joins the operator's transports)."""
    lines: list[str] = []
    for line in readme_exim_snippet().replace(README_DIR, str(rendered)).splitlines():
        if line == "...":
            lines.append(own_router + OWN_ROUTER)
        else:
            lines.append(line)
            if line == "begin acl":
                lines.append(RCPT_ACL)
    return MAIN + "\n".join(lines) + "\n" + own_transport + OWN_TRANSPORT_AND_RETRY


class EximInstance:
    def __init__(
        self,
        base: Path,
        smtp_port: int,
        rendered: Path,
        sink_host: str,
        sink_port: int,
        smarthost: bool = True,
        own_router: str = "",
        own_transport: str = "",
        dual_stack: str = "",
        relay_domains: str = "",
        local_domains: str = "",
    ) -> None:
        """``relay_domains``, ``local_domains``: the operator's ``domainlist relay_to_domains``
        and ``local_domains``.
        ``dual_stack``: an IPv6 address; the smarthost is then a name that resolves to
        the sink host and to it (a private /etc/hosts in Exim's own mount namespace), as a
        provider's MX has A and AAAA records; Exim tries the IPv6 address first. Not ::1,
        which Exim takes for itself ("remote host address is the local host"): an address
        on the loopback of a network namespace (integration/netns.py).
        ``smarthost=False`` leaves the rendered routers on dnslookup, as in production:
        only for ``check()``, since the test domains are not in DNS. ``own_router`` and
        ``own_transport``: more of the operator's own config (no braces: it is formatted)."""
        self.own_router = own_router
        self.own_transport = own_transport
        self.base = base.resolve()
        self.spool = self.base / "spool"
        self.logs = self.base / "log"
        self.config_file = self.base / "exim.conf"
        self.pidfile = self.base / "exim.pid"
        self.smtp_port = smtp_port
        self.rendered = rendered.resolve()
        self.sink_host = sink_host
        self.sink_port = sink_port
        self.smarthost = smarthost
        self.dual_stack = dual_stack
        self.relay_domains = relay_domains
        self.local_domains = local_domains
        self.hosts_file = self.base / "hosts"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        for d in (self.spool, self.logs):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, user=EXIM_USER, group=EXIM_USER)
        self.config_file.write_text(
            config_text(self.rendered, self.own_router, self.own_transport).format(
                binary=exim_binary(),
                spool=self.spool,
                logs=self.logs,
                port=self.smtp_port,
                user=EXIM_USER,
                sink_host=self.sink_host,
                sink_port=self.sink_port,
                relay_domains=self.relay_domains,
                local_domains=self.local_domains,
                rendered=self.rendered,
                smarthost=(
                    # routed mail goes to the sink, which stands for the recipients' MX hosts
                    f"SB_SMARTHOST = {self._smarthost()}\n" if self.smarthost else ""
                ),
            )
        )

    def _smarthost(self) -> str:
        if not self.dual_stack:
            return self.sink_host
        lines = [
            "127.0.0.1 localhost",
            f"{self.sink_host} {DUAL_STACK_MX}",
            f"{self.dual_stack} {DUAL_STACK_MX}",
        ]
        self.hosts_file.write_text("\n".join(lines) + "\n")
        return f"{DUAL_STACK_MX} byname"  # getaddrinfo, through the private hosts file

    def submit_local(self, sender: str, recipients: list[str], message: bytes) -> None:
        """A local submission (``exim -bm``, as sendmail(1) does): acl_not_smtp applies."""
        subprocess.run(
            [str(exim_binary()), "-C", str(self.config_file), "-bm", "-f", sender, "--", *recipients],
            input=message,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def check(self) -> None:
        """``exim -bV`` reads the whole config: a broken render fails here, with Exim's words."""
        out = subprocess.run(
            [str(exim_binary()), "-C", str(self.config_file), "-bV"], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise EximError(f"exim -bV rejected {self.config_file}: {out.stdout}{out.stderr}")

    def start(self) -> None:
        self.write_config()
        self.check()
        # -bdf: the daemon stays our child, so we stop exactly the PID we started; its own
        # session holds the delivery processes it forks, for the teardown to reach
        command = [
            str(exim_binary()),
            "-C",
            str(self.config_file),
            "-bdf",
            "-q2s",
            "-oX",
            str(self.smtp_port),
            "-oP",
            str(self.pidfile),
        ]
        if self.dual_stack:
            # exec: the daemon keeps the PID we started, in a mount namespace of its own
            inner = f"mount --bind {self.hosts_file} /etc/hosts && exec {' '.join(command)}"
            command = ["unshare", "-m", "sh", "-c", inner]
        with (self.base / "exim.out").open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EximError(f"exim exited at start: {self.log_tail('panic')} {self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.smtp_port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise EximError(f"exim did not listen on 127.0.0.1:{self.smtp_port}: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to our daemon's session (the daemon and its delivery processes)."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the daemon leads its own group
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # delivery processes left behind, if any
        self.proc = None

    def log_text(self, name: str = "main") -> str:
        path = self.logs / f"{name}log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str = "main", lines: int = 30) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def queue_size(self) -> int:
        out = subprocess.run(
            [str(exim_binary()), "-C", str(self.config_file), "-bpc"], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise EximError(f"exim -bpc failed: {out.stderr.strip()}")
        return int(out.stdout.strip() or 0)


def exim_feedback(
    config_path: Path, exim: EximInstance, base: Path, instance: str
) -> tuple[DaemonProcess, int]:
    """The Exim host's own feedback daemon, not started, and its /metrics port: the same
    YAML but for Exim's main log (``feedback.log_format: exim``) and its instance name."""
    raw = yaml.safe_load(config_path.read_text())
    port = free_port()
    feedback = raw.setdefault("feedback", {})
    feedback.setdefault("start_at", "beginning")  # the harness's configs say so; exim_system's has none
    feedback.setdefault("poll_interval_ms", 100)
    feedback.update(
        log_file=str(exim.logs / "mainlog"),
        log_format="exim",
        instance=instance,
        metrics_listen=f"127.0.0.1:{port}",
    )
    path = base / "exim-host.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return DaemonProcess("feedback", path, base / "feedback-exim.log", tcp_ready(port)), port


@dataclass
class EximSystem:
    base: Path
    redis: RedisServer
    sink: Sink
    relay_sink: Sink
    exim: EximInstance
    policyd: PolicydProcess
    config_path: Path
    rdb: redis.Redis
    table: DaemonProcess

    def send_many(self, count: int, **kwargs: Any) -> list[str]:
        """Send ``count`` messages through Exim; see ``submit.send_many``."""
        return send_many(self.exim.smtp_port, count, **kwargs)
