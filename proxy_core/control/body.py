"""Strict parsing of control-API input: bounded JSON bodies, typed fields, query flags and path names.

Anything a request carries is checked here before it reaches the engine: unknown fields and wrong types are
refused naming the field, nesting is bounded before the JSON parser runs, and names can never be paths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy_core.config import NAME_PATTERN, parse_address
from proxy_core.errors import BadRequest, ConfigError, WsproxyError

MAX_BODY = 64 * 1024  # a control body is a handful of fields; anything bigger is not ours (413)
MAX_DEPTH = 8  # bodies are flat objects; deeper nesting is refused before parsing, so no recursion blow-up
MAX_CONN_ID = 2**63 - 1


class TooLarge(WsproxyError):
    """A request body over MAX_BODY."""

    status = 413
    code = "too_large"


@dataclass(frozen=True, slots=True)
class Spec:
    """One accepted body field: its JSON type ("integer", "number", "string", "boolean") and rules."""

    kind: str
    required: bool = False
    nullable: bool = False


_KINDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def check_depth(raw: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `limit` with a linear scan, before json.loads can recurse on it."""
    depth = 0
    in_string = False
    escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                raise BadRequest(f"body: JSON nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an empty object."""
    if len(raw) > MAX_BODY:
        raise TooLarge(f"body: {len(raw)} bytes is over the {MAX_BODY}-byte limit")
    if not raw.strip():
        return {}
    check_depth(raw)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest("body: not UTF-8") from exc
    except RecursionError as exc:
        raise BadRequest("body: JSON nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"body: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"body: expected a JSON object, got {type(data).__name__}")
    return data


def validate(data: Mapping[str, Any], specs: Mapping[str, Spec]) -> dict[str, Any]:
    """Check each field's presence and type; unknown fields are refused, not ignored."""
    for key in data:
        if key not in specs:
            allowed = ", ".join(specs) or "none"
            raise BadRequest(f"unknown field {quote_input(key)}; allowed: {allowed}")
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        if key not in data:
            if spec.required:
                raise BadRequest(f"field {key!r} is required")
            continue
        value = data[key]
        if value is None:
            if not spec.nullable:
                raise BadRequest(f"field {key!r}: expected {_KINDS[spec.kind]}, got null")
            out[key] = None
            continue
        if not _is(spec.kind, value):
            raise BadRequest(f"field {key!r}: expected {_KINDS[spec.kind]}, got {_json_type(value)}")
        out[key] = value
    return out


def _is(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, str)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def quote_input(text: str, limit: int = 40) -> str:
    """A client-sent string, escaped and shortened for an error message."""
    shown = repr(text[:limit])
    return shown + ("..." if len(text) > limit else "")


# -- query strings and path parts ----------------------------------------------------------------


def check_query(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse unknown query parameters, naming the first one."""
    for key in query:
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise BadRequest(f"unknown query parameter {quote_input(key)}; allowed: {names}")


def query_int(query: Mapping[str, str], key: str, default: int | None, low: int = 0) -> int | None:
    """An integer query parameter >= `low`, or `default` when absent."""
    text = query.get(key)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise BadRequest(f"query parameter {key!r}: expected an integer >= {low}, got {quote_input(text)}")
    value = int(text)
    if value < low:
        raise BadRequest(f"query parameter {key!r}: expected an integer >= {low}, got {value}")
    return value


def query_flag(query: Mapping[str, str], key: str) -> bool:
    """`?force=true` style flags: true/false/1/0, absent is false."""
    text = query.get(key)
    if text is None:
        return False
    lowered = text.lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {key!r}: expected true or false, got {quote_input(text)}")


def server_name(text: str) -> str:
    """A server name (or POOL/NAME) from a URL path; the pattern excludes '/', '..' alone names nothing on disk."""
    parts = text.split("/", 1)
    bad = len(parts) == 2 and any(not part.strip(".") for part in parts)  # "../x" is no pool
    if bad or not all(NAME_PATTERN.fullmatch(part) for part in parts):  # fullmatch: `$` would let "b1\n" in
        raise BadRequest(f"invalid server name {quote_input(text)}: use 1-64 of A-Z a-z 0-9 _ . - (or POOL/NAME)")
    return text


def pool_name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise BadRequest(f"invalid pool name {quote_input(text)}: use 1-64 of A-Z a-z 0-9 _ . -")
    return text


def conn_id(text: str) -> int:
    """A connection id from a URL path."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_CONN_ID:
        raise BadRequest(f"invalid connection id {quote_input(text)}: expected a positive integer")
    return int(text)


def address(text: str) -> str:
    """HOST:PORT with a host a resolver accepts (printable, labels of 1-63 characters), checked before any lookup."""
    problem = "expected HOST:PORT with a port in 1..65535"
    try:
        host, _ = parse_address("address", text)
    except ConfigError:
        raise BadRequest(f"invalid address {quote_input(text)}: {problem}") from None
    if not host.isprintable():
        raise BadRequest(f"invalid address {quote_input(text)}: the host has control characters")
    if ":" not in host:  # not an IPv6 literal: a name or IPv4, held to DNS limits
        try:
            encoded = host.encode("idna")
        except UnicodeError:
            raise BadRequest(f"invalid address {quote_input(text)}: not a valid host name") from None
        if len(encoded) > 253:
            raise BadRequest(f"invalid address {quote_input(text)}: host name over 253 characters")
    return text
