"""``python -m sse_server`` as a user runs it: --help, --app module:attr, flags, SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sse_server.cli import build_parser, config_from_args
from sse_server.config import Config

from .http_cases import get, req
from .http_client import close, exchange, read_head

REPO = Path(__file__).resolve().parent.parent

USER_APP = textwrap.dedent(
    """
    import asyncio

    from sse_server import App, PlainTextResponse, StreamingResponse

    app = App()


    @app.route("/hello/{name}")
    async def hello(request):
        return PlainTextResponse(f"hello {request.path_params['name']}\\n")


    @app.route("/echo", methods=["POST"])
    async def echo(request):
        return PlainTextResponse(await request.body())


    @app.route("/ticks")
    async def ticks(request):
        async def body():
            yield "tick\\n"
            await asyncio.Event().wait()

        return StreamingResponse(body())


    def make_app():
        other = App()

        @other.route("/")
        async def index(request):
            return PlainTextResponse("from factory\\n")

        return other


    not_an_app = 42
    """
)


def env_for(tmp_path: Path) -> dict[str, str]:
    """The environment for a child: the repository and the user's folder importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "userapp.py").write_text(USER_APP)
    return tmp_path


class Running:
    """A server child process and where it said it is serving."""

    def __init__(self, proc: asyncio.subprocess.Process, host: str, port: int, lines: list[str]) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.lines = lines  # every stderr line so far, kept by a drain task
        self.drained: asyncio.Task[None] | None = None  # done once stderr reached EOF


async def start_cli(user_dir: Path, *args: str) -> Running:
    """Start ``python -m sse_server --port 0 ARGS`` and wait (bounded) for its "serving on" line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_server", "--port", "0", *args,
        cwd=user_dir, env=env_for(user_dir),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(15):
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                raise AssertionError(f"server exited before serving: {''.join(lines)}")
            lines.append(raw.decode())
            m = re.search(r"serving on http://(\S+):(\d+)", lines[-1])
            if m:
                break

    async def drain() -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            lines.append(raw.decode())

    running = Running(proc, m.group(1), int(m.group(2)), lines)
    running.drained = asyncio.ensure_future(drain())
    return running


@pytest.fixture
async def cli(user_dir: Path) -> AsyncIterator[object]:
    """A factory for CLI children; any still running at the end are killed."""
    started: list[Running] = []

    async def start(*args: str) -> Running:
        running = await start_cli(user_dir, *args)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.returncode is None:
            running.proc.kill()
        async with asyncio.timeout(10):
            await running.proc.wait()
            await running.drained  # type: ignore[misc]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sse_server", *args], cwd=cwd, env=env_for(cwd),
        capture_output=True, text=True, timeout=30,
    )


# The naming rule of sse_server/cli.py: a Config field `some_name` is set by `--some-name`,
# and a duration in seconds drops its unit (`head_timeout_s` -> `--head-timeout`).
FLAG_EXCEPTIONS = {
    "model_tokens_per_s": "--model-tokens-per-s",  # a rate, not a duration: "per s" stays
    "upstream_url": "--upstream",  # shown as `--upstream URL`
}
# Fields that have no flag yet. Each is a gap to close: give it a flag and delete it
# here (the tests below fail while a listed field has a flag, so this list cannot rot).
NO_FLAG_YET = frozenset({
    "shutdown_retry_jitter_ms",
    "upstream_connect_timeout_s",
    "upstream_first_byte_timeout_s",
    "upstream_idle_timeout_s",
    "server_header",
    "access_log",
})


def flag_for(field_name: str) -> str:
    """The CLI flag that sets the Config field `field_name`, by the naming rule above."""
    if field_name in FLAG_EXCEPTIONS:
        return FLAG_EXCEPTIONS[field_name]
    return "--" + field_name.removesuffix("_s").replace("_", "-")


def config_flags() -> dict[str, str]:
    """Every Config field that must have a flag, mapped to that flag."""
    return {f.name: flag_for(f.name) for f in dataclasses.fields(Config) if f.name not in NO_FLAG_YET}


def names_flag(text: str, flag: str) -> bool:
    """True if `flag` stands in `text` as a whole flag (`--max-channels` is not in `--max-channels-x`)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_help_documents_the_flags(tmp_path: Path) -> None:
    """--help exits 0 and names a flag for every Config field, plus --app and --log-level, with meanings."""
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    wanted = ("--app", "--log-level", *config_flags().values())
    assert not (missing := [f for f in wanted if not names_flag(result.stdout, f)]), f"--help lacks {missing}"
    flagged = [n for n in NO_FLAG_YET if names_flag(result.stdout, flag_for(n))]
    assert not flagged, f"{flagged} have flags now: remove them from NO_FLAG_YET"
    assert "MODULE:ATTR" in result.stdout
    assert "413" in result.stdout and "431" in result.stdout and "408" in result.stdout


def test_each_flag_sets_its_config_field() -> None:
    """Each Config field's flag, given a value other than the default, reaches that field of the Config."""
    defaults = Config()
    for name, flag in config_flags().items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            raise AssertionError(f"{name}: no sample value for a bool field; extend this test")
        if name == "upstream_url":
            value, expected = "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"
        elif isinstance(default, int):
            value, expected = str(default + 1), default + 1
        elif isinstance(default, float):
            value, expected = str(default + 0.5), default + 0.5
        else:
            value, expected = f"{default}-x", f"{default}-x"
        try:
            args = build_parser().parse_args([flag, value])
        except SystemExit:
            pytest.fail(f"{flag} (Config.{name}) is not a flag")
        assert getattr(config_from_args(args), name) == expected, (name, flag)


async def test_app_flag_serves_the_users_app_and_sigterm_exits_0(cli) -> None:  # type: ignore[no-untyped-def]
    """--app module:attr serves that App on the announced port; SIGTERM ends it with code 0."""
    running = await cli("--app", "userapp:app", "--host", "127.0.0.1")
    async with asyncio.timeout(5):
        reply = await exchange(running.host, running.port, get(b"/hello/w%C3%B6rld"))
        missing = await exchange(running.host, running.port, get(b"/healthz"))
    assert reply.status == 200 and reply.body == "hello wörld\n".encode()
    assert missing.status == 404  # the demo is not served when --app is given
    running.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await running.proc.wait() == 0


async def test_app_flag_accepts_a_factory(cli) -> None:  # type: ignore[no-untyped-def]
    """--app module:callable calls it to get the App."""
    running = await cli("--app", "userapp:make_app")
    async with asyncio.timeout(5):
        reply = await exchange(running.host, running.port, get(b"/"))
    assert reply.body == b"from factory\n"


async def test_flags_reach_the_server(cli) -> None:  # type: ignore[no-untyped-def]
    """Limit flags are applied: --max-body-bytes 10 turns an 11-byte body into 413."""
    running = await cli("--app", "userapp:app", "--max-body-bytes", "10")
    async with asyncio.timeout(5):
        ok = await exchange(running.host, running.port, req(b"POST /echo HTTP/1.1", b"Host: t",
                                                           b"Content-Length: 10", body=b"0123456789"))
        big = await exchange(running.host, running.port, req(b"POST /echo HTTP/1.1", b"Host: t",
                                                            b"Content-Length: 11", body=b"0123456789A"))
    assert ok.status == 200 and ok.body == b"0123456789"
    assert big.status == 413


async def test_sigterm_with_an_open_stream_exits_promptly(cli) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while a stream is open cuts it (no last chunk: it was not complete) and exits 0 in time."""
    running = await cli("--app", "userapp:app", "--shutdown-timeout", "5")
    reader, writer = await asyncio.open_connection(running.host, running.port)
    try:
        async with asyncio.timeout(5):
            writer.write(get(b"/ticks"))
            head = await read_head(reader)
            assert head.status == 200
            assert await reader.readuntil(b"tick\n\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        running.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert not (await reader.read(-1)).endswith(b"0\r\n\r\n")  # cut, so it does not look complete
            assert await running.proc.wait() == 0
        assert loop.time() - started < 4.0
    finally:
        await close(writer)


async def test_sigint_exits_0(cli) -> None:  # type: ignore[no-untyped-def]
    """Ctrl+C (SIGINT) shuts down like SIGTERM, with code 0 and no traceback."""
    running = await cli("--app", "userapp:app")
    running.proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):
        assert await running.proc.wait() == 0
        await running.drained  # type: ignore[misc]
    assert not any("Traceback" in line for line in running.lines)
    assert any("stopped" in line for line in running.lines)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nosuchmodule:app", "nosuchmodule"), ("userapp:missing", "missing"), ("userapp:not_an_app", "not an"),
     ("userapp", "MODULE:ATTR")],
)
def test_bad_app_spec_exits_2(user_dir: Path, spec: str, message: str) -> None:
    """A bad --app is a one-line error and exit code 2, not a traceback."""
    result = run_cli("--app", spec, "--port", "0", cwd=user_dir)
    assert result.returncode == 2
    assert "error:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_1(user_dir: Path) -> None:
    """A port that cannot be bound is an error message and exit code 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--app", "userapp:app", "--host", "127.0.0.1", "--port", str(port), cwd=user_dir)
    assert result.returncode == 1
    assert "cannot serve" in result.stderr and "Traceback" not in result.stderr
