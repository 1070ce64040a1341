"""The configuration reference (docs/reference/configuration.md) lists every key the config model accepts,
and nothing it would refuse: the two cannot drift apart."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from smtp_balancer.config import validate_config
from smtp_balancer.config.model import BalancerConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "configuration.md"
ANY = "*"  # a name the operator chooses (a mapping key) or a list position


def reference() -> dict[str, Any]:
    """The YAML block of the configuration reference."""
    text = REFERENCE.read_text()
    section = text[text.index("# Configuration reference") :]
    end = section.find("\n## ", 1)  # the page's next section, if any
    section = section if end < 0 else section[:end]
    block = section[section.index("```yaml\n") + 8 :]
    return yaml.safe_load(block[: block.index("```")])


def containers(tp: Any) -> list[tuple[int, type[BaseModel]]]:
    """The models a field's type holds, each with how many dicts and lists wrap it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(0, tp)]
    if origin is dict:
        return [(depth + 1, m) for depth, m in containers(args[1])]
    if origin in (list, tuple):
        return [(depth + 1, m) for depth, m in containers(args[0])]
    if origin is typing.Annotated:
        return containers(args[0])
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in containers(arg)]
    return []


def model_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        path = (*prefix, field.alias or name)
        paths.add(path)
        for depth, inner in containers(field.annotation):
            paths |= model_paths(inner, path + (ANY,) * depth)
    return paths


def listed(node: Any, path: tuple[str, ...]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head == ANY:
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        return any(listed(value, rest) for value in values)
    return isinstance(node, dict) and head in node and listed(node[head], rest)


def test_every_model_key_is_in_the_readme_reference():
    doc = reference()
    missing = sorted(".".join(p) for p in model_paths(BalancerConfig) if not listed(doc, p))
    assert missing == [], f"the configuration reference lacks: {missing}"


# redis sections that exclude each other: the reference shows all, each is valid
# without those it excludes (a cluster takes no TLS yet)
EXCLUDES = {"sentinel": ("cluster",), "cluster": ("sentinel", "tls")}


def test_the_reference_itself_is_a_valid_config():
    # a key the model would refuse (a typo, a removed option) fails here with its path
    for excluded in EXCLUDES.values():
        doc = reference()
        for name in excluded:
            del doc["redis"][name]
        validate_config(doc)


def test_a_key_left_out_of_the_reference_is_caught():
    doc = reference()
    del doc["feedback"]["probes"]["recover_after"]
    del doc["rules"][1]["size"]
    paths = model_paths(BalancerConfig)
    missing = sorted(".".join(p) for p in paths if not listed(doc, p))
    assert missing == [
        "feedback.probes.recover_after",
        "rules.*.size",
        "rules.*.size.max",
        "rules.*.size.min",
    ]


def test_the_reference_names_every_built_in_provider() -> None:
    """A weight, a cap or a rule names providers by these names; the reference lists them all."""
    import re

    from smtp_balancer.config.builtins import BUILTIN_PROVIDERS

    text = REFERENCE.read_text()
    block = re.search(r"^providers: +# extends the built-in table: (.*?)\(and \"other\"\)", text, re.M | re.S)
    assert block is not None, "the providers: comment in the configuration reference"
    listed = {name.strip() for name in re.sub(r"\s*#\s*", " ", block[1]).split(",")}
    assert listed == set(BUILTIN_PROVIDERS), listed ^ set(BUILTIN_PROVIDERS)
