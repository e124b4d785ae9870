# The wiresh connection's worker: one Python process that stays on a managed
# host for the play, started over wiresh by the relay (relay.py) as
# `PYTHON -c <this file>`, talking frames on its stdin and stdout.
#
# Why: most of an Ansible task's time on the host is Python starting and
# importing ansible.module_utils out of the module's zip, again for every
# task. The worker imports them once; each module then runs in a child
# forked from it, warm (as Mitogen does), with its own stdin, stdout,
# stderr and exit status, as if `PYTHON` had run it. It also writes and
# reads files for put_file and fetch_file, checked with SHA-256.
#
# Frames both ways: 4 bytes (big-endian length of the header), the header
# (JSON), then `body_len` bytes of body. Requests: {"op": "module"} (the
# AnsiballZ script as body, or "file": its path; "env"), {"op": "put",
# "dest", "sha256"} (the data as body), {"op": "fetch", "src", "limit"}.
# {"op": "shell", "kind", "args"} (one of Ansible's own shell commands,
# recognised by the relay, done here without a shell).
# Answers: {"rc", "stdout_len"} with stdout and stderr as body; {"ok": true};
# {"fallback": true} when the relay should run the request the plain way;
# {"error": text, "errno": n}. End of stdin ends the worker.
#
# Only the standard library; Python 3.6 and later.

import base64
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import types
import zipfile

# Frames come and go on private copies of stdin and stdout; the real ones
# point at /dev/null, so that nothing printed by accident (an import's
# warning) can break the frames.
IN = os.dup(0)
OUT = os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(_null, 1)
os.close(_null)

# The module payload's zip, as the AnsiballZ wrapper carries it.
ZIP_DATA = re.compile(rb"""zip_data=(['"])([A-Za-z0-9+/=\s]+)\1""")

# How long output is still read after a module's process has exited: a
# daemon it left behind may hold its pipes open.
DRAIN_AFTER_EXIT = 0.2

# Most header bytes accepted: headers are small JSON objects.
MAX_HEADER = 1 << 20

UMASK = os.umask(0)
os.umask(UMASK)


def read_exact(n):
    chunks = []
    while n:
        chunk = os.read(IN, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame():
    (size,) = struct.unpack(">I", read_exact(4))
    if size > MAX_HEADER:
        raise ValueError("header of %d bytes" % size)
    header = json.loads(read_exact(size).decode("utf-8"))
    body = read_exact(int(header.get("body_len", 0)))
    return header, body


def write_frame(header, body=b""):
    header["body_len"] = len(body)
    data = json.dumps(header).encode("utf-8")
    view = memoryview(struct.pack(">I", len(data)) + data + body)
    while view:
        view = view[os.write(OUT, view) :]


class Warm:
    """Module utilities loaded once, from the modules' own zips: every zip's
    files go into one directory, so a package imported here finds the
    submodules any later module brings."""

    def __init__(self):
        self.lib = tempfile.mkdtemp(prefix="wiresh-worker-")
        self.files = {}
        self.seen = set()
        self.loaded = False

    def prepare(self, payload):
        """False when this payload carries other versions of files already
        loaded: it must run in a fresh interpreter."""
        found = ZIP_DATA.search(payload)
        if not found:
            return True
        digest = hashlib.sha1(found.group(2)).digest()
        if digest in self.seen:
            return True
        data = base64.b64decode(b"".join(found.group(2).split()))
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                name = info.filename
                if name.endswith("/") or name.startswith("/") or ".." in name.split("/"):
                    continue
                known = self.files.get(name)
                if known is None:
                    path = os.path.join(self.lib, name)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(z.read(info))
                    self.files[name] = info.CRC
                elif known != info.CRC:
                    return False
        self.seen.add(digest)
        if not self.loaded:
            self.loaded = True
            sys.path.insert(0, self.lib)
            for name in (
                "ansible.module_utils.basic",
                "ansible.module_utils._internal._ansiballz._loader",
            ):
                try:
                    __import__(name)
                except Exception:
                    pass
        return True

    def close(self):
        shutil.rmtree(self.lib, ignore_errors=True)


def run_child(payload, path, env, out_w, err_w):
    """In the forked child: be `PYTHON [path]` reading `payload`."""
    rc = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (devnull, out_w, err_w, IN, OUT):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.update(env)
        sys.argv = [path or ""]
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        if path:
            main.__file__ = path
        sys.modules["__main__"] = main
        code = compile(payload, path or "<stdin>", "exec")
        try:
            exec(code, main.__dict__)
            rc = 0
        except SystemExit as e:
            if e.code is None:
                rc = 0
            elif isinstance(e.code, int):
                rc = e.code & 0xFF
            else:
                sys.stderr.write("%s\n" % (e.code,))
                rc = 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        try:
            import atexit

            atexit._run_exitfuncs()
        except Exception:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    finally:
        os._exit(rc)


def collect(pid, out_r, err_r):
    """Reads the child's output until it has exited (and a moment after),
    then its exit status as a shell gives it."""
    out, err = [], []
    open_fds = {out_r: out, err_r: err}
    status = None
    deadline = None
    while open_fds:
        timeout = 0.05
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select(list(open_fds), [], [], timeout)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                open_fds[fd].append(chunk)
            else:
                del open_fds[fd]
        if status is None:
            done, status_now = os.waitpid(pid, os.WNOHANG)
            if done:
                status = status_now
                deadline = time.monotonic() + DRAIN_AFTER_EXIT
        elif not ready and time.monotonic() >= deadline:
            break
    for fd in (out_r, err_r):
        os.close(fd)
    if status is None:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        rc = 128 + os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    return rc, b"".join(out), b"".join(err)


def op_module(warm, header, body):
    path = header.get("file")
    if path:
        with open(path, "rb") as f:
            body = f.read()
    if not warm.prepare(body):
        return {"fallback": True}, b""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        run_child(body, path, header.get("env") or {}, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    rc, out, err = collect(pid, out_r, err_r)
    return {"rc": rc, "stdout_len": len(out)}, out + err


def expand(path):
    """A path as `echo PATH` prints it (only `~` is ever expanded: the
    relay sends no other paths)."""
    return os.path.expanduser(path)


def op_shell(header, body):
    """Ansible's own shell commands, without a shell. Any error: the relay
    runs the real command instead (each is safe to run again)."""
    kind, args = header["kind"], header["args"]
    try:
        if kind == "home":
            return {"rc": 0, "stdout_len": len(expand(args[0])) + 1}, (expand(args[0]) + "\n").encode()
        if kind == "mkdir_tmp":
            umask, parent, tmp, name, again = args
            if again != tmp:
                return {"fallback": True}, b""
            old = os.umask(int(umask, 8))
            try:
                os.makedirs(expand(parent), exist_ok=True)
                os.mkdir(expand(tmp))
            finally:
                os.umask(old)
            out = ("%s=%s\n" % (name, expand(tmp))).encode()
            return {"rc": 0, "stdout_len": len(out)}, out
        if kind == "rm":
            path = expand(args[0])
            if os.path.isdir(path) and not os.path.islink(path.rstrip("/") or "/"):
                shutil.rmtree(path)
            elif os.path.lexists(path.rstrip("/")):
                os.unlink(path.rstrip("/"))
            return {"rc": 0, "stdout_len": 0}, b""
        if kind == "chmod":
            bits = sum({"r": 0o400, "w": 0o200, "x": 0o100}[c] for c in set(args[0]))
            for path in args[1].split():
                path = expand(path)
                os.chmod(path, os.stat(path).st_mode & 0o7777 | bits)
            return {"rc": 0, "stdout_len": 0}, b""
    except OSError:
        pass
    return {"fallback": True}, b""


def op_put(header, body):
    dest = header["dest"]
    if hashlib.sha256(body).hexdigest() != header["sha256"]:
        return {"error": "%s: the data arrived damaged (SHA-256 mismatch)" % dest}, b""
    directory = os.path.dirname(dest) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(dest) + ".wiresh-")
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o666 & ~UMASK)
        os.close(fd)
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return {"ok": True}, b""


def op_fetch(header, body):
    src = header["src"]
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > int(header.get("limit", 1 << 26)):
            return {"fallback": True}, b""
        data = f.read()
    return {"ok": True, "sha256": hashlib.sha256(data).hexdigest()}, data


def serve():
    warm = Warm()
    try:
        write_frame({"ready": True, "python": sys.version.split()[0], "pid": os.getpid()})
        while True:
            try:
                header, body = read_frame()
            except EOFError:
                return
            op = header.get("op")
            try:
                if op == "module":
                    answer = op_module(warm, header, body)
                elif op == "shell":
                    answer = op_shell(header, body)
                elif op == "put":
                    answer = op_put(header, body)
                elif op == "fetch":
                    answer = op_fetch(header, body)
                else:
                    answer = {"error": "unknown request %r" % (op,)}, b""
            except OSError as e:
                answer = {"error": str(e), "errno": e.errno}, b""
            except Exception as e:
                answer = {"error": "%s: %s" % (type(e).__name__, e)}, b""
            write_frame(*answer)
    finally:
        warm.close()


serve()
