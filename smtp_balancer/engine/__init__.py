"""The engine: the decision core's I/O (Redis, DNS) and its background upkeep.

- ``core.py``: the decision flow (mirror, select.lua, degraded);
- ``mirror.py``: keeping the live-state mirror exact (tracking, re-reads);
- ``leases.py``: quota lease refills and batched counters;
- ``breaker.py``, ``junk.py``: the circuit breaker and junk reporting;
- ``threaded.py``: the same engine for threaded callers (the milter);
- ``mx.py``: decision-time MX lookups.
"""

from smtp_balancer.engine.core import Engine, Pending
from smtp_balancer.engine.giveback import StillWaited
from smtp_balancer.engine.threaded import ThreadedEngine

__all__ = ["Engine", "Pending", "StillWaited", "ThreadedEngine"]
