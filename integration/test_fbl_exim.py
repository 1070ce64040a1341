"""Spam complaints through a real Exim 4.96: a pipe transport serves the FBL address with
``smtp-balancer fbl``; a complaint that cannot reach Redis is deferred (exit 75) and
counted once Redis is back."""

from __future__ import annotations

import shutil
import smtplib
import subprocess

from integration.arf import NOT_MULTIPART, arf_report
from integration.daemons import CLI
from integration.exim import EXIM_SINK_HOST, EXIM_USER, EximInstance
from integration.postfix import make_shared_dir
from integration.sink import Sink, free_port
from integration.unprivileged import unprivileged_cli
from integration.waits import wait_until

ROUTER = """\
fbl:
  driver = accept
  domains = fbl.test
  local_parts = fbl
  transport = fbl_pipe

"""
TRANSPORT = """\
fbl_pipe:
  driver = pipe
  command = {command}
  user = Debian-exim
  temp_errors = 75
  return_fail_output

"""


def test_exims_pipe_hands_reports_to_fbl_and_retries_while_redis_is_away(mail_system) -> None:
    keep = make_shared_dir("sb-fbl-exim-")
    keep.chmod(0o777)  # the pipe runs as Exim's user
    launcher_dir = make_shared_dir("sb-fbl-exim-cli-")
    extra = {
        "rules": [{"name": "shop", "sender_domain": ["shop.test"], "pool": "main"}],
        "feedback": {"complaints": {"keep_dir": str(keep)}},
    }
    ms = mail_system(extra)  # Redis and the policy daemon the Exim host asks
    ms.redis.socket.chmod(0o777)
    # the harness's Exim runs with -C, so it has dropped root: its pipe runs as the Exim user
    command = " ".join([*unprivileged_cli(launcher_dir, EXIM_USER), "-c", str(ms.config_path), "fbl"])
    rendered = ms.base / "exim-rendered"
    subprocess.run([CLI, "-c", str(ms.config_path), "render", "exim", "--write", str(rendered)], check=True)
    sink = Sink(EXIM_SINK_HOST)
    sink.start()
    exim = EximInstance(
        ms.base / "exim",
        free_port(),
        rendered,
        EXIM_SINK_HOST,
        sink.port,
        own_router=ROUTER,
        own_transport=TRANSPORT.replace("{command}", command),
    )
    try:
        exim.start()
        with smtplib.SMTP("127.0.0.1", exim.smtp_port, timeout=30) as smtp:
            smtp.sendmail("feedback@arf.mail.yahoo.com", ["fbl@fbl.test"], arf_report("127.0.0.3"))
            smtp.sendmail("feedback@arf.mail.yahoo.com", ["fbl@fbl.test"], NOT_MULTIPART)
        totals = wait_until(
            lambda: t if len(t := ms.rdb.hgetall("{sb}:fbl:totals")) >= 3 else None,
            60,
            "both reports counted",
        )
        assert totals == {
            "report:complaint": "1",
            "complaint:out2:yahoo:other": "1",
            "report:malformed": "1",
        }
        assert [p.name.rpartition(".")[2] for p in keep.iterdir()] == ["malformed"]

        def piped() -> list[str]:
            return [ln for ln in exim.log_text().splitlines() if " => " in ln and "T=fbl_pipe" in ln]

        wait_until(lambda: len(piped()) == 2, 30, "both deliveries logged")

        # Redis away: the complaint exits 75, Exim defers it and delivers it at a later retry
        ms.redis.stop()
        with smtplib.SMTP("127.0.0.1", exim.smtp_port, timeout=30) as smtp:
            smtp.sendmail("feedback@arf.mail.yahoo.com", ["fbl@fbl.test"], arf_report("127.0.0.4"))

        def deferrals() -> list[str]:
            return [ln for ln in exim.log_text().splitlines() if " == " in ln and "T=fbl_pipe" in ln]

        wait_until(deferrals, 60, "the deferral")
        ms.redis.start()
        ms.redis.socket.chmod(0o777)
        rdb = ms.redis.client()
        try:
            wait_until(lambda: rdb.hget("{sb}:fbl:totals", "report:complaint") == "1", 60, "the retry")
            assert rdb.hget("{sb}:fbl:totals", "complaint:out3:yahoo:other") == "1"
        finally:
            rdb.close()
        wait_until(lambda: len(piped()) == 3, 30, "the retried delivery logged")
        assert "transport returned 75" in deferrals()[0], deferrals()
    finally:
        exim.stop()
        sink.stop()
        shutil.rmtree(keep, ignore_errors=True)
        shutil.rmtree(launcher_dir, ignore_errors=True)
