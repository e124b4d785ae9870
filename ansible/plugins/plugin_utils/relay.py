# The wiresh connection's relay: one process for an Ansible run, holding
# every host's wiresh connections, so that Ansible's per-task worker
# processes (forked afresh for every task) reuse them, as ssh's
# ControlPersist masters do. Started by the connection plugin
# (connection/wiresh.py) as `PYTHON relay.py`, with its settings as JSON on
# stdin; says `ready` (or why not) on stdout, then serves a Unix socket in a
# directory only its user can enter. Each request names its host's settings
# (the token among them: never on a command line); a host's connection is
# made by its first request, and a host that cannot be reached is told as
# such (UNREACHABLE), request after request.
#
# It runs one request at a time per host, hosts side by side:
# - a module (the AnsiballZ script Ansible pipelines to PYTHON, or the
#   script file it put): in the worker (worker.py) that stays on the host,
#   started on first use over a second connection, warm; anything else,
#   and everything when the worker cannot run, over the plain connection
#   as the shell command Ansible gave;
# - put and fetch: through the worker (SHA-256 checked), or as shell
#   commands over the plain connection (`cat` into a temporary file, size
#   and SHA-256 checked, renamed into place; `cat` out with its size and
#   SHA-256 sent ahead).
# It exits when the Ansible process that started it is gone, or after
# `persist` seconds unused; `reset` ends one host's connections and worker.
#
# Frames on the socket, both ways: 4 bytes (big-endian header length), a
# JSON header, then `body_len` bytes.

import hashlib
import json
import os
import re
import shlex
import socket
import struct
import sys
import tempfile
import threading
import time

import wiresh

MAX_HEADER = 1 << 20

# $WIRESH_RELAY_TRACE names a file that gets one line per request: when,
# how long, which host, what (never the token, never the data).
TRACE = open(os.environ["WIRESH_RELAY_TRACE"], "a") if os.environ.get("WIRESH_RELAY_TRACE") else None


def trace(started, header):
    if TRACE:
        what = header.get("cmd") or header.get("src") or ""
        took = (time.monotonic() - started) * 1000
        TRACE.write("%.3f %.1fms %s %s %s\n" % (started, took, header["host"]["host"], header.get("op"), what[:60]))
        TRACE.flush()

# Files larger than this go the plain way (streamed), not through the
# worker (which holds one in memory).
WORKER_FILE_LIMIT = 64 << 20

# What the worker's stderr keeps, for the message when it dies.
WORKER_STDERR_KEPT = 64 << 10

# How often the relay checks that its Ansible process is still there.
OWNER_CHECK = 1.0

CONNECT_KEYS = ("port", "token", "token_file", "key", "fingerprint", "plaintext", "home")

# A command that runs the interpreter on the pipelined module, or on the
# module file Ansible put: `/bin/sh -c '[VAR=value ...] PYTHON [FILE] && sleep 0'`.
SHELL_WRAPPED = re.compile(r"^/bin/sh -c (.*)$", re.S)


def read_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock):
    (size,) = struct.unpack(">I", read_exact(sock, 4))
    if size > MAX_HEADER:
        raise ValueError("header of %d bytes" % size)
    header = json.loads(read_exact(sock, size).decode("utf-8"))
    return header, read_exact(sock, int(header.get("body_len", 0)))


def write_frame(sock, header, body=b""):
    header["body_len"] = len(body)
    data = json.dumps(header).encode("utf-8")
    sock.sendall(struct.pack(">I", len(data)) + data)
    if body:
        sock.sendall(body)


def module_command(cmd):
    """(interpreter, script file or None, env) when `cmd` runs a module
    the way Ansible runs one with no become; None otherwise."""
    wrapped = SHELL_WRAPPED.match(cmd)
    if not wrapped:
        return None
    try:
        (inner,) = shlex.split(wrapped.group(1))
        words = shlex.split(inner)
    except ValueError:
        return None
    if words[-3:] != ["&&", "sleep", "0"]:
        return None
    words = words[:-3]
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or not words[0].startswith("/") or len(words) > 2:
        return None
    if not re.search(r"python[0-9.]*$", os.path.basename(words[0])):
        return None
    script = words[1] if len(words) == 2 else None
    if script is not None and not os.path.basename(script).startswith("AnsiballZ_"):
        return None
    return words[0], script, env


# A path as Ansible writes its own into shell commands: nothing the shell
# would expand but a leading `~`.
SAFE_PATH = r"~?[A-Za-z0-9_./+-]*"

# Ansible's own shell commands (its `sh` shell plugin), done by the worker
# without a shell: where its home is, making and removing its temporary
# directory, making its module file executable.
SHORTCUTS = (
    ("home", re.compile(r"^echo (~[A-Za-z0-9_.-]*) && sleep 0$")),
    (
        "mkdir_tmp",
        re.compile(
            r'^\( umask ([0-7]{1,4}) && mkdir -p "` echo (%s) `"\s*&& mkdir "` echo (%s) `" && '
            r'echo ([A-Za-z0-9_.-]+)="` echo (%s) `" \) && sleep 0$' % (SAFE_PATH, SAFE_PATH, SAFE_PATH)
        ),
    ),
    ("rm", re.compile(r"^rm -f -r (%s) > /dev/null 2>&1 && sleep 0$" % SAFE_PATH)),
    ("chmod", re.compile(r"^chmod u\+([rwx]+) ((?:%s ?)+) && sleep 0$" % SAFE_PATH)),
)


def shell_shortcut(cmd):
    """The worker's request for one of Ansible's own shell commands, or
    None for any other command."""
    wrapped = SHELL_WRAPPED.match(cmd)
    if not wrapped:
        return None
    try:
        (inner,) = shlex.split(wrapped.group(1))
    except ValueError:
        return None
    for kind, form in SHORTCUTS:
        found = form.match(inner)
        if found:
            return {"op": "shell", "kind": kind, "args": list(found.groups())}
    return None


class WorkerGone(Exception):
    """The worker ended; its stderr says why."""


class Worker:
    """The worker on the host, over a connection of its own."""

    def __init__(self, options, interpreter, source):
        self.interpreter = interpreter
        self.client = wiresh.connect(**options)
        reader, self.pipe = os.pipe()
        self.stream = self.client.stream(
            [interpreter, "-c", source], input=os.fdopen(reader, "rb", buffering=0)
        )
        self.chunks = iter(self.stream)
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.ready = self.read()[0]

    def read_bytes(self, n):
        while len(self.buffer) < n:
            try:
                name, data = next(self.chunks)
            except StopIteration:
                raise WorkerGone(
                    "the worker ended (status %s): %s"
                    % (self.stream.returncode, self.stderr.decode("utf-8", "replace").strip())
                )
            if name == "stderr":
                self.stderr += data
                del self.stderr[:-WORKER_STDERR_KEPT]
            else:
                self.buffer += data
        taken = bytes(self.buffer[:n])
        del self.buffer[:n]
        return taken

    def read(self):
        (size,) = struct.unpack(">I", self.read_bytes(4))
        header = json.loads(self.read_bytes(size).decode("utf-8"))
        return header, self.read_bytes(int(header.get("body_len", 0)))

    def request(self, header, body=b""):
        header["body_len"] = len(body)
        data = json.dumps(header).encode("utf-8")
        frame = memoryview(struct.pack(">I", len(data)) + data + body)
        try:
            while frame:
                frame = frame[os.write(self.pipe, frame) :]
        except OSError as e:
            raise WorkerGone("the worker stopped reading: %s" % e)
        return self.read()

    def close(self):
        try:
            os.close(self.pipe)
        except OSError:
            pass
        try:
            self.stream.close()
        finally:
            self.client.close()


class Host:
    """One host: its plain connection, its worker, one request at a time."""

    def __init__(self, settings, worker_source):
        self.options = {k: settings[k] for k in CONNECT_KEYS if settings.get(k) is not None}
        self.options["host"] = settings["host"]
        self.use_worker = settings.get("worker", True)
        self.worker_source = worker_source
        self.plain = None
        self.worker = None
        self.worker_broken = None
        self.lock = threading.Lock()
        # Taken while the worker starts, so that a module waits for it.
        self.worker_lock = threading.Lock()
        interpreter = settings.get("python_interpreter") or ""
        if self.use_worker and interpreter.startswith("/"):
            # Started while the first tasks run their plain commands.
            threading.Thread(target=self.get_worker, args=(interpreter,), daemon=True).start()

    # -- the plain way -------------------------------------------------------

    def plain_client(self):
        if self.plain is None or self.plain.closed:
            self.plain = wiresh.connect(**self.options)
        return self.plain

    def plain_exec(self, cmd, data):
        done = self.plain_client().run(cmd, input=data if data else None)
        return done.returncode, done.stdout, done.stderr

    def plain_put(self, src, dest):
        digest, size = file_digest(src)
        script = (
            'set -e; d=$(dirname -- "$1"); b=$(basename -- "$1"); '
            't=$(mktemp "$d/.$b.wiresh-XXXXXX"); trap \'rm -f "$t"\' EXIT; '
            'cat > "$t"; n=$(wc -c < "$t"); '
            '[ "$n" -eq "$2" ] || { echo "wiresh: $1: received $n of $2 bytes" >&2; exit 1; }; '
            'if command -v sha256sum >/dev/null 2>&1; then s=$(sha256sum < "$t"); '
            '[ "${s%% *}" = "$3" ] || { echo "wiresh: $1: the data arrived damaged" >&2; exit 1; }; fi; '
            'chmod "$(printf %o $((0666 & ~0$(umask))))" "$t"; mv -f -- "$t" "$1"; trap - EXIT'
        )
        with open(src, "rb") as f:
            done = self.plain_client().run(["/bin/sh", "-c", script, "sh", dest, str(size), digest], input=f)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode("utf-8", "replace").strip() or "put failed")

    def plain_fetch(self, src, dest):
        script = (
            '[ -r "$1" ] && [ -f "$1" ] || { echo "wiresh: $1: not a readable file" >&2; exit 1; }; '
            'n=$(wc -c < "$1"); s=-; if command -v sha256sum >/dev/null 2>&1; then '
            's=$(sha256sum < "$1"); s=${s%% *}; fi; printf "wiresh-fetch %s %s\\n" $n $s >&2; '
            'exec cat -- "$1"'
        )
        digest = hashlib.sha256()
        received = 0
        stderr = bytearray()
        with LocalFile(dest) as out:
            with self.plain_client().stream(["/bin/sh", "-c", script, "sh", src]) as stream:
                for name, data in stream:
                    if name == "stdout":
                        out.write(data)
                        digest.update(data)
                        received += len(data)
                    else:
                        stderr += data
            if stream.returncode != 0:
                raise RuntimeError(stderr.decode("utf-8", "replace").strip() or "fetch failed")
            told = re.search(rb"wiresh-fetch (\d+) (\S+)", stderr)
            if not told or int(told.group(1)) != received:
                raise RuntimeError("%s: received %d bytes, not the size the host gave" % (src, received))
            if told.group(2) != b"-" and told.group(2).decode() != digest.hexdigest():
                raise RuntimeError("%s: the data arrived damaged (SHA-256 mismatch)" % src)
            out.commit()

    # -- the worker ----------------------------------------------------------

    def get_worker(self, interpreter):
        with self.worker_lock:
            if not self.use_worker or self.worker_broken:
                return None
            if self.worker is not None:
                return self.worker if self.worker.interpreter == interpreter else None
            try:
                self.worker = Worker(self.options, interpreter, self.worker_source)
            except (wiresh.ConnectError, wiresh.AuthenticationError, wiresh.ConfigError):
                # The host is unreachable, not the worker broken: the plain
                # way says so, and a later module tries the worker again.
                return None
            except (wiresh.WireshError, WorkerGone, ValueError) as e:
                self.worker_broken = str(e)
                return None
            return self.worker

    def started_worker(self):
        """The worker, once started (waiting for a start under way)."""
        with self.worker_lock:
            return self.worker

    def worker_request(self, worker, header, body=b""):
        try:
            return worker.request(header, body)
        except (WorkerGone, wiresh.WireshError) as e:
            self.worker_broken = str(e)
            self.worker = None
            worker.close()
            raise RuntimeError("the wiresh worker on the host failed: %s" % e)

    def exec(self, cmd, data):
        module = module_command(cmd)
        if module:
            worker = self.get_worker(module[0])
            header = {"op": "module", "env": module[2]}
            if module[1]:
                header["file"] = module[1]
                data = b""
        else:
            worker = self.started_worker()
            header = shell_shortcut(cmd)
        if worker is not None and header is not None:
            answer, body = self.worker_request(worker, header, data)
            if "rc" in answer:
                split = answer["stdout_len"]
                return answer["rc"], body[:split], body[split:]
            if "error" in answer:
                raise RuntimeError(answer["error"])
        return self.plain_exec(cmd, data)

    def put(self, src, dest):
        worker = self.started_worker()
        if worker is not None and os.path.getsize(src) <= WORKER_FILE_LIMIT:
            with open(src, "rb") as f:
                data = f.read()
            answer, _ = self.worker_request(
                worker, {"op": "put", "dest": dest, "sha256": hashlib.sha256(data).hexdigest()}, data
            )
            if answer.get("ok"):
                return
            if "error" in answer:
                raise RuntimeError(answer["error"])
        self.plain_put(src, dest)

    def fetch(self, src, dest):
        worker = self.started_worker()
        if worker is not None:
            answer, data = self.worker_request(worker, {"op": "fetch", "src": src, "limit": WORKER_FILE_LIMIT})
            if answer.get("ok"):
                if hashlib.sha256(data).hexdigest() != answer["sha256"]:
                    raise RuntimeError("%s: the data arrived damaged (SHA-256 mismatch)" % src)
                with LocalFile(dest) as out:
                    out.write(data)
                    out.commit()
                return
            if "error" in answer:
                raise RuntimeError(answer["error"])
        self.plain_fetch(src, dest)

    def handle(self, op, header, body):
        if op == "exec":
            rc, out, err = self.exec(header["cmd"], body)
            return {"rc": rc, "stdout_len": len(out)}, out + err
        if op == "put":
            self.put(header["src"], header["dest"])
            return {"ok": True}, b""
        if op == "fetch":
            self.fetch(header["src"], header["dest"])
            return {"ok": True}, b""
        if op == "ping":
            return {"ok": True, "worker": self.worker is not None, "worker_broken": self.worker_broken}, b""
        return {"error": {"type": "AnsibleError", "message": "unknown request %r" % op}}, b""

    def close(self):
        worker, self.worker = self.worker, None
        if worker is not None:
            try:
                worker.close()
            except Exception:
                pass
        if self.plain is not None:
            try:
                self.plain.close()
            except Exception:
                pass


class Relay:
    """Every host of the run, by their settings."""

    def __init__(self, config):
        with open(config["worker_source"], "r") as f:
            self.worker_source = f.read()
        self.hosts = {}
        self.hosts_lock = threading.Lock()
        self.busy = 0
        self.last_used = time.monotonic()

    def host(self, settings):
        key = json.dumps(settings, sort_keys=True)
        with self.hosts_lock:
            host = self.hosts.get(key)
            if host is None:
                host = self.hosts[key] = Host(settings, self.worker_source)
            return host

    def forget(self, settings):
        with self.hosts_lock:
            host = self.hosts.pop(json.dumps(settings, sort_keys=True), None)
        if host is not None:
            with host.lock:
                host.close()

    def answer(self, header, body):
        op = header.get("op")
        if op == "reset":
            self.forget(header["host"])
            return {"ok": True}, b""
        host = self.host(header["host"])
        with host.lock:
            try:
                return host.handle(op, header, body)
            except (wiresh.ConnectError, wiresh.ConnectionLost, wiresh.AuthenticationError, wiresh.ConfigError) as e:
                # The host cannot be reached or let in: UNREACHABLE, as ssh's
                # refused keys are.
                return failure("AnsibleConnectionFailure", e), b""
            except Exception as e:
                return failure("AnsibleError", e), b""

    def serve_client(self, conn):
        with conn:
            while True:
                try:
                    header, body = read_frame(conn)
                except (EOFError, OSError, ValueError):
                    return
                with self.hosts_lock:
                    self.busy += 1
                started = time.monotonic()
                try:
                    answer = self.answer(header, body)
                    trace(started, header)
                finally:
                    with self.hosts_lock:
                        self.busy -= 1
                        self.last_used = time.monotonic()
                try:
                    write_frame(conn, *answer)
                except OSError:
                    return

    def idle_for(self):
        with self.hosts_lock:
            return 0.0 if self.busy else time.monotonic() - self.last_used

    def close(self):
        with self.hosts_lock:
            hosts, self.hosts = list(self.hosts.values()), {}
        for host in hosts:
            host.close()


def failure(kind, error):
    return {"error": {"type": kind, "message": str(error)}}


def file_digest(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalFile:
    """A local file written beside its destination and renamed into place
    only when complete and checked."""

    def __init__(self, dest):
        self.dest = dest
        directory = os.path.dirname(dest) or "."
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(dest) + ".wiresh-")
        self.file = os.fdopen(fd, "wb")
        self.done = False

    def write(self, data):
        self.file.write(data)

    def commit(self):
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.rename(self.tmp, self.dest)
        self.done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.done:
            self.file.close()
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def owner_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main():
    config = json.loads(sys.stdin.read())
    try:
        relay = Relay(config)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(config["socket"])
        listener.listen(128)
        listener.settimeout(OWNER_CHECK)
    except Exception as e:
        sys.stdout.write("error %s\n" % json.dumps("%s: %s" % (type(e).__name__, e)))
        return 1
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        while owner_alive(config["owner"]) and relay.idle_for() <= config["persist"]:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            threading.Thread(target=relay.serve_client, args=(conn,), daemon=True).start()
    finally:
        # Every connection closed (so every worker ends) before the socket
        # goes: a gone socket means a gone relay.
        listener.close()
        relay.close()
        for leftover in (config["socket"], config["socket"] + ".lock"):
            try:
                os.unlink(leftover)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
