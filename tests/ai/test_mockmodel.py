"""The mock model, pure: deterministic answers, token limits, tokenizing, prompt token counts."""

from __future__ import annotations

import pytest

from sse_server.ai.mockmodel import count_prompt_tokens, mock_complete, mock_reply, tokenize
from tests.ai.helpers import MESSAGES


@pytest.mark.parametrize("text", ["", "Hello, streaming world!", "a\n\n  b\tc <b>x</b> &amp; 12345 é😀", "   ",
                                  "supercalifragilistic 1234567 --> ```code```"])
def test_tokenize_round_trips(text: str) -> None:
    """Joining the tokens gives the text back exactly."""
    assert "".join(tokenize(text)) == text


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, streaming world!", ["Hello", ",", " stream", "ing", " world", "!"]),
        ("12345", ["123", "45"]),
        ("a  b", ["a", "  b"]),
        ("x\n", ["x", "\n"]),
    ],
)
def test_tokenize_pieces(text: str, tokens: list[str]) -> None:
    """Words split every six letters, numbers every three digits, leading space kept with the piece."""
    assert tokenize(text) == tokens


def test_same_messages_same_answer() -> None:
    """The answer is a function of the messages alone: equal copies get equal text, tokens and usage."""
    first, again = mock_complete(MESSAGES), mock_complete([dict(m) for m in MESSAGES])
    assert (first.text, first.tokens, first.usage, first.finish_reason) == (
        again.text, again.tokens, again.usage, again.finish_reason)
    assert first.text == mock_reply(MESSAGES) and first.finish_reason == "stop"


def test_different_prompts_get_varied_answers() -> None:
    """Different prompts get different answers, some with markup-looking text, lists or code."""
    answers = {mock_complete([{"role": "user", "content": f"tell me about topic {i} and caching"}]).text
               for i in range(20)}
    assert len(answers) == 20
    assert any("<" in a for a in answers) and any("**" in a or "`" in a for a in answers)


def test_roles_change_the_answer() -> None:
    """The same text under another role (or with an earlier turn) is another conversation."""
    as_system = [{"role": "system", "content": MESSAGES[0]["content"]}]
    with_history = [{"role": "assistant", "content": "hi"}, *MESSAGES]
    assert len({mock_reply(MESSAGES), mock_reply(as_system), mock_reply(with_history)}) == 3


@pytest.mark.parametrize("max_tokens", [1, 3, 10])
def test_max_tokens_is_honoured(max_tokens: int) -> None:
    """max_tokens cuts the answer to that many tokens, a prefix of the full one, with finish_reason "length"."""
    full = mock_complete(MESSAGES)
    cut = mock_complete(MESSAGES, max_tokens=max_tokens)
    assert len(full.tokens) > 10
    assert cut.tokens == full.tokens[:max_tokens] and cut.finish_reason == "length"
    assert cut.usage["completion_tokens"] == max_tokens
    assert cut.usage["total_tokens"] == cut.usage["prompt_tokens"] + max_tokens


def test_max_tokens_above_the_answer_changes_nothing() -> None:
    """A limit the answer does not reach leaves it whole with finish_reason "stop"."""
    full = mock_complete(MESSAGES)
    roomy = mock_complete(MESSAGES, max_tokens=len(full.tokens))
    assert roomy.tokens == full.tokens and roomy.finish_reason == "stop"


def test_tokens_are_the_answer() -> None:
    """The completion's tokens are the reply tokenized, and its usage counts them."""
    completion = mock_complete(MESSAGES)
    assert completion.tokens == tokenize(mock_reply(MESSAGES))
    assert completion.usage["completion_tokens"] == len(completion.tokens)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": ""}], 0 + 4 + 3),
        ([{"role": "user", "content": "Hello, streaming world!"}], 6 + 4 + 3),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], (3 + 4) + (1 + 4) + 3),
    ],
)
def test_prompt_token_counting(messages: list[dict[str, str]], expected: int) -> None:
    """Prompt tokens are each message's content tokens plus 4 per message plus 3, as usage reports."""
    assert count_prompt_tokens(messages) == expected
    assert mock_complete(messages).usage["prompt_tokens"] == expected
