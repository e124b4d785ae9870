"""The wiresh.remote collection against real servers: installed with
ansible-galaxy, driven by ansible-playbook and ansible over ten `wiresh
serve` processes (one token, each its own TLS identity, pinned on first use
in the controller's wiresh home)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_refusing_port

ansible_installed = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(not ansible_installed, reason="ansible-core is not installed (pip install 'ansible-core==2.19.*')")

HERE = Path(__file__).resolve().parent
COLLECTION = HERE.parents[1] / "ansible"
HOSTS = 10

# The hosts' Python (they are this machine): the system's, as on a real host.
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> Path:
    """The collection, installed as a user installs it."""
    path = tmp_path_factory.mktemp("collections")
    done = subprocess.run(
        [tool("ansible-galaxy"), "collection", "install", "-p", str(path), str(COLLECTION)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (path / "ansible_collections" / "wiresh" / "remote" / "plugins" / "connection" / "wiresh.py").exists()
    return path


@pytest.fixture
def fleet(start_server, token_file, tmp_path):
    return [start_server("--token-file", str(token_file)) for _ in range(HOSTS)]


def write_inventory(
    path: Path, fleet, token_file: Path, home: Path, extra: str = "", more_hosts: str = "", interpreter: bool = True
) -> Path:
    lines = ["[fleet]"]
    lines += [f"web{i + 1:02d} ansible_host=127.0.0.1 ansible_port={s.port}" for i, s in enumerate(fleet)]
    lines.append(more_hosts)
    lines += [
        "[all:vars]",
        "ansible_connection=wiresh.remote.wiresh",
        f"wiresh_token_file={token_file}",
        f"wiresh_home={home}",
        f"ansible_python_interpreter={HOST_PYTHON}" if interpreter else "",
        extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ansible(program: str, args, collections: Path, tmp_path: Path, **env):
    environment = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_WIRESH_CONTROL_PATH_DIR=str(tmp_path / "wcp"),
        ANSIBLE_FORKS=str(HOSTS),
        ANSIBLE_NOCOLOR="1",
        PYTHONWARNINGS="ignore",
        **env,
    )
    environment.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([tool(program), *args], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=600)


def relay_gone(control_dir: Path) -> bool:
    """The relay leaves with the Ansible run that started it (and takes its
    socket along)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not control_dir.exists() or not any(control_dir.iterdir()):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def remote_tmp():
    """Ansible's temporary directory on the hosts, where the user become
    (nobody) can reach its module files and make its own (a module run in
    a directory it cannot read, as nobody in root's home, moves to a new
    one there): not under pytest's own (mode 700); as /tmp is (1777)."""
    path = tempfile.mkdtemp(prefix="wiresh-ansible-")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    "pipelining, worker",
    [("True", "True"), ("False", "True"), ("True", "False")],
    ids=["pipelining-worker", "no-pipelining-worker", "pipelining-plain"],
)
def test_everyday_modules_on_ten_hosts(fleet, token_file, collections, client_home, tmp_path, remote_tmp, pipelining, worker):
    work, fetched = tmp_path / "work", tmp_path / "fetched"
    work.mkdir()
    fetched.mkdir()
    inventory = write_inventory(
        tmp_path / "inventory.ini",
        fleet,
        token_file,
        client_home,
        extra=f"work={work}\nfetched={fetched}\nansible_remote_tmp={remote_tmp}",
    )
    shutil.copytree(HERE / "ansible", tmp_path / "play")
    done = run_ansible(
        "ansible-playbook",
        ["-i", str(inventory), str(tmp_path / "play" / "everyday.yml")],
        collections,
        tmp_path,
        ANSIBLE_PIPELINING=pipelining,
        ANSIBLE_WIRESH_WORKER=worker,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for i in range(HOSTS):
        host = f"web{i + 1:02d}"
        assert f"{host}" in done.stdout
        recap = [line for line in done.stdout.splitlines() if line.startswith(host + " ") and "ok=" in line]
        assert len(recap) == 1 and "failed=0" in recap[0] and "unreachable=0" in recap[0] and "ignored=1" in recap[0], recap
        d = work / host
        results = json.loads((d / "results.json").read_text())
        assert results["raw"].strip() == "raw-works"
        assert results["cmd"] == "a b|it's|"
        assert results["sum"] == "5050"
        assert results["script"].strip() == "script got: with space"
        assert results["failed_rc"] == 1
        assert results["become"] == "nobody"
        original = (HERE / "ansible" / "files" / "données-é.txt").read_bytes()
        assert (d / "tree" / "données-é.txt").read_bytes() == original
        assert (d / "tree" / "données-é.txt").stat().st_mode & 0o777 == 0o640
        assert (d / "tree" / "sub").is_dir()
        content = (d / "content.txt").read_text()
        assert content == f"content for {host}\nadded by lineinfile\n"
        assert (d / "motd").read_text() == f"Welcome to {host} (Linux)\n"
        import hashlib

        assert results["motd_sha256"] == hashlib.sha256((d / "motd").read_bytes()).hexdigest()
        assert (fetched / host / str(d).lstrip("/") / "content.txt").read_text() == content
        assert (d / "async.txt").read_text() == "async-done\n"
    assert relay_gone(tmp_path / "wcp"), "the relay outlived the run"


def test_ping_and_an_unreachable_host(fleet, token_file, collections, client_home, tmp_path):
    refusing = free_refusing_port()
    inventory = write_inventory(
        tmp_path / "inventory.ini",
        fleet,
        token_file,
        client_home,
        more_hosts=f"down ansible_host=127.0.0.1 ansible_port={refusing.getsockname()[1]}",
        # Ansible finds the interpreter itself (a plain command first); the
        # worker starts with the first module.
        interpreter=False,
    )
    done = run_ansible("ansible", ["-i", str(inventory), "all", "-m", "ping"], collections, tmp_path)
    refusing.close()
    assert done.returncode == 4, done.stdout + done.stderr
    assert "down | UNREACHABLE!" in done.stdout
    assert "cannot connect to 127.0.0.1" in done.stdout
    for i in range(HOSTS):
        assert f"web{i + 1:02d} | SUCCESS" in done.stdout
    assert relay_gone(tmp_path / "wcp")


def test_a_failed_command_is_a_failed_task(fleet, token_file, collections, client_home, tmp_path):
    inventory = write_inventory(tmp_path / "inventory.ini", fleet[:2], token_file, client_home)
    done = run_ansible("ansible", ["-i", str(inventory), "all", "-m", "command", "-a", "sh -c 'exit 3'"], collections, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.count("FAILED | rc=3") == 2


def test_secrets_never_appear_even_with_vvv(fleet, token_file, collections, client_home, tmp_path):
    token = token_file.read_text().strip()
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[fleet]\n"
        f"good ansible_host=127.0.0.1 ansible_port={fleet[0].port} wiresh_token={token}\n"
        f"wrong ansible_host=127.0.0.1 ansible_port={fleet[1].port} wiresh_token={'f' * 64}\n"
        "[all:vars]\nansible_connection=wiresh.remote.wiresh\n"
        f"wiresh_home={client_home}\nansible_python_interpreter={HOST_PYTHON}\n"
    )
    done = run_ansible("ansible", ["-i", str(inventory), "all", "-m", "command", "-a", "echo hi", "-vvv"], collections, tmp_path)
    output = done.stdout + done.stderr
    assert "good | CHANGED" in output
    assert "wrong | UNREACHABLE!" in output or "wrong | FAILED!" in output
    assert "auth_failed" in output
    assert token not in output
    assert "f" * 64 not in output


def test_reset_connection_starts_afresh(fleet, token_file, collections, client_home, tmp_path):
    inventory = write_inventory(tmp_path / "inventory.ini", fleet[:1], token_file, client_home)
    play = tmp_path / "reset.yml"
    play.write_text(
        "- hosts: fleet\n  gather_facts: false\n  tasks:\n"
        "    - command: echo before\n"
        "    - meta: reset_connection\n"
        "    - command: echo after\n      register: after\n"
        "    - assert:\n        that: after.stdout == 'after'\n"
    )
    done = run_ansible("ansible-playbook", ["-i", str(inventory), str(play)], collections, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed=0" in done.stdout


def test_ansible_doc_shows_the_options(collections, tmp_path):
    done = run_ansible("ansible-doc", ["-t", "connection", "wiresh.remote.wiresh"], collections, tmp_path)
    assert done.returncode == 0, done.stderr
    for option in ("token_file", "fingerprint", "key", "home", "port", "worker", "ansible_port", "wiresh_token_file"):
        assert option in done.stdout, option


def test_the_options_registered_early_are_the_documented_ones():
    """The plugin registers its options with PyYAML's base loader (every
    value a string) so that task processes skip Ansible's slow parse; they
    must be what Ansible's own parse of DOCUMENTATION gives."""
    import ast

    import yaml

    source = (COLLECTION / "plugins" / "connection" / "wiresh.py").read_text()
    documentation = next(
        node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION"
    )
    typed = yaml.safe_load(documentation)["options"]
    fast = yaml.load(documentation, Loader=yaml.CBaseLoader)["options"]
    assert "extends_documentation_fragment" not in yaml.safe_load(documentation)
    assert sorted(typed) == sorted(fast)
    for name, option in typed.items():
        for source_kind in ("vars", "env", "ini"):
            assert option.get(source_kind, []) == fast[name].get(source_kind, []), (name, source_kind)
        assert option.get("type") == fast[name].get("type"), name
        if "default" in option:
            default = option["default"]
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert fast[name]["default"] == expected, name
