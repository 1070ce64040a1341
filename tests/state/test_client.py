"""Redis connection settings from the config (no Redis needed)."""

from __future__ import annotations

from smtp_balancer.config.services import RedisConfig
from smtp_balancer.state.client import sentinel_kwargs


def test_sentinel_hosts_are_read_as_the_config_checked_them_ipv6_too():
    cfg = RedisConfig.model_validate(
        {"sentinel": {"hosts": ["[::1]:26379", "sentinel2.internal:26380"], "service_name": "m"}}
    )
    hosts, kwargs = sentinel_kwargs(cfg)
    assert hosts == [("::1", 26379), ("sentinel2.internal", 26380)]
    assert kwargs == {"socket_connect_timeout": cfg.connect_timeout_ms / 1000}
