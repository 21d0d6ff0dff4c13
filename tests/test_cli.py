"""``python -m sse_server`` as a user runs it: --help, --app module:attr, flags, SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sse_server
from sse_server.auth import decode_token, mint_token
from sse_server.cli import build_parser, config_from_args
from sse_server.config import Config

from .http_cases import get, req
from .http_client import close, exchange, read_head
from .processes import REPO, Running, env_for, start_cli

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


    def returns_42():
        return 42


    def create(config):
        sized = App()

        @sized.route("/")
        async def index(request):
            return PlainTextResponse(f"{config.max_body_bytes}\\n")

        return sized
    """
)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "userapp.py").write_text(USER_APP)
    return tmp_path


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
    "public_channels": "--public-channel",  # repeatable: one pattern per flag
    "cors_origins": "--cors-origin",  # repeatable: one origin per flag
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
        if isinstance(default, bool):  # an on/off pair: the one that is not the default
            args = build_parser().parse_args([flag if not default else "--no-" + flag[2:]])
            assert getattr(config_from_args(args), name) is not default, (name, flag)
            continue
        if name == "upstream_url":
            value, expected = "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"
        elif name == "backplane":
            value, expected = "rediss://:secret@127.0.0.1:6380/2", "rediss://:secret@127.0.0.1:6380/2"
        elif name == "forwarded_allow_ips":
            value, expected = "10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")
        elif name == "access_log_format":
            value, expected = "json", "json"
        elif name == "cors_origins":
            value, expected = "https://app.test:8443", ("https://app.test:8443",)
        elif isinstance(default, tuple):
            value, expected = "x", ("x",)
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


# Bad values, each with the flag the error must name. Every numeric flag has at least
# one row (test_every_numeric_flag_has_a_bad_case keeps it so).
BAD_INVOCATIONS = [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "http"], "--port"),
    (["--max-request-line-bytes", "0"], "--max-request-line-bytes"),
    (["--max-header-bytes", "0"], "--max-header-bytes"),
    (["--max-header-count", "0"], "--max-header-count"),
    (["--max-body-bytes", "-1"], "--max-body-bytes"),
    (["--max-body-bytes", "1.5"], "--max-body-bytes"),
    (["--max-connections", "0"], "--max-connections"),
    (["--head-timeout", "0"], "--head-timeout"),
    (["--head-timeout", "-1"], "--head-timeout"),
    (["--keepalive-timeout", "nan"], "--keepalive-timeout"),
    (["--body-timeout", "inf"], "--body-timeout"),
    (["--write-timeout", "0"], "--write-timeout"),
    (["--write-timeout", "nan"], "--write-timeout"),
    (["--shutdown-timeout", "-0.5"], "--shutdown-timeout"),
    (["--backlog", "0"], "--backlog"),
    (["--backlog", str(2**31)], "--backlog"),
    (["--heartbeat", "-1"], "--heartbeat"),
    (["--heartbeat", "nan"], "--heartbeat"),
    (["--heartbeat", "inf"], "--heartbeat"),
    (["--retry-ms", "-2"], "--retry-ms"),
    (["--retry-ms", "1.5"], "--retry-ms"),
    (["--history-size", "0"], "--history-size"),
    (["--history-bytes", "0"], "--history-bytes"),
    (["--history-total-bytes", "-1"], "--history-total-bytes"),
    (["--max-event-bytes", "0"], "--max-event-bytes"),
    (["--max-channels", "0"], "--max-channels"),
    (["--max-channels-per-stream", "0"], "--max-channels-per-stream"),
    (["--max-jobs-per-client", "0"], "--max-jobs-per-client"),
    (["--max-subscriber-buffer-bytes", "-1"], "--max-subscriber-buffer-bytes"),
    (["--stream-send-buffer-bytes", "-1"], "--stream-send-buffer-bytes"),
    (["--stream-send-buffer-bytes", str(2**31)], "--stream-send-buffer-bytes"),
    (["--model-tokens-per-s", "-1"], "--model-tokens-per-s"),
    (["--model-tokens-per-s", "inf"], "--model-tokens-per-s"),
    (["--model-first-token-ms", "nan"], "--model-first-token-ms"),
    (["--model-first-token-ms", "-1"], "--model-first-token-ms"),
    (["--log-level", "loud"], "--log-level"),
    (["--backplane", "http://127.0.0.1:6379/0"], "--backplane"),
    (["--backplane", "redis://127.0.0.1:6379/zero"], "--backplane"),
    (["--history-ttl", "0"], "--history-ttl"),
    (["--history-ttl", "inf"], "--history-ttl"),
    (["--backplane-timeout", "0"], "--backplane-timeout"),
    (["--backplane-timeout", "nan"], "--backplane-timeout"),
    (["--workers", "0"], "--workers"),
    (["--workers", "257"], "--workers"),  # a typo must not start hundreds of interpreters
    (["--jwt-leeway", "-1"], "--jwt-leeway"),
    (["--jwt-leeway", "nan"], "--jwt-leeway"),
    (["--public-channel", ""], "--public-channel"),
    (["--cors-origin", "https://app.test/"], "--cors-origin"),  # an Origin header never has a path
    (["--cors-origin", "app.test"], "--cors-origin"),
    (["--max-connections-per-client", "-1"], "--max-connections-per-client"),
    (["--connect-rate", "nan"], "--connect-rate"),
    (["--connect-rate", "-1"], "--connect-rate"),
    (["--connect-burst", "0"], "--connect-burst"),
    (["--publish-rate", "inf"], "--publish-rate"),
    (["--publish-burst", "0"], "--publish-burst"),
    (["--forwarded-allow-ips", "10.0.0.0/33"], "--forwarded-allow-ips"),
    (["--forwarded-allow-ips", "proxy.local"], "--forwarded-allow-ips"),
    (["--compress-min-bytes", "-1"], "--compress-min-bytes"),
    (["--access-log-format", "xml"], "--access-log-format"),
    (["--idempotency-window", "0"], "--idempotency-window"),
    (["--idempotency-keys", "0"], "--idempotency-keys"),
]


@pytest.mark.parametrize(("args", "flag"), BAD_INVOCATIONS, ids=[" ".join(a) for a, _ in BAD_INVOCATIONS])
def test_bad_flag_value_is_an_argparse_error(tmp_path: Path, args: list[str], flag: str) -> None:
    """A nonsense flag value is exit code 2 and one argparse error naming the flag, not a traceback."""
    result = run_cli("--port", "0", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: argument {flag}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flag_value_says_what_is_legal(tmp_path: Path) -> None:
    """The error gives the legal range and the value refused."""
    result = run_cli("--port", "70000", cwd=tmp_path)
    assert "argument --port: must be between 0 and 65535, got 70000" in result.stderr
    result = run_cli("--heartbeat", "nan", cwd=tmp_path)
    assert "argument --heartbeat: must be a finite number, got 'nan'" in result.stderr


def test_every_numeric_flag_has_a_bad_case() -> None:
    """Each int or float Config field's flag appears in BAD_INVOCATIONS, so a new flag cannot skip validation."""
    defaults = Config()
    numeric = {flag for name, flag in config_flags().items()
               if isinstance(getattr(defaults, name), int | float) and not isinstance(getattr(defaults, name), bool)}
    covered = {flag for _, flag in BAD_INVOCATIONS}
    assert not (missing := sorted(numeric - covered)), f"no bad value tested for {missing}"


@pytest.mark.parametrize(
    ("args", "field", "expected"),
    [
        (["--port", "0"], "port", 0),
        (["--port", "65535"], "port", 65535),
        (["--heartbeat", "0"], "heartbeat_s", 0.0),  # heartbeats off
        (["--retry-ms", "-1"], "retry_ms", -1),  # no retry: field (sse/streams.py)
        (["--retry-ms", "0"], "retry_ms", 0),
        (["--stream-send-buffer-bytes", "0"], "stream_send_buffer_bytes", 0),  # left to the kernel
        (["--max-body-bytes", "0"], "max_body_bytes", 0),
        (["--max-subscriber-buffer-bytes", "0"], "max_subscriber_buffer_bytes", 0),
        (["--shutdown-timeout", "0"], "shutdown_timeout_s", 0.0),
        (["--head-timeout", "0.25"], "head_timeout_s", 0.25),
        (["--model-tokens-per-s", "0"], "model_tokens_per_s", 0.0),
        (["--model-first-token-ms", "0"], "model_first_token_ms", 0.0),
        (["--history-size", "1"], "history_size", 1),
        (["--backlog", "1"], "backlog", 1),
        (["--max-connections-per-client", "0"], "max_connections_per_client", 0),  # off
        (["--connect-rate", "0"], "connect_rate", 0.0),  # off
        (["--publish-rate", "0"], "publish_rate", 0.0),  # off
        (["--forwarded-allow-ips", "*"], "forwarded_allow_ips", ("*",)),  # any peer
        (["--forwarded-allow-ips", "10.0.0.1", "--forwarded-allow-ips", "10.0.1.0/24,::1"],
         "forwarded_allow_ips", ("10.0.0.1", "10.0.1.0/24", "::1")),  # repeated replaces the default
    ],
)
def test_edge_values_that_mean_something_are_accepted(args: list[str], field: str, expected: object) -> None:
    """The edge values the help documents (0 = off, -1 = no retry hint, ...) parse into the Config."""
    assert getattr(config_from_args(build_parser().parse_args(args)), field) == expected


@pytest.mark.parametrize("given", ["DEBUG", "Info", "warning", "ERROR"])
def test_log_level_in_any_case(given: str) -> None:
    """--log-level takes a level in any case."""
    assert build_parser().parse_args(["--log-level", given]).log_level == given.lower()


async def test_log_level_upper_case_serves_at_debug(cli) -> None:  # type: ignore[no-untyped-def]
    """--log-level DEBUG starts a server that logs at debug level and stops on SIGTERM with code 0."""
    running = await cli("--app", "userapp:app", "--log-level", "DEBUG")
    running.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await running.proc.wait() == 0
        await running.drained  # type: ignore[misc]
    assert any(" DEBUG " in line for line in running.lines), "".join(running.lines)
    assert not any("Traceback" in line for line in running.lines)


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    """--version prints `sse_server <version>` and exits 0."""
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sse_server {sse_server.__version__}\n"


def test_pyproject_version_is_the_package_version() -> None:
    """pyproject's version is sse_server.__version__ (read from it, or equal to it)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    if "version" in project["project"]:
        assert project["project"]["version"] == sse_server.__version__
    else:
        assert "version" in project["project"]["dynamic"]
        assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sse_server.__version__"}


def test_pyproject_declares_the_console_script() -> None:
    """pyproject installs `sse-server`, running sse_server.cli:main."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["sse-server"] == "sse_server.cli:main"


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed `sse-server` script prints the version and refuses a bad flag under its own name."""
    script = shutil.which("sse-server")
    if script is None:
        pytest.skip("sse-server is not on PATH: install the package first (pip install -e .)")
    result = subprocess.run([script, "--version"], cwd=tmp_path, env=env_for(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sse_server {sse_server.__version__}\n"
    result = subprocess.run([script, "--port", "70000"], cwd=tmp_path, env=env_for(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "sse-server: error: argument --port:" in result.stderr and "Traceback" not in result.stderr


BROKEN_MODULES = {
    "broken_dependency.py": "import nosuchdependency\n",
    "broken_name.py": "app = undefined_name\n",
    "broken_syntax.py": "def app(:\n",
    "userpkg/__init__.py": "",
}


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        ("broken_dependency:app",
         ["error: while importing broken_dependency: ModuleNotFoundError: No module named 'nosuchdependency'"]),
        ("broken_name:app", ["error: while importing broken_name: NameError: name 'undefined_name' is not defined"]),
        ("broken_syntax:app", ["error: while importing broken_syntax: SyntaxError:"]),
        ("nosuchmodule:app", ["module 'nosuchmodule' not found"]),
        ("userpkg.nosub:app", ["module 'userpkg.nosub' not found"]),
        ("nosuchpkg.sub:app", ["module 'nosuchpkg' not found"]),
        ("userapp:missing", ["module userapp has no attribute 'missing'"]),
        ("userapp:hello", ["userapp:hello is a route handler, not an App; pass the App it is registered on"]),
        ("userapp:returns_42", ["userapp:returns_42 returned int, not an sse_server.App"]),
        ("userapp:not_an_app", ["userapp:not_an_app is int, not an sse_server.App"]),
        (":app", ["MODULE:ATTR"]),
        (".userapp:app", ["absolute module name"]),
    ],
)
def test_app_errors_say_what_is_wrong(user_dir: Path, spec: str, messages: list[str]) -> None:
    """Each way --app can miss an App has its own one-line message and exit code 2, no traceback."""
    for name, text in BROKEN_MODULES.items():
        (user_dir / name).parent.mkdir(exist_ok=True)
        (user_dir / name).write_text(text)
    result = run_cli("--app", spec, "--port", "0", cwd=user_dir)
    assert result.returncode == 2, result.stderr
    assert all(m in result.stderr for m in messages), result.stderr
    assert "Traceback" not in result.stderr
    if spec.startswith("broken_"):
        assert "not found" not in result.stderr  # it exists: its own import failed


async def test_app_factory_taking_a_parameter_gets_the_config(cli) -> None:  # type: ignore[no-untyped-def]
    """--app module:factory(config) is called with the Config the flags built."""
    running = await cli("--app", "userapp:create", "--max-body-bytes", "123")
    async with asyncio.timeout(5):
        reply = await exchange(running.host, running.port, get(b"/"))
    assert reply.status == 200 and reply.body == b"123\n"


def test_repeatable_flags_collect_every_value() -> None:
    """--public-channel and --cors-origin given twice keep both values, in order."""
    args = build_parser().parse_args(["--public-channel", "news", "--public-channel", "public/*",
                                      "--cors-origin", "https://a.test", "--cors-origin", "*"])
    config = config_from_args(args)
    assert config.public_channels == ("news", "public/*")
    assert config.cors_origins == ("https://a.test", "*")


def test_token_command_prints_a_token_for_the_secret(tmp_path: Path) -> None:
    """`python -m sse_server token` signs with the secret in --jwt-secret-env and prints only the token."""
    secret = "x" * 40
    env = {**env_for(tmp_path), "MY_SECRET": secret, "SSE_JWT_SECRET": "y" * 40}
    result = subprocess.run(
        [sys.executable, "-m", "sse_server", "token", "--publish", "news", "--subscribe", "orders/*",
         "--sub", "alice", "--exp", "3600", "--jwt-secret-env", "MY_SECRET"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    principal = decode_token(result.stdout.strip(), secret.encode(), now=time.time())
    assert (principal.subject, principal.publish, principal.subscribe) == ("alice", ("news",), ("orders/*",))
    assert principal.expires_at is not None and 3500 < principal.expires_at - time.time() < 3700
    default = subprocess.run([sys.executable, "-m", "sse_server", "token", "--subscribe", "*"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    decode_token(default.stdout.strip(), b"y" * 40, now=time.time())  # SSE_JWT_SECRET unless told otherwise


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "--publish", "news"], "SSE_JWT_SECRET"),  # not set in the child
        (["token", "--exp", "0"], "--exp"),
        (["--jwt-secret-env", "SSE_UNSET_SECRET"], "SSE_UNSET_SECRET"),
        (["--api-key-env", "SSE_UNSET_KEY"], "SSE_UNSET_KEY"),
    ],
)
def test_an_unset_secret_is_exit_2_naming_the_variable(tmp_path: Path, args: list[str], message: str) -> None:
    """A secret variable that is unset, or a bad token flag, is exit 2 with a message, not a traceback."""
    env = {k: v for k, v in env_for(tmp_path).items() if k != "SSE_JWT_SECRET"}
    result = subprocess.run([sys.executable, "-m", "sse_server", "--port", "0", *args] if args[0] != "token"
                            else [sys.executable, "-m", "sse_server", *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


async def test_the_served_demo_checks_tokens_from_the_flag(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--jwt-secret-env turns auth on in the demo: a publish without a token is 401, with a minted one 202."""
    monkeypatch.setenv("SSE_TEST_CLI_SECRET", "z" * 40)
    running = await cli("--jwt-secret-env", "SSE_TEST_CLI_SECRET")
    token = mint_token("z" * 40, publish=["news"])
    async with asyncio.timeout(5):
        refused = await exchange(running.host, running.port, req(
            b"POST /channels/news/events HTTP/1.1", b"Host: t", b"Content-Length: 2", body=b"hi"))
        accepted = await exchange(running.host, running.port, req(
            b"POST /channels/news/events HTTP/1.1", b"Host: t", b"Authorization: Bearer " + token.encode(),
            b"Content-Length: 2", body=b"hi"))
    assert (refused.status, accepted.status) == (401, 202)
