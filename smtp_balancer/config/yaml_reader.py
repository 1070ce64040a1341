"""Reading the YAML config strictly: duplicate keys and over-deep documents are
errors with a path and a line, and dates stay text for the model to validate.

PyYAML's safe loader lets a duplicate key silently win last (an endpoint's
warm-up caps vanished that way), turns ``2026-13-45`` into an exception that
names no path, and recurses once per nesting level. Here the event stream is
checked for depth first (iteratively), the node tree is walked for duplicates
with an explicit stack, and timestamps are not resolved, so the model reports a
bad date at its path alongside every other error.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter

from smtp_balancer.config.references import ConfigError

MAX_DEPTH = 64  # far beyond any real config; PyYAML recurses once per level
T = TypeVar("T")


def shipped_pack(package: str, name: str, model: type[T]) -> list[T]:
    """A YAML list shipped in ``package`` (a rule pack), validated as ``model``s."""
    text = resources.files(package).joinpath(name).read_text()
    return TypeAdapter(list[model]).validate_python(yaml.safe_load(text))  # type: ignore[valid-type]


class _Loader(yaml.SafeLoader):
    """The safe loader without implicit timestamps: dates stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class YamlProblem(Exception):
    """The document cannot be read at all; ``errors`` says why, with lines."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(message for _, message in errors))
        self.errors = errors


def read_yaml(text: str) -> tuple[Any, list[ConfigError]]:
    """The document, and the duplicate-key errors found in it (path, message)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise YamlProblem(
                    [("", f"the document is nested deeper than {MAX_DEPTH} levels (line {line})")]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    node = yaml.compose(text, Loader=_Loader)
    errors = _duplicates(node)
    return yaml.load(text, Loader=_Loader), errors


def _duplicates(root: yaml.Node | None) -> list[ConfigError]:
    errors: list[ConfigError] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                child = f"{path}.{key}" if path else key
                if key in first_line:
                    errors.append(
                        (
                            child,
                            f"duplicate key at line {line} (first at line {first_line[key]})"
                            ": the YAML is ambiguous",
                        )
                    )
                else:
                    first_line[key] = line
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return sorted(errors)
