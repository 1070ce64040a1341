"""The test topology shared by unit, engine and end-to-end tests: 3 endpoints at 1:2:1."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ENDPOINT_IP = {"out1": "127.0.0.2", "out2": "127.0.0.3", "out3": "127.0.0.4"}
HELO = {ip: f"{name}.test" for name, ip in ENDPOINT_IP.items()}


def topology() -> dict[str, Any]:
    """Endpoints bound to 127.0.0.2-4, one pool `main` at 1:2:1, one catch-all rule."""
    return {
        "endpoints": {name: {"bind_address": ip, "helo_name": HELO[ip]} for name, ip in ENDPOINT_IP.items()},
        "pools": {
            "main": {
                "endpoints": [
                    {"endpoint": "out1", "weight": 1},
                    {"endpoint": "out2", "weight": 2},
                    {"endpoint": "out3", "weight": 1},
                ]
            }
        },
        "rules": [{"name": "all", "pool": "main"}],
    }


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it; nested mappings merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# transactional mail on out1, bulk on out2 and out3: the message-class tests (milter, Exim)
CLASS_POOLS: dict[str, Any] = {
    "pools": {
        "tx": {"endpoints": [{"endpoint": "out1", "weight": 1}]},
        "bulk": {"endpoints": [{"endpoint": "out2", "weight": 1}, {"endpoint": "out3", "weight": 1}]},
    },
    "rules": [
        {"name": "transactional", "message_class": ["transactional"], "pool": "tx"},
        {"name": "bulk", "message_class": ["bulk"], "pool": "bulk"},
    ],
}
BULK_HEADERS = {"Precedence": "bulk", "List-Unsubscribe": "<mailto:unsubscribe@shop.test>"}


def even_experiment(name: str, rule: str, arms: dict[str, str]) -> dict[str, Any]:
    """An ``experiments:`` entry splitting ``rule`` evenly between arms (arm -> pool)."""
    split = 100 // len(arms)
    return {
        "name": name,
        "rule": rule,
        "arms": [{"name": arm, "pool": pool, "split": split} for arm, pool in arms.items()],
    }


def lone_milter_config(base: Path, milter: dict[str, Any]) -> Path:
    """A config with only the milter, written to ``base``: no Redis (its decisions are
    degraded, which starting, failing to listen and stopping do not need)."""
    config = {
        "redis": {"url": f"unix://{base}/absent.sock"},
        "mx_lookup": {"enabled": False},
        "milter": {"enabled": True, "metrics_listen": "", **milter},
        "endpoints": {"out1": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1"}]}},
    }
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
