"""The keys a config section takes, for "did you mean" hints on unknown keys."""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


def _models(annotation: Any) -> list[Any]:
    """The types an annotation may hold, with Optional, unions and Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _models(arg)]
    return [annotation]


def section_keys(root: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The keys of the model at ``path`` (pydantic's loc, without its last part)."""
    candidates: list[Any] = [root]
    for part in path:
        following: list[Any] = []
        for kind in (t for c in candidates for t in _models(c)):
            origin = get_origin(kind)
            if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(part, str):
                field = kind.model_fields.get(part)
                if field is not None:
                    following.append(field.annotation)
            elif origin is dict and isinstance(part, str):
                following.append(get_args(kind)[1])
            elif origin is list and isinstance(part, int):
                following.append(get_args(kind)[0])
        candidates = following
    keys = [
        name
        for kind in (t for c in candidates for t in _models(c))
        if isinstance(kind, type) and issubclass(kind, BaseModel)
        for name in kind.model_fields
    ]
    return list(dict.fromkeys(keys))


def closest_key(root: type[BaseModel], loc: Sequence[int | str]) -> str:
    """``"; did you mean 'x'?"`` for the known key nearest an unknown one, or ""."""
    keys = section_keys(root, loc[:-1])
    near = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""
