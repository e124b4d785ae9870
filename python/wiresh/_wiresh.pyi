"""The native half of the wiresh package (Rust, PyO3). Use :mod:`wiresh`."""

from typing import IO, Dict, Iterator, List, Optional, Tuple, Union

__version__: str

_Outcome = Tuple[Optional[int], Optional[int], float, bool, bytes, bytes]
_Input = Union[bytes, bytearray, IO[bytes], None]

class Stream:
    def __iter__(self) -> Iterator[Tuple[str, bytes]]: ...
    def __next__(self) -> Tuple[str, bytes]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Stream": ...
    def __exit__(self, *exc: object) -> bool: ...
    @property
    def returncode(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[int]: ...
    @property
    def duration(self) -> Optional[float]: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def done(self) -> bool: ...

class Client:
    @property
    def target(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def run(
        self,
        command: Union[str, List[str]],
        *,
        input: _Input = None,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> _Outcome: ...
    def stream(
        self,
        command: Union[str, List[str]],
        *,
        input: _Input = None,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Stream: ...
    def put(
        self,
        local: List[str],
        remote: str,
        *,
        recursive: bool = False,
        preserve: bool = False,
        resume: bool = False,
    ) -> None: ...
    def get(
        self,
        remote: List[str],
        local: str,
        *,
        recursive: bool = False,
        preserve: bool = False,
        resume: bool = False,
    ) -> None: ...
    def ping(self) -> float: ...
    def close(self) -> None: ...

def connect(
    host: Optional[str] = None,
    *,
    port: Optional[int] = None,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
    key: Optional[str] = None,
    fingerprint: Optional[str] = None,
    plaintext: bool = False,
    home: Optional[str] = None,
) -> Client: ...
def run_many(
    hosts: List[str],
    command: Union[str, List[str]],
    *,
    fanout: int = 64,
    timeout: Optional[float] = None,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
    port: Optional[int] = None,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
    key: Optional[str] = None,
    fingerprint: Optional[str] = None,
    plaintext: bool = False,
    home: Optional[str] = None,
) -> List[Tuple[str, Union[_Outcome, BaseException]]]: ...
