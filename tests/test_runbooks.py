"""docs/runbooks.md, followed as written: with examples/config.yaml and the page's own
YAML added to it (only its Redis pointed at the test's), every command of its shell
blocks runs against a real redis-server, exits 0, and does what its procedure says."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis
import yaml

from integration.configs import deep_merge
from integration.redis_server import RedisServer
from smtp_balancer.cli.main import main
from tests.cli.test_main import CLOCK

ROOT = Path(__file__).resolve().parents[1]
STATE = "{sb}:endpoint:%s:state"

# a command's first words -> what Redis holds right after it (each must be on the page)
Check = Callable[[redis.Redis], bool]
AFTER: dict[str, Check] = {
    "smtp-balancer weight bulk out2 3": lambda r: r.hget("{sb}:pool:bulk:weights", "out2") == "3",
    "redis-cli HSET": lambda r: r.hget("{sb}:pool:bulk:weights", "out2") == "3",
    "smtp-balancer weight bulk out2 --reset": lambda r: r.hget("{sb}:pool:bulk:weights", "out2") is None,
    "smtp-balancer drain out1": lambda r: r.hget(STATE % "out1", "state") == "drained",
    "smtp-balancer undrain out1": lambda r: r.hget(STATE % "out1", "state") in (None, "active"),
    "smtp-balancer drain --host mta1": lambda r: r.hget(STATE % "out1", "state") == "drained",
    "smtp-balancer undrain --host mta1": lambda r: r.hget(STATE % "out1", "state") in (None, "active"),
    "smtp-balancer warmup hold out3": lambda r: r.hget("{sb}:warmup:out3", "hold") == "1",
    "smtp-balancer warmup release out3": lambda r: r.hget("{sb}:warmup:out3", "hold") is None,
    "smtp-balancer suspend out2 google": lambda r: 7000 < r.ttl("{sb}:suspend:out2:google") <= 7200,
    "smtp-balancer resume out2 google": lambda r: not r.exists("{sb}:suspend:out2:google"),
    "smtp-balancer throttle out2": lambda r: (r.get("{sb}:throttle:out2:google") or "").startswith("0.5 "),
    "smtp-balancer unthrottle out2 google": lambda r: not r.exists("{sb}:throttle:out2:google"),
    "smtp-balancer quarantine out3": lambda r: (
        r.hget(STATE % "out3", "state") == "quarantined"
        and r.hget(STATE % "out3", "until") == str(int(CLOCK.wall()) + 6 * 3600)
    ),
    "smtp-balancer undrain out3": lambda r: r.hget(STATE % "out3", "state") in (None, "active"),
}


# runbooks whose commands need daemons, an MTA or Sentinel: integration/test_runbooks.py
WITH_DAEMONS = (
    "Roll out a config change",
    "Upgrade smtp-balancer on a fleet without losing mail",
    "Redis is down or failing over",
)


def sections(page: Path) -> dict[str, str]:
    """The page's runbooks: each ``## `` heading and its text."""
    parts = re.split(r"^## (.+)$", page.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def commands(text: str) -> list[str]:
    """Every line of the text's ```sh blocks, in order."""
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```$", text, re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_runbook_is_run_by_one_of_the_two_tests() -> None:
    runbooks = sections(ROOT / "docs" / "runbooks.md")
    assert set(WITH_DAEMONS) <= set(runbooks), set(WITH_DAEMONS) - set(runbooks)
    assert all(commands(text) for text in runbooks.values()), "a runbook without a command"


def test_every_runbook_command_runs_and_does_what_it_says(
    redis_server: RedisServer, tmp_path: Path, capsys
) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    page = (ROOT / "docs" / "runbooks.md").read_text()
    for block in re.findall(r"^```yaml\n(.*?)^```$", page, re.S | re.M):  # the YAML it has you add
        raw = deep_merge(raw, yaml.safe_load(block))
    raw["redis"] = {"url": redis_server.url}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    rdb = redis_server.client()
    ran, checked = [], set()
    runbooks = sections(ROOT / "docs" / "runbooks.md")
    here = [
        command for title, text in runbooks.items() if title not in WITH_DAEMONS for command in commands(text)
    ]
    for command in here:
        argv = shlex.split(command)
        if argv[0] == "smtp-balancer":
            code = main(["-c", str(config), *argv[1:]], clock=CLOCK)
            out = capsys.readouterr()
            assert code == 0, (command, out.out, out.err)
        else:
            assert argv[0] == "redis-cli", f"a runbook command this test cannot run: {command}"
            done = subprocess.run(
                ["redis-cli", "-s", str(redis_server.socket), *argv[1:]], capture_output=True, text=True
            )
            assert done.returncode == 0 and "ERR" not in done.stdout, (command, done.stdout, done.stderr)
        ran.append(command)
        for start, check in AFTER.items():
            if command.startswith(start):
                assert check(rdb), f"after `{command}` Redis does not hold what the runbook says"
                checked.add(start)
    assert checked == set(AFTER), (
        f"steps this test checks that the page no longer has: {set(AFTER) - checked}"
    )
    assert len(ran) >= len(AFTER)
