"""Request bodies: read within a size limit while they stream in, decoded as JSON, and checked for
what no schema expresses — nesting depth, lone surrogates, integers beyond 64 bits, numbers that
overflow to infinity — so that no body, however odd, reaches the store or the ledger and fails
there with a 5xx. Every failure is an ``ApiError`` (4xx) naming the problem and, where it can,
the field."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

MAX_BODY = 256 * 1024
MAX_DEPTH = 64             # no payload we accept nests deeper (PagerDuty details stop at 8)
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1   # what SQLite stores as an integer


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``: from a declared
    length before anything is read, else while streaming it in. Every route reads bodies through
    here, so no route, authenticated or not, ever holds more than ``limit`` bytes of one."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, "too_large", f"request bodies are limited to {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError(413, "too_large", f"request bodies are limited to {limit} bytes")
    return bytes(raw)


def decode_json(raw: bytes) -> Any:
    """``raw`` as JSON that is safe to validate, store and ledger, or a 400 naming what is wrong."""
    try:
        value = json.loads(raw or b"null", parse_constant=_no_constants)
    except RecursionError:
        raise ApiError(400, "bad_json", f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    check_json(value)
    return value


def check_json(value: Any) -> None:
    """Raise a 400 at the first unsafe value of a decoded document (nested too deep, a lone
    surrogate or a NUL character, an integer past 64 bits, an infinite number). The common case — nothing wrong — is
    one walk that builds no paths; only a document with something wrong is walked again, with
    paths, to name the first bad field."""
    if not _unsafe(value):
        return
    _check_with_paths(value)


def _unsafe(value: Any) -> bool:
    """Whether anything in the document is unsafe (no recursion, no paths)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            if depth >= MAX_DEPTH:
                return True
            for key, child in item.items():
                if (not key.isascii() and _has_surrogate(key)) or "\x00" in key:
                    return True
                push((child, depth + 1))
        elif kind is list:
            if depth >= MAX_DEPTH:
                return True
            for child in item:
                push((child, depth + 1))
        elif kind is str:
            if (not item.isascii() and _has_surrogate(item)) or "\x00" in item:
                return True
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return True
        elif kind is float:
            if item in (float("inf"), float("-inf")):
                return True
        elif depth > MAX_DEPTH:
            return True
    return False


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_with_paths(value: Any) -> None:
    """Walk a decoded document without recursion; raise a 400 at the first unsafe value."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, "bad_json", f"the body is nested deeper than {MAX_DEPTH} levels", path or None)
        if isinstance(item, dict):   # children pushed last-first, so the first bad field is reported
            for key in item:
                _check_text(key, path or None, "a key")
            stack.extend((child, f"{path}.{key}" if path else key, depth + 1) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((item[i], f"{path}[{i}]", depth + 1) for i in range(len(item) - 1, -1, -1))
        elif isinstance(item, str):
            _check_text(item, path or None, "text")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise ApiError(400, "bad_json", "integers must fit in 64 bits", path or None)
        elif isinstance(item, float) and item in (float("inf"), float("-inf")):
            raise ApiError(400, "bad_json", "a number is too large to represent", path or None)


def _check_text(text: str, field: str | None, what: str) -> None:
    if "\x00" in text:   # PostgreSQL stores no NUL in text; no payload we take needs one
        raise ApiError(400, "bad_json", f"{what} holds a NUL character (\\u0000): not accepted", field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "bad_json", f"{what} holds a lone surrogate (\\ud800-\\udfff): not valid Unicode",
                       field) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
