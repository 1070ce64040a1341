"""docs/security.md's Redis ACL lines, applied as written to a real redis-server, and no
secret in any output (issue #14).

Real Postfix sends through policyd (SMTP) and the milter (sendmail), the
feedback daemon reads the delivery log, and the CLI runs every state command,
each as its own ACL user from that page. Redis's ACL LOG must stay empty, and
no password may appear in a daemon log, a /metrics page or CLI output,
including the error paths (a wrong password, an unusable Redis).
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import yaml

from integration.acl_lines import ACL, password_of
from integration.arf import NOT_MULTIPART, report_about
from integration.configs import even_experiment
from integration.daemons import CLI, DaemonProcess, tcp_ready
from integration.redis_server import RedisServer
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import utc_now

ADMIN_PASSWORD = "admin-pw-Zq81"  # requirepass of the default user
WRONG_PASSWORD = "wrong-pw-Kx27"
SECRETS = [ADMIN_PASSWORD, WRONG_PASSWORD, *(password_of(words) for words in ACL.values())]


def apply_readme_lines(server: RedisServer) -> None:
    admin = server.client()
    try:
        for words in ACL.values():
            assert admin.execute_command(*words) == "OK"
        admin.execute_command("ACL", "LOG", "RESET")
    finally:
        admin.close()


def user_env(user: str, password: str | None = None) -> dict[str, str]:
    return {
        "SMTP_BALANCER_REDIS_USERNAME": user,
        "SMTP_BALANCER_REDIS_PASSWORD": password or password_of(ACL[user]),
    }


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret"


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


REPUTATION_EXPORT = (
    Path(__file__).resolve().parents[1] / "tests" / "reputation" / "fixtures" / "snds_data.csv"
)


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "-c", str(config), *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_readme_has_a_line_for_each_part():
    assert set(ACL) == {"sb-policyd", "sb-milter", "sb-feedback", "sb-cli", "sb-table", "sb-requeue"}
    for words in ACL.values():
        assert "~{sb}:*" in words and "-@all" in words  # only our keys, only listed commands


def test_readme_acl_lines_on_real_redis_and_postfix_with_no_secret_shown(mail_system, tmp_path):
    import os

    # the YAML carries the CLI's user, its password in the URL query; the daemons
    # take theirs from the environment, as the README's systemd drop-in does
    today = utc_now().date().isoformat()
    # a provider cap and rate caps: select.lua counts them (sorted sets, counter fields)
    limits = {
        "out1": {"rate_caps": {"all": 100_000}},
        "out3": {
            "warmup": {
                "start": today,
                "schedule": [100_000],
                "providers": {"google": [100_000]},
                "advance": "sending_days",  # the feedback daemon writes its record
            },
            "rate_caps": {"google": 100_000},
        },
    }
    ms = mail_system(
        {
            "redis": {"username": "sb-cli"},
            "endpoints": limits,
            "pools": {"main": {"adaptive": True}},
            # an experiment run by the CLI: the deciders record arms, the feedback daemon reads them
            "experiments": [even_experiment("ab", "all", {"a": "main", "b": "main"})],
        },
        milter=True,
        feedback=True,
        requeue=True,
        domains=["gmail.com", "example.test"],
        redis_password=ADMIN_PASSWORD,
        redis_setup=apply_readme_lines,
        env={
            "policyd": user_env("sb-policyd"),
            "milter": user_env("sb-milter"),
            "feedback": user_env("sb-feedback"),
            "table": user_env("sb-table"),
            "requeue": user_env("sb-requeue"),
        },
    )
    raw = yaml.safe_load(ms.config_path.read_text())
    raw["redis"]["url"] += f"?password={password_of(ACL['sb-cli'])}"
    # for `fbl`, which runs the complaint rate rules with the feedback daemon's user
    raw["feedback"]["complaints"] = {"keep_dir": str(tmp_path / "fbl")}
    raw["feedback"]["rate_rules"] = [
        {
            "name": "complaints",
            "measure": "complained",
            "above_percent": 0.1,
            "recover_below_percent": 0.05,
            "min_attempts": 1,
            "window": "1h",
            "action": "throttle",
        }
    ]
    ms.config_path.write_text(yaml.safe_dump(raw))
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_BALANCER_REDIS_")}

    assert cli(ms.config_path, "experiment", "start", "ab", env=cli_env).returncode == 0
    errors = ms.send_many(40, recipients=lambda i: [f"user{i}@example.test"])  # SMTP: decided by policyd
    assert errors == []
    for i in range(6):  # sendmail -> pickup: decided by the milter
        ms.sendmail("app@shop.test", [f"local{i}@example.test"], seq=100 + i)
    ms.sink.wait_for(46, timeout=120)
    # gmail mail deferred on out2, then moved by the requeue daemon and the table daemon
    ms.sink.script("127.0.0.3", "gmail.com", "421 4.7.0 out2 refused for this test")
    assert ms.send_many(12, recipients=lambda i: [f"g{i}@gmail.com"], start=200) == []
    wait_until(
        lambda: ms.sink.handler.refused[("127.0.0.3", "gmail.com")] >= 1, MAIL_S, "gmail deferred on out2"
    )
    assert cli(ms.config_path, "drain", "out2", "--requeue", env=cli_env).returncode == 0
    ms.sink.wait_for(58, timeout=MAIL_S)
    assert cli(ms.config_path, "undrain", "out2", env=cli_env).returncode == 0

    admin = ms.rdb
    wait_until(lambda: admin.get("{sb}:feedback:it:position"), 30, "the feedback daemon's log position")
    wait_until(lambda: admin.hget("{sb}:warmup:out3", "step") == "1", 30, "the managed warm-up's record")
    wait_until(
        lambda: sum(int(admin.hget(f"{{sb}}:expstats:ab:{arm}", "sent") or 0) for arm in "ab") >= 40,
        30,
        "outcomes per arm",
    )
    outputs: dict[str, str] = {}
    for args in (
        ("status",),
        ("weight", "main", "out2", "3"),
        ("weight", "main", "out2", "--reset"),
        ("drain", "out1", "--reason", "acl test"),
        ("undrain", "out1"),
        ("suspend", "out2", "--provider", "google", "--for", "1m", "--reason", "acl test"),
        ("resume", "out2"),
        ("suspend", "out2", "google", "--for", "1m", "--requeue"),
        ("resume", "out2", "--provider", "google"),
        ("explain", "--sender", "a@shop.test", "--rcpt", "bob@gmail.com"),
        ("experiment", "list"),
        ("experiment", "report", "ab"),
        ("experiment", "stop", "ab"),
        ("audit", "--since", "1h"),
        ("check",),
        ("reputation", "import", str(REPUTATION_EXPORT)),  # records, and a suspension by hit.lua
        ("reputation", "show"),
        ("tenant", "list"),
    ):
        out = cli(ms.config_path, *args, env=cli_env)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        outputs[" ".join(args)] = out.stdout + out.stderr

    # a complaint about a message policyd decided: fbl looks its arm up by queue id
    reported = next(m for m in ms.sink.messages if m.rcpt_tos[0].startswith("user"))
    for report in (report_about(reported), NOT_MULTIPART):
        fbl = subprocess.run(
            [CLI, "-c", str(ms.config_path), "fbl"],
            input=report,
            capture_output=True,
            timeout=60,
            env={**cli_env, **user_env("sb-feedback")},
        )
        assert fbl.returncode == 0, fbl.stderr
        outputs[f"fbl {len(report)}"] = (fbl.stdout + fbl.stderr).decode()
    assert admin.hget("{sb}:fbl:totals", "report:complaint") == "1"
    assert sum(int(admin.hget(f"{{sb}}:expstats:ab:{arm}", "complained") or 0) for arm in "ab") == 1

    denials = sorted(
        {(e["username"], e["context"], e["reason"], e["object"]) for e in admin.execute_command("ACL", "LOG")}
    )
    assert denials == [], denials
    for name, port in (
        ("policyd", ms.metrics_port),
        ("milter", int(raw["milter"]["metrics_listen"].rsplit(":", 1)[1])),
        ("feedback", int(raw["feedback"]["metrics_listen"].rsplit(":", 1)[1])),
        ("table", int(raw["requeue"]["table_metrics_listen"].rsplit(":", 1)[1])),
        ("requeue", int(raw["requeue"]["metrics_listen"].rsplit(":", 1)[1])),
    ):
        outputs[f"{name} /metrics"] = metrics_text(port)
    for daemon in (ms.policyd, ms.milter, ms.feedback, ms.table, ms.requeue):
        log = daemon.log_path.read_text()
        assert "refused key tracking" not in log and "NOPERM" not in log, daemon.log_path
        outputs[str(daemon.log_path)] = log

    # the error paths: a wrong password for the CLI, and a daemon whose Redis refuses it
    wrong = cli(ms.config_path, "status", env={**cli_env, **user_env("sb-cli", WRONG_PASSWORD)})
    assert wrong.returncode == 3, wrong.stderr
    outputs["status, wrong password"] = wrong.stdout + wrong.stderr
    port = int(raw["policyd"]["listen"][0].rsplit(":", 1)[1])
    ms.policyd.stop()
    bad = DaemonProcess(
        "policyd",
        ms.config_path,
        tmp_path / "policyd-wrong.log",
        tcp_ready(port),
        env=user_env("sb-policyd", WRONG_PASSWORD),
    )
    bad.start()
    try:
        ms.send_many(3, recipients=lambda i: [f"late{i}@example.test"])  # degraded: Redis refuses it
        ms.sink.wait_for(61, timeout=MAIL_S)
    finally:
        bad.stop()
    text = bad.log_path.read_text()
    assert re.search(r"WRONGPASS|invalid username-password|AUTH", text, re.I), text[-2000:]
    outputs["policyd, wrong password"] = text

    for where, text in outputs.items():
        assert_no_secret(where, text)
