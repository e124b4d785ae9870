# Copyright: the wiresh authors
# MIT OR Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
name: wiresh
short_description: Run tasks over wiresh, with a worker that stays on the host
description:
  - Runs Ansible's commands and modules on a host with a C(wiresh serve) server, over the
    wiresh Python package (the same Rust client as the C(wiresh) command, with its TLS pinning of
    fingerprints, tokens, client keys, C($WIRESH_HOME) host settings).
  - One relay process holds every host's connections for the play (as ssh's ControlPersist
    masters do); Ansible's per-task processes reach it over a Unix socket.
  - Modules run in a worker that stays on the host for the play (a Python process started
    over wiresh), forked warm for each module, as Mitogen does. Anything it cannot run
    (C(raw), become, another interpreter, a module that brings other versions of Ansible's
    module utilities) runs over a plain wiresh command, as does everything when the host has
    no Python or O(worker) is off.
  - Files move over the command channel (a plain C(wiresh serve) needs no C(--files-root)),
    checked with SHA-256 and renamed into place only when complete.
  - Commands run as the account that runs the server; C(ansible_user) is not used. Become
    (sudo, su, ...) works without a password (passwordless sudo, su from root).
author: the wiresh authors
version_added: "0.1.0"
requirements:
  - the wiresh Python package on the controller (C(pip install ./python) from the wiresh repository)
  - a C(wiresh serve) server on each host
options:
  pipelining:
    description:
      - Pipelining (Ansible's own option) sends a module through the command's stdin rather than as a
        file; with this connection it also lets the worker run it without a file at all. Recommended.
    type: boolean
    default: false
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
  host:
    description: The host to connect to, as the C(wiresh) command takes it (a name, an address, a name from the client settings C(client.toml)).
    type: string
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_wiresh_host
      - name: delegated_vars['ansible_host']
  port:
    description: The server's port (else the host settings', else 7878).
    type: integer
    vars:
      - name: ansible_port
      - name: ansible_wiresh_port
      - name: delegated_vars['ansible_port']
    ini:
      - section: wiresh_connection
        key: port
    env:
      - name: ANSIBLE_WIRESH_PORT
  token_file:
    description:
      - File holding the server's token (else C($WIRESH_TOKEN), else the home's C(token)).
      - The token itself is never shown, at any verbosity.
    type: path
    vars:
      - name: wiresh_token_file
      - name: ansible_wiresh_token_file
    ini:
      - section: wiresh_connection
        key: token_file
    env:
      - name: ANSIBLE_WIRESH_TOKEN_FILE
  token:
    description:
      - The server's token itself (keep it in a vault). Prefer O(token_file).
      - Never shown, at any verbosity.
    type: string
    vars:
      - name: wiresh_token
      - name: ansible_wiresh_token
  fingerprint:
    description: The server's TLS fingerprint (C(sha256:...)), pinned in advance; else C(known_hosts) in the wiresh home, trusting on first use.
    type: string
    vars:
      - name: wiresh_fingerprint
      - name: ansible_wiresh_fingerprint
  key:
    description: A client key file (C(wiresh keygen)); else the home's C(client.key) when it exists.
    type: path
    vars:
      - name: wiresh_key
      - name: ansible_wiresh_key
    ini:
      - section: wiresh_connection
        key: key
    env:
      - name: ANSIBLE_WIRESH_KEY
  home:
    description: The wiresh home (token, C(known_hosts), C(client.key), host settings); else C($WIRESH_HOME), else C(~/.wiresh).
    type: path
    vars:
      - name: wiresh_home
      - name: ansible_wiresh_home
    ini:
      - section: wiresh_connection
        key: home
    env:
      - name: WIRESH_HOME
  plaintext:
    description: No TLS, for a server on loopback started with C(--allow-plaintext).
    type: boolean
    default: false
    vars:
      - name: wiresh_plaintext
      - name: ansible_wiresh_plaintext
    ini:
      - section: wiresh_connection
        key: plaintext
  worker:
    description: Run modules in the worker that stays on the host; off runs each one as a plain command.
    type: boolean
    default: true
    vars:
      - name: wiresh_worker
      - name: ansible_wiresh_worker
    ini:
      - section: wiresh_connection
        key: worker
    env:
      - name: ANSIBLE_WIRESH_WORKER
  persist:
    description: Seconds the relay (the hosts' connections and workers) stays unused before it exits; it also exits with the Ansible run that started it.
    type: integer
    default: 60
    vars:
      - name: wiresh_persist
    ini:
      - section: wiresh_connection
        key: persist
    env:
      - name: ANSIBLE_WIRESH_PERSIST
  python_interpreter:
    description:
      - The interpreter modules run with, as Ansible is told it (C(ansible_python_interpreter)).
      - When it is a path, the worker starts with the host's first task, alongside it; otherwise
        (interpreter discovery) with the first module.
    type: string
    vars:
      - name: ansible_python_interpreter
  control_path_dir:
    description: Directory of the relay's socket (made owner-only).
    type: path
    default: ~/.ansible/wcp
    ini:
      - section: wiresh_connection
        key: control_path_dir
    env:
      - name: ANSIBLE_WIRESH_CONTROL_PATH_DIR
  timeout:
    description: Seconds to wait for the relay to start.
    type: integer
    default: 30
    vars:
      - name: ansible_wiresh_timeout
    ini:
      - section: wiresh_connection
        key: timeout
"""

EXAMPLES = r"""
# inventory.ini
# [web]
# web01 ansible_host=10.0.0.11
# web02 ansible_port=7900 wiresh_fingerprint=sha256:...
# [web:vars]
# ansible_connection=wiresh.remote.wiresh
# wiresh_token_file=~/.wiresh/tokens/web
"""

import fcntl
import hashlib
import importlib.util
import json
import multiprocessing
import os
import select
import socket
import struct
import subprocess
import sys
import time

import yaml
from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

# The relay imports the package; here it is only looked for (importing
# its native half in every task's process would cost more than the task).
HAS_WIRESH = importlib.util.find_spec("wiresh") is not None

display = Display()


def _register_options():
    """Registers this plugin's options before Ansible reads them from
    DOCUMENTATION itself: it would parse it with its own YAML loader (which
    tags every node with where it came from) in every task's process, at a
    cost of more than the task's own (about 150 ms). PyYAML's C loader reads
    the same text in a millisecond or two: its base loader, which leaves every
    value a string, as Ansible's config manager converts each to its option's
    `type` anyway."""
    loader = getattr(yaml, "CBaseLoader", None)
    if loader is None or C.config.has_configuration_definition("connection", __name__):
        return
    options = yaml.load(DOCUMENTATION, Loader=loader)["options"]
    C.config.initialize_plugin_configuration_definitions("connection", __name__, options)


_register_options()

UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugin_utils")
RELAY = os.path.join(UTILS, "relay.py")
WORKER = os.path.join(UTILS, "worker.py")

MAX_HEADER = 1 << 20


def _read_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the relay closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class Connection(ConnectionBase):
    """Tasks over wiresh."""

    transport = "wiresh.remote.wiresh"
    has_pipelining = True
    # No terminal: become methods that need one to ask for a password
    # (su with a password) are refused by Ansible rather than hang.
    has_tty = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._relay = None

    # -- the relay -----------------------------------------------------------

    def _settings(self):
        """How to reach the host, as the relay is told with each request."""
        port = self.get_option("port")
        return {
            "host": self.get_option("host"),
            "port": int(port) if port not in (None, "") else None,
            "token_file": self.get_option("token_file"),
            "token": self.get_option("token"),
            "fingerprint": self.get_option("fingerprint"),
            "key": self.get_option("key"),
            "home": self.get_option("home"),
            "plaintext": bool(self.get_option("plaintext")),
            "worker": bool(self.get_option("worker")),
            "python_interpreter": self.get_option("python_interpreter"),
        }

    def _owner(self):
        """The Ansible process the relay lives for: the one that forks the
        task workers (this process, outside a worker)."""
        if multiprocessing.parent_process() is not None:
            return os.getppid()
        return os.getpid()

    def _relay_path(self):
        directory = os.path.expanduser(self.get_option("control_path_dir"))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        # One relay per Ansible run (and per Python running it).
        tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:8]
        return os.path.join(directory, "%d-%s" % (self._owner(), tag))

    def _attach(self, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            return None
        return sock

    def _start_relay(self, path):
        config = dict(
            socket=path,
            owner=self._owner(),
            persist=int(self.get_option("persist")),
            worker_source=WORKER,
        )
        env = dict(os.environ)
        env.pop("PYTHONSTARTUP", None)
        proc = subprocess.Popen(
            [sys.executable, RELAY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            env=env,
        )
        proc.stdin.write(json.dumps(config).encode())
        proc.stdin.close()
        # The relay says one line, then lets go of its stdout and goes on in
        # a session of its own; it is not waited for here.
        line = b""
        deadline = time.monotonic() + int(self.get_option("timeout"))
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                proc.kill()
                proc.wait()
                raise AnsibleConnectionFailure("wiresh: the relay did not start within %ss" % self.get_option("timeout"))
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
        proc.stdout.close()
        if not line.startswith(b"ready"):
            proc.wait()
        word, _, detail = to_text(line).strip().partition(" ")
        if word == "ready":
            return
        message = json.loads(detail) if detail else "the relay exited without a word"
        raise AnsibleError("wiresh: cannot start the relay: %s" % message)

    def _connect(self):
        if self._connected:
            return self
        if not HAS_WIRESH:
            raise AnsibleError(
                "the wiresh connection needs the wiresh Python package on the controller "
                "(pip install ./python from the wiresh repository) for %s" % sys.executable
            )
        path = self._relay_path()
        sock = self._attach(path)
        if sock is None:
            with open(path + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                sock = self._attach(path)
                if sock is None:
                    display.vvv("ESTABLISH WIRESH RELAY %s" % path, host=self.get_option("host"))
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    try:
                        self._start_relay(path)
                    except AnsibleError:
                        os.unlink(path + ".lock")
                        raise
                    sock = self._attach(path)
        if sock is None:
            raise AnsibleConnectionFailure("wiresh: the relay did not answer at %s" % path)
        self._relay = sock
        self._connected = True
        return self

    def _request(self, header, body=b""):
        header["host"] = self._settings()
        header["body_len"] = len(body)
        data = json.dumps(header).encode("utf-8")
        try:
            self._relay.sendall(struct.pack(">I", len(data)) + data)
            if body:
                self._relay.sendall(body)
            (size,) = struct.unpack(">I", _read_exact(self._relay, 4))
            if size > MAX_HEADER:
                raise AnsibleConnectionFailure("wiresh: the relay sent a header of %d bytes" % size)
            answer = json.loads(_read_exact(self._relay, size).decode("utf-8"))
            body = _read_exact(self._relay, int(answer.get("body_len", 0)))
        except (OSError, EOFError) as e:
            self.close()
            raise AnsibleConnectionFailure("wiresh: lost the relay for %s: %s" % (self.get_option("host"), e))
        error = answer.get("error")
        if error:
            if error.get("type") == "AnsibleConnectionFailure":
                raise AnsibleConnectionFailure("wiresh: %s" % error["message"])
            raise AnsibleError("wiresh: %s" % error["message"])
        return answer, body

    # -- Ansible's connection interface --------------------------------------

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % cmd, host=self.get_option("host"))
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleError(
                "wiresh: become with a password is not supported (no terminal to answer a prompt on); "
                "allow %s without one (sudo NOPASSWD, or su from root)" % self.become.name
            )
        answer, body = self._request({"op": "exec", "cmd": cmd}, to_bytes(in_data or b""))
        split = answer["stdout_len"]
        stdout, stderr = body[:split], body[split:]
        if sudoable and self.become and getattr(self.become, "_id", None):
            stdout = self.become.strip_become_success(stdout)
        return answer["rc"], stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self.get_option("host"))
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        self._request({"op": "put", "src": in_path, "dest": out_path})

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self.get_option("host"))
        self._request({"op": "fetch", "src": in_path, "dest": out_path})

    def reset(self):
        """Ends the host's connections and worker; the next task starts
        afresh."""
        sock = self._relay or self._attach(self._relay_path())
        if sock is not None:
            self._relay = sock
            try:
                self._request({"op": "reset"})
            except AnsibleError:
                pass
        self.close()

    def close(self):
        """Lets go of the relay; it keeps the host's connections (and
        worker) for the next task."""
        if self._relay is not None:
            try:
                self._relay.close()
            except OSError:
                pass
        self._relay = None
        self._connected = False
