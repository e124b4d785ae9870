"""The exceptions of the wiresh package, all under :class:`WireshError`.

The Rust half raises these by name; their messages are the wiresh client's
own, meant to be shown to a user as they are.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

__all__ = [
    "WireshError",
    "ConfigError",
    "ConnectError",
    "FingerprintMismatch",
    "ConnectionLost",
    "ProtocolError",
    "RemoteError",
    "AuthenticationError",
    "TransferError",
    "CommandError",
    "Timeout",
]

Command = Union[str, Sequence[str]]
Output = Union[bytes, str, None]


class WireshError(Exception):
    """Anything that went wrong in wiresh (not in the remote command)."""


class ConfigError(WireshError):
    """A local setting or file does not allow connecting: no token, a
    token file others can read, a malformed host settings file, an
    unparsable host, plaintext to a remote address."""


class ConnectError(WireshError):
    """No connection could be made: nothing listens there, the address
    does not resolve, TLS failed, or the server did not answer in time."""


class FingerprintMismatch(ConnectError):
    """The server presents another TLS fingerprint than the one pinned for
    it (in ``known_hosts`` or by ``fingerprint=``): someone may be
    intercepting the connection, or the server's key was regenerated."""


class ConnectionLost(WireshError):
    """The connection broke, or the server went silent, after connecting;
    the :class:`~wiresh.Client` is closed."""


class ProtocolError(WireshError):
    """The peer broke the protocol or is not a wiresh server."""


class RemoteError(WireshError):
    """The server refused a request; :attr:`code` is the wire code
    (``"spawn_failed"``, ``"forbidden"``, ``"busy"``, ``"not_found"``, ...:
    docs/PROTOCOL.md lists them)."""

    code: Optional[str]

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(RemoteError):
    """The server refused the token or the client key (``auth_failed``), or
    locked this address out after failed attempts (``rate_limited``)."""


class TransferError(WireshError):
    """A file transfer failed its checks: the server sent something unsafe
    or inconsistent, or the data did not match its checksum. Nothing was
    written in place."""


class CommandError(WireshError):
    """A command run with ``check=True`` ended with a non-zero status (or
    was killed by a signal). Its output is kept, as it was captured."""

    def __init__(
        self,
        command: Command,
        returncode: Optional[int],
        stdout: Output = None,
        stderr: Output = None,
        signal: Optional[int] = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.signal = signal
        if signal is not None:
            what = f"was killed by signal {signal}"
        else:
            what = f"exited with status {returncode}"
        super().__init__(f"command {command!r} {what}")


class Timeout(WireshError):
    """A command's ``timeout`` expired: the server killed it. The output it
    had written by then is kept."""

    def __init__(
        self,
        command: Command,
        timeout: Optional[float],
        stdout: Output = None,
        stderr: Output = None,
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"command {command!r} timed out after {timeout} seconds and was killed")
