"""A small strict validator for the JSON bodies of hub messages.

Each spec checks one value and returns it (or raises MessageInvalid naming the path).
Objects are closed: an unknown key is refused, a missing one too (nullable fields are
sent as null, never left out). A bool is never a number; numbers are finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.protocol.hub.errors import MessageInvalid
from corral.protocol.wire import json_type


def fail(path: str, what: str) -> MessageInvalid:
    return MessageInvalid(f"{path}: {what}")


class Spec:
    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Spec):
    max_len: int
    min_len: int = 0
    pattern: re.Pattern[str] | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise fail(path, f"must be a string, not {json_type(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise fail(path, f"must be {self.min_len} to {self.max_len} characters long")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise fail(path, f"must match {self.pattern.pattern}")
        return value


@dataclass(frozen=True)
class Int(Spec):
    min: int = 0
    max: int = 2**63 - 1

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(path, f"must be an integer, not {json_type(value)}")
        if not self.min <= value <= self.max:
            raise fail(path, f"must be between {self.min} and {self.max}")
        return value


@dataclass(frozen=True)
class Num(Spec):
    min: float = 0.0
    max: float = 1e15

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise fail(path, f"must be a number, not {json_type(value)}")
        if not math.isfinite(value) or not self.min <= value <= self.max:
            raise fail(path, f"must be a number between {self.min:g} and {self.max:g}")
        return value


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise fail(path, f"must be true or false, not {json_type(value)}")
        return value


@dataclass(frozen=True)
class OneOf(Spec):
    values: tuple[str, ...]

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or value not in self.values:
            raise fail(path, f"must be one of {', '.join(self.values)}")
        return value


@dataclass(frozen=True)
class Nullable(Spec):
    inner: Spec

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_items: int
    min_items: int = 0

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise fail(path, f"must be an array, not {json_type(value)}")
        if not self.min_items <= len(value) <= self.max_items:
            raise fail(path, f"must hold {self.min_items} to {self.max_items} items")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class MapOf(Spec):
    key: Str
    value: Spec
    max_items: int

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise fail(path, f"must be an object, not {json_type(value)}")
        if len(value) > self.max_items:
            raise fail(path, f"must hold at most {self.max_items} entries")
        out = {}
        for k, v in value.items():
            self.key.check(k, f"{path} key {k[:40]!r}")
            out[k] = self.value.check(v, f"{path}.{k}")
        return out


@dataclass(frozen=True)
class Obj(Spec):
    fields: Mapping[str, Spec]
    then: Callable[[dict[str, Any], str], None] | None = field(default=None, compare=False)

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise fail(path, f"must be an object, not {json_type(value)}")
        for key in value:
            if key not in self.fields:
                raise fail(path, f"unknown field {key[:40]!r}")
        out = {}
        for key, spec in self.fields.items():
            if key not in value:
                raise fail(path, f"missing field {key!r}")
            out[key] = spec.check(value[key], f"{path}.{key}")
        if self.then is not None:
            self.then(out, path)
        return out
