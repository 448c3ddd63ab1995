"""The SFTP transport against real OpenSSH servers, one per partner, as départements run them.

Unit-level: atomic, idempotent delivery with the `.sha256` marker last, pinned host keys
(nothing written when the key is unknown or changed), refused logins, a full disk, acks,
and `check()`. End to end: a demo night where two départements take SFTP, one pins a
wrong host key and one server is down; the files are fetched back with OpenSSH's own
`sftp` client and opened with stock OpenSSL, as a département would.
"""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from paramiko.sftp import CMD_WRITE
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints
from support.sshd import HOST, PartnerPool, SshdPartner, fingerprint, generate_key, require_tools
from support.toml import _inline

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ArchiveError, ConfigError, ExitCode, HostKeyError, TransportError
from flux_pmi.jobs.night import Night
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.registry import transport_for
from flux_pmi.transport.sftp import SftpTransport
from flux_pmi.transport.sftp_client import SftpFolder

PASSPHRASE = "correct horse battery staple"
NAPS: list[float] = []
PASSPHRASE_ENV = "FLUX_PMI_TEST_SFTP_PASSPHRASE"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """{kind: (private key path, public line)}: an ed25519 key, and an RSA key under a passphrase."""
    require_tools()
    d = tmp_path_factory.mktemp("client-keys")
    return {
        "ed25519": (d / "id_ed25519", generate_key(d / "id_ed25519")),
        "rsa": (d / "id_rsa", generate_key(d / "id_rsa", "rsa", PASSPHRASE)),
    }


@pytest.fixture
def pool(tmp_path):
    with PartnerPool(tmp_path / "partners") as p:
        yield p


@pytest.fixture
def partner(pool, keys) -> SshdPartner:
    return pool.start(["p"], [keys["ed25519"][1], keys["rsa"][1]])["p"]


def transport(
    partner: SshdPartner,
    key: Path,
    tmp_path: Path,
    *,
    wrong_pin: bool = False,
    passphrase: bytes | None = None,
    **kw,
) -> SftpTransport:
    kh = partner.write_known_hosts(tmp_path / f"known_hosts-{partner.name}", wrong=wrong_pin)
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("timeout", 10)
    kw.setdefault("sleep", NAPS.append)  # the reconnect's jittered pause: recorded, never slept
    return SftpTransport(
        "035",
        host=HOST,
        port=partner.port,
        user=partner.user,
        key=key,
        known_hosts=kh,
        passphrase=passphrase,
        directories=partner.directories(),
        ack_directory=partner.remote("acks"),
        **kw,
    )


def sealed(tmp_path: Path, name: str, data: bytes, flow: str = "GRO") -> Delivery:
    path = tmp_path / "archive" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Delivery("035", flow, name, path, len(data), hashlib.sha256(data).hexdigest())


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def logins(partner: SshdPartner) -> int:
    return partner.sshd_log().count("Accepted publickey")


# -- delivery -----------------------------------------------------------------------------------


def test_delivery_is_atomic_and_the_sha256_marker_comes_last(partner, keys, tmp_path, monkeypatch):
    # 3 MiB: more write requests than the pipelining window, so statuses are collected mid-stream.
    item = sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(3 * 1024 * 1024 + 17))
    t = transport(partner, keys["ed25519"][0], tmp_path)
    seen: list[tuple[str, dict]] = []
    real_rename = SftpFolder.rename

    def spy(folder, src, dst):  # what a receiver listing the folder could see just before each rename
        seen.append((dst.rsplit("/", 1)[-1], partner.files()))
        real_rename(folder, src, dst)

    monkeypatch.setattr(SftpFolder, "rename", spy)
    with t:
        receipt = t.deliver(item)
    assert not receipt.already_there and receipt.reference.endswith(item.file_name)
    final, marker = f"in/gro/{item.file_name}", f"in/gro/{item.file_name}.sha256"
    (first, before_data), (second, before_marker) = seen
    assert first == item.file_name and final not in before_data and marker not in before_data
    assert before_data[f"in/gro/.{item.file_name}.part"][0] == item.size  # complete before it gets its name
    assert second == f"{item.file_name}.sha256" and before_marker[final][0] == item.size
    assert marker not in before_marker
    assert sorted(partner.files()) == [final, marker]  # no temporary left
    assert (partner.root / final).read_bytes() == item.path.read_bytes()
    assert (partner.root / marker).read_text() == f"{item.sha256}  {item.file_name}\n"
    check = subprocess.run(
        ["sha256sum", "-c", f"{item.file_name}.sha256"],
        cwd=partner.root / "in/gro",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_new_file_and_its_marker_cost_four_round_trips(partner, keys, tmp_path, monkeypatch):
    # A round trip: waiting for an answer after sending something since the last wait. The 3 MiB
    # file takes more writes than the window, so its statuses are also collected mid-stream.
    small = sealed(tmp_path, "GRO_035_20261123_000007.xml.p7m", payload(300 * 1024))
    big = sealed(tmp_path, "GRO_035_20261123_000008.xml.p7m", payload(3 * 1024 * 1024))
    t = transport(partner, keys["ed25519"][0], tmp_path)
    sftp = t.client.session()
    trips, sent = [0], [False]
    send, read = sftp._async_request, sftp._read_response

    def sending(*args):
        sent[0] = True
        return send(*args)

    def waiting(waitfor=None):
        if waitfor is not None and sent[0]:
            trips[0], sent[0] = trips[0] + 1, False
        return read(waitfor)

    monkeypatch.setattr(sftp, "_async_request", sending)
    monkeypatch.setattr(sftp, "_read_response", waiting)
    with t:
        assert not t.deliver(small).already_there
        assert trips[0] == 4  # stat with both opens; writes, fsyncs and sizes; rename; marker's rename
        trips[0] = 0
        assert not t.deliver(big).already_there
        assert trips[0] <= 4 + (3 * 1024 * 1024 // 32000) // 32
    assert sorted(partner.files())[-2:] == [f"in/gro/{big.file_name}", f"in/gro/{big.file_name}.sha256"]


@pytest.mark.parametrize("announced", [True, False], ids=["limits-announced", "no-limits"])
def test_writes_are_as_large_as_the_server_says_it_takes(partner, keys, tmp_path, monkeypatch, announced):
    """OpenSSH answers limits@openssh.com (255 KiB per WRITE): a file then takes a few times fewer
    requests. A server that does not say gets the protocol's 32 KiB writes. Same bytes either way."""
    item = sealed(tmp_path, "SGR_035_20261123_000009.zip.p7m", payload(3 * 1024 * 1024 + 5), "SGR")
    t = transport(partner, keys["ed25519"][0], tmp_path)
    if not announced:
        real = SftpFolder.__init__

        def without_limits(folder, sftp, *args):
            sftp.write_limit = 0  # as _send_version leaves it when LIMITS is not in the extensions
            real(folder, sftp, *args)

        monkeypatch.setattr(SftpFolder, "__init__", without_limits)
    sftp = t.client.session()
    assert sftp.write_limit >= (200_000 if announced else 0)
    sizes: list[int] = []
    send = sftp._async_request

    def counting(owner, t_, *args):
        if t_ == CMD_WRITE:
            sizes.append(len(args[-1]))
        return send(owner, t_, *args)

    monkeypatch.setattr(sftp, "_async_request", counting)
    with t:
        assert not t.deliver(item).already_there
    marker = (partner.root / "in/sgr" / f"{item.file_name}.sha256").read_bytes()
    sizes, marker_write = sizes[:-1], sizes[-1]  # the file's writes, then its marker's
    assert sum(sizes) == item.size and marker_write == len(marker)
    assert (partner.root / "in/sgr" / item.file_name).read_bytes() == item.path.read_bytes()
    if announced:
        assert max(sizes) <= sftp.write_limit and len(sizes) <= item.size // 200_000 + 1
    else:
        assert max(sizes) <= 32768 and len(sizes) >= item.size // 32768


def test_delivery_is_idempotent_and_one_connection_serves_the_sequence(partner, keys, tmp_path):
    items = [
        sealed(tmp_path, f"{f}_035_20261123_000001.xml.p7m", payload(5000, i), f)
        for i, f in enumerate(("DSG", "SGR", "GRO"))
    ]
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        assert [t.deliver(i).already_there for i in items] == [False] * 3
        first = partner.files()
        assert [t.deliver(i).already_there for i in items] == [True] * 3
    assert partner.files() == first  # nothing rewritten: same sizes, same mtimes
    assert logins(partner) == 1
    with transport(partner, keys["ed25519"][0], tmp_path) as again:  # a rerun, new process, same answer
        assert again.deliver(items[0]).already_there
    assert partner.files() == first


def test_a_rerun_after_a_crash_between_rename_and_marker_only_writes_the_marker(partner, keys, tmp_path):
    item = sealed(tmp_path, "DSG_035_20261123_000002.xml.p7m", payload(70000), "DSG")
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.deliver(item)
        data_file = partner.root / "in/dsg" / item.file_name
        stamp = data_file.stat().st_mtime_ns
        (partner.root / "in/dsg" / f"{item.file_name}.sha256").unlink()
        (partner.root / "in/dsg" / f".{item.file_name}.part").write_bytes(b"left by a crash")
        assert t.deliver(item).already_there
    assert data_file.stat().st_mtime_ns == stamp
    assert (partner.root / "in/dsg" / f"{item.file_name}.sha256").read_text().startswith(item.sha256)
    assert sorted(partner.files()) == [f"in/dsg/{item.file_name}", f"in/dsg/{item.file_name}.sha256"]


def test_without_posix_rename_a_plain_rename_publishes_and_replaces_nothing(partner, keys, tmp_path):
    item = sealed(tmp_path, "GRO_035_20261123_000005.xml.p7m", payload(9000))
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        sftp = t.client.session()
        assert {"posix-rename@openssh.com", "fsync@openssh.com"} <= set(
            sftp.extensions
        )  # OpenSSH announces them
        sftp.extensions.pop("posix-rename@openssh.com")  # a server without the extension
        assert not t.deliver(item).already_there
        assert t.deliver(item).already_there
    assert (partner.root / "in/gro" / item.file_name).read_bytes() == item.path.read_bytes()
    assert sorted(partner.files()) == [f"in/gro/{item.file_name}", f"in/gro/{item.file_name}.sha256"]


def test_without_fsync_the_close_answers_for_the_data(partner, keys, tmp_path):
    item = sealed(tmp_path, "GRO_035_20261123_000006.xml.p7m", payload(90000))
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.client.session().extensions.pop("fsync@openssh.com")  # a server without the extension
        assert not t.deliver(item).already_there
        assert t.deliver(item).already_there
    assert (partner.root / "in/gro" / item.file_name).read_bytes() == item.path.read_bytes()
    assert sorted(partner.files()) == [f"in/gro/{item.file_name}", f"in/gro/{item.file_name}.sha256"]


def test_a_stale_temporary_is_replaced_by_the_full_file(partner, keys, tmp_path):
    item = sealed(tmp_path, "SGR_035_20261123_000001.zip.p7m", payload(200000), "SGR")
    (partner.root / "in/sgr" / f".{item.file_name}.part").write_bytes(b"half a file")
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        assert not t.deliver(item).already_there
    assert (partner.root / "in/sgr" / item.file_name).read_bytes() == item.path.read_bytes()
    assert not (partner.root / "in/sgr" / f".{item.file_name}.part").exists()


def test_another_file_under_the_same_name_is_a_permanent_refusal(partner, keys, tmp_path):
    item = sealed(tmp_path, "GRO_035_20261123_000003.xml.p7m", payload(4000))
    other_size = partner.root / "in/gro" / item.file_name
    other_size.write_bytes(b"someone else's file")
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        with pytest.raises(TransportError, match="a different file already sits under this name") as exc:
            t.deliver(item)
        assert exc.value.permanent
        # The temporaries opened ahead of the stat are gone before the refusal comes back.
        assert list(partner.files()) == [f"in/gro/{item.file_name}"]
        other_size.write_bytes(payload(4000, seed=99))  # same size, other bytes, no marker
        with pytest.raises(TransportError, match="other SHA-256") as exc:
            t.deliver(item)
        assert exc.value.permanent
    assert other_size.read_bytes() == payload(4000, seed=99)  # left as found


def test_an_archive_file_that_does_not_match_its_digest_is_not_published(partner, keys, tmp_path):
    item = sealed(tmp_path, "GRO_035_20261123_000004.xml.p7m", payload(4000))
    item.path.write_bytes(payload(4000, seed=5))
    with (
        transport(partner, keys["ed25519"][0], tmp_path) as t,
        pytest.raises(TransportError, match="SHA-256"),
    ):
        t.deliver(item)
    assert partner.files() == {}
    item.path.unlink()
    with transport(partner, keys["ed25519"][0], tmp_path) as t, pytest.raises(ArchiveError):
        t.deliver(item)


def test_a_full_disk_is_a_retryable_error_and_leaves_nothing_under_a_final_name(pool, keys, tmp_path):
    full = pool.start(["full"], keys["ed25519"][1], max_file_bytes=64 * 1024)["full"]
    item = sealed(tmp_path, "SGR_035_20261123_000001.zip.p7m", payload(400 * 1024), "SGR")
    with transport(full, keys["ed25519"][0], tmp_path) as t:
        with pytest.raises(TransportError, match="refused the write") as exc:
            t.deliver(item)
        assert not exc.value.permanent
        assert full.files() == {}  # the partial temporary is removed too
        small = sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(1000))
        assert not t.deliver(small).already_there  # the session survived the refusal
    assert sorted(full.files()) == [f"in/gro/{small.file_name}", f"in/gro/{small.file_name}.sha256"]


def test_an_rsa_key_under_a_passphrase_works_and_a_wrong_one_is_permanent(partner, keys, tmp_path):
    item = sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", payload(3000), "DSG")
    with transport(partner, keys["rsa"][0], tmp_path, passphrase=PASSPHRASE.encode()) as t:
        assert not t.deliver(item).already_there
    for passphrase, reason in ((b"wrong", "cannot be loaded"), (None, "needs a passphrase")):
        with transport(partner, keys["rsa"][0], tmp_path, passphrase=passphrase) as t:
            with pytest.raises(TransportError, match=reason) as exc:
                t.deliver(item)
            assert exc.value.permanent


def test_a_client_key_readable_by_others_is_refused(partner, keys, tmp_path):
    key = tmp_path / "loose_key"
    key.write_bytes(keys["ed25519"][0].read_bytes())
    key.chmod(0o644)
    with transport(partner, key, tmp_path) as t, pytest.raises(TransportError, match="owner-only") as exc:
        t.deliver(sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", b"x"))
    assert exc.value.permanent and logins(partner) == 0


# -- host keys, logins, servers down --------------------------------------------------------------


@pytest.mark.parametrize("pin", ["unknown", "changed"])
def test_an_unknown_or_changed_host_key_sends_nothing(partner, keys, tmp_path, pin):
    t = transport(partner, keys["ed25519"][0], tmp_path, wrong_pin=pin == "changed")
    if pin == "unknown":
        t.known_hosts.write_text(f"[{HOST}]:1 {partner.public_host_key()}\n")  # pins another host:port only
    with t, pytest.raises(HostKeyError) as exc:
        t.deliver(sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(1000)))
    err = exc.value
    assert err.permanent
    assert f"{HOST}:{partner.port}" in err.reason and partner.host_fingerprint() in err.reason  # offered key
    if pin == "changed":
        pinned = fingerprint(t.known_hosts.read_text().split(None, 1)[1])
        assert "CHANGED" in err.reason and pinned in err.reason
    else:
        assert err.reason.startswith("unknown host key")
    assert partner.files() == {}
    assert logins(partner) == 0 and "Postponed publickey" not in partner.sshd_log()  # refused before auth


def test_a_refused_login_is_permanent(pool, keys, tmp_path):
    stranger = pool.start(["stranger"], keys["rsa"][1])["stranger"]  # knows only the RSA key
    with transport(stranger, keys["ed25519"][0], tmp_path) as t:
        with pytest.raises(TransportError, match="authentication refused") as exc:
            t.deliver(sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", b"x"))
    assert exc.value.permanent and not isinstance(exc.value, HostKeyError)
    assert stranger.files() == {}


def test_a_server_down_is_retryable_and_the_transport_reconnects_when_it_is_back(partner, keys, tmp_path):
    item = sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(1000))
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.deliver(sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", b"first", "DSG"))
        partner.stop()
        with pytest.raises(TransportError) as exc:
            t.deliver(item)
        assert not exc.value.permanent
        partner.start()
        assert not t.deliver(item).already_there
    assert f"in/gro/{item.file_name}.sha256" in partner.files()


def test_a_server_that_never_answers_costs_the_connect_timeout_not_more(keys, tmp_path):
    with socket.socket() as silent:  # the kernel accepts the TCP connection; nobody ever speaks SSH
        silent.bind((HOST, 0))
        silent.listen(8)
        kh = tmp_path / "kh"
        kh.write_text("")
        t = SftpTransport(
            "971",
            host=HOST,
            port=silent.getsockname()[1],
            user="x",
            key=keys["ed25519"][0],
            known_hosts=kh,
            directories={"GRO": "/in/gro"},
            connect_timeout=0.5,
        )
        started = time.monotonic()
        with t, pytest.raises(TransportError) as exc:
            t.deliver(sealed(tmp_path, "GRO_971_20261123_000001.xml.p7m", b"x"))
        assert time.monotonic() - started < 5
    assert not exc.value.permanent


# -- acks -------------------------------------------------------------------------------------------


def test_acks_are_read_and_removed(partner, keys, tmp_path):
    acks = partner.root / "acks"
    (acks / "ACK_GRO_035_20261123_000001.xml").write_bytes(b"<ack>OK</ack>")
    (acks / "KO_DSG_035_20261123_000001.xml").write_bytes(b"<ack>KO</ack>")
    (acks / ".being-written").write_bytes(b"partial")
    (acks / "sub").mkdir()
    (acks / "HUGE.xml").write_bytes(b"x" * (1024 * 1024 + 1))
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        got = t.fetch_acks()
        assert [(a.department, a.name, a.data) for a in got] == [
            ("035", "ACK_GRO_035_20261123_000001.xml", b"<ack>OK</ack>"),
            ("035", "KO_DSG_035_20261123_000001.xml", b"<ack>KO</ack>"),
        ]
        t.remove_ack(got[0].name)
        t.remove_ack(got[0].name)  # already gone: fine
        with pytest.raises(TransportError):
            t.remove_ack("../in/gro/x")
        assert [a.name for a in t.fetch_acks()] == ["KO_DSG_035_20261123_000001.xml"]
    assert sorted(p.name for p in acks.iterdir()) == [
        ".being-written",
        "HUGE.xml",
        "KO_DSG_035_20261123_000001.xml",
        "sub",
    ]


# -- check --------------------------------------------------------------------------------------------


def _failed(results) -> dict[str, str]:
    return {r.what: r.detail for r in results if not r.ok}


def test_check_on_a_healthy_partner_passes_and_leaves_nothing(partner, keys, tmp_path):
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        results = t.check()
    assert _failed(results) == {}
    whats = [r.what for r in results]
    assert f"host key of {HOST}:{partner.port}" in whats and f"authentication as {partner.user}" in whats
    assert sum("directory" in w for w in whats) == 4  # three flows and the acks
    assert partner.files() == {}


def test_check_reports_each_failure_without_raising(pool, keys, tmp_path):
    parts = pool.start(["ok"], keys["ed25519"][1]) | pool.start(["ro"], keys["ed25519"][1], read_only=True)
    ok, ro = parts["ok"], parts["ro"]
    key = keys["ed25519"][0]
    where = f"{HOST}:{ok.port}"

    def failures(t: SftpTransport) -> dict[str, str]:
        with t:
            return _failed(t.check())

    changed = failures(transport(ok, key, tmp_path, wrong_pin=True))
    assert list(changed) == [f"host key of {where}"] and "CHANGED" in changed[f"host key of {where}"]
    unknown = transport(ok, key, tmp_path)
    unknown.known_hosts.write_text("")
    assert "unknown host key" in failures(unknown)[f"host key of {where}"]
    refused = failures(transport(ok, keys["rsa"][0], tmp_path, passphrase=PASSPHRASE.encode()))
    assert (
        list(refused) == [f"authentication as {ok.user}"]
        and "refused" in refused[f"authentication as {ok.user}"]
    )
    missing = transport(ok, key, tmp_path)
    missing.directories["GRO"] = ok.remote("in/nowhere")
    assert failures(missing) == {f"GRO directory {ok.remote('in/nowhere')}": "does not exist on the server"}
    read_only = failures(transport(ro, key, tmp_path))
    assert sorted(read_only) == sorted(f"{flow} directory {d}" for flow, d in ro.directories().items())
    assert all("not writable" in v for v in read_only.values())
    assert ok.files() == {} and ro.files() == {}
    ok.stop()
    down = failures(transport(ok, key, tmp_path))
    assert list(down) == [f"TCP connection to {where}"] and "refused" in down[f"TCP connection to {where}"]


# -- end to end: a night with SFTP partners ---------------------------------------------------------------

E2E = "035,056,02A,971"


def _fetch_with_openssh(partner: SshdPartner, key: Path, known_hosts: Path, into: Path) -> list[Path]:
    """Download every delivered file with OpenSSH's own sftp client, as the partner's DSI would."""
    into.mkdir(parents=True)
    batch = into.parent / f"{into.name}.batch"
    batch.write_text(f"lcd {into}\n" + "".join(f"get {d}/*\n" for d in partner.directories().values()))
    proc = subprocess.run(
        [
            "sftp",
            "-F",
            "/dev/null",
            "-b",
            str(batch),
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-P",
            str(partner.port),
            f"{partner.user}@{HOST}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(into.iterdir())


def _open_with_openssl(p7m: Path, pki: Path, dept: str) -> bytes:
    signed = p7m.with_suffix(".signed.der")
    subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            str(p7m),
            "-recip",
            str(pki / f"{dept}.crt"),
            "-inkey",
            str(pki / f"{dept}.key"),
            "-out",
            str(signed),
        ],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile", str(pki / "ca.crt")],
        check=True,
        capture_output=True,
    ).stdout


def test_a_night_over_sftp_delivers_the_reachable_and_refuses_the_wrong_key(
    pool, keys, tmp_path, monkeypatch
):
    # What a correct night delivers to each département: the same seeded day through the local drop.
    ref = tmp_path / "reference"
    make_demo(ref, departments=E2E)
    reference = Night(load(ref / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None)
    assert reference.run(BUSINESS_DATE).exit_code == ExitCode.OK
    expected = record_fingerprints({n: d for n, d in open_delivered(ref).items() if n[:3] in ("035", "056")})
    assert sum(expected.values()) > 0

    root = tmp_path / "demo"
    make_demo(root, departments=E2E)
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    ed, rsa = keys["ed25519"], keys["rsa"]
    partners = pool.start(["035", "056", "02A", "971"], [ed[1], rsa[1]])
    partners["971"].stop()  # down for the night
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text().replace("[delivery]\n", "[delivery]\ntimeout_seconds = 2\n")
    for code, p in partners.items():
        kh = p.write_known_hosts(root / f"known_hosts.{code}", wrong=code == "02A")
        key = rsa[0] if code == "056" else ed[0]
        params = p.transport_params(key, kh, connect_timeout=2, timeout=10)
        if code == "056":
            params["key_passphrase_env"] = PASSPHRASE_ENV
        text = text.replace(
            f'[departments."{code}"]\n', f'[departments."{code}"]\ntransport = {_inline(params)}\n'
        )
    cfg.write_text(text)
    settings = load(cfg)
    assert isinstance(transport_for(settings, settings.departments["056"]), SftpTransport)
    d035 = settings.departments["035"]
    # A flow without its remote folder is found when the département's transport is built (it fails alone)...
    partial = {"DSG": "/in/dsg", "SGR": "/in/sgr"}
    broken = replace(d035, transport=d035.transport.model_copy(update={"directories": partial}))
    with pytest.raises(ConfigError, match="directories.GRO"):
        transport_for(settings, broken)
    # ... a malformed table when the configuration is loaded.
    line = next(x for x in text.splitlines() if x.startswith("transport = ") and f"port = {partners['035'].port}," in x)
    table = tomllib.loads(line)["transport"]
    for bad, key in (
        ({**table["directories"], "XYZ": "/in/x"}, "directories.XYZ"),
        ({**table["directories"], "GRO": ""}, "directories.GRO"),
    ):
        cfg.write_text(text.replace(line, f"transport = {_inline({**table, 'directories': bad})}"))
        with pytest.raises(ConfigError, match=key):
            load(cfg)
    cfg.write_text(text)

    def night():
        return Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)

    report = night()
    assert report.exit_code == ExitCode.UNDELIVERED
    assert report.seconds < 60  # 971 down and 02A refused cost seconds, not the night
    problems = "\n".join(report.problems)
    assert "02A" in problems and "host key CHANGED" in problems and "971" in problems
    assert partners["02A"].files() == {} and logins(partners["02A"]) == 0  # not one file, not even a login
    assert partners["971"].files() == {}
    # one connection per partner for the run: it collects the acks, then delivers the three files
    assert logins(partners["035"]) == logins(partners["056"]) == 1

    delivered: dict[str, bytes] = {}
    for code in ("035", "056"):
        p = partners[code]
        got = _fetch_with_openssh(p, ed[0], root / f"known_hosts.{code}", tmp_path / "fetched" / code)
        p7ms = [f for f in got if f.name.endswith(".p7m")]
        assert sorted(f.name[:3] for f in p7ms) == ["DSG", "GRO", "SGR"], code
        assert sorted(f.name for f in got) == sorted(
            [f.name for f in p7ms] + [f"{f.name}.sha256" for f in p7ms]
        )
        sums = subprocess.run(
            ["sha256sum", "-c", *[f"{f.name}.sha256" for f in p7ms]],
            cwd=got[0].parent,
            capture_output=True,
            text=True,
        )
        assert sums.returncode == 0, sums.stdout + sums.stderr
        for f in p7ms:
            delivered[f"{code}/{f.name}"] = _open_with_openssl(f, root / "pki", code)
    assert record_fingerprints(delivered) == expected  # every expected record arrived, once

    # 971's server comes back; nothing else changes.
    before = {c: partners[c].files() for c in ("035", "056")}
    partners["971"].start()
    again = night()
    assert again.exit_code == ExitCode.UNDELIVERED
    assert "host key CHANGED" in "\n".join(again.problems)
    assert sorted(n.split("/")[-1][:3] for n in partners["971"].files() if n.endswith(".p7m")) == [
        "DSG",
        "GRO",
        "SGR",
    ]
    assert len(partners["971"].files()) == 6
    assert partners["02A"].files() == {}
    assert {c: partners[c].files() for c in ("035", "056")} == before  # nothing sent twice


def test_a_kept_session_found_dead_is_replaced_once_after_a_jittered_pause(partner, keys, tmp_path, monkeypatch):
    item = sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(1000))
    NAPS.clear()
    real_stat, dead = SftpFolder.stat, [True]

    def link_died_once(folder, name):  # the server restarted while the connection sat idle
        if dead and name == item.file_name:
            dead.clear()
            raise EOFError
        return real_stat(folder, name)

    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.deliver(sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", b"first", "DSG"))
        monkeypatch.setattr(SftpFolder, "stat", link_died_once)
        assert not t.deliver(item).already_there
    assert len(NAPS) == 1 and 0 <= NAPS[0] <= 0.5  # one reconnection, after a pause drawn at random
    assert logins(partner) == 2
    assert f"in/gro/{item.file_name}.sha256" in partner.files()


def test_a_fresh_session_that_dies_is_not_retried_here(partner, keys, tmp_path, monkeypatch):
    item = sealed(tmp_path, "GRO_035_20261123_000001.xml.p7m", payload(1000))
    NAPS.clear()

    def link_dies(folder, name):
        raise EOFError

    monkeypatch.setattr(SftpFolder, "stat", link_dies)
    with transport(partner, keys["ed25519"][0], tmp_path) as t, pytest.raises(TransportError) as exc:
        t.deliver(item)
    assert "connection lost" in exc.value.reason and not exc.value.permanent
    assert NAPS == [] and logins(partner) == 1  # the night's own retry decides when to try again


def test_known_hosts_is_read_again_once_it_changes(partner, keys, tmp_path):
    """Pins are read once per version of the file (a national known_hosts pins ~100 partners): an edit still counts."""
    with transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.deliver(sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", b"first", "DSG"))
    with transport(partner, keys["ed25519"][0], tmp_path, wrong_pin=True) as t:  # the same file, another key
        with pytest.raises(HostKeyError, match="CHANGED"):
            t.deliver(sealed(tmp_path, "DSG_035_20261123_000002.xml.p7m", b"second", "DSG"))
    with transport(partner, keys["ed25519"][0], tmp_path) as t:  # and back
        assert not t.deliver(sealed(tmp_path, "DSG_035_20261123_000002.xml.p7m", b"second", "DSG")).already_there


@pytest.mark.parametrize(("server_ciphers", "expected"), [
    (None, "aes128-gcm@openssh.com"),  # OpenSSH's defaults: AES-GCM, which authenticates as it encrypts
    ("aes256-ctr,aes128-ctr", "aes128-ctr"),  # a server without GCM still gets CTR (and its HMAC)
])
def test_aes_gcm_is_preferred_and_a_server_without_it_still_gets_ctr(pool, keys, tmp_path, server_ciphers, expected):
    partner = pool.start(["p"], [keys["ed25519"][1]], ciphers=server_ciphers)["p"]
    data = payload(300_000)
    with capture_logs() as logs, transport(partner, keys["ed25519"][0], tmp_path) as t:
        t.deliver(sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", data, "DSG"))
    assert [e["cipher"] for e in logs if e["event"] == "sftp.connected"] == [expected]
    assert (partner.root / "in/dsg/DSG_035_20261123_000001.xml.p7m").read_bytes() == data
