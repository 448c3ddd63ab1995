"""A real OpenSSH server per partner, for testing the SFTP transport against what départements run.

Each `SshdPartner` is one département's server: its own `sshd` process on 127.0.0.1,
its own ed25519 host key, an authorized_keys holding the client key, and a data root
with `in/dsg`, `in/sgr`, `in/gro` and `acks`. Only SFTP is allowed (ForceCommand
internal-sftp), so a test talks to the same server code a partner's DSI runs.

As root (CI), sshd confines the session with ChrootDirectory: OpenSSH insists that
every component of that path is root-owned and not group/world-writable, which a
folder under /tmp never is (/tmp is 1777), so the data root then lives in a fresh
folder under /run (or FLUX_PMI_SSHD_CHROOT_BASE) and is removed by `cleanup()`. As a
plain user no chroot is possible: the session starts in the data root instead
(`internal-sftp -d`). `remote()` gives the path a client must use in either mode.

Readiness is observed, not slept on: sshd logs "Server listening on ..." once its
socket is bound, and the harness then reads the SSH banner from the port.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"
FLOW_DIRS = {"DSG": "in/dsg", "SGR": "in/sgr", "GRO": "in/gro"}
ACK_DIR = "acks"
START_TIMEOUT = 10.0


def require_tools() -> None:
    """Fail (not skip) when OpenSSH is missing: these tests are part of the contract."""
    missing = [str(t) for t in (SSHD, Path("/usr/bin/ssh-keygen"), Path("/usr/bin/sftp")) if not t.exists()]
    if missing:
        pytest.fail(
            f"OpenSSH is required for the SFTP tests but {', '.join(missing)} is missing: "
            "install it with `apt-get install -y openssh-server openssh-client` (`make test` does)",
            pytrace=False,
        )


def generate_key(
    path: Path, kind: str = "ed25519", passphrase: str = "", comment: str = "flux-pmi-test"
) -> str:
    """A client or host key pair in OpenSSH format; returns the public key line."""
    require_tools()
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in (path, Path(f"{path}.pub")):
        old.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", comment, "-f", str(path)]
    if kind == "rsa":
        args[4:4] = ["-b", "2048"]  # accepted by every OpenSSH policy, and quick to make
    subprocess.run(args, check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def fingerprint(public_line: str) -> str:
    """`SHA256:...` as `ssh-keygen -l` prints it, from a public key line."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _sshd_version() -> tuple[int, int]:
    out = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True).stderr
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _chroot_safe(path: Path) -> bool:
    """What sshd demands of a ChrootDirectory: every component root-owned, not group/world-writable."""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _chroot_base() -> Path:
    candidates = [os.environ.get("FLUX_PMI_SSHD_CHROOT_BASE", ""), "/run", "/var/lib", "/srv", "/opt"]
    for c in filter(None, candidates):
        p = Path(c)
        if p.is_dir() and os.access(p, os.W_OK) and _chroot_safe(p):
            return p
    raise RuntimeError(
        "no root-owned, non-world-writable folder to hold the sshd chroots: set FLUX_PMI_SSHD_CHROOT_BASE"
    )


class SshdPartner:
    """One partner's SFTP server. Create, `start()`, `stop()`, `start()` again (same port, same key)."""

    def __init__(
        self,
        base: Path,
        name: str,
        client_pubkeys: Iterable[str],
        *,
        read_only: bool = False,
        max_file_bytes: int | None = None,
        ciphers: str | None = None,
    ):
        """`read_only`: the server refuses every write (a partner whose folders are not writable,
        which permissions cannot simulate for root). `max_file_bytes`: writes past that size fail
        as on a full disk (RLIMIT_FSIZE on the server: the write gets EFBIG, the client an SFTP failure).
        `ciphers`: sshd's `Ciphers` list (an older or stricter server), sshd's defaults otherwise.
        """
        require_tools()
        self.name = name
        self.dir = Path(base) / f"sshd-{name}"
        self.dir.mkdir(parents=True)
        self.as_root = os.geteuid() == 0
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.max_file_bytes = max_file_bytes
        if self.as_root:
            self.root = Path(tempfile.mkdtemp(prefix=f"flux-pmi-sshd-{name}-", dir=_chroot_base()))
            self.root.chmod(0o755)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        else:
            self.root = self.dir / "root"
            self.root.mkdir()
        for d in (*FLOW_DIRS.values(), ACK_DIR):
            (self.root / d).mkdir(parents=True)
        self.host_key = self.dir / "ssh_host_ed25519_key"
        generate_key(self.host_key, comment=f"partner-{name}")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text("".join(k.strip() + "\n" for k in client_pubkeys))
        self.authorized_keys.chmod(0o600)
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0
        self.read_only = read_only
        self.ciphers = ciphers
        self._write_config()

    def _write_config(self) -> None:
        sftp = "internal-sftp" + (" -R" if self.read_only else "")
        lines = [
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "LogLevel VERBOSE",
            "MaxStartups 100",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            f"Subsystem sftp {sftp}",
        ]
        if self.ciphers:
            lines.append(f"Ciphers {self.ciphers}")
        if _sshd_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # the refused-login tests must not lock 127.0.0.1 out
        if self.as_root:
            lines += [f"ChrootDirectory {self.root}", f"ForceCommand {sftp} -d /"]
        else:
            lines += [f"ForceCommand {sftp} -d {self.root}"]
        self.config.write_text("\n".join(lines) + "\n")

    # -- what a client needs ---------------------------------------------------------------

    def remote(self, relative: str) -> str:
        """The absolute path a client uses for `relative` (under the data root)."""
        return "/" + relative if self.as_root else str(self.root / relative)

    def directories(self) -> dict[str, str]:
        return {flow: self.remote(rel) for flow, rel in FLOW_DIRS.items()}

    def public_host_key(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().strip()

    def known_hosts_line(self) -> str:
        kind, blob = self.public_host_key().split()[:2]
        return f"[{HOST}]:{self.port} {kind} {blob}"

    def host_fingerprint(self) -> str:
        return fingerprint(self.public_host_key())

    def write_known_hosts(self, path: Path, *, wrong: bool = False) -> Path:
        """A known_hosts pinning this partner; `wrong`: pin another key (a changed host key)."""
        if wrong:
            other = self.dir / "other_host_key"
            if not other.exists():
                generate_key(other, comment="not-this-partner")
            kind, blob = Path(f"{other}.pub").read_text().split()[:2]
            line = f"[{HOST}]:{self.port} {kind} {blob}"
        else:
            line = self.known_hosts_line()
        path.write_text(line + "\n")
        return path

    def transport_params(self, key: Path, known_hosts: Path, **extra: object) -> dict[str, object]:
        """The `[departments."xxx"].transport` table for this partner."""
        return {
            "type": "sftp",
            "host": HOST,
            "port": self.port,
            "user": self.user,
            "key": str(key),
            "known_hosts": str(known_hosts),
            "directories": self.directories(),
            "ack_directory": self.remote(ACK_DIR),
            **extra,
        }

    def files(self) -> dict[str, tuple[int, int]]:
        """Every file on the server, hidden ones included: {relative path: (size, mtime_ns)}."""
        return {
            str(p.relative_to(self.root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    # -- life cycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start sshd without waiting; `wait_ready()` completes the start."""
        if self.running:
            return
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        limit = self.max_file_bytes

        def child_setup() -> None:
            if limit is not None:
                # A write past the limit fails with EFBIG (and not a fatal SIGXFSZ): a full disk, seen remotely.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_setup if limit is not None else None,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        listening = f"Server listening on {HOST} port {self.port}"
        while True:
            log = self._new_log()
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd for partner {self.name} exited ({self.proc.returncode}):\n{log}")
            if listening in log and self._banner():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd for partner {self.name} not ready after {timeout}s:\n{log}")
            try:
                self.proc.wait(timeout=0.02)  # paces the poll, and notices an early exit at once
            except subprocess.TimeoutExpired:
                pass

    def start(self, timeout: float = START_TIMEOUT) -> SshdPartner:
        self.launch()
        self.wait_ready(timeout)
        return self

    def _new_log(self) -> str:
        if not self.log.exists():
            return ""
        with self.log.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode("utf-8", "replace")

    def _banner(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def bind_failed(self) -> bool:
        return "Address already in use" in self._new_log()

    def stop(self) -> None:
        """The server goes away, open sessions included (a partner down for the night).

        sshd puts each connection in a session of its own (setsid), so ending the listener
        leaves them serving: they are found as its descendants, ended by pid and awaited,
        so that a client sees the server gone when this returns.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            sessions = _descendants(self.proc.pid)
            self.proc.terminate()
            for pid in sessions:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            _wait_exited(sessions, timeout=5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self.as_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def sshd_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(st.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(st.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait_exited(pids: list[int], timeout: float) -> None:
    """Wait for processes that are not our children: a pidfd turns readable when one exits."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)


def start_partners(
    base: Path,
    names: Iterable[str],
    client_pubkeys: str | Iterable[str],
    *,
    started: bool = True,
    **options: object,
) -> dict[str, SshdPartner]:
    """Several partners, started together (in parallel: one sshd startup time for all)."""
    keys = [client_pubkeys] if isinstance(client_pubkeys, str) else list(client_pubkeys)
    partners = {n: SshdPartner(base, n, keys, **options) for n in names}  # type: ignore[arg-type]
    if started:
        try:
            for p in partners.values():
                p.launch()
            for p in partners.values():
                _ready_or_move(p)
        except BaseException:
            for p in partners.values():
                p.cleanup()
            raise
    return partners


def _ready_or_move(p: SshdPartner) -> None:
    """A port found free can be taken before sshd binds it: then pick another, a few times."""
    for _ in range(3):
        try:
            p.wait_ready()
            return
        except RuntimeError:
            if not p.bind_failed():
                raise
            p.stop()
            p.port = free_port()
            p.launch()
    p.wait_ready()


class PartnerPool:
    """Partners started for one test and all cleaned up after it: `with PartnerPool(tmp) as pool:`."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.partners: list[SshdPartner] = []

    def start(
        self, names: Iterable[str], client_pubkeys: str | Iterable[str], **options: object
    ) -> dict[str, SshdPartner]:
        got = start_partners(self.base, names, client_pubkeys, **options)
        self.partners.extend(got.values())
        return got

    def close(self) -> None:
        for p in self.partners:
            p.cleanup()

    def __enter__(self) -> PartnerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
