"""Real `wiresh serve` processes on loopback for the package's tests.

The binary is $WIRESH_BIN, else target/debug/wiresh of this repository
(`cargo build --bin wiresh` makes it; python/run-tests.sh does).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("WIRESH_BIN", REPO / "target" / "debug" / "wiresh"))
READY_WITHIN = 30.0


def pytest_configure(config: pytest.Config) -> None:
    if not BINARY.exists():
        raise pytest.UsageError(f"no wiresh binary at {BINARY}: run `cargo build --bin wiresh` or set WIRESH_BIN")


class Server:
    """`wiresh serve --listen 127.0.0.1:0 ARGS` with its own home; killed
    and reaped by `stop`."""

    def __init__(self, home: Path, args: List[str]) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.log_path = home / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WIRESH_")}
        env["WIRESH_HOME"] = str(home)
        # A host's own PATH, not the tester's: Ansible's interpreter
        # discovery must not find a version manager's shims here.
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BINARY), "serve", "--listen", "127.0.0.1:0", *args],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.fingerprint: Optional[str] = None
        addr = self._wait_ready()
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.addr = addr
        token_file = args[args.index("--token-file") + 1] if "--token-file" in args else home / "token"
        self.token_file = Path(token_file)
        self.token = self.token_file.read_text().strip()

    def _wait_ready(self) -> str:
        """Reads the banner up to the readiness line (a thread, bounded), then
        drains stdout so the server never blocks on it."""
        found: dict = {}
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                fp = re.search(r"fingerprint (sha256:[0-9a-f]{64})", line)
                if fp:
                    found["fingerprint"] = fp.group(1)
                listening = re.search(r"listening on (\S+)", line)
                if listening and not ready.is_set():
                    found["addr"] = listening.group(1)
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(READY_WITHIN) or "addr" not in found:
            self.stop()
            raise RuntimeError(f"wiresh serve did not start: {self.log_path.read_text()}")
        self.fingerprint = found.get("fingerprint")
        return found["addr"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        # Its stdout ends with it: the reader sees the end, then the pipe goes.
        self.reader.join(READY_WITHIN)
        if self.proc.stdout is not None and not self.reader.is_alive():
            self.proc.stdout.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Starts servers (each with its own home); all stopped at the end."""
    started: List[Server] = []
    count = [0]

    def start(*args: str) -> Server:
        count[0] += 1
        server = Server(tmp_path / f"server{count[0]}", list(args))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def client_home(tmp_path: Path) -> Path:
    """An empty wiresh home for the client (its known_hosts, keys, settings)."""
    home = tmp_path / "client"
    home.mkdir(mode=0o700)
    return home


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """One token for servers started with `--token-file`."""
    path = tmp_path / "shared-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode() + b"\n")
    os.close(fd)
    return path


@pytest.fixture(autouse=True)
def no_wiresh_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say where the home and token are; the caller's never leak in."""
    for name in ("WIRESH_HOME", "WIRESH_TOKEN", "WIRESH_HOST"):
        monkeypatch.delenv(name, raising=False)


def free_refusing_port() -> socket.socket:
    """A loopback socket bound but not listening: connecting to its port is
    refused for as long as it is kept (no other process can take it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock
