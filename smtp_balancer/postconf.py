"""The running Postfix's configuration, read with postconf(1).

``render postfix --postconf`` merges into the operator's current values, and the
requeue and table daemons check that Postfix is wired as they need before they
move mail. Both read Postfix through here, never by parsing main.cf themselves:
postconf knows the defaults, the ``-o`` overrides and the syntax.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class PostconfError(RuntimeError):
    """postconf could not be run, or refused: the message says why."""


def run(config_dir: str, *args: str) -> str:
    """postconf -c ``config_dir`` ``args``: its output, or PostconfError saying why not."""
    command = ["postconf", "-c", config_dir, *args]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise PostconfError("postconf is not installed (is this a Postfix host?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise PostconfError(f"`{' '.join(command)}` did not answer within 30 s") from exc
    if out.returncode != 0:
        why = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise PostconfError(f"`{' '.join(command)}` failed: {why[-1] if why else out.returncode}")
    return out.stdout


def main_values(config_dir: str, params: Sequence[str]) -> dict[str, str]:
    """Each parameter's value in main.cf (its default when unset), unexpanded."""
    if not params:
        return {}
    lines = run(config_dir, "-h", *params).splitlines()
    if len(lines) != len(params):
        raise PostconfError(f"postconf answered {len(lines)} values for {len(params)} parameters")
    return dict(zip(params, (line.strip() for line in lines), strict=True))


def master_services(config_dir: str) -> set[str]:
    """``service/type`` of every master.cf entry."""
    out = set()
    for line in run(config_dir, "-M").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line[0].isspace():
            out.add(f"{fields[0]}/{fields[1]}")
    return out


def master_options(config_dir: str) -> dict[str, str]:
    """``service/type/option`` -> value, for every ``-o`` in master.cf."""
    out = {}
    for line in run(config_dir, "-P").splitlines():
        # "name = value", or "name =" for an empty value (which overrides main.cf too)
        key, sep, value = line.partition(" =")
        if sep:
            out[key.strip()] = value.strip()
    return out
