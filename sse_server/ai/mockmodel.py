"""The mock chat model: deterministic text from the prompt, cut into tokens.

Pure: no I/O, no clock. ``mock_complete(messages)`` is a function of the
messages' roles and text alone, so a test can predict what the API will stream.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MOCK_CREATED",
    "MOCK_MODEL",
    "MockCompletion",
    "count_prompt_tokens",
    "mock_complete",
    "mock_reply",
    "tokenize",
]

MOCK_MODEL = "sse-mock-1"
MOCK_CREATED = 1_700_000_000  # the model's fixed "created" date in /v1/models

# BPE-like pieces: a word (split every 6 letters) or number with its leading space,
# or one other character. Joining the pieces gives the text back exactly.
_TOKEN = re.compile(r"\s*[A-Za-z]{1,6}|\s*\d{1,3}|\s*[^\sA-Za-z\d]|\s+")
_WORD = re.compile(r"[^\W\d_][\w'-]*")

_STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each explain few for from further give had has have
having he her here hers him his how i if in into is it its just me more most my no nor not now of off on
once only or other our out over own please same say she should show so some such tell than that the their
them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would write you your
make makes get gets use using want need know like work works help find create build think fix improve
keep learn understand thing things way ways best better good really much many lot something anything
""".split())  # noqa: SIM905 (a word list reads better as text)

_FALLBACK_WORDS = ("streams", "latency", "buffers", "sockets", "events", "tokens", "queues", "clocks",
                   "retries", "caches")

_OPENERS = (
    "Good question about {a}.",
    "Let's think about {a} for a moment.",
    "Here is how I would approach {a}.",
    "Short answer: {a} is mostly about {b}.",
    "Ah, {a}: a fun one.",
    "There are a few ways to look at {a}.",
)
_SENTENCES = (
    "The key idea is that {a} and {b} are linked, so changing one moves the other.",
    "A good first step is to measure {a} before you tune {b}.",
    "In practice, **{a}** matters more than it looks, especially once {b} grows.",
    "Keep `{a}` small and let {b} arrive as soon as it is ready.",
    "If {a} feels slow, look at {b} first; it is usually the culprit.",
    "Think of {a} as a queue: whatever goes in first should come out first.",
    "A tiny experiment helps: try {a} with and without {b}, then compare.",
    "Most of the time {a} is fine as it is; {b} is where the surprises hide.",
    "Roughly {n}% of the effort goes into {a}, and the rest into {b}.",
    "It also helps to write down what {a} should do when {b} fails.",
    "People often skip {a}, and then {b} takes the blame.",
)
# Markup-looking text: the chat page must show it as text, never interpret it.
_MARKUP_SENTENCES = (
    "One common mistake is to read {a} < {b} as a rule; it is a trade-off & a choice.",
    "Markup such as <b>{a}</b> is shown here as plain text, never as HTML.",
    "Even <script>alert(\"{a}\")</script> stays inert text on a page that escapes it.",
    "A link like <a href=\"#{a}\">{b}</a> should appear with its angle brackets.",
    "Entities stay literal too: &amp; is not &, and &lt;{a}&gt; is not a tag.",
)
_CLOSERS = (
    "Hope that helps!",
    "Happy to dig into {a} further if you like.",
    "That is the gist of it.",
    "Try it and see what {b} does.",
)


def tokenize(text: str) -> list[str]:
    """Split text into model-like tokens; ``"".join(tokenize(t)) == t``.

    >>> tokenize("Hello, streaming world!")
    ['Hello', ',', ' stream', 'ing', ' world', '!']
    """
    return _TOKEN.findall(text)


def _topic_words(messages: list[dict[str, Any]], rng: random.Random) -> tuple[list[str], list[str]]:
    """(the prompt's own words, those plus filler words up to four)."""
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    words: dict[str, None] = {}
    for w in _WORD.findall(last_user or " ".join(m["content"] for m in messages)):
        w = w.lower().strip("'-")
        if len(w) >= 3 and w not in _STOPWORDS and len(w) <= 24:
            words[w] = None
    found = list(words)
    extra = [w for w in _FALLBACK_WORDS if w not in words]
    rng.shuffle(extra)
    return found, found + extra[: max(0, 4 - len(found))]


def _fill(template: str, topics: tuple[list[str], list[str]], rng: random.Random) -> str:
    found, words = topics
    a = rng.choice(found or words)  # the sentence's subject comes from the prompt when it can
    b, c = rng.sample([w for w in words if w != a], 2)
    return template.format(a=a, b=b, c=c, A=a[:1].upper() + a[1:], n=rng.choice((10, 20, 60, 80, 90)))


def mock_reply(messages: list[dict[str, Any]]) -> str:
    """The mock's answer: a function of the messages' roles and text, nothing else.

    Sentences are assembled from the prompt's words with an RNG seeded by a hash of
    the conversation, so the same prompt always gets the same answer and different
    prompts get different ones. Some answers carry a list, a code block, bold text
    and markup-looking characters, to exercise a page's rendering and escaping.
    """
    canonical = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    rng = random.Random(int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big"))
    topics = _topic_words(messages, rng)
    found, words = topics
    pool = list(_SENTENCES)
    rng.shuffle(pool)
    first = [_fill(rng.choice(_OPENERS), topics, rng)]
    first += [_fill(t, topics, rng) for t in pool[: rng.randint(1, 3)]]
    if rng.random() < 0.6:
        first.insert(rng.randint(1, len(first)), _fill(rng.choice(_MARKUP_SENTENCES), topics, rng))
    paragraphs = [" ".join(first)]
    shape = rng.random()
    if shape < 0.3:
        items = rng.sample(words, 3)
        paragraphs.append("Three things to check:\n\n" + "\n".join(
            f"- **{w}**: {_fill(rng.choice(_SENTENCES), topics, rng)}" for w in items))
    elif shape < 0.5:
        name = re.sub(r"\W", "_", (found or words)[0])
        paragraphs.append(f"```python\nfor piece in stream({name!r}):\n    if piece < limit and ok:\n"
                          f"        print(piece)  # <{name}> & friends\n```")
    rest = pool[3 : 3 + rng.randint(0, 3)]
    if rest:
        paragraphs.append(" ".join(_fill(t, topics, rng) for t in rest))
    paragraphs.append(_fill(rng.choice(_CLOSERS), topics, rng))
    return "\n\n".join(paragraphs)


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Roughly what a chat model bills: the content's tokens plus a few per message."""
    return sum(len(tokenize(m["content"])) + 4 for m in messages) + 3


@dataclass(slots=True)
class MockCompletion:
    tokens: list[str]
    finish_reason: str
    usage: dict[str, int]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def mock_complete(messages: list[dict[str, Any]], max_tokens: int | None = None) -> MockCompletion:
    """The whole mock completion: tokens, finish reason ("stop" or "length"), usage."""
    tokens = tokenize(mock_reply(messages))
    finish = "stop"
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    prompt = count_prompt_tokens(messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens)}
    return MockCompletion(tokens, finish, usage)
