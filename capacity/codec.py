"""The JSON codec for records: plain JSON out, and back in with every field's type checked.

The decoder names the offending field as a dotted path (``model.fixed_bytes``), so a
hand-edited or damaged file fails with one line that says where.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from typing import Any, Literal, TypeVar


def to_jsonable(value: Any) -> Any:
    """A record (or anything made of records) as plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def dumps(record: Any) -> str:
    return json.dumps(to_jsonable(record), indent=2, sort_keys=False) + "\n"


T = TypeVar("T")


class DecodeError(Exception):
    """Raised by ``from_jsonable``; ``field`` is a dotted path to the offending value."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


# The largest magnitude an integer field may hold: every capplan figure (bytes, pids, clock
# ticks, counts) fits a signed 64-bit word, and a bigger one would overflow later, where it
# is made a float (10**400) or handed to the C library.
MAX_INTEGER = 2**63


def from_jsonable(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from JSON data, checking every field's type against the annotations.

    Any JSON value gives the record or DecodeError naming the field, never another
    exception: integers are bounded by MAX_INTEGER, numbers are finite, strings are
    encodable text (json.loads makes lone surrogates of ``"\\ud800"``).
    """
    try:
        return typing.cast(T, _decode(cls, data, path))
    except RecursionError:
        raise DecodeError(path or "(top level)", "nested too deeply") from None


def _decode(tp: Any, data: Any, path: str) -> Any:
    # The common case first: a well-formed int, float or str field (a model of 2,000
    # processes x 10 samples holds half a million), without the general dispatch below.
    kind = type(data)
    if tp is int and kind is int:
        return data if -MAX_INTEGER <= data <= MAX_INTEGER else _out_of_range(data, path)
    if tp is float and kind is float and math.isfinite(data):
        return data
    if tp is str and kind is str and data.isascii():
        return data
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_record(tp, data, path)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, data, path)
            except DecodeError as err:
                errors.append(err)
        raise errors[0] if errors else DecodeError(path, "must not be null")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        words = [member.value for member in tp]
        if isinstance(data, bool) or data not in words:
            raise DecodeError(path, f"expected one of {words}, got {short(data)}")
        return tp(data)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if data not in allowed:
            raise DecodeError(path, f"expected one of {list(allowed)}, got {short(data)}")
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise DecodeError(path, f"expected a list, got {_kind(data)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(data))
        if len(data) != len(args):
            raise DecodeError(path, f"expected {len(args)} items, got {len(data)}")
        return tuple(
            _decode(a, item, f"{path}[{i}]")
            for i, (a, item) in enumerate(zip(args, data, strict=False))
        )
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(data, dict):
            raise DecodeError(path, f"expected an object, got {_kind(data)}")
        return {
            str(k): _decode(value_type, v, f"{path}.{k}" if path else str(k))
            for k, v in data.items()
        }
    if tp is type(None):
        if data is not None:
            raise DecodeError(path, f"expected null, got {_kind(data)}")
        return None
    if tp is bool:
        if not isinstance(data, bool):
            raise DecodeError(path, f"expected true or false, got {_kind(data)}")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise DecodeError(path, f"expected an integer, got {_kind(data)}")
        return _bounded(data, path)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise DecodeError(path, f"expected a number, got {_kind(data)}")
        if isinstance(data, int):
            return float(_bounded(data, path))
        if not math.isfinite(data):
            # json.loads accepts NaN and Infinity; no capplan figure is ever either.
            raise DecodeError(path, f"expected a finite number, got {data!r}")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise DecodeError(path, f"expected a string, got {_kind(data)}")
        if not data.isascii():
            try:
                data.encode("utf-8")
            except UnicodeEncodeError as err:
                raise DecodeError(
                    path, f"not text: a lone surrogate \\u{ord(data[err.start]):04x}"
                ) from None
        return data
    raise DecodeError(path, f"unsupported type {tp!r}")  # a programming error, not user input


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _decode_record(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise DecodeError(path, f"expected an object, got {_kind(data)}")
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        field_path = f"{path}.{field.name}" if path else field.name
        if field.name not in data:
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise DecodeError(field_path, "missing")
        kwargs[field.name] = _decode(hints[field.name], data[field.name], field_path)
    return cls(**kwargs)


def _bounded(value: int, path: str) -> int:
    if -MAX_INTEGER <= value <= MAX_INTEGER:
        return value
    return _out_of_range(value, path)


def _out_of_range(value: int, path: str) -> typing.NoReturn:
    raise DecodeError(path, f"{short(value)} is out of range: the most is 2**63 either way")


def short(data: Any) -> str:
    """A value quoted in an error message, cut short: a hand-edited file may hold anything.

    Containers are named, not shown (a deeply nested one has no repr within the recursion
    limit), and so are integers too long for ``repr`` (sys.get_int_max_str_digits)."""
    if isinstance(data, dict | list | tuple):
        return f"{_kind(data)} of {len(data)} items"
    if isinstance(data, int) and not isinstance(data, bool) and abs(data) >= 10**60:
        return f"{'a negative' if data < 0 else 'an'} integer of {abs(data).bit_length()} bits"
    text = repr(data[:61] if isinstance(data, str) else data)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(data), type(data).__name__
    )
