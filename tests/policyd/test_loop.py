"""The loop that notes when each select() starts: what it lets a callback conclude."""

from __future__ import annotations

import asyncio
import time

from policyd.loop import PolicyLoop, noted_selector


def test_the_previous_select_bounds_the_age_of_what_a_callback_reads() -> None:
    def previous_select(loop: asyncio.AbstractEventLoop) -> float:
        noted = noted_selector(loop)
        assert noted is not None
        return noted.previous

    async def body() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        first = previous_select(loop)
        assert first is not None and first <= loop.time()
        stalled_at = loop.time()
        time.sleep(0.3)  # this iteration stalls: the next one's bound covers the stall
        await asyncio.sleep(0)
        bound = previous_select(loop)
        assert bound is not None and bound <= stalled_at and loop.time() - bound >= 0.3
        resumed_at = loop.time()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # two selects later, the bound starts after the stall
        later = previous_select(loop)
        assert later is not None and later >= resumed_at

    with asyncio.Runner(loop_factory=PolicyLoop) as runner:
        runner.run(body())


def test_another_loop_gives_no_bound() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert noted_selector(loop) is None
    finally:
        loop.close()
