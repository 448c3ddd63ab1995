"""paramiko against asyncssh, the same files to the same partners: is the SSH library our ceiling?

Why it exists: issue 15 asks, if paramiko is what limits the night, to measure asyncssh against it
in the benchmark before switching. Each pushes the same sealed files (those flux-pmi delivered in
the scenario just run), to a folder of its own on the same sshd partners, with the operations of
flux-pmi's delivery minus its checks and marker: one connection per partner, then per file open a
temporary name, write, fsync (fsync@openssh.com), close, rename (posix-rename@openssh.com).
paramiko is flux-pmi's own client (transport/sftp_client.py: AES-GCM first, writes as large as the
server allows, requests pipelined), one thread per partner in flight; asyncssh is used as it comes,
with the same key exchange and cipher (curve25519, AES-128-GCM), in one event loop. 16 partners at
a time for both, flux-pmi's `[delivery] parallel` default.

It reports the wall time, the CPU time of this process (the client side: the benchmark's
process does nothing else meanwhile) and the partners' sshd CPU time, for each library.

asyncssh comes with the `test` extra (the benchmark's own test runs this comparison too); without
it, the comparison is left out and the report says so.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from support.sshd import SshdPartner  # the benchmark puts tests/ on the path (bench/run.py)

from flux_pmi.transport.sftp_client import SftpClient, SftpFolder

PARALLEL = 16
KEX = "curve25519-sha256@libssh.org"  # what flux-pmi's paramiko client and OpenSSH 9.2 agree on
CIPHER = "aes128-gcm@openssh.com"  # flux-pmi's first choice (transport/sftp_client.py, _GcmFirst)
LIBRARIES = ("paramiko", "asyncssh")


@dataclass(frozen=True)
class LibraryMeasure:
    library: str
    scenario: str
    files: int
    bytes: int
    wall_s: float
    client_cpu_s: float
    sshd_cpu_s: float


Push = tuple[SshdPartner, list[Path]]  # a partner and the files it gets


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sshd_cpu(partners: list[SshdPartner]) -> float:
    """User + system time of the partners' sshd, their reaped per-connection children included."""
    ticks = 0
    for p in partners:
        assert p.proc is not None
        fields = Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _push_paramiko(push: Push, folder: str, key_path: Path, known_hosts: Path) -> None:
    """flux-pmi's own SFTP client (transport/sftp_client.py): paramiko with AES-GCM first, writes as
    large as the server allows, opens, writes, fsyncs and closes pipelined; then the rename."""
    partner, files = push
    client = SftpClient(partner.name, host="127.0.0.1", port=partner.port, user=partner.user, key=key_path,
                        known_hosts=known_hosts)
    try:
        remote = SftpFolder(client.session(), partner.remote(folder), partner.name)
        for path in files:
            tmp = remote.temp_name(path.name)
            with path.open("rb") as src:
                remote.write([(tmp, src)])
            remote.rename(tmp, path.name)
    finally:
        client.close()


async def _push_asyncssh(asyncssh: object, push: Push, folder: str, key: object, known_hosts: Path,
                         gate: asyncio.Semaphore) -> None:
    ssh = asyncssh
    partner, files = push
    async with gate, ssh.connect(  # type: ignore[attr-defined]
        "127.0.0.1", port=partner.port, username=partner.user, client_keys=[key], known_hosts=str(known_hosts),
        agent_path=None, kex_algs=[KEX], encryption_algs=[CIPHER], compression_algs=None,
    ) as conn, conn.start_sftp_client() as sftp:
        for path in files:
            final = partner.remote(f"{folder}/{path.name}")
            tmp = partner.remote(f"{folder}/.{path.name}.part")
            async with sftp.open(tmp, "wb") as fh:
                await fh.write(path.read_bytes())
                await fh.fsync()
            await sftp.posix_rename(tmp, final)


def _run_asyncssh(pushes: list[Push], folder: str, key_path: Path, known_hosts: Path) -> None:
    import asyncssh  # the bench extra

    async def all_of_them() -> None:
        gate = asyncio.Semaphore(PARALLEL)
        key = asyncssh.read_private_key(str(key_path))
        await asyncio.gather(*(_push_asyncssh(asyncssh, p, folder, key, known_hosts, gate) for p in pushes))

    asyncio.run(all_of_them())


def available() -> bool:
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        return False
    return True


def _settled(partners: list[SshdPartner], timeout: float = 10.0) -> None:
    """Wait until every partner's sshd has reaped its connections (their CPU is then counted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [p for p in partners if p.proc is not None
                and Path(f"/proc/{p.proc.pid}/task/{p.proc.pid}/children").read_text().strip()]
        if not busy:
            return
        time.sleep(0.05)


def compare(scenario: str, pushes: list[Push], key_path: Path, known_hosts: Path) -> list[LibraryMeasure]:
    """Push the same files with each library (each to its own folder on every partner)."""
    partners = [p for p, _ in pushes]
    count = sum(len(files) for _, files in pushes)
    size = sum(f.stat().st_size for _, files in pushes for f in files)
    out = []
    for library in LIBRARIES:
        folder = f"lib-{library}-{scenario}"
        for partner in partners:
            (partner.root / folder).mkdir(parents=True, exist_ok=True)
        cpu, sshd, start = _process_cpu(), _sshd_cpu(partners), time.perf_counter()
        if library == "paramiko":
            with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
                list(pool.map(lambda push, f=folder: _push_paramiko(push, f, key_path, known_hosts), pushes))
        else:
            _run_asyncssh(pushes, folder, key_path, known_hosts)
        wall = time.perf_counter() - start
        client = _process_cpu() - cpu
        _settled(partners)
        got = sum(1 for p in partners for f in (p.root / folder).iterdir() if not f.name.startswith("."))
        if got != count:
            raise SystemExit(f"bench: {library} pushed {got} files of {count}")
        out.append(LibraryMeasure(library, scenario, count, size, wall, client, _sshd_cpu(partners) - sshd))
    return out
