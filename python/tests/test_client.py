"""The wiresh package against real servers: every API entry, over TLS with
tokens and keys, and plaintext."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import wiresh
from conftest import BINARY, free_refusing_port


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def client(server, client_home):
    with wiresh.connect(server.addr, token_file=server.token_file, home=client_home) as c:
        yield c


def wait_for(path: Path, what: str) -> None:
    """Waits (bounded) for a file a remote command writes when it is ready."""
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


# -- run ---------------------------------------------------------------------


def test_argv_with_spaces_and_quotes_arrives_as_given(client):
    args = ["a b", "it's", '"double"', "$HOME", "*", "", "tab\there", "ünï"]
    done = client.run(["printf", "%s\\n", *args])
    assert done.returncode == 0
    assert done.stdout.decode().split("\n")[:-1] == args
    assert done.args == ["printf", "%s\\n", *args]


def test_a_string_runs_in_the_remote_shell(client):
    done = client.run("echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr, done.signal) == (3, b"out\n", b"err\n", None)
    assert done.duration >= 0


def test_output_that_is_not_utf8_is_kept_as_bytes(client):
    done = client.run(["printf", "\\377\\376\\000abc"])
    assert done.stdout == b"\xff\xfe\x00abc"
    text = client.run(["printf", "\\377ok"], text=True)
    assert text.stdout == "\ufffdok"


def test_input_as_bytes_str_and_files(client, tmp_path):
    assert client.run("cat", input=b"raw\x00bytes").stdout == b"raw\x00bytes"
    assert client.run("cat", input="texté", text=True).stdout == "texté"
    assert client.run("wc -c", input=io.BytesIO(b"x" * 300_000)).stdout.strip() == b"300000"
    local = tmp_path / "input.bin"
    local.write_bytes(os.urandom(1_000_000))
    with open(local, "rb") as f:
        digest = client.run("sha256sum", input=f).stdout.split()[0].decode()
    import hashlib

    assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
    assert client.run("cat").stdout == b"", "no input: stdin is empty"


def test_an_input_file_that_fails_cancels_the_command_and_raises_its_error(client):
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls == 1:
                return b"x" * 10
            raise OSError("the disk is on fire")

    with pytest.raises(OSError, match="on fire"):
        client.run("cat > /dev/null; sleep 60", input=Broken())
    assert client.run("echo usable").stdout == b"usable\n"


def test_an_input_file_in_text_mode_is_refused(client, tmp_path):
    local = tmp_path / "t.txt"
    local.write_text("hello")
    with open(local, "r") as f:
        with pytest.raises(TypeError, match="binary mode"):
            client.run("cat", input=f)
    assert client.run("echo still usable").stdout == b"still usable\n"


def test_env_and_cwd(client, tmp_path):
    done = client.run("echo $GREETING; pwd", env={"GREETING": "hello there"}, cwd=str(tmp_path))
    assert done.stdout.decode().split("\n")[:2] == ["hello there", str(tmp_path)]


def test_check_raises_command_error_with_the_output(client):
    with pytest.raises(wiresh.CommandError) as e:
        client.run("echo partial; echo bad >&2; exit 7", check=True, text=True)
    assert (e.value.returncode, e.value.stdout, e.value.stderr) == (7, "partial\n", "bad\n")
    assert isinstance(e.value, wiresh.WireshError)
    assert client.run("true", check=True).returncode == 0


def test_a_signal_is_reported_as_subprocess_does(client):
    done = client.run("kill -9 $$")
    assert (done.returncode, done.signal) == (-9, 9)
    with pytest.raises(wiresh.CommandError) as e:
        client.run("kill -TERM $$", check=True)
    assert e.value.signal == 15


def test_a_timeout_kills_the_command_and_raises(client, tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(wiresh.Timeout) as e:
        client.run(f"echo started; echo $$ > {pidfile}; exec sleep 60", timeout=0.5)
    assert e.value.stdout == b"started\n"
    assert e.value.timeout == 0.5
    assert process_gone(int(pidfile.read_text())), "the timed-out command still runs"
    assert client.run("echo after").stdout == b"after\n", "the client is usable after a timeout"


def test_a_program_that_cannot_start_is_a_remote_error(client):
    with pytest.raises(wiresh.RemoteError) as e:
        client.run(["/nonexistent/program"])
    assert e.value.code == "spawn_failed"
    assert client.run("echo fine").stdout == b"fine\n"


def test_bad_arguments_are_type_errors(client):
    with pytest.raises(TypeError):
        client.run(b"bytes command")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.run("cat", input=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.run("true", timeout=-1)


# -- stream ------------------------------------------------------------------


def test_stream_yields_chunks_as_they_arrive(client, tmp_path):
    go_on = tmp_path / "go-on"
    chunks = client.stream(f"echo first; while [ ! -e {go_on} ]; do sleep 0.01; done; echo second >&2; exit 4")
    assert next(chunks) == ("stdout", b"first\n"), "the first line comes before the command ends"
    assert not chunks.done and chunks.returncode is None
    go_on.write_text("now")
    rest = list(chunks)
    assert rest == [("stderr", b"second\n")]
    assert (chunks.done, chunks.returncode, chunks.signal) == (True, 4, None)
    assert chunks.duration is not None


def test_stream_check_and_text(client):
    s = client.stream("printf 'caf\\303'; printf '\\251\\n'; exit 2", text=True, check=True)
    got = []
    with pytest.raises(wiresh.CommandError) as e:
        for _, data in s:
            got.append(data)
    assert "".join(got) == "café\n", "a character split across chunks is decoded whole"
    assert e.value.returncode == 2


def test_leaving_a_stream_early_cancels_the_command(client, tmp_path):
    pidfile = tmp_path / "pid"
    with client.stream(f"echo $$ > {pidfile}; echo go; exec sleep 60") as s:
        assert next(s) == ("stdout", b"go\n")
    assert process_gone(int(pidfile.read_text()))
    assert client.run("echo next").stdout == b"next\n"


def test_a_stream_closed_at_once_still_cancels_its_command(client, tmp_path):
    """A cancel asked for before the command has shown itself still reaches
    it (the client holds it until the command's start has reached the
    server), and the client is usable afterwards."""
    pidfile = tmp_path / "pid"
    s = client.stream(f"echo $$ > {pidfile}; exec sleep 60")
    s.close()
    assert s.done and s.signal is not None, "the command was not killed: it ran to its end"
    if pidfile.exists() and pidfile.read_text().strip():
        assert process_gone(int(pidfile.read_text()))
    assert client.run("echo next").stdout == b"next\n"


def test_100_mb_streamed_each_way_in_bounded_memory(server, client_home, tmp_path):
    """In a process of its own, so that its peak memory is its own."""
    script = f"""
import wiresh, resource
class Zeros:
    def __init__(self, n): self.left = n
    def read(self, n):
        n = min(n, self.left); self.left -= n
        return bytes(n)
c = wiresh.connect({server.addr!r}, token_file={str(server.token_file)!r}, home={str(client_home)!r})
total = 0
for name, data in c.stream("head -c 100000000 /dev/zero"):
    assert name == "stdout"
    total += len(data)
received = c.run("wc -c", input=Zeros(100_000_000)).stdout
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(total, int(received), peak)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    total, received, peak_mib = map(int, out.stdout.split())
    assert (total, received) == (100_000_000, 100_000_000)
    assert peak_mib < 100, f"peak RSS {peak_mib} MiB for 100 MB each way"


# -- one thread at a time, Ctrl-C ---------------------------------------------


def test_a_second_thread_is_told_the_client_is_busy(client, tmp_path):
    started, go_on = tmp_path / "started", tmp_path / "go-on"
    result = {}

    def long_command() -> None:
        result["done"] = client.run(f"echo 1 > {started}; while [ ! -e {go_on} ]; do sleep 0.01; done; echo ok")

    t = threading.Thread(target=long_command)
    t.start()
    wait_for(started, "the first command")
    with pytest.raises(wiresh.WireshError, match="busy"):
        client.run("echo second")
    go_on.write_text("now")
    t.join(30)
    assert result["done"].stdout == b"ok\n"
    with client.stream("echo streaming") as s:
        with pytest.raises(wiresh.WireshError, match="busy"):
            client.run("echo while streaming")
        assert list(s) == [("stdout", b"streaming\n")]
    assert client.run("echo free").stdout == b"free\n"


def test_ctrl_c_cancels_the_running_command(server, client_home, tmp_path):
    pidfile = tmp_path / "pid"
    script = f"""
import wiresh
c = wiresh.connect({server.addr!r}, token_file={str(server.token_file)!r}, home={str(client_home)!r})
try:
    c.run("echo $$ > {pidfile}; exec sleep 60")
except KeyboardInterrupt:
    print("interrupted")
print(c.run("echo usable").stdout.decode().strip())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    wait_for(pidfile, "the remote command")
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=60)
    assert out.split() == ["interrupted", "usable"]
    assert process_gone(int(pidfile.read_text())), "the remote command outlived Ctrl-C"


# -- connecting --------------------------------------------------------------


def test_the_home_token_and_the_environment_token(server, client_home, monkeypatch):
    (client_home / "token").write_text(server.token)
    os.chmod(client_home / "token", 0o600)
    with wiresh.connect(server.addr, home=client_home) as c:
        assert c.run("echo home").stdout == b"home\n"
    (client_home / "token").unlink()
    with pytest.raises(wiresh.ConfigError, match="no token found"):
        wiresh.connect(server.addr, home=client_home)
    monkeypatch.setenv("WIRESH_TOKEN", server.token)
    with wiresh.connect(server.addr, home=client_home) as c:
        assert c.run("echo env").stdout == b"env\n"
    with wiresh.connect(server.addr, token=server.token, home=client_home) as c:
        assert c.target == server.addr
        assert c.server.startswith("wiresh/")
        assert c.ping() >= 0


def test_first_use_pins_and_a_wrong_fingerprint_is_its_own_error(server, client_home):
    with wiresh.connect(server.addr, token_file=server.token_file, home=client_home):
        pass
    known = (client_home / "known_hosts").read_text()
    assert server.fingerprint in known
    with pytest.raises(wiresh.FingerprintMismatch, match="intercepting"):
        wiresh.connect(server.addr, token_file=server.token_file, home=client_home, fingerprint="sha256:" + "00" * 32)
    (client_home / "known_hosts").write_text(known.replace(server.fingerprint, "sha256:" + "11" * 32))
    with pytest.raises(wiresh.FingerprintMismatch) as e:
        wiresh.connect(server.addr, token_file=server.token_file, home=client_home)
    assert isinstance(e.value, wiresh.ConnectError)
    with wiresh.connect(server.addr, token_file=server.token_file, home=client_home, fingerprint=server.fingerprint):
        pass


def test_a_wrong_token_is_an_authentication_error(server, client_home):
    with pytest.raises(wiresh.AuthenticationError) as e:
        wiresh.connect(server.addr, token="0" * 64, home=client_home)
    assert e.value.code == "auth_failed"
    assert isinstance(e.value, wiresh.RemoteError)


def test_nothing_listening_is_a_connect_error(client_home):
    refusing = free_refusing_port()
    port = refusing.getsockname()[1]
    with pytest.raises(wiresh.ConnectError, match="cannot connect"):
        wiresh.connect("127.0.0.1", port=port, token="t", home=client_home)
    refusing.close()


def test_key_authentication(start_server, client_home):
    env = dict(os.environ, WIRESH_HOME=str(client_home))
    made = subprocess.run([str(BINARY), "keygen", "--name", "tests"], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    authorized = client_home.parent / "authorized_clients"
    authorized.write_text(made.stdout.strip().splitlines()[-1] + "\n")
    server = start_server("--auth", "key", "--authorized-clients", str(authorized))
    with wiresh.connect(server.addr, home=client_home) as c:
        assert c.run("echo by key").stdout == b"by key\n"
    with pytest.raises(wiresh.WireshError):
        wiresh.connect(server.addr, token=server.token, home=client_home, key=str(client_home / "missing.key"))


def test_plaintext_on_loopback(start_server, client_home):
    server = start_server("--allow-plaintext")
    with wiresh.connect(server.addr, token_file=server.token_file, plaintext=True, home=client_home) as c:
        assert c.run("echo plain").stdout == b"plain\n"
    with pytest.raises(wiresh.ConfigError, match="loopback"):
        wiresh.connect("192.0.2.1", token="t", plaintext=True, home=client_home)


# client.toml, and for this release the old hosts.toml with its spelling,
# which warns (a FutureWarning, what `wiresh exec` prints on stderr).
@pytest.mark.parametrize("file,token_key", [("client.toml", "token-file"), ("hosts.toml", "token_file")])
def test_a_name_from_the_host_settings(server, client_home, file, token_key):
    (client_home / file).write_text(
        f'[hosts.web1]\naddress = "127.0.0.1"\nport = {server.port}\n{token_key} = "{server.token_file}"\n'
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with wiresh.connect("web1", home=client_home) as c:
            assert c.target == server.addr
            assert c.run("echo named").stdout == b"named\n"
        many = wiresh.run_many(["web1"], "echo many", home=client_home, text=True)
    assert many["web1"].stdout == "many\n"  # type: ignore[union-attr]
    moved = [w for w in caught if issubclass(w.category, FutureWarning) and "read for this release only" in str(w.message)]
    assert len(moved) == (2 if file == "hosts.toml" else 0), [str(w.message) for w in caught]
    assert all(w.filename == __file__ for w in moved), "the warning points at the caller's line"


def test_close_and_the_context_manager(server, client_home):
    c = wiresh.connect(server.addr, token_file=server.token_file, home=client_home)
    with c:
        assert not c.closed
    assert c.closed
    c.close()
    with pytest.raises(wiresh.ConnectionLost, match="closed"):
        c.run("true")


def test_a_server_that_goes_away_closes_the_client(start_server, client_home):
    server = start_server()
    c = wiresh.connect(server.addr, token_file=server.token_file, home=client_home)
    server.stop()
    with pytest.raises(wiresh.ConnectionLost):
        c.run("echo gone")
    assert c.closed


# -- put and get ---------------------------------------------------------------


def test_put_and_get_trees(start_server, client_home, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    server = start_server("--files-root", str(root))
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(200_000), "sub/deeper/ünï c.txt": b"name with space"}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    os.chmod(tree / "a.txt", 0o640)
    with wiresh.connect(server.addr, token_file=server.token_file, home=client_home) as c:
        with pytest.raises(wiresh.TransferError, match="use -r"):
            c.put(tree, "up")
        c.put(tree, "up", recursive=True, preserve=True)
        for name, data in files.items():
            assert (root / "up" / name).read_bytes() == data
        assert (root / "up" / "a.txt").stat().st_mode & 0o777 == 0o640
        c.put([tree / "a.txt", tree / "sub" / "b.bin"], "flat/")
        assert sorted(p.name for p in (root / "flat").iterdir()) == ["a.txt", "b.bin"]
        back = tmp_path / "back"
        c.get("up", back, recursive=True)
        for name, data in files.items():
            assert (back / name).read_bytes() == data
        c.get("up/a.txt", tmp_path / "single.txt")
        assert (tmp_path / "single.txt").read_bytes() == b"alpha"
        with pytest.raises(wiresh.RemoteError) as e:
            c.get("missing.txt", tmp_path / "x")
        assert e.value.code == "not_found"
        with pytest.raises(FileNotFoundError):
            c.put(tmp_path / "no-such-file", "x")
        assert c.run("echo after transfers").stdout == b"after transfers\n"


def test_put_without_a_files_root_is_refused_with_its_code(client, tmp_path):
    local = tmp_path / "f"
    local.write_bytes(b"x")
    with pytest.raises(wiresh.RemoteError) as e:
        client.put(local, "f")
    assert e.value.code == "files_disabled"


# -- run_many ------------------------------------------------------------------


def test_run_many_over_20_servers_with_one_dead(start_server, client_home, token_file):
    servers = [start_server("--token-file", str(token_file)) for _ in range(19)]
    refusing = free_refusing_port()
    dead = f"127.0.0.1:{refusing.getsockname()[1]}"
    hosts = [s.addr for s in servers[:10]] + [dead] + [s.addr for s in servers[10:]]
    results = wiresh.run_many(hosts, "echo $PPID from-host", token_file=token_file, home=client_home, fanout=8, text=True)
    refusing.close()
    assert list(results) == hosts, "one entry per host, in the order given"
    assert isinstance(results[dead], wiresh.ConnectError)
    done = [results[h] for h in hosts if h != dead]
    assert all(isinstance(r, wiresh.Completed) and r.returncode == 0 for r in done)
    assert all(r.stdout.endswith(" from-host\n") for r in done)  # type: ignore[union-attr]


def test_run_many_timeouts_and_host_lists(start_server, client_home, token_file):
    a = start_server("--token-file", str(token_file))
    results = wiresh.run_many([a.addr], "sleep 60", timeout=0.3, token_file=token_file, home=client_home)
    assert isinstance(results[a.addr], wiresh.Timeout)
    with pytest.raises(wiresh.ConfigError):
        wiresh.run_many(["h[1-2]"], "true", fingerprint="sha256:" + "00" * 32, home=client_home)
    with pytest.raises(wiresh.ConfigError):
        wiresh.run_many(["h[2-1]"], "true", home=client_home)
