"""The one loader of every Lua script we send to Redis.

Scripts that read hand-editable values start with ``values.lua``, the Lua half
of the value grammar (``state/values.py`` is the Python half), so select.lua and
the mirror accept and refuse exactly the same strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

from smtp_balancer.state.keys import LUA_CONSTANTS

# state/keys.py's lifetimes and windows as Lua locals, first in every script
CONSTANTS = "\n".join(f"local {name} = {value}" for name, value in LUA_CONSTANTS.items())


@dataclass(frozen=True)
class LuaScript:
    name: str
    text: str

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def load(
    name: str, package: str = "smtp_balancer.state", *, with_values: bool = False, prelude: str = ""
) -> LuaScript:
    """``prelude``: a file of shared functions from the same package, sent first."""
    text = _read(package, name)
    if prelude:
        text = _read(package, prelude) + "\n" + text
    if with_values:
        text = _read("smtp_balancer.state", "values.lua") + "\n" + text
    return LuaScript(name, CONSTANTS + "\n" + text)


VALUES = load("values.lua")
# window.lua: a rate cap's per-second window, which these three count in
SELECT = load("select.lua", with_values=True, prelude="window.lua")
LEASE = load("lease.lua", with_values=True)
RATE_LEASE = load("rate_lease.lua", with_values=True, prelude="window.lua")
RATE_RETURN = load("rate_return.lua", prelude="window.lua")
ARMS = load("arms.lua", prelude="armbook.lua")
ARM_READ = load("arm_read.lua", prelude="armbook.lua")
COUNT = load("count.lua", with_values=True)
# the rules' scripts: act.lua, the actions both share, goes first
HIT = load("hit.lua", prelude="act.lua")
RATE = load("rate.lua", prelude="act.lua")
HEALTH = load("health.lua")
REPUTATION = load("reputation.lua")
OWNER = load("owner.lua")
# what a decider's lease round sends (engine/leases.py)
LEASE_ROUND = (LEASE, COUNT, RATE_LEASE, RATE_RETURN, ARMS)
