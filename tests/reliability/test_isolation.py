"""Isolation between functions and from the platform (issue 12, item 1), tried as an attacker.

A deployer's handler (``mallory``) tries each attack of the issue against a real ``coldbrew
serve`` with auth on, and every attempt must fail for it with the kernel's own permission
error; the victim keeps answering. Then: everything an instance started dies with it, on
timeout, scale-in and gateway shutdown. These need root (CI runs as root); without it they
skip, unless COLDBREW_REQUIRE_SERVICES=1, and only the decision table runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.registry.security import SecurityStore
from coldbrew.runtime.isolation import decide
from coldbrew.security.keyring import Keyring, KeySpec
from coldbrew.settings import InvalidSettings
from support import Server, pack_folder, pid_alive, write_bundle

ATTACKER = r"""
import ctypes, errno, os, signal, sqlite3, subprocess

libc = ctypes.CDLL(None, use_errno=True)


def attempt(action):
    try:
        action()
    except OSError as exc:
        return {"blocked": exc.errno in (errno.EACCES, errno.EPERM), "error": repr(exc)}
    except sqlite3.Error as exc:
        return {"blocked": True, "error": repr(exc)}
    return {"blocked": False, "error": None}


def syscall_ok(number, *args):
    if libc.syscall(number, *args) == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def insert_admin_key(path):
    db = sqlite3.connect(path)
    db.execute("INSERT INTO api_keys (id) VALUES ('mallory')")
    db.commit()


def read(path):
    with open(path, "rb") as file:
        file.read(1)


def raise_memory_limit():
    line = [l for l in open("/proc/self/cgroup") if ":memory:" in l][0]
    group = "/sys/fs/cgroup/memory" + line.strip().split(":", 2)[2]
    with open(group + "/memory.limit_in_bytes", "w") as file:
        file.write(str(8 << 30))


def getfd(pid):
    pidfd = os.pidfd_open(pid)
    try:
        syscall_ok(438, pidfd, 3, 0)  # pidfd_getfd(pidfd, targetfd, flags)
    finally:
        os.close(pidfd)


def handler(event, context):
    home, gateway, victim = event["home"], event["gateway_pid"], event["victim_pid"]
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    tmp = os.environ["TMPDIR"]
    with open(os.path.join(tmp, "mine"), "w") as file:
        file.write("x")
    return {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "no_new_privs": status["NoNewPrivs"].strip(), "tmp": tmp,
        "tmp_bytes": os.statvfs(tmp).f_blocks * os.statvfs(tmp).f_frsize,
        "nproc": __import__("resource").getrlimit(__import__("resource").RLIMIT_NPROC),
        "fds": [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")],
        "attacks": {
            "registry_write": attempt(lambda: open(home + "/registry.db", "r+b")),
            "registry_insert_key": attempt(lambda: insert_admin_key(home + "/registry.db")),
            "uid_map": attempt(lambda: read(home + "/uids.json")),
            "gateway_environ": attempt(lambda: read(f"/proc/{gateway}/environ")),
            "victim_environ": attempt(lambda: read(f"/proc/{victim}/environ")),
            "victim_bundle": attempt(lambda: read(event["victim_file"])),
            "victim_log": attempt(lambda: read(home + "/logs/functions/victim.log")),
            "artifacts": attempt(lambda: os.listdir(home + "/artifacts")),
            "bundles_listing": attempt(lambda: os.listdir(home + "/bundles")),
            "sigstop_victim": attempt(lambda: os.kill(victim, signal.SIGSTOP)),
            "sigstop_gateway": attempt(lambda: os.kill(gateway, signal.SIGSTOP)),
            "pidfd_getfd_victim": attempt(lambda: getfd(victim)),
            "pidfd_getfd_gateway": attempt(lambda: getfd(gateway)),
            "ptrace_victim": attempt(lambda: syscall_ok(101, 16, victim, 0, 0)),  # ATTACH
            "setuid_root": attempt(lambda: os.setuid(0)),
            "raise_memory_limit": attempt(raise_memory_limit),
        },
    }
"""

VICTIM = """
import os

def handler(event, context):
    return {"pid": os.getpid(), "secret": os.environ["VICTIM_SECRET"], "uid": os.getuid()}
"""

GREEDY = """
def handler(event, context):
    hoard = bytearray(event.get("mb", 1) << 20)
    hoard[::4096] = b"x" * len(hoard[::4096])
    return {"held": len(hoard)}
"""

SPAWNER = """
import os, subprocess, time

def handler(event, context):
    plain = subprocess.Popen(["sleep", "300"])
    detached = subprocess.Popen(["sleep", "301"], start_new_session=True)  # leaves the group
    if event.get("hang"):
        time.sleep(60)
    if event.get("crash"):
        os._exit(3)
    return {"pids": [plain.pid, detached.pid]}
"""


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "isolation needs coldbrew to run as root"
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


class SecureServer(Server):
    def make_key(self, role: str, functions: tuple[str, ...] = ("*",)) -> str:
        store = SecurityStore(f"sqlite:///{self.home / 'registry.db'}")
        try:
            return Keyring(store).create(KeySpec(role=role, functions=functions))[1]
        finally:
            store.close()

    def as_(self, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _start(home: Path, **env: str) -> SecureServer:
    server = SecureServer(
        home,
        env={
            "COLDBREW_AUTH": "on",
            "COLDBREW_JWT_SECRET": "isolation-test-secret-that-is-long-enough-0123",
            "COLDBREW_ARTIFACT_KEY": "",
            "COLDBREW_API_KEY": "",
            **env,
        },
    )
    server.start()
    return server


def _deploy(client: httpx.Client, name: str, folder: Path) -> dict[str, Any]:
    response = client.post(
        "/v1/functions",
        data={"name": name},
        files={"file": ("bundle.tar.gz", pack_folder(folder))},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    _require_root()
    server = _start(tmp_path_factory.mktemp("isolated"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(secure: SecureServer) -> httpx.Client:
    with secure.as_(secure.make_key("admin")) as client:
        yield client


@pytest.fixture(scope="module")
def mallory(secure: SecureServer, admin: httpx.Client, tmp_path_factory: Any) -> httpx.Client:
    """A deployer scoped to its own function, as in the issue."""
    folder = tmp_path_factory.mktemp("mallory")
    write_bundle(folder, ATTACKER, 'handler = "handler:handler"\n')
    _deploy(admin, "mallory", folder)
    victim = tmp_path_factory.mktemp("victim")
    config = 'handler = "handler:handler"\n[environment]\nVICTIM_SECRET = "hunter2"\n'
    write_bundle(victim, VICTIM, config)
    _deploy(admin, "victim", victim)
    with secure.as_(secure.make_key("deployer", ("mallory",))) as client:
        yield client


def test_info_says_isolation_is_on(secure: SecureServer, admin: httpx.Client) -> None:
    info = admin.get("/v1/info").json()
    assert info["isolation"]["enabled"] is True, info
    assert info["isolation"]["no_new_privs"] is True
    assert info["backend"] == "local" and info["version"]
    assert "isolation is on" in secure.log_path.read_text()


def test_every_attack_fails_for_the_attacker(
    secure: SecureServer, admin: httpx.Client, mallory: httpx.Client
) -> None:
    victim = admin.post("/v1/functions/victim/invoke", json={}).json()
    sha = admin.get("/v1/functions/victim").json()["versions"][0]["content_sha256"]
    event = {
        "home": str(secure.home),
        "gateway_pid": secure.process.pid,  # type: ignore[union-attr]
        "victim_pid": victim["pid"],
        "victim_file": str(secure.home / "bundles" / sha / "handler.py"),
    }
    assert Path(event["victim_file"]).is_file()  # the path is right: only the uid is wrong
    keys_before = _key_ids(admin)
    response = mallory.post("/v1/functions/mallory/invoke", json=event)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["uid"] not in (0, os.getuid()) and seen["euid"] == seen["uid"]
    assert seen["uid"] != victim["uid"]
    assert seen["gid"] != 0 and 0 not in seen["groups"]
    assert seen["no_new_privs"] == "1"
    assert seen["nproc"][0] == seen["nproc"][1] > 0
    assert seen["tmp"] != "/tmp" and 0 < seen["tmp_bytes"] <= 512 << 20  # its own, bounded
    # Nothing of the platform's was inherited open: only its own log, TMPDIR and bundle.
    own = (str(secure.home / "logs" / "functions" / "mallory.log"), seen["tmp"], "/dev/")
    foreign = [
        fd
        for fd in seen["fds"]
        if fd.startswith(str(secure.home)) and not fd.startswith(own) and "/bundles/" not in fd
    ]
    assert not foreign, seen["fds"]
    succeeded = {name: r for name, r in seen["attacks"].items() if not r["blocked"]}
    assert not succeeded, succeeded
    # The victim was neither stopped nor robbed: it answers at once, with its own secret.
    again = admin.post("/v1/functions/victim/invoke", json={}, timeout=10)
    assert again.status_code == 200 and again.json()["secret"] == "hunter2"
    assert again.json()["pid"] == victim["pid"]
    assert _key_ids(admin) == keys_before  # no key was inserted


def _key_ids(admin: httpx.Client) -> set[str]:
    return {key["id"] for key in admin.get("/v1/keys").json()["keys"]}


def test_logs_still_reach_the_function_log(secure: SecureServer, admin: httpx.Client) -> None:
    log = secure.home / "logs" / "functions" / "victim.log"
    assert "START RequestId" in log.read_text()
    assert os.stat(secure.home / "registry.db").st_mode & 0o077 == 0


def _wait_gone(pids: list[int], timeout_s: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def test_children_die_on_crash_timeout_and_scale_in(
    secure: SecureServer, admin: httpx.Client, tmp_path: Path
) -> None:
    config = 'handler = "handler:handler"\ntimeout_s = 2\nidle_timeout_s = 1\n'
    _deploy(admin, "spawner", write_bundle(tmp_path / "b", SPAWNER, config))

    def started() -> list[int]:
        pids: list[int] = admin.post("/v1/functions/spawner/invoke", json={}).json()["pids"]
        assert all(pid_alive(pid) for pid in pids)
        return pids

    for ending in ({"crash": True}, {"hang": True}):  # the instance crashes / is killed
        pids = started()
        ended = admin.post("/v1/functions/spawner/invoke", json=ending)
        assert ended.status_code >= 500, ended.text
        assert _wait_gone(pids) == [], ending
    assert _wait_gone(started(), timeout_s=15) == []  # idle_timeout_s=1: scaled in


def test_children_die_with_the_gateway(tmp_path: Path) -> None:
    _require_root()
    server = _start(tmp_path / "home")
    try:
        with server.as_(server.make_key("admin")) as admin:
            bundle = write_bundle(tmp_path / "b", SPAWNER, 'handler = "handler:handler"\n')
            _deploy(admin, "spawner", bundle)
            pids = admin.post("/v1/functions/spawner/invoke", json={}).json()["pids"]
        assert all(pid_alive(pid) for pid in pids)
    finally:
        server.stop()
    assert _wait_gone(pids) == []


def test_memory_limit_holds_for_forks_of_an_unprivileged_version_template(
    secure: SecureServer, admin: httpx.Client, tmp_path: Path
) -> None:
    config = 'handler = "handler:handler"\nmemory_mb = 128\nidle_timeout_s = 0.5\n'
    _deploy(admin, "greedy", write_bundle(tmp_path / "g", GREEDY, config))
    assert admin.post("/v1/functions/greedy/invoke", json={}).status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # scaled to zero, its version template kept
        pools = admin.get("/v1/functions/greedy").json()["pools"]
        if pools and pools[0]["version_template"] and not pools[0]["instances"]:
            break
        time.sleep(0.1)
    small = admin.post("/v1/functions/greedy/invoke", json={"mb": 16})
    assert small.status_code == 200, small.text
    assert small.headers["x-coldbrew-start-source"].startswith("version-template")
    big = admin.post("/v1/functions/greedy/invoke", json={"mb": 400})
    assert big.status_code == 502 and big.json()["error"]["code"] == "OUT_OF_MEMORY", big.text


def test_isolation_off_is_said_loudly(tmp_path: Path) -> None:
    """Off by choice as root, or because coldbrew is not root: the log and /v1/info say so."""
    env = {"COLDBREW_ISOLATION": "off"} if os.geteuid() == 0 else {}
    server = _start(tmp_path / "home", **env)
    try:
        with server.as_(server.make_key("viewer")) as viewer:
            info = viewer.get("/v1/info").json()
    finally:
        server.stop()
    assert info["isolation"]["enabled"] is False and info["isolation"]["reason"], info
    assert "WARNING coldbrew.isolation: isolation is OFF" in server.log_path.read_text()


def test_decision_table() -> None:
    assert decide("auto", 0).enabled and decide("on", 0).enabled
    assert not decide("off", 0).enabled
    off = decide("auto", 1000)
    assert not off.enabled and "not root" in off.reason
    with pytest.raises(InvalidSettings, match="COLDBREW_ISOLATION=on"):
        decide("on", 1000)


def test_function_uids_are_stable_and_distinct(tmp_path: Path) -> None:
    from coldbrew.security.home import FunctionIds

    first = FunctionIds(tmp_path, 200000)
    uids = [first.uid(name) for name in ("alpha", "beta", "alpha")]
    assert uids == [200001, 200002, 200001]
    again = FunctionIds(tmp_path, 200000)  # another gateway on the same home, or a restart
    assert again.uid("beta") == 200002 and again.uid("gamma") == 200003
    assert first.uid("gamma") == 200003  # re-read under the lock, never handed out twice
    assert os.stat(tmp_path / "uids.json").st_mode & 0o077 == 0


def test_acl_grant_adds_one_reader_and_takes_the_rest(tmp_path: Path) -> None:
    from coldbrew.security import home

    folder = tmp_path / "bundle"
    folder.mkdir(mode=0o755)
    try:
        home.grant(folder, home.USER, 200001, 0o5, private=True)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    home.grant(folder, home.USER, 200002, 0o5, private=True)
    entries = home._read_acl(folder)
    assert entries[(home.USER, 200001)] == entries[(home.USER, 200002)] == 0o5
    assert entries[(home.OTHER, home.NO_ID)] == 0 and entries[(home.GROUP_OBJ, home.NO_ID)] == 0
    assert entries[(home.MASK, home.NO_ID)] == 0o5
    assert os.stat(folder).st_mode & 0o007 == 0
    ctime = os.stat(folder).st_ctime_ns
    home.grant(folder, home.USER, 200001, 0o5, private=True)  # already granted: not rewritten
    assert os.stat(folder).st_ctime_ns == ctime
