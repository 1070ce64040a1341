"""A private Postfix instance for tests: its own config, queue and log, loopback only.

Traps handled here (all found on real Postfix, see DESIGN.md):
- ``postfix -c`` needs an absolute path;
- ``data_directory`` must be owned by postfix, or the master fails on master.lock;
- every directory must be reachable by the postfix user (pytest's tmp is 0700);
- Postfix prints errors only to a tty, so commands run under ``script``;
- after ``stop`` the master exits about 2 s later: wait for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from integration.daemons import children as child_pids
from integration.daemons import process_gone, process_stat
from integration.waits import START_S

MASTER_CF_BASE = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       5       1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    pass


def make_shared_dir(prefix: str, parent: str = "/tmp") -> Path:
    """A temp dir the postfix user can traverse (pytest's own tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


class PostfixInstance:
    def __init__(
        self,
        base: Path,
        smtpd_port: int,
        sink_port: int,
        master_cf_extra: str = "",
        main_cf_extra: str = "",
        domains: list[str] | None = None,
        dual_stack: str = "",
        skip_steps: tuple[str, ...] = (),
        configure: Callable[[PostfixInstance], None] | None = None,
    ) -> None:
        """``dual_stack``: an IPv6 address; as Debian's default (inet_protocols = all), each
        domain then resolves to it as well as to 127.0.0.1, as the big providers' MX hosts
        have AAAA records."""
        self.dual_stack = dual_stack
        # the rendered master.cf's one-time `postconf -P` steps an operator skipped
        self.skip_steps = skip_steps
        # after our own main.cf and master.cf are written: the operator applies ours
        self.configure = configure
        self.base = base.resolve()
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "data"
        self.log_file = self.base / "postfix.log"
        self.smtpd_port = smtpd_port
        self.sink_port = sink_port
        self.master_cf_extra = master_cf_extra
        self.main_cf_extra = main_cf_extra
        # per-domain destinations, as in production: each recipient domain is its own
        # Postfix destination, resolved through a private /etc/hosts to the sink
        self.domains = domains
        self.hosts_file = self.base / "hosts"
        self._master_pid: int | None = None

    def write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data_dir, user="postfix")
        sink = f"[127.0.0.1]:{self.sink_port}"
        if self.domains:
            # no relayhost, an empty FILTER nexthop: the recipient domain is the nexthop,
            # found in our private hosts file (DNS is off), on the sink's port
            routing = f"smtp_tcp_port = {self.sink_port}\nsmtp_host_lookup = native"
            families = ("127.0.0.1", self.dual_stack) if self.dual_stack else ("127.0.0.1",)
            self.hosts_file.write_text(
                "127.0.0.1 localhost\n" + "".join(f"{ip} {d}\n" for d in self.domains for ip in families)
            )
        else:
            routing = f"relayhost = {sink}\ndefault_filter_nexthop = {sink}"
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
myhostname = mta.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = {"all" if self.dual_stack else "ipv4"}
mynetworks = 127.0.0.0/8
maillog_file = {self.log_file}
maillog_file_prefixes = {self.base}
# postlogd exits when a request takes 10 s (its default watchdog), and then every
# process that logs blocks on its full socket, the master too: on a shared VM that
# stalls now and then, a frozen instance (a lab setting)
postlogd_watchdog_timeout = 300s
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
{routing}
in_flow_delay = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
"""
        (self.config_dir / "main.cf").write_text(main + "\n" + self.main_cf_extra)
        master = MASTER_CF_BASE.format(listen=f"127.0.0.1:{self.smtpd_port}")
        (self.config_dir / "master.cf").write_text(master + "\n" + self.master_cf_extra)
        # the one-time command the rendered master.cf asks for (the notice cleanup),
        # run as an operator would, against this instance's config
        for line in self.master_cf_extra.splitlines():
            words = line.lstrip("# ").split()
            if words[:2] == ["postconf", "-P"] and not any(step in line for step in self.skip_steps):
                subprocess.run(["postconf", "-c", str(self.config_dir), *words[1:]], check=True)

    def _postfix(self, *args: str, check: bool = True, private_hosts: bool = False) -> str:
        # Postfix writes its errors only to a terminal: give it one with script(1)
        command = " ".join(["postfix", "-c", str(self.config_dir), *args])
        if private_hosts:
            # the master and its children live in a mount namespace where /etc/hosts
            # is ours: the machine's own /etc/hosts is never touched
            inner = f"mount --bind {self.hosts_file} /etc/hosts && {command}"
            command = f"unshare -m sh -c '{inner}'"
        try:
            out = subprocess.run(
                ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as exc:
            # a Postfix whose postlogd died (its watchdog after a 10 s stall) blocks every
            # process that logs, `postfix stop` included: stop() then kills the master
            if check:
                raise PostfixError(f"`{command}` did not finish in 60 s") from exc
            return f"`{command}` did not finish in 60 s"
        text = (out.stdout + out.stderr).strip()
        if check and out.returncode != 0:
            raise PostfixError(f"`{command}` failed ({out.returncode}): {text}")
        return text

    def start(self) -> None:
        """Start our Postfix. A listening port that another process took between
        ``free_port()`` and now (an outgoing connection's ephemeral port, say) is
        replaced by a new one, twice at most; read ``smtpd_port`` after this."""
        for attempt in range(3):
            self.write_config()
            if self.configure is not None:
                self.configure(self)
            self._postfix("check")
            # the check just ran: postfix-script's start skips its own second run of it
            # (over a second of shell) when it finds this file, as after `postfix quick-stop`
            (self.queue_dir / "quick-start").touch()
            try:
                self._postfix("start", private_hosts=bool(self.domains))
                break
            except PostfixError:
                if attempt == 2 or "Address already in use" not in self.log_text():
                    raise
                from integration.sink import free_port

                self.log_file.write_text("")  # the next attempt's log starts clean
                self.smtpd_port = free_port()
        pidfile = self.queue_dir / "pid" / "master.pid"
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip().isdigit():
                self._master_pid = int(pidfile.read_text().strip())
                if self._port_open():
                    return
            time.sleep(0.05)
        self.stop()
        raise PostfixError(
            f"Postfix did not start listening on 127.0.0.1:{self.smtpd_port}: {self.log_tail()}"
        )

    def _port_open(self) -> bool:
        import socket

        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.smtpd_port)) == 0

    def stop(self) -> None:
        """Stop the master we started: SIGTERM by its PID, which is what `postfix stop`
        sends (master(8) passes it on to its children), without that script's wait,
        which looks once a second and so took over a second of every test's teardown.
        Killed by PID if it does not go in time."""
        if self._master_pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._master_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(self._master_pid):
            time.sleep(0.02)
        if _alive(self._master_pid):
            # its children outlive it when they are stuck (on a dead postlogd's socket,
            # say): ours too, so they go by PID with it
            stuck = self.children()
            os.kill(self._master_pid, signal.SIGKILL)
            for pid in stuck:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._master_pid = None

    def reload(self) -> None:
        self._postfix("reload")

    def smtpd_processes(self) -> set[int]:
        """The PIDs of this master's smtpd children (from /proc)."""
        return self.children("smtpd")

    def children(self, name: str | None = None) -> set[int]:
        """The PIDs of this master's children (from /proc), those called ``name`` if given."""
        if self._master_pid is None:
            return set()
        return {
            pid
            for pid in child_pids(self._master_pid)
            if name is None or ((stat := process_stat(pid)) is not None and stat[0] == name)
        }

    def flush(self) -> None:
        """``postqueue -f``: ask qmgr to scan every queue now."""
        subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-f"], check=True, capture_output=True, timeout=60
        )

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def queue_is_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            d = self.queue_dir / sub
            if d.exists() and any(p.is_file() for p in d.rglob("*")):
                return False
        return True


def _alive(pid: int) -> bool:
    # a master that exited stays a zombie until init reaps it: on a VM whose init reaps
    # about once a second, kill(pid, 0) called that alive for over a second each stop
    return not process_gone(pid)
