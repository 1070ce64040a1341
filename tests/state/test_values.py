"""The value grammar: the real values.lua (as select.lua runs it) and values.py agree.

At least 1,000 generated strings per value kind go through both; any string one
side takes as a number and the other does not, or reads as another number, fails.
"""

from __future__ import annotations

import random

import pytest
import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.values import parse_count, parse_decimal, parse_throttle, parse_weight

DRIVER = """
local kind = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local v = ARGV[i]
  local x
  if kind == 'weight' then x = sb_int(v, 7)
  elseif kind == 'count' then x = sb_count(v)
  elseif kind == 'decimal' then x = sb_decimal(v)
  else x = sb_throttle(v) end
  out[#out + 1] = x and string.format('%.17g', x) or 'junk'
end
return out
"""

PYTHON = {"weight": parse_weight, "count": parse_count, "decimal": parse_decimal, "throttle": parse_throttle}

# the pieces that broke agreement before: Unicode digits, Python's underscores and
# float() syntax (hex, exponents, inf, nan, signs, spaces), Lua's tonumber() syntax
PIECES = [
    *"0123456789",
    "0",
    "1",
    ".",
    ".",
    "\uff10",
    "\u0660",
    "\u0663",
    "\u00b2",
    "_",
    "x",
    "0x",
    "e",
    "E",
    "-",
    "+",
    " ",
    "\t",
    "\n",
    "inf",
    "nan",
    "Infinity",
    "a",
    " reason",
    "\u00a0",
]
FIXED = [
    "",
    "0",
    "00",
    "7",
    "1234567",
    "12345678",
    "\uff10",
    "\u0660",
    "1_0",
    "0x10",
    "0x0.01",
    "0.0_1",
    "1e3",
    " 1",
    "1 ",
    "+1",
    "-1",
    "1.",
    ".5",
    "0.5",
    "0.5 throttled",
    "0.5\tx",
    "1 x",
    "0",
    "0.0",
    "0.999999999",
    "inf",
    "nan",
    "\u0661\u0662",
    "9" * 15,
    "9" * 16,
    "1" * 32,
    "1" * 33,
    "0." + "1" * 30,
    "0.5 ",
    " 0.5",
]


def _strings(rng: random.Random, n: int) -> list[str]:
    out = list(FIXED)
    while len(out) < n:
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9)))
        if rng.random() < 0.4:  # near-misses of valid values, so both sides of the grammar are reached
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 4)))
            text = rng.choice(["0.", "0.0", "1", ""]) + digits + rng.choice(["", "", " why", text])
        out.append(text)
    return out


def _python(kind: str, value: str) -> float | None:
    if kind == "count" and value == "":
        return None  # an absent counter is 0, but an empty string is junk (as in Lua)
    parsed = PYTHON[kind](value)
    return None if parsed is None else float(parsed)


def test_select_lua_runs_the_same_grammar():
    for script in (scripts.SELECT, scripts.LEASE, scripts.COUNT):
        assert script.text.startswith(scripts.VALUES.text)


@pytest.mark.parametrize("kind", sorted(PYTHON))
def test_lua_and_python_agree_on_every_generated_string(rdb: redis.Redis, kind: str):
    strings = _strings(random.Random(f"values-{kind}"), 1200)
    assert len(strings) >= 1000
    lua = rdb.eval(scripts.VALUES.text + DRIVER, 0, kind, *strings)
    assert len(lua) == len(strings)
    accepted = 0
    for value, lua_text in zip(strings, lua, strict=True):
        py = _python(kind, value)
        lua_value = None if lua_text == "junk" else float(lua_text)
        assert py == lua_value, (kind, value, py, lua_text)
        accepted += py is not None
    # the generator reaches both sides of the grammar
    assert 50 < accepted < len(strings) - 50, accepted


def test_parse_int_is_int_of_ascii_digits_and_nothing_else():
    """parse_int reads the digits itself: against int() guarded by the rule written out
    (ASCII digits only, at most ``digits`` of them), on random strings of digits,
    look-alikes (superscripts, Arabic-Indic and full-width digits), signs and spaces."""
    from smtp_balancer.state.values import parse_int

    rng = random.Random(36)
    alphabet = "0123456789" * 4 + "+- .e_\u00b2\u0661\uff11\n"
    for _ in range(20_000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 22)))
        digits = rng.choice([1, 4, 15, 20])
        want = int(raw) if raw and len(raw) <= digits and all("0" <= c <= "9" for c in raw) else None
        assert parse_int(raw, digits) == want, (raw, digits)
    assert parse_int(None, 15) is None and parse_int("9" * 20, 20) == 10**20 - 1
