"""systemd/beatd.service and the README's "Install under systemd", run as written.

There is no systemd to run the unit here, so the test plays it: the README's
install commands run one by one in a temporary root (the paths they name,
/opt/beatd, /etc/beatd, /var/lib/beatd and /etc/systemd/system, moved under
it; `useradd --prefix` there, so the user beatd exists in the root's own
/etc/passwd, not the host's), then the unit's ExecStart line runs as that
user (`setpriv`, numeric ids: the host cannot resolve the name) with what
systemd would give it: the state directory made and owned, the unit's
Environment= and EnvironmentFile=, HOME and USER, UMask, NOTIFY_SOCKET and
WATCHDOG_USEC. The daemon must report READY, ping the watchdog, fire,
reload on the unit's ExecReload line and exit 0 on its KillSignal.
It needs root (to own files as beatd and drop to it) and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from unit_file import UNIT, read_unit

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
INSTALL_HEADING = "## Install under systemd"
# The host paths the install and the unit name; each is moved under the temporary root.
MOVED = ("/opt/beatd", "/etc/beatd", "/var/lib/beatd", "/etc/systemd/system")
HIDDEN_BY_PROTECT_HOME = ("/home/", "/root/", "/run/user/")
# What the test writes where the README says `sudoedit`: a database named only here, so the
# file's existence in the state directory shows the EnvironmentFile was applied.
SECRETS = "# written by the test\nBEATD_DATABASE=sqlite:///from-env.db\nBEATD_BROKER=stdout://\n"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("useradd")),
    reason="needs root with setpriv and useradd: it owns files as the user beatd and runs as it",
)


def install_commands() -> list[str]:
    """The command lines of the first ```sh block under the README's install heading."""
    text = README.read_text()
    assert INSTALL_HEADING in text, f"README.md has no {INSTALL_HEADING!r} section"
    section = text.split(INSTALL_HEADING, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def unit_value(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(f"Service.{key}")
    assert values, f"the unit has no {key}="
    return values[-1]


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Installed:
    root: Path
    unit: dict[str, list[str]]

    def path(self, host_path: str) -> str:
        """Where a host path the install names lies in the temporary root."""
        if host_path.startswith(MOVED):
            return str(self.root) + host_path
        return host_path

    def account(self, user: str, group: str) -> Account:
        users = {f[0]: f for f in _fields(self.root / "etc" / "passwd")}
        groups = {f[0]: f for f in _fields(self.root / "etc" / "group")}
        assert user in users, f"the install made no user {user!r}"
        entry = users[user]
        return Account(int(entry[2]), int(groups[group][2]), entry[5], entry[6])


def _fields(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines() if line]


def _translate(line: str, installed: Installed) -> list[str] | None:
    """A README command as it runs in the temporary root; None for what systemd does."""
    argv = shlex.split(line)
    if argv[0] == "sudoedit" or argv[:2] == ["sudo", "systemctl"]:
        return None  # the test writes the files and plays systemd
    assert argv[0] == "sudo", f"an install step that is not run as root: {line}"
    argv = [installed.path(arg) for arg in argv[1:]]
    if argv[0] == "useradd":
        return ["useradd", "--prefix", str(installed.root), *argv[1:]]
    for i in range(1, len(argv)):
        if argv[i - 1] in ("-o", "-g") and not argv[i].isdigit() and argv[i] != "root":
            table = "passwd" if argv[i - 1] == "-o" else "group"
            found = [f for f in _fields(installed.root / "etc" / table) if f[0] == argv[i]]
            assert found, f"{line}: no {table} entry {argv[i]!r} in the install's root"
            argv[i] = found[0][2]  # the host cannot resolve a name made under --prefix
    return argv


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The README's install block, run in a temporary root that every user may enter."""
    root = Path(tempfile.mkdtemp(prefix="beatd-root-"))
    try:
        root.chmod(0o755)
        for skeleton in ("etc/systemd/system", "opt", "var/lib"):
            (root / skeleton).mkdir(parents=True)
        for name in ("passwd", "group", "shadow", "gshadow"):  # the host's, so ids do not clash
            if Path("/etc", name).exists():
                shutil.copy2(Path("/etc", name), root / "etc" / name)
        result = Installed(root, read_unit())
        for line in install_commands():
            argv = _translate(line, result)
            if argv is None:
                continue
            done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        yield Installed(root, read_unit(root / "etc/systemd/system" / UNIT.name))
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Notifications:
    """The NOTIFY_SOCKET systemd would listen on (abstract, so any user may send)."""

    def __init__(self) -> None:
        self.address = f"@beatd-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.seen: list[str] = []

    def wait_for(
        self, line: str, timeout: float, daemon: subprocess.Popen[bytes], log: Path
    ) -> list[str]:
        """Receive until a datagram holds `line`; returns that datagram's lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                lines = self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                if daemon.poll() is not None:
                    pytest.fail(f"the daemon exited ({daemon.returncode}):\n{log.read_text()}")
                continue
            self.seen += lines
            if line in lines:
                return lines
        pytest.fail(f"no {line} from the daemon in {timeout} s; it sent {self.seen}")

    def close(self) -> None:
        self.sock.close()


def _environment(installed: Installed, user: str, account: Account) -> dict[str, str]:
    """What systemd puts in the service's environment, EnvironmentFile= last (it wins)."""
    env = {"PATH": SYSTEMD_PATH, "HOME": account.home, "USER": user, "LOGNAME": user}
    env["SHELL"] = account.shell
    for assignments in installed.unit.get("Service.Environment", []):
        env.update(item.split("=", 1) for item in shlex.split(assignments))
    for name in installed.unit.get("Service.EnvironmentFile", []):
        optional = name.startswith("-")
        path = Path(installed.path(name.removeprefix("-")))
        if optional and not path.exists():
            continue
        for raw in path.read_text().splitlines():  # read as root, as systemd does
            line = raw.strip()
            if line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip("\"'")
    return env


def _state_directories(installed: Installed, account: Account) -> None:
    """StateDirectory=: made, owned by the service's user and group, StateDirectoryMode."""
    mode = int(installed.unit.get("Service.StateDirectoryMode", ["0755"])[-1], 8)
    for names in installed.unit.get("Service.StateDirectory", []):
        for name in names.split():
            path = Path(installed.path(f"/var/lib/{name}"))
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, account.uid, account.gid)
            path.chmod(mode)


def _seconds(span: str) -> float:
    assert span.removesuffix("s").isdigit(), f"a time span this test cannot read: {span}"
    return float(span.removesuffix("s"))


def _wait_for_output(path: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if needle in line:
                return line
        time.sleep(0.1)
    pytest.fail(f"no {needle!r} in the daemon's output in {timeout} s:\n{path.read_text()}")


@needs_root
def test_the_install_gives_the_files_the_documented_owners_and_modes(
    installed: Installed,
) -> None:
    unit = installed.unit
    user, group = unit_value(unit, "User"), unit_value(unit, "Group")
    account = installed.account(user, group)
    assert account.uid != 0 and account.gid != 0
    config_dir = Path(installed.path("/etc/beatd"))
    mode = int(unit.get("Service.ConfigurationDirectoryMode", ["0755"])[-1], 8)
    # systemd warns at every start when an existing ConfigurationDirectory's mode differs
    assert stat.S_IMODE(config_dir.stat().st_mode) == mode
    config = shlex.split(unit_value(unit, "ExecStart"))
    config_file = Path(installed.path(config[config.index("--config") + 1]))
    st = config_file.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, account.gid, 0o640)
    for name in unit.get("Service.EnvironmentFile", []):
        st = Path(installed.path(name.removeprefix("-"))).stat()
        # read by systemd as root before it drops privileges; nobody else reads the secrets
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), name


@needs_root
def test_the_units_exec_start_runs_as_beatd_reloads_and_stops_cleanly(
    installed: Installed, tmp_path: Path
) -> None:
    unit = installed.unit
    user, group = unit_value(unit, "User"), unit_value(unit, "Group")
    account = installed.account(user, group)
    assert unit_value(unit, "Type") == "notify"
    argv = shlex.split(unit_value(unit, "ExecStart"))
    assert argv[0].startswith("/"), "ExecStart needs an absolute path"
    if unit_value(unit, "ProtectHome") != "no":
        assert not argv[0].startswith(HIDDEN_BY_PROTECT_HOME), f"ProtectHome hides {argv[0]}"
    Path(installed.path("/etc/beatd/beatd.env")).write_text(SECRETS)  # `sudoedit`
    _state_directories(installed, account)
    env = _environment(installed, user, account)
    notify = Notifications()
    env["NOTIFY_SOCKET"] = notify.address
    env["WATCHDOG_USEC"] = str(int(_seconds(unit_value(unit, "WatchdogSec")) * 1_000_000))
    drop = ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"]
    if unit_value(unit, "NoNewPrivileges") == "yes":
        drop.append("--no-new-privs")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        daemon = subprocess.Popen(
            [*drop, "--", *(installed.path(arg) for arg in argv)],
            cwd=installed.path(unit_value(unit, "WorkingDirectory")),
            env=env,
            umask=int(unit_value(unit, "UMask"), 8),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        ready = notify.wait_for("READY=1", 60, daemon, err)
        assert any(line.startswith("STATUS=") for line in ready), ready
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        assert f"Uid:\t{account.uid}\t" in status and f"Gid:\t{account.gid}\t" in status
        fire = json.loads(_wait_for_output(out, '"schedule":"heartbeat"', timeout=30))
        assert fire["body"]["task"] == "app.tasks.heartbeat"
        database = Path(installed.path("/var/lib/beatd")) / "from-env.db"  # BEATD_DATABASE
        assert database.stat().st_uid == account.uid
        assert stat.S_IMODE(database.stat().st_mode) & 0o007 == 0, "UMask: others may read it"
        watchdog = _seconds(unit_value(unit, "WatchdogSec"))
        notify.wait_for("WATCHDOG=1", watchdog, daemon, err)

        reload = unit_value(unit, "ExecReload").replace("$MAINPID", str(daemon.pid))
        subprocess.run(shlex.split(reload), check=True, timeout=10)  # `systemctl reload`
        notify.wait_for("RELOADING=1", 30, daemon, err)
        notify.wait_for("READY=1", 30, daemon, err)

        daemon.send_signal(getattr(signal, unit_value(unit, "KillSignal")))
        notify.wait_for("STOPPING=1", 30, daemon, err)
        code = daemon.wait(_seconds(unit_value(unit, "TimeoutStopSec")))
    finally:
        notify.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log = err.read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    events = [json.loads(line)["msg"] for line in log.splitlines() if line.startswith("{")]
    assert events[-1] == "stopped", log[-3000:]


@needs_root
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(installed: Installed, tmp_path: Path) -> None:
    """The installed unit, its ExecStart pointed at the venv the install made."""
    program = shlex.split(unit_value(installed.unit, "ExecStart"))[0]
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(program, installed.path(program)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_the_unit_runs_the_installed_daemon_in_the_foreground() -> None:
    unit = read_unit()
    argv = shlex.split(unit_value(unit, "ExecStart"))
    assert argv[0] == "/opt/beatd/bin/beatd" and argv[1] == "run"
    assert unit_value(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert "DynamicUser" not in " ".join(unit), "the README's user is a named one"
    assert [line for line in install_commands() if "/opt/beatd/bin/pip install" in line]
