"""An upgrade, on real Postfix and real Exim (#32): the MTA still runs the files an
earlier release rendered while the new daemons answer. The policy daemon says so
within one request and counts it; the README's "Upgrading" steps, followed as
written, bring the MTA to this release's files and the counting stops.

The older files are this release's, less the generation marker: the marker is what
this release adds to the rendered files, so that is what an earlier release wrote.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI, HandingOverPolicyd, PolicydProcess, metric_sum, metrics_port
from integration.exim import README_DIR
from integration.waits import MAIL_S, wait_until
from smtp_balancer.generation import GENERATION, MARKER

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "getting-started.md"  # its "Upgrading"
STALE = "smtp_balancer_policy_stale_config_requests_total"
SAID = f"rendered by an older release (generation 1, this daemon expects {GENERATION})"


def readme_upgrade_steps() -> list[str]:
    """The commands of the guide's upgrade block, comments and blank lines left out."""
    text = GUIDE.read_text()
    section = text[text.index("## Upgrading") :]
    block = section[
        section.index("```sh") + len("```sh") : section.index("```\n", section.index("```sh") + 5)
    ]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def follow(steps: list[str], do: dict[str, Callable[[list[str]], None]]) -> list[str]:
    """Run each README step through the handler for its command (the first word or
    two); a step no handler knows fails the test, so the README cannot drift."""
    ran = []
    for step in steps:
        words = shlex.split(step)
        key = next((k for k in do if words[: len(k.split())] == k.split()), None)
        assert key is not None, f"a README upgrade step this test does not know: {step!r}"
        do[key](words)
        ran.append(key)
    return ran


def stale(port: int, mta: str) -> float:
    return metric_sum(port, f'{STALE}{{generation="1",mta="{mta}"}} ')


def cli(config_path: Path, words: list[str]) -> subprocess.CompletedProcess[str]:
    """``smtp-balancer ...`` as the README has it, against this test's config."""
    return subprocess.run(
        [CLI, "-c", str(config_path), *words[1:]], check=True, capture_output=True, text=True
    )


def hand_over(policyd: PolicydProcess, words: list[str]) -> None:
    """The guide's `systemctl kill --signal=SIGUSR2 --kill-who=main smtp-balancer-policyd`."""
    assert words[2:] == ["--signal=SIGUSR2", "--kill-who=main", "smtp-balancer-policyd"], words
    assert isinstance(policyd, HandingOverPolicyd)
    policyd.hand_over()


def test_postfix_on_older_files_is_said_and_the_readme_upgrade_clears_it(mail_system, tmp_path):
    ms = mail_system(postconf_apply=True, feedback=True)  # installed the guide's way, into a main.cf
    main_cf = ms.postfix.config_dir / "main.cf"
    assert f", policy_context={MARKER} }}" in main_cf.read_text()
    # what the last release wrote; Postfix restarted on it, so no smtpd of the current
    # files is left to take the first message
    apply = ms.postfix.configure
    assert apply is not None

    def older(postfix) -> None:
        apply(postfix)
        main_cf.write_text(main_cf.read_text().replace(f", policy_context={MARKER}", ""))

    ms.postfix.stop()
    ms.postfix.configure = older
    ms.postfix.start()
    port = metrics_port(ms.config_path, "policyd")
    assert ms.send_many(1, recipients=lambda i: ["u0@gmail.com"]) == []
    wait_until(lambda: SAID in (ms.base / "policyd.log").read_text(), 30, "the warning")
    assert "run `smtp-balancer render postfix` again" in (ms.base / "policyd.log").read_text()
    assert stale(port, "postfix") >= 1  # its RCPT and END-OF-MESSAGE requests
    # the daemons answered the old files as before: the message took a route
    assert ms.sink.wait_for(1, timeout=MAIL_S)[0].peer_ip in ENDPOINT_IP.values()

    script = tmp_path / "smtp-balancer-postconf.sh"

    def render(words: list[str]) -> None:
        assert words[-2:] == [">", "/root/smtp-balancer-postconf.sh"], words
        out = cli(ms.config_path, [*words[:-2], "--postfix-dir", str(ms.postfix.config_dir)])
        script.write_text(out.stdout)

    def restart(words: list[str]) -> None:
        assert "smtp-balancer-feedback" in words, words
        ms.feedback.stop()
        ms.feedback.start()

    def reload(words: list[str]) -> None:
        # smtpd processes of the old files finish their session and exit; one may take
        # a new connection meanwhile (README: "a few requests from the old files")
        before = ms.postfix.smtpd_processes()
        ms.postfix.reload()
        wait_until(lambda: not before & ms.postfix.smtpd_processes(), 60, "the old smtpd processes to exit")

    ran = follow(
        [s for s in readme_upgrade_steps() if "exim" not in s],
        {
            "/opt/smtp-balancer/venv/bin/pip install": lambda w: None,  # this checkout is installed
            "smtp-balancer check": lambda w: cli(ms.config_path, w),
            "systemctl kill": lambda w: hand_over(ms.policyd, w),
            "systemctl restart": restart,
            "smtp-balancer render": render,
            "sh": lambda w: subprocess.run(["sh", "-e", str(script)], check=True, capture_output=True),
            "postfix reload": reload,
        },
    )
    assert ran[-3:] == ["smtp-balancer render", "sh", "postfix reload"]
    assert f", policy_context={MARKER} }}" in main_cf.read_text()
    before = stale(port, "postfix")  # the restarted daemon's own count: 0
    assert ms.send_many(20, start=100, recipients=lambda i: [f"u{i}@gmail.com"]) == []
    got = ms.sink.wait_for(21, timeout=MAIL_S)
    assert all(m.peer_ip in ENDPOINT_IP.values() for m in got)
    assert stale(port, "postfix") == before == 0


def test_exim_on_older_files_is_said_and_the_readme_upgrade_clears_it(exim_system):
    es = exim_system()
    acl = es.exim.rendered / "acl.conf"
    text = acl.read_text()
    line = f"        policy_context={MARKER}\\n\\\n"
    assert text.count(line) == 2
    acl.write_text(text.replace(line, ""))  # what the last release wrote
    es.exim.stop()
    es.exim.start()
    port = metrics_port(es.config_path, "policyd")
    assert es.send_many(1, recipients=lambda i: ["u0@gmail.com"]) == []
    wait_until(lambda: SAID in es.policyd.log_path.read_text(), 30, "the warning")
    assert "run `smtp-balancer render exim` again" in es.policyd.log_path.read_text()
    assert stale(port, "exim") == 1  # one request, one count
    assert es.sink.wait_for(1, timeout=MAIL_S)[0].peer_ip in ENDPOINT_IP.values()

    def render(words: list[str]) -> None:
        assert README_DIR in words, words
        cli(es.config_path, [w.replace(README_DIR, str(es.exim.rendered)) for w in words])

    def reload(words: list[str]) -> None:
        # the README's "elsewhere: kill -HUP the daemon": Exim execs itself anew, same PID
        started = es.exim.log_text().count("daemon started")
        assert es.exim.proc is not None
        os.kill(es.exim.proc.pid, signal.SIGHUP)
        wait_until(lambda: es.exim.log_text().count("daemon started") > started, 30, "Exim's restart")

    def restart(words: list[str]) -> None:
        assert "smtp-balancer-feedback" in words, words  # this Exim host runs no other daemon

    ran = follow(
        [s for s in readme_upgrade_steps() if "postfix" not in s and not s.startswith("sh ")],
        {
            "/opt/smtp-balancer/venv/bin/pip install": lambda w: None,
            "smtp-balancer check": lambda w: cli(es.config_path, w),
            "systemctl kill": lambda w: hand_over(es.policyd, w),
            "systemctl restart": restart,
            "smtp-balancer render": render,
            "systemctl reload exim4": reload,
        },
    )
    assert ran[-2:] == ["smtp-balancer render", "systemctl reload exim4"]
    assert acl.read_text().count(line) == 2
    assert es.send_many(20, start=100, recipients=lambda i: [f"u{i}@gmail.com"]) == []
    got = es.sink.wait_for(21, timeout=MAIL_S)
    assert all(m.peer_ip in ENDPOINT_IP.values() for m in got)
    assert stale(port, "exim") == 0  # the restarted daemon counted none
