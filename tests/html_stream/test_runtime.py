"""The swap runtime's text and the markup it looks for (its behaviour in Chromium:
tests/browser/test_swap_runtime.py)."""

from __future__ import annotations

from html_stream import RUNTIME_JS
from html_stream.runtime import MARK_ATTR, empty_placeholder, mark, short_id, swap_marker


def test_runtime_fits_in_400_bytes() -> None:
    """The runtime is at most 400 bytes of UTF-8."""
    assert len(RUNTIME_JS.encode("utf-8")) <= 400


def test_runtime_is_safe_inline() -> None:
    """The runtime is ASCII and cannot end its <script> early."""
    assert RUNTIME_JS.isascii()
    assert "</script" not in RUNTIME_JS.lower() and "<!--" not in RUNTIME_JS


def test_markers_match_the_runtime() -> None:
    """Fallbacks carry the attribute the runtime selects; the swap marker is a bare id comment."""
    assert mark(7) == f" {MARK_ATTR}=7" and f"[{MARK_ATTR}='${{e}}']" in RUNTIME_JS
    assert swap_marker(7) == "<!--7-->" and "/^\\w+$/.test(e=n.data)" in RUNTIME_JS
    assert empty_placeholder(7) == f"<template {MARK_ATTR}=7></template>"


def test_ids_are_short() -> None:
    """Ids are base 36, one character for the first 35 boundaries, and all distinct."""
    assert [short_id(i) for i in (1, 9, 10, 35, 36, 1295, 1296)] == ["1", "9", "a", "z", "10", "zz", "100"]
    assert len({short_id(i) for i in range(1, 5000)}) == 4999
