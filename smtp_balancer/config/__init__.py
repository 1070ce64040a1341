"""Configuration: the YAML model, its loader and its cross-reference checks."""

from smtp_balancer.config.endpoints import EndpointConfig
from smtp_balancer.config.loader import (
    ConfigInvalid,
    default_config_path,
    load_config,
    parse_config,
    validate_config,
)
from smtp_balancer.config.model import BalancerConfig, PoolConfig, RuleConfig

__all__ = [
    "BalancerConfig",
    "ConfigInvalid",
    "EndpointConfig",
    "PoolConfig",
    "RuleConfig",
    "default_config_path",
    "load_config",
    "parse_config",
    "validate_config",
]
