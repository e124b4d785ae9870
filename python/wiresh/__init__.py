"""Run commands on wiresh servers, like :mod:`subprocess` on another machine.

::

    import wiresh

    with wiresh.connect("web01") as c:
        r = c.run(["uname", "-r"], text=True, check=True)
        for stream, data in c.stream("tail -n 100 /var/log/syslog"):
            ...
    results = wiresh.run_many(["web[01-20]"], "uptime")

Everything not given to :func:`connect` comes from ``$WIRESH_HOME`` exactly
as the ``wiresh`` command finds it: the token, the pinned fingerprints
(``known_hosts``), the client key, and the host settings files. The client is
the same Rust client as the command's.

A :class:`Client` is used from one thread at a time (a second thread gets a
:class:`WireshError` saying so); the GIL is released while it waits, and
Ctrl-C cancels the running command and raises :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _wiresh, errors
from .errors import (
    AuthenticationError,
    CommandError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    FingerprintMismatch,
    ProtocolError,
    RemoteError,
    Timeout,
    TransferError,
    WireshError,
)

__version__: str = _wiresh.__version__

__all__ = [
    "connect",
    "Client",
    "Completed",
    "Stream",
    "run_many",
]
__all__ += errors.__all__

Command = Union[str, Sequence[str]]
"""A string runs in the remote shell (``/bin/sh -c``); a list is an argv,
run without a shell."""

Input = Union[bytes, bytearray, str, IO[bytes], None]
PathArg = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Completed:
    """A command that ran to its end, as :class:`subprocess.CompletedProcess`.

    ``returncode`` is the exit code, or ``-N`` when signal ``N`` killed the
    command (as :mod:`subprocess` says it); ``signal`` is ``N`` then, else
    ``None``. ``duration`` is the run time in seconds, as the server measured
    it. ``stdout`` and ``stderr`` are bytes, or str with ``text=True``.
    """

    args: Command
    returncode: int
    stdout: Union[bytes, str]
    stderr: Union[bytes, str]
    signal: Optional[int] = None
    duration: float = 0.0

    def check_returncode(self) -> None:
        """Raises :class:`CommandError` if the command did not succeed."""
        if self.returncode != 0:
            raise CommandError(self.args, self.returncode, self.stdout, self.stderr, self.signal)


def _argv(command: Command) -> Union[str, List[str]]:
    if isinstance(command, (str, bytes)):
        if isinstance(command, bytes):
            raise TypeError("command must be str or a list of str, not bytes")
        return command
    return [os.fsdecode(a) if isinstance(a, os.PathLike) else a for a in command]


def _input(value: Input) -> Union[bytes, bytearray, IO[bytes], None]:
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _decode(data: bytes, text: bool) -> Union[bytes, str]:
    return data.decode("utf-8", errors="replace") if text else data


def _returncode(code: Optional[int], signal: Optional[int]) -> int:
    if code is not None:
        return code
    return -signal if signal is not None else -1


def _completed(
    command: Command,
    outcome: Tuple[Optional[int], Optional[int], float, bool, bytes, bytes],
    *,
    timeout: Optional[float],
    check: bool,
    text: bool,
) -> Completed:
    code, signal, duration, timed_out, stdout, stderr = outcome
    out, err = _decode(stdout, text), _decode(stderr, text)
    if timed_out:
        raise Timeout(command, timeout, out, err)
    done = Completed(command, _returncode(code, signal), out, err, signal, duration)
    if check:
        done.check_returncode()
    return done


class Stream:
    """A running command's output, as it arrives: iterate for
    ``(stream, data)`` pairs, ``stream`` being ``"stdout"`` or ``"stderr"``
    and ``data`` bytes (str with ``text=True``, decoded without splitting a
    character across chunks).

    The iteration ends with the command: then :attr:`returncode`,
    :attr:`signal` and :attr:`duration` hold its exit status, and with
    ``check=True`` a non-zero status raises :class:`CommandError` (with
    ``stdout`` and ``stderr`` ``None``: nothing was kept); a ``timeout`` that
    fired raises :class:`Timeout`. Leaving a ``with`` block (or
    :meth:`close`) before the end cancels the command; the client is then
    ready for the next one.
    """

    def __init__(
        self,
        native: _wiresh.Stream,
        command: Command,
        *,
        timeout: Optional[float],
        check: bool,
        text: bool,
    ) -> None:
        self._native = native
        self._command = command
        self._timeout = timeout
        self._check = check
        self._decoders = (
            {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
            if text
            else None
        )

    def __iter__(self) -> Iterator[Tuple[str, Union[bytes, str]]]:
        return self

    def __next__(self) -> Tuple[str, Union[bytes, str]]:
        try:
            name, data = next(self._native)
        except StopIteration:
            self._ended()
            raise
        if self._decoders is None:
            return name, data
        return name, self._decoders[name].decode(data)

    def _ended(self) -> None:
        if self._native.timed_out:
            raise Timeout(self._command, self._timeout)
        if self._check and self.returncode != 0:
            raise CommandError(self._command, self.returncode, None, None, self.signal)

    @property
    def returncode(self) -> Optional[int]:
        """The exit code (``-N`` for signal ``N``), once the command ended."""
        return self._native.returncode

    @property
    def signal(self) -> Optional[int]:
        """The signal that killed the command, if one did."""
        return self._native.signal

    @property
    def duration(self) -> Optional[float]:
        """How long the command ran, in seconds, once it ended."""
        return self._native.duration

    @property
    def done(self) -> bool:
        """Whether the command has ended."""
        return self._native.done

    def close(self) -> None:
        """Cancels the command if it still runs and drops its output."""
        self._native.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """An authenticated connection to one wiresh server; made by
    :func:`connect`. Commands run one after another on it. Use it from one
    thread at a time (make one per thread); it is a context manager that
    closes the connection."""

    def __init__(self, native: _wiresh.Client) -> None:
        self._native = native

    @property
    def target(self) -> str:
        """The server, as ``HOST:PORT``."""
        return self._native.target

    @property
    def server(self) -> str:
        """The server's name and version, from its greeting."""
        return self._native.server

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close` or after an
        error that broke it)."""
        return self._native.closed

    def run(
        self,
        command: Command,
        *,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        check: bool = False,
        text: bool = False,
    ) -> Completed:
        """Runs ``command`` and waits for its end.

        ``input`` is its standard input: bytes, str (sent as UTF-8) or a
        binary file object, read in pieces and sent as the server takes it
        (its stdin is empty otherwise). ``env`` adds environment variables,
        ``cwd`` sets the working directory. ``timeout`` (seconds) has the
        server kill the command, and raises :class:`Timeout`. ``check``
        raises :class:`CommandError` on a non-zero status. ``text`` decodes
        the output as UTF-8.
        """
        outcome = self._native.run(
            _argv(command),
            input=_input(input),
            env=dict(env) if env is not None else None,
            cwd=os.fsdecode(cwd) if cwd is not None else None,
            timeout=timeout,
        )
        return _completed(command, outcome, timeout=timeout, check=check, text=text)

    def stream(
        self,
        command: Command,
        *,
        input: Input = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        check: bool = False,
        text: bool = False,
    ) -> Stream:
        """Starts ``command`` and returns its output as it arrives (see
        :class:`Stream`): for output that should not be held in memory. The
        client waits for the consumer: a slow loop slows the command down
        rather than filling memory."""
        native = self._native.stream(
            _argv(command),
            input=_input(input),
            env=dict(env) if env is not None else None,
            cwd=os.fsdecode(cwd) if cwd is not None else None,
            timeout=timeout,
        )
        return Stream(native, command, timeout=timeout, check=check, text=text)

    def put(
        self,
        local: Union[PathArg, Sequence[PathArg]],
        remote: str,
        *,
        recursive: bool = False,
        preserve: bool = False,
        resume: bool = False,
    ) -> None:
        """Copies local files to the server, as ``wiresh put``: several
        sources, a trailing ``/`` or an existing remote directory copy into
        it; ``recursive`` copies trees; ``preserve`` keeps modes and times;
        ``resume`` continues a cut-off transfer. Each file is checked with
        BLAKE3 and renamed into place only when complete. Remote paths are
        under the server's ``--files-root``."""
        sources = [local] if isinstance(local, (str, os.PathLike)) else list(local)
        self._native.put(
            [os.fspath(s) for s in sources],
            remote,
            recursive=recursive,
            preserve=preserve,
            resume=resume,
        )

    def get(
        self,
        remote: Union[str, Sequence[str]],
        local: PathArg,
        *,
        recursive: bool = False,
        preserve: bool = False,
        resume: bool = False,
    ) -> None:
        """Copies files from the server, as ``wiresh get``: local names come
        from the paths given, never from the server; each file is checked
        and renamed into place only when complete."""
        sources = [remote] if isinstance(remote, str) else list(remote)
        self._native.get(
            sources,
            os.fspath(local),
            recursive=recursive,
            preserve=preserve,
            resume=resume,
        )

    def ping(self) -> float:
        """Measures one round trip to the server, in seconds."""
        return self._native.ping()

    def close(self) -> None:
        """Closes the connection; closing twice does nothing."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<wiresh.Client {self.target} {state}>"


def connect(
    host: Optional[str] = None,
    *,
    port: Optional[int] = None,
    token: Optional[str] = None,
    token_file: Optional[PathArg] = None,
    key: Optional[PathArg] = None,
    fingerprint: Optional[str] = None,
    plaintext: bool = False,
    home: Optional[PathArg] = None,
) -> Client:
    """Connects to ``host`` and authenticates.

    ``host`` is taken as the ``wiresh`` command takes it: a name, an address,
    ``addr:port``, or a name from the client settings (``client.toml``: its
    address, port, token file, fingerprint and key). Without one, the server on this machine. ``port``
    overrides the port. The token: ``token``, else ``token_file``, else
    ``$WIRESH_TOKEN``, else the home's ``token``. ``key`` is a client key
    (else the home's ``client.key`` when it exists). ``fingerprint`` pins the
    server's TLS fingerprint (else ``known_hosts``, trusting on first use).
    ``plaintext`` for a loopback server started with ``--allow-plaintext``.
    ``home`` is the wiresh home (else ``$WIRESH_HOME``, else ``~/.wiresh``).
    """
    native = _wiresh.connect(
        host,
        port=port,
        token=token,
        token_file=os.fspath(token_file) if token_file is not None else None,
        key=os.fspath(key) if key is not None else None,
        fingerprint=fingerprint,
        plaintext=plaintext,
        home=os.fspath(home) if home is not None else None,
    )
    return Client(native)


def run_many(
    hosts: Sequence[str],
    command: Command,
    *,
    fanout: int = 64,
    timeout: Optional[float] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    text: bool = False,
    **connect_options: Any,
) -> Dict[str, Union[Completed, WireshError]]:
    """Runs ``command`` on every host, at most ``fanout`` at a time.

    ``hosts`` are host names as :func:`connect` takes them, or host lists
    (``"web[01-20]"``). Returns one entry per host, in the order given:
    its :class:`Completed`, or the exception that says why there is none
    (:class:`ConnectError` for a host that is down, :class:`Timeout` when
    ``timeout`` fired, ...). ``connect_options`` are :func:`connect`'s
    keywords, for every host (``fingerprint`` only with one host). Ctrl-C
    stops every host's command and raises :class:`KeyboardInterrupt`.
    """
    if isinstance(hosts, str):
        hosts = [hosts]
    options: Dict[str, Any] = {}
    for name, value in connect_options.items():
        if name in ("token_file", "key", "home") and isinstance(value, (str, os.PathLike)):
            value = os.fspath(value)
        options[name] = value
    pairs = _wiresh.run_many(
        list(hosts),
        _argv(command),
        fanout=fanout,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        **options,
    )
    results: Dict[str, Union[Completed, WireshError]] = {}
    for name, outcome in pairs:
        if isinstance(outcome, BaseException):
            results[name] = outcome  # type: ignore[assignment]
            continue
        try:
            results[name] = _completed(command, outcome, timeout=timeout, check=False, text=text)
        except Timeout as e:
            results[name] = e
    return results
