"""What every engine shares: the id format and the resume rules, without sockets."""

from __future__ import annotations

import pytest

from sse_server.channels import parse_event_id
from sse_server.channels.engine import new_epoch


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("abc-1", ("abc", 1)),
        ("abc-0", ("abc", 0)),
        ("abc-17;news", ("abc", 17)),  # a multi-channel stream's id: the channel after ";"
        ("abc-17;a;b-3", ("abc", 17)),  # a channel name may hold ";" and "-"
        ("abc-" + "9" * 20, ("abc", int("9" * 20))),
        ("abc-" + "9" * 21, None),  # longer than any sequence we issue: never parsed as an int
        ("abc-" + "9" * 5000, None),
        ("abc-\u00b2", None),  # a digit to str.isdigit, not to us
        ("abc-\u0661", None),  # an Arabic-Indic digit
        ("abc-", None),
        ("-1", None),
        ("17", None),
        ("", None),
        ("abc-1x", None),
        ("abc--1", ("abc-", 1)),  # rpartition: the epoch is then "abc-", which no engine issues
    ],
)
def test_parse_event_id(event_id: str, expected: tuple[str, int] | None) -> None:
    """Only ``<epoch>-<ASCII digits>`` (with an optional ``;channel``) is an id of ours."""
    assert parse_event_id(event_id) == expected


def test_epochs_differ_and_cannot_be_confused_with_the_separators() -> None:
    """Two engines started in the same millisecond still differ; an epoch holds no '-' or ';'."""
    epochs = {new_epoch() for _ in range(200)}
    assert len(epochs) > 190  # 16 random bits: a collision in 200 draws is rare, not impossible
    assert all(e.isalnum() and e.isascii() for e in epochs)
