"""Pure parsers for values a client chose: integers, JSON, text to echo back.

Each turns what the standard library would raise on hostile input into one
ValueError subclass whose message is safe to send back, so a route answers 400
instead of 500. What each guards against:

- ``int()`` accepts any Unicode digit ``str.isdigit()`` does not promise (``"²"``
  passes ``isdigit`` and fails ``int``), and refuses strings over 4,300 digits
  (``sys.get_int_max_str_digits``): ``parse_int`` takes ASCII digits only and
  decides a range without converting a string longer than its bounds.
- ``json.loads`` raises RecursionError on deep nesting, ValueError on an integer
  over the digit limit, accepts ``NaN``/``Infinity`` (not JSON, RFC 8259 §6) and
  turns ``1e999`` into inf; a ``\\ud800`` escape decodes to a lone surrogate that
  ``str.encode("utf-8")`` refuses later, wherever the string is echoed.
  ``load_json`` refuses or replaces each of these before a handler sees the value.

    >>> parse_int("0042", 0, 100)
    42
    >>> load_json(b'{"model": "\\\\ud800"}', surrogates="replace")
    {'model': '?'}
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

__all__ = [
    "BadInteger",
    "BadJSON",
    "NotAnInteger",
    "OutOfRange",
    "load_json",
    "parse_int",
    "utf8_safe",
]


class BadInteger(ValueError):
    """A client's integer we will not accept; ``str(e)`` completes "<name> ..."."""


class NotAnInteger(BadInteger):
    def __init__(self) -> None:
        super().__init__("must be an integer (ASCII digits)")


class OutOfRange(BadInteger):
    def __init__(self, lo: int, hi: int) -> None:
        super().__init__(f"must be between {lo} and {hi}")
        self.lo = lo
        self.hi = hi


_DECIMAL = re.compile(r"-?[0-9]+")  # ASCII only: re's [0-9] never matches "²" or "٣"


def parse_int(text: str, lo: int, hi: int) -> int:
    """``text`` as an integer in ``lo..hi``: ASCII digits after an optional ``-``.

    Leading zeros are fine however many; a value outside the range raises
    OutOfRange without ever converting more digits than the bounds have.

    >>> parse_int("-7", -10, 10)
    -7
    >>> try:
    ...     parse_int("²", 0, 10)
    ... except BadInteger as e:
    ...     print("n", e)
    n must be an integer (ASCII digits)
    """
    if not _DECIMAL.fullmatch(text):
        raise NotAnInteger()
    negative = text.startswith("-")
    digits = text.lstrip("-").lstrip("0") or "0"
    # More digits than either bound has: its magnitude is past both, so it is out of range.
    if len(digits) > max(len(str(abs(lo))), len(str(abs(hi)))):
        raise OutOfRange(lo, hi)
    value = -int(digits) if negative else int(digits)
    if not lo <= value <= hi:
        raise OutOfRange(lo, hi)
    return value


class BadJSON(ValueError):
    """Text that is not JSON we accept; ``str(e)`` says why and never quotes the input."""


# A lone surrogate can only come from a \uD800-\uDFFF escape: UTF-8 decoding refuses
# encoded surrogates. Text without such an escape is never walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> float:
    raise BadJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON("a number is too large")
    return value


def load_json(raw: bytes | str, *, surrogates: Literal["reject", "replace"] = "reject") -> Any:
    """The JSON value of ``raw`` (UTF-8 bytes or text), else BadJSON.

    ``surrogates`` says what a string holding a lone surrogate does: ``"reject"``
    raises BadJSON, ``"replace"`` makes each one ``?`` (keys included).
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except BadJSON:
        raise
    except UnicodeDecodeError:
        raise BadJSON("the text is not UTF-8") from None
    except json.JSONDecodeError as e:  # its message names a position, never the input
        raise BadJSON(str(e)) from None
    except RecursionError:
        raise BadJSON("values are nested too deeply") from None
    except ValueError:  # an integer past the interpreter's digit limit
        raise BadJSON("a number has too many digits") from None
    probe = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if _SURROGATE_ESCAPE.search(probe) or (isinstance(raw, str) and utf8_safe(raw) is not raw):
        value = _without_surrogates(value, replace=surrogates == "replace")
    return value


def utf8_safe(text: str) -> str:
    """``text`` with each lone surrogate made ``?``, so it always encodes as UTF-8.

    >>> utf8_safe("caf\\ud800")
    'caf?'
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean(text: str, replace: bool) -> str:
    safe = utf8_safe(text)
    if safe is not text and not replace:
        raise BadJSON("a string holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
    return safe


def _without_surrogates(value: Any, *, replace: bool) -> Any:
    """``value`` with every string cleaned; iterative, since the parser allows more
    nesting than a recursive walk in a handler's stack could."""
    if isinstance(value, str):
        return _clean(value, replace)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    node[i] = _clean(item, replace)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
        elif isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, item in items:
                if isinstance(item, str):
                    item = _clean(item, replace)
                elif isinstance(item, (list, dict)):
                    stack.append(item)
                node[_clean(key, replace)] = item
    return value
