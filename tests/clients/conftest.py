"""Fixtures of the multi-client compatibility suite.

Every test gets its own broker: the real `trib` binary on a free loopback port with a fresh data
folder (`broker` fixture). Tests that need other broker flags mark themselves with
`@pytest.mark.broker_args("--segment-bytes", "16384")`. The broker's log is written to
`<tmp>/broker.log`; its tail is printed when a test fails. With TRIB_KEEP_DATA=1 the temporary
folder (data and log) is kept.

After each test the fixture also checks that the broker exited cleanly on SIGTERM, did not exit
by itself, and did not drop a client connection over a request it could not serve (log line
"closing connection"); tests that expect such drops mark themselves
`@pytest.mark.allow_dropped_connections`.

The binary is `$TRIB_BIN`, else `$CARGO_TARGET_DIR/debug/trib`, else
`$HOME/.cache/tributary/target/debug/trib`. This suite never builds it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers import api_versions

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def trib_bin() -> Path:
    if os.environ.get("TRIB_BIN"):
        return Path(os.environ["TRIB_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "trib"
    return Path.home() / ".cache" / "tributary" / "target" / "debug" / "trib"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One `trib broker` process on loopback, restartable on the same port and data folder."""

    def __init__(self, extra_args: list[str], http: bool = False):
        self.bin = trib_bin()
        if not self.bin.is_file():
            pytest.fail(f"trib binary not found at {self.bin} (set TRIB_BIN or build it)")
        self.tmp = Path(tempfile.mkdtemp(prefix="trib-clients-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "broker.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.bootstrap = f"{self.host}:{self.port}"
        self.extra_args = list(extra_args)
        # The metrics endpoint, for tests that count requests (marker `broker_http`).
        self.http_port = free_port() if http else None
        self.proc: subprocess.Popen | None = None
        self.exit_codes: list[int] = []
        self._reaped = True
        self._log_file = None

    @property
    def args(self) -> list[str]:
        return [
            str(self.bin),
            "broker",
            "--listen",
            self.bootstrap,
            "--data-dir",
            str(self.data_dir),
            *(["--http", f"127.0.0.1:{self.http_port}"] if self.http_port else ["--no-http"]),
            "--num-partitions",
            "3",
            *self.extra_args,
        ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info,trib_broker=debug")
        env["NO_COLOR"] = "1"
        self._reaped = False
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"=== start: {' '.join(self.args)}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmp,
        )
        # Ready means answering requests, not just accepting: trib binds its port before it
        # opens (and recovers) the data folder, and installs its SIGTERM handler only once it
        # serves. So wait until an ApiVersions request is answered.
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"broker exited with {self.proc.returncode} during startup:\n{self.log_tail()}"
                )
            try:
                api_versions(self, timeout=1.0)
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"broker did not answer on {self.bootstrap} within {START_TIMEOUT_S}s:\n"
                        f"{self.log_tail()}"
                    ) from None
                time.sleep(0.02)

    def _wait_exit(self) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            self._note(f"=== broker ignored SIGTERM for {STOP_TIMEOUT_S}s: killed\n")
        self.exit_codes.append(code)
        self._reaped = True
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return code

    def _note(self, text: str) -> None:
        if self._log_file:
            self._log_file.write(text.encode())
            self._log_file.flush()

    def crashed(self) -> int | None:
        """The exit code when the broker exited by itself (not stopped or killed by a test)."""
        if self.proc is not None and not self._reaped and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    def stop(self) -> int:
        """SIGTERM (clean shutdown); waits, kills after STOP_TIMEOUT_S. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self._note("=== SIGTERM\n")
        self.proc.send_signal(signal.SIGTERM)
        return self._wait_exit()

    def kill(self) -> int:
        """SIGKILL: no clean shutdown at all."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self._note("=== SIGKILL\n")
        self.proc.kill()
        return self._wait_exit()

    def restart(self, kill: bool = False) -> int:
        """Stops (SIGTERM, or SIGKILL with kill=True) and starts again on the same port and data."""
        code = self.kill() if kill else self.stop()
        self.start()
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_lines(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if rx.search(line)]

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "broker_config(**settings): broker YAML settings (flat keys), written to a file in the "
        "test's folder and passed with `-c FILE`",
    )


def write_broker_config(b: Broker, settings: dict) -> Path:
    """Writes flat `key: value` broker settings as YAML into the broker's folder and makes the
    broker read it (`-c FILE`, before any broker_args so flags still override it)."""
    path = b.tmp / "broker.yaml"
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}: {value}")
    path.write_text("\n".join(lines) + "\n")
    b.extra_args = ["-c", str(path), *b.extra_args]
    return path


@pytest.fixture
def broker(request):
    marker = request.node.get_closest_marker("broker_args")
    b = Broker(list(marker.args) if marker else [],
               http=request.node.get_closest_marker("broker_http") is not None)
    config_marker = request.node.get_closest_marker("broker_config")
    if config_marker:
        write_broker_config(b, dict(config_marker.kwargs))
    b.start()
    try:
        yield b
    finally:
        crashed = b.crashed()
        running = b.proc is not None and b.proc.poll() is None
        code = b.stop()
        # The broker closes a connection (with this log line) when it cannot serve a request:
        # unknown API, unsupported version, malformed request. No client here should cause one.
        dropped = b.log_lines(r"closing connection")
        if request.node.get_closest_marker("allow_dropped_connections"):
            dropped = []
        rep = getattr(request.node, "rep_call", None)
        if (crashed is not None or (running and code != 0) or dropped
                or (rep is not None and rep.failed)):
            print(f"--- broker log tail ({b.log_path}) ---\n{b.log_tail()}")
        if os.environ.get("TRIB_KEEP_DATA"):
            print(f"kept broker folder {b.tmp} (TRIB_KEEP_DATA)")
        else:
            b.cleanup()
    assert crashed is None, f"the broker exited by itself with code {crashed} during the test"
    # A SIGTERM must stop the broker cleanly (exit 0) after every test.
    assert not running or code == 0, f"broker exited with {code} after SIGTERM"
    assert not dropped, "the broker dropped client connections:\n" + "\n".join(dropped)


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name derived from the test name; call it for more than one."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:120]

    def make(suffix: str = "") -> str:
        return f"{base}{'-' + suffix if suffix else ''}-{uuid.uuid4().hex[:8]}"

    return make

