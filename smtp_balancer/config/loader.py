"""Load and validate the YAML configuration, reporting every error at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from smtp_balancer.config.keys import closest_key
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.config.references import ConfigError, reference_errors
from smtp_balancer.config.yaml_reader import YamlProblem, read_yaml

DEFAULT_CONFIG_PATH = "/etc/smtp-balancer/config.yaml"
CONFIG_ENV = "SMTP_BALANCER_CONFIG"


class ConfigInvalid(Exception):
    """The configuration cannot be used; ``errors`` lists (path, message) pairs."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {message}" if path else f"  {message}" for path, message in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


def default_config_path() -> str:
    return os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str], *, shadow: bool = True) -> BalancerConfig:
    """The config at ``path``; with ``shadow``, its shadow mode's candidate too (see
    ``attach_shadow``: a broken candidate never makes the config itself unusable)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(source, [("", f"cannot read config: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(source, [("", f"config is not UTF-8: {exc}")]) from exc
    config = parse_config(text, source)
    return attach_shadow(config, Path(path).parent) if shadow else config


def attach_shadow(config: BalancerConfig, folder: Path) -> BalancerConfig:
    """Read ``shadow.config`` (relative to ``folder``) and attach it to ``config``, or
    the reason it cannot be used: mail keeps flowing under the live config either way.
    A candidate's own ``shadow:`` is not followed."""
    if config.shadow is None:
        return config
    path = folder / config.shadow.config
    try:
        candidate = load_config(path, shadow=False)
    except ConfigInvalid as exc:
        return config.with_shadow(None, f"shadow.config {exc}")
    return config.with_shadow(candidate)


def parse_config(text: str, source: str = "<config>") -> BalancerConfig:
    try:
        raw, duplicates = read_yaml(text)
    except YamlProblem as exc:
        raise ConfigInvalid(source, exc.errors) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigInvalid(source, [("", f"YAML syntax error at {where}{problem}")]) from exc
    if not isinstance(raw, Mapping):
        raise ConfigInvalid(source, [*duplicates, ("", "the config must be a YAML mapping")])
    return validate_config(raw, source, duplicates)


def validate_config(
    raw: Mapping[str, Any], source: str = "<config>", earlier: list[ConfigError] | None = None
) -> BalancerConfig:
    """``earlier``: errors found while reading (duplicate keys), reported with the rest."""
    errors: list[ConfigError] = list(earlier or [])
    config: BalancerConfig | None = None
    try:
        config = BalancerConfig.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
    errors.extend(reference_errors(raw))
    if errors or config is None:
        raise ConfigInvalid(source, _dedupe(errors))
    return config


def _dedupe(errors: list[ConfigError]) -> list[ConfigError]:
    return list(dict.fromkeys(errors))


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_errors(exc: ValidationError) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for err in exc.errors(include_url=False):
        # union branches add their type name to loc; drop those for a readable path
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p)))
        message = _message(err)
        if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            message += closest_key(BalancerConfig, loc)
        errors.append((format_path(loc), message))
    return errors


def _is_union_tag(part: str) -> bool:
    return part in {"int", "str", "WarmupStep", "list[union[WarmupStep,int]]"} or part.startswith(
        ("list[", "function-")
    )


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return str(err["msg"]).lower()
