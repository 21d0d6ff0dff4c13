"""The chat page in Chromium: streamed text, markup shown as text, stop, resume."""

from __future__ import annotations

from typing import Any

from sse_server.ai.mockmodel import mock_complete
from sse_server.demo import create_app

# A prompt whose mock answer carries markup-looking text (checked below, so a change
# to the mock's templates cannot silently drop what this test is about).
PROMPT = "Tell me about <b>bold</b> streaming pages & <script>alert(1)</script>"


def answer(prompt: str) -> str:
    return mock_complete([{"role": "user", "content": prompt}]).text


def ask(page: Any, url: str, prompt: str) -> None:
    page.goto(url + "/chat")
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_function("document.body.dataset.streamState === 'streaming'")


def assistant_text(page: Any) -> str:
    # The answer as received (the bubble shows it rendered: code fences as <pre><code>).
    return page.evaluate("document.querySelector('.msg.assistant').rawText")


def test_chat_streams_the_answer_as_text(page: Any, live_server: Any) -> None:
    """The answer streams in token by token and markup in it is shown, never interpreted."""
    expected = answer(PROMPT)
    assert "<" in expected
    st = live_server(create_app, model_first_token_ms=20, model_tokens_per_s=200)
    ask(page, st.url, PROMPT)
    page.wait_for_function("Number(document.querySelector('.msg.assistant').dataset.tokens || 0) > 0")
    partial = assistant_text(page)
    page.wait_for_function("document.body.dataset.streamState === 'done'", timeout=20_000)
    assert 0 < len(partial) < len(expected)  # seen mid-stream: it streamed
    assert assistant_text(page) == expected
    assert page.locator("#log b, #log script, #log a").count() == 0
    assert page.text_content(".msg.user") == PROMPT
    assert page.text_content("#status") == "done"
    assert page.errors == []


def test_chat_stop_button_cancels_on_the_server(page: Any, live_server: Any) -> None:
    """Stop cancels the generation on the server and the page keeps the partial answer."""
    st = live_server(create_app, model_first_token_ms=20, model_tokens_per_s=20)
    ask(page, st.url, PROMPT)
    page.wait_for_function("Number(document.querySelector('.msg.assistant').dataset.tokens || 0) >= 3")
    page.click("#stop")
    page.wait_for_function("document.body.dataset.streamState === 'stopped'")
    job_id = page.evaluate("document.body.dataset.streamId")
    assert st.run(lambda: st.app.state["llm"].jobs[job_id].state) == "cancelled"
    assert 0 < len(assistant_text(page)) < len(answer(PROMPT))
    assert page.errors == []


def test_chat_resumes_after_the_connection_drops(page: Any, live_server: Any) -> None:
    """A dropped EventSource reconnects with Last-Event-ID: every token once, generation not restarted."""
    st = live_server(create_app, model_first_token_ms=20, model_tokens_per_s=60, retry_ms=100)
    ask(page, st.url, PROMPT)
    page.wait_for_function("Number(document.querySelector('.msg.assistant').dataset.tokens || 0) >= 5")
    job_id = page.evaluate("document.body.dataset.streamId")

    def cut() -> int:
        service = st.app.state["llm"]
        subscribers = list(service.jobs.broker.subscribers(f"gen:{job_id}"))
        for sub in subscribers:
            sub.sink.abort()  # the network drops under the page
        return len(subscribers)

    assert st.run(cut) == 1
    page.wait_for_function("document.body.dataset.streamState === 'done'", timeout=20_000)
    assert assistant_text(page) == answer(PROMPT)
    assert page.get_attribute(".msg.assistant", "data-opens") == "2"  # one reconnect, then the rest
    assert st.run(lambda: st.app.state["llm"].stats.started) == 1
    # The cut shows as a failed request in the console; nothing else may.
    assert all("ERR_" in e or "net::" in e for e in page.errors), page.errors


def test_chat_renders_code_fences_and_inline_code_as_text(page: Any, live_server: Any) -> None:
    """```python fences become <pre><code>, `x` becomes <code>, and markup inside either stays text."""
    prompt = "show me code 29"
    expected = answer(prompt)
    assert "```python" in expected and "<code>" in expected
    st = live_server(create_app, model_first_token_ms=10, model_tokens_per_s=1000)
    page.goto(st.url + "/chat")
    page.fill("#prompt", prompt)
    page.click("#send")  # the whole answer may arrive before "streaming" could be seen
    page.wait_for_function("document.body.dataset.streamState === 'done'", timeout=20_000)
    assert assistant_text(page) == expected
    fence = expected.split("```python\n")[1].split("```")[0].rstrip("\n")
    block = page.evaluate(
        "(() => { const c = document.querySelector('.msg.assistant pre > code');"
        " return [c.dataset.lang, c.textContent, c.children.length]; })()"
    )
    assert block == ["python", fence, 0]
    inline = page.eval_on_selector_all(".msg.assistant > div > code", "els => els.map(e => e.textContent)")
    assert inline == ["code"]
    assert page.locator(".msg.assistant script, .msg.assistant b").count() == 0
    assert "```" not in page.text_content(".msg.assistant")
    assert page.errors == []
