from datetime import date

from smtp_balancer.config.builtins import BUILTIN_SCHEDULES
from smtp_balancer.decision.warmup import caps_for, normalise_steps, resolve_schedule


def test_caps_by_age():
    steps = normalise_steps([10, 20])
    start = date(2026, 11, 1)
    assert caps_for(start, steps, date(2026, 10, 31)).day == 0  # before start: nothing
    c1 = caps_for(start, steps, start)
    assert (c1.day, c1.hour, c1.warmup_day) == (10, None, 1)
    assert caps_for(start, steps, date(2026, 11, 2)).day == 20
    assert caps_for(start, steps, date(2026, 11, 3)).day is None  # warm


def test_builtin_curves_grow_and_have_hourly_caps():
    for name, steps in BUILTIN_SCHEDULES.items():
        dailies = [d for d, _ in steps]
        assert dailies == sorted(dailies) and dailies[0] < dailies[-1], name
        assert all(h is not None and 0 < h <= d for d, h in steps), name


def test_user_schedule_shadows_builtin_name():
    assert resolve_schedule("standard", {"standard": [5]}) == ((5, None),)


def test_the_reference_states_the_builtin_schedules_as_they_are():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "configuration.md").read_text()
    for name, steps in BUILTIN_SCHEDULES.items():
        line = f"  - `{name}` ({len(steps)} days): " + ", ".join(f"{d}/{h}" for d, h in steps)
        assert line in readme.splitlines(), name
