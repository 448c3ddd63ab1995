"""`flux-pmi receive`: take each new file of a département's drop in, or refuse it, and say so.

For every ready file, in this order, and the first check that fails decides:

1. its size against `[limits] max_file_bytes` (TOO_LARGE);
2. its bytes against its `.sha256` (INTEGRITY);
3. for a sealed file: decrypt with the département's key (DECRYPT: not for us, damaged, not
   encrypted), then verify the signature and pin the signer to `trusted_senders`
   (SIGNATURE: unsigned, tampered, untrusted signer); an unsealed one is taken only with
   `accept_unsealed` (UNSEALED);
4. `extract`: the flow read from the content, validated against `schemas/` with the
   hardened parser, zip members and scans checked (its ExtractError code: SCHEMA, XML_DTD,
   ZIP_TRAVERSAL, ZIP_BOMB, PDF_NOT_PDF...);
5. the content is this département's (DEPARTMENT), and a technical file name agrees with
   it (NAME_MISMATCH);
6. the ledger: the same content taken already is a duplicate (ack OK, code DUPLICATE,
   nothing written); its sequence taken already with other content is refused
   (SEQUENCE_DUPLICATE); a sequence past the next one expected is a gap, recorded and
   logged, and the file is still taken;
7. the output folder (`write_outputs`: CSV, Parquet, scans; staged then renamed), then the
   ledger row turns `ok`;
8. the acknowledgement (acks.build_ack) into the drop's ack folder.

A refused file leaves nothing in the output folder: the ledger records the refusal (name,
digests, code), a KO ack goes back and one log line names the file and the code. Nothing
of a file's content reaches the log, the ledger or an ack.

What is *not* the file's fault (the drop unreachable, the output disk full, openssl
missing) refuses nothing: the file stays where it is for the next run, and the run
reports an error (exit 3).

Crash safety: see trace/ledger.py. At the start of every run, files left `ingesting` are taken
back (their output folder removed), acks not yet published are published, and the
retention finishes what it had marked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..config.settings import FLOWS
from ..core.clock import Clock
from ..core.errors import (
    ConfigError,
    DecryptError,
    ExitCode,
    FluxError,
    SealError,
    SealToolError,
    StorageError,
)
from ..core.fsutil import private_dir
from ..core.lock import RunLock, lock_path
from ..core.log import get as get_logger
from ..core.names import ack_name
from ..schemas.ack import AckError, build_ack
from ..seal import certs, cms
from ..testing import faults
from ..trace.ledger import DUPLICATE, OK, REFUSED, Gap, Ledger
from .config import ReceiveConfig
from .drops import Drop, DropFile, open_drop
from .extract import Extracted, ExtractError, ZipLimits, extract
from .output import STAGING_PREFIX, write_outputs

__all__ = [
    "LABELS",
    "FileOutcome",
    "ReceiveReport",
    "Receiver",
    "describe",
    "parse_marker",
    "receive_lock",
    "serve_receivers",
]

# Ack reason texts: fixed, short, and by construction free of personal data (docs/acks.md).
LABELS = {
    "OK": "intégré",
    "DUPLICATE": "déjà intégré (même contenu): non intégré une seconde fois",
    "TOO_LARGE": "fichier plus grand que la limite du destinataire",
    "INTEGRITY": "le fichier ne correspond pas à son .sha256",
    "DECRYPT": "déchiffrement impossible: fichier non chiffré pour ce département, ou altéré",
    "SIGNATURE": "signature absente, invalide, ou signataire non reconnu",
    "UNSEALED": "fichier non scellé refusé",
    "DEPARTMENT": "le contenu concerne un autre département",
    "NAME_MISMATCH": "le nom du fichier ne correspond pas à son contenu",
    "NAME": "nom de fichier non conforme",
    "SEQUENCE_DUPLICATE": "numéro de séquence déjà reçu avec un autre contenu",
    "INGEST": "le fichier n'a pas pu être intégré",
    "SCHEMA": "contenu non conforme au schéma",
    "XML_DTD": "XML avec DTD ou entités: refusé",
    "ZIP_TRAVERSAL": "archive avec des chemins interdits",
    "ZIP_BOMB": "archive hors limites (taille ou taux de compression)",
    "ZIP_INVALID": "archive illisible ou non conforme",
    "PDF_NOT_PDF": "un scan n'est pas un PDF",
    "SCAN_MISSING": "un scan annoncé est absent de l'archive",
    "UNKNOWN_FORMAT": "format de flux inconnu",
    "ENCODING": "encodage invalide",
}

_MARKER = re.compile(rb"^\s*([0-9a-fA-F]{64})(?:[ \t]+\*?([^\r\n]+))?\s*$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class _Refused(Exception):
    """Internal: this file is refused with `code`; `reason` is for the log (no content).

    `acknowledges`: the digest the refusal's ack must carry instead of the file's own (the one
    the sender declared, when the bytes do not match it)."""

    def __init__(self, code: str, reason: str, *, acknowledges: str | None = None):
        super().__init__(code)
        self.code, self.reason, self.acknowledges = code, reason, acknowledges


class _Transient(Exception):
    """Internal: not the file's fault; it stays in the drop for the next run."""


@dataclass(frozen=True)
class FileOutcome:
    name: str
    status: str  # ok, duplicate, refused
    code: str
    flow: str | None = None
    seq: int | None = None
    rows: int = 0
    scans: int = 0
    output: Path | None = None  # the file's output folder (ok only)
    files: tuple[Path, ...] = ()  # what write_outputs wrote (records.csv, records.parquet, scans...)
    gap: str | None = None


@dataclass
class ReceiveReport:
    department: str
    output_dir: Path
    outcomes: list[FileOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # not the files' fault: retried next run
    recovered: int = 0  # `ingesting` rows taken back after a crash
    acks_written: int = 0
    purged: int = 0
    interrupted: bool = False
    left: list[str] = field(default_factory=list)  # in the drop, and no receive will take it: "name: why"

    def _count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ingested(self) -> int:
        return self._count(OK)

    @property
    def refused(self) -> int:
        return self._count(REFUSED)

    @property
    def duplicates(self) -> int:
        return self._count(DUPLICATE)

    @property
    def rows_by_flow(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for o in self.outcomes:
            if o.status == OK and o.flow:
                c[o.flow] += o.rows
        return dict(sorted(c.items()))

    @property
    def gaps(self) -> list[str]:
        return [o.gap for o in self.outcomes if o.gap]

    def outputs(self, suffix: str) -> list[Path]:
        """The `records.<suffix>` files written by this run."""
        return [p for o in self.outcomes for p in o.files if p.name == f"records.{suffix}"]

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.errors:
            return ExitCode.UNDELIVERED
        if self.refused:
            return ExitCode.QUARANTINED
        return ExitCode.OK


def _listing(item: DropFile, marker_stat: str, marker_sha256: str) -> dict[str, Any]:
    """What the ledger keeps of a file's listing, whatever is decided about it."""
    return {
        "name": item.name,
        "folder": item.folder,
        "size": item.size,
        "mtime": item.mtime,
        "marker_stat": marker_stat,
        "marker_sha256": marker_sha256,
        "sealed": int(item.sealed),
    }


def _fits_and_ackable(item: DropFile) -> tuple[bool, bool]:
    """Whether the extension fits the flow its name says, and whether a refusal can be acknowledged:
    only a sealed file under its technical name can be (schemas/ack.xsd)."""
    technical = item.technical
    fits = technical is None or technical.fits
    return fits, item.sealed and technical is not None and fits


def receive_lock(cfg: ReceiveConfig) -> RunLock:
    """One receiving process per ledger (`<ledger stem>.lock` beside it); a second one exits 4 at once."""
    return RunLock(lock_path(cfg.ledger), command=f"receive {cfg.department}", wait_seconds=0)


def parse_marker(marker: bytes | None, name: str) -> tuple[str | None, str]:
    """(declared digest or None, problem or ''), from a `sha256sum` line (text or `*` binary mode)."""
    if marker is None:
        return None, ""
    m = _MARKER.match(marker) if len(marker) <= 1024 else None
    if m is None:
        return None, "its .sha256 file is not a sha256sum line"
    digest = m.group(1).decode().lower()
    named = m.group(2)
    if named is not None and named.decode("utf-8", "replace").strip() != name:
        return digest, "its .sha256 file names another file"
    return digest, ""


class Receiver:
    """One département's receiving side: `run_once()` takes what is ready, then returns a report.

    The caller holds `receive_lock(cfg)` (the CLI does); `drop` is injectable for tests.
    """

    def __init__(
        self,
        cfg: ReceiveConfig,
        *,
        clock: Clock | None = None,
        drop: Drop | None = None,
        stop: threading.Event | None = None,
    ):
        self.cfg = cfg
        self.clock = clock or Clock()
        self._drop = drop
        self.stop = stop or threading.Event()
        self.log = get_logger("flux-pmi.receive").bind(department=cfg.department)
        self.limits = ZipLimits(**cfg.zip_limits)
        self._cert: Any = None
        self._key: Any = None
        self._trusted: list[Any] = []
        if cfg.sealed:
            self._load_credentials()

    def _load_credentials(self) -> None:
        cfg = self.cfg
        assert cfg.certificate is not None and cfg.key is not None
        self._cert = certs.load_certificate(cfg.certificate)
        self._key = _load_rsa_key(cfg.key, cfg.key_passphrase)
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise ConfigError(
                cfg.file, "department.key", "an RSA private key (CMS envelopes use RSA key transport)"
            )
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if self._key.public_key().public_bytes(*spki) != self._cert.public_key().public_bytes(*spki):
            raise ConfigError(cfg.file, "department.key", f"the private key of {cfg.certificate}")
        # What the key is for, tried once: a damaged key would otherwise refuse every file as DECRYPT.
        probe = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        try:
            works = self._key.decrypt(self._cert.public_key().encrypt(probe, oaep), oaep) == probe
        except ValueError:
            works = False
        if not works:
            raise ConfigError(
                cfg.file, "department.key", f"a private key that decrypts ({cfg.key} is damaged)"
            )
        for path in cfg.trusted_senders:
            self._trusted += certs.load_certificates(path)
        if not self._trusted:
            raise ConfigError(cfg.file, "department.trusted_senders", "at least one sender certificate")

    # -- the run -------------------------------------------------------------------------------

    def run_once(self) -> ReceiveReport:
        cfg = self.cfg
        report = ReceiveReport(cfg.department, cfg.output_dir)
        private_dir(cfg.output_dir)
        _refuse_a_lost_ledger(cfg)
        ledger = Ledger(cfg.ledger)
        drop = self._drop or open_drop(cfg.drop, cfg.department)
        try:
            self._recover(ledger, report)
            self._publish_pending_acks(ledger, drop, report)
            try:
                ready = drop.list_ready()
                report.left = list(drop.left)
                if report.left:
                    self.log.warning("receive.not_taken", drop=drop.where, entries=len(report.left))
            except (FluxError, OSError) as exc:
                report.errors.append(f"drop {drop.where} cannot be listed: {exc}")
                self.log.error("receive.drop_unreadable", drop=drop.where, error=str(exc))
                ready = []
            for item in ready:
                if self.stop.is_set():
                    report.interrupted = True
                    break
                outcome = self._one(ledger, drop, item, report)
                if outcome is not None:
                    report.outcomes.append(outcome)
            if not report.interrupted:
                self._retention(ledger, drop, report)
        finally:
            if self._drop is None:
                drop.close()
            ledger.close()
        self.log.info(
            "receive.done",
            ingested=report.ingested,
            refused=report.refused,
            duplicates=report.duplicates,
            rows=report.rows_by_flow,
            errors=len(report.errors),
        )
        return report

    # -- one file -------------------------------------------------------------------------------

    def _one(self, ledger: Ledger, drop: Drop, item: DropFile, report: ReceiveReport) -> FileOutcome | None:
        cfg, name = self.cfg, item.name
        marker_stat = "" if item.marker_stat is None else "{}:{}".format(*item.marker_stat)
        if ledger.listed_before(name, item.folder, item.size, item.mtime, marker_stat) is not None:
            return None
        if item.unusable:  # refused unread under its stand-in name, never acknowledged (an ack names the file)
            base = _listing(item, marker_stat, "")
            return self._refuse(ledger, drop, base, "", None, _Refused("NAME", "its name is not valid UTF-8"), report)
        try:
            marker = drop.read_marker(item) if item.marker_stat is not None else None
        except (FluxError, OSError) as exc:
            self._unreadable(report, name, f"its .sha256 cannot be read from {drop.where}", exc)
            return None
        if item.sealed and marker is None:
            return None  # its .sha256 went away since the listing: not ready after all
        declared, marker_problem = parse_marker(marker, name)
        base = _listing(item, marker_stat, declared or "")
        fits, ackable = _fits_and_ackable(item)
        if item.size > cfg.max_file_bytes:
            # Not read at all: the ack carries the digest the sender declared, when there is one.
            too_large = _Refused("TOO_LARGE", f"{item.size} bytes, more than {cfg.max_file_bytes}")
            return self._refuse(ledger, drop, base, "", declared if ackable else None, too_large, report)
        try:
            data = drop.read(item, cfg.max_file_bytes)
        except (FluxError, OSError) as exc:
            self._unreadable(report, name, f"cannot be read from {drop.where}", exc)
            return None
        sha = hashlib.sha256(data).hexdigest()
        known = ledger.decided(name, sha, base["marker_sha256"])
        if known is not None:
            ledger.refresh_listing(known.id, item.folder, item.size, item.mtime, marker_stat)
            return None
        ack_sha = sha if ackable else None
        try:
            self._screen(item, data, sha, fits, (declared, marker_problem), ackable)
            plain = self._open(item, data)
            extracted = self._extract(plain)
            self._check_identity(item, extracted)
        except _Refused as refusal:
            return self._refuse(ledger, drop, base, sha, refusal.acknowledges or ack_sha, refusal, report)
        except _Transient as exc:
            report.errors.append(f"{name}: {exc}")
            self.log.error("receive.not_taken", file=name, error=str(exc))
            return None
        return self._take(ledger, drop, base, sha, ack_sha, extracted, plain, report)

    def _unreadable(self, report: ReceiveReport, name: str, what: str, exc: Exception) -> None:
        """A file (or its marker) the drop cannot give now: an error of this run; the next one retries."""
        report.errors.append(f"{name}: {what}: {exc}")
        self.log.error("receive.unreadable", file=name, error=str(exc))

    def _screen(
        self, item: DropFile, data: bytes, sha: str, fits: bool, marker: tuple[str | None, str], ackable: bool
    ) -> None:
        """What refuses a file before it is opened: its size, its name, its .sha256."""
        declared, marker_problem = marker
        if len(data) > self.cfg.max_file_bytes:
            raise _Refused("TOO_LARGE", f"more than {self.cfg.max_file_bytes} bytes")
        if item.sealed and item.technical is None:
            raise _Refused("NAME", "a .p7m whose name is not a flow file name")
        if not fits:
            raise _Refused("NAME", "the extension does not fit the flow")
        if marker_problem or (declared is not None and declared != sha):
            # The file the sender meant: its KO must reach that emission.
            raise _Refused("INTEGRITY", marker_problem or "its bytes do not match its .sha256",
                           acknowledges=declared if ackable else None)

    def _open(self, item: DropFile, data: bytes) -> bytes:
        if not item.sealed:
            if not self.cfg.accept_unsealed:
                raise _Refused("UNSEALED", "an unsealed file, and accept_unsealed is off")
            return data
        if self._key is None:
            raise _Refused("DECRYPT", "a sealed file, and this département has no key configured")
        try:
            return cms.open_sealed(
                data, recipient_cert=self._cert, recipient_key=self._key, trusted_signers=self._trusted
            )
        # SealError carries fixed phrases only (seal/cms.py): its text is fit for the log.
        except SealToolError as exc:  # openssl missing or silent: not this file's fault
            raise _Transient(str(exc)) from None
        except DecryptError as exc:
            raise _Refused("DECRYPT", str(exc)) from None
        except SealError as exc:  # a SignatureError, or any other reason the seal cannot be trusted
            raise _Refused("SIGNATURE", str(exc)) from None

    def _extract(self, plain: bytes) -> Extracted:
        try:
            return extract(plain, limits=self.limits)
        except ExtractError as exc:
            raise _Refused(exc.code, exc.message) from None
        except (MemoryError, RecursionError):
            raise _Refused("INGEST", "the content exhausted the reader's resources") from None
        except Exception as exc:
            # A reader bug met by a hostile file: refused, never half-taken; the type says where to look.
            self.log.error("receive.reader_failed", error=type(exc).__name__)
            raise _Refused("INGEST", f"the reader failed ({type(exc).__name__})") from None

    def _check_identity(self, item: DropFile, x: Extracted) -> None:
        code = self.cfg.department
        if x.department is not None and x.department != code:
            raise _Refused("DEPARTMENT", f"the content is for département {x.department}, this is {code}")
        if x.department is None and x.rows:
            raise _Refused("DEPARTMENT", "the records name no département")
        t = item.technical
        if t is not None:
            if t.flow != x.flow:
                raise _Refused("NAME_MISMATCH", f"named {t.flow}, the content is {x.flow}")
            if t.department != code:
                raise _Refused("NAME_MISMATCH", f"named for département {t.department}")
            if x.seq is not None and t.seq != x.seq:
                raise _Refused("NAME_MISMATCH", f"named sequence {t.seq}, the content says {x.seq}")

    # -- decisions ------------------------------------------------------------------------------

    def _refuse(
        self,
        ledger: Ledger,
        drop: Drop,
        base: dict[str, Any],
        sha: str,
        ack_sha: str | None,
        refusal: _Refused,
        report: ReceiveReport,
    ) -> FileOutcome:
        at = self.clock.now()
        file_id = ledger.decide(at, **base, sha256=sha, status=REFUSED, code=refusal.code, ack_sha256=ack_sha)
        self.log.warning("receive.refused", file=base["name"], code=refusal.code, reason=refusal.reason)
        self._ack(ledger, drop, file_id, report)
        return FileOutcome(base["name"], REFUSED, refusal.code)

    def _take(
        self,
        ledger: Ledger,
        drop: Drop,
        base: dict[str, Any],
        sha: str,
        ack_sha: str | None,
        x: Extracted,
        plain: bytes,
        report: ReceiveReport,
    ) -> FileOutcome | None:
        name = base["name"]
        ident = {"flow": x.flow, "department": x.department, "seq": x.seq, "content_sha256": x.content_sha256}
        same = ledger.ingested_content(x.content_sha256)
        if same is not None:
            at = self.clock.now()
            file_id = ledger.decide(
                at,
                **base,
                **ident,
                sha256=sha,
                status=DUPLICATE,
                code="DUPLICATE",
                duplicate_of=same.id,
                ack_sha256=ack_sha,
            )
            self.log.info(
                "receive.duplicate", file=name, code="DUPLICATE", flow=x.flow, seq=x.seq, same_as=same.name
            )
            self._ack(ledger, drop, file_id, report)
            return FileOutcome(name, DUPLICATE, "DUPLICATE", x.flow, x.seq)
        if x.seq is not None:
            taken = ledger.ingested_seq(x.flow, x.seq)
            if taken is not None:
                return self._refuse(
                    ledger,
                    drop,
                    {**base, **ident},
                    sha,
                    ack_sha,
                    _Refused("SEQUENCE_DUPLICATE", f"{x.flow} sequence {x.seq} was taken from {taken.name}"),
                    report,
                )
        file_id, folder = ledger.begin(
            self.clock.now(), x.flow, **base, **ident, sha256=sha, ack_sha256=ack_sha
        )
        faults.point("receive-ingesting")
        dest = self.cfg.output_dir / folder
        try:
            written = write_outputs(x, plain, dest, formats=self.cfg.formats)
        except BaseException as exc:
            self._discard(dest)
            ledger.forget(file_id)
            if isinstance(exc, ExtractError):
                return self._refuse(
                    ledger, drop, {**base, **ident}, sha, ack_sha, _Refused(exc.code, exc.message), report
                )
            if isinstance(exc, OSError):
                report.errors.append(f"{name}: its output cannot be written: {exc.strerror or exc}")
                self.log.error("receive.output_failed", file=name, error=exc.strerror or type(exc).__name__)
                return None
            raise
        faults.point("receive-written")
        gap = ledger.finish(file_id, self.clock.now(), rows=len(x.rows), scans=len(x.scans))
        faults.point("receive-recorded")
        if gap is not None:
            self.log.warning(
                "receive.sequence_gap",
                file=name,
                code="SEQUENCE_GAP",
                flow=gap.flow,
                seq=gap.seq,
                missing=_missing(gap),
            )
        self.log.info(
            "receive.ingested",
            file=name,
            code="OK",
            flow=x.flow,
            seq=x.seq,
            rows=len(x.rows),
            scans=len(x.scans),
            output=folder,
        )
        self._ack(ledger, drop, file_id, report)
        return FileOutcome(
            name,
            OK,
            "OK",
            x.flow,
            x.seq,
            len(x.rows),
            len(x.scans),
            dest,
            tuple(written),
            gap.describe() if gap else None,
        )

    def _discard(self, dest: Path) -> None:
        """Remove a file's output folder and the staging folder write_outputs may have left beside it."""
        for path in (dest, dest.parent / f"{STAGING_PREFIX}{dest.name}"):
            shutil.rmtree(path, ignore_errors=True)

    # -- acknowledgements -----------------------------------------------------------------------

    def _ack(self, ledger: Ledger, drop: Drop, file_id: int, report: ReceiveReport) -> bool:
        """Publish the ack of a decided file; a failure leaves it pending for the next run."""
        row = ledger.get(file_id)
        if row is None or row.ack_sha256 is None or row.acked_at is not None:
            return False
        status = "KO" if row.status == REFUSED else "OK"
        try:
            data = build_ack(
                row.name,
                row.ack_sha256,
                status,
                row.code,
                LABELS.get(row.code, row.code),
                datetime.fromisoformat(row.received_at),
            )
            drop.write_ack(ack_name(row.name), data)
        except AckError as exc:
            # Cannot happen for a technical name; never retried, never silent.
            self.log.error("receive.ack_impossible", file=row.name, code=row.code, error=exc.reason)
            ledger.mark_acked(file_id, self.clock.now())
            return False
        except (FluxError, OSError) as exc:
            self.log.error("receive.ack_failed", file=row.name, code=row.code, error=str(exc))
            report.errors.append(f"{row.name}: ack not written ({exc}); retried next run")
            return False
        ledger.mark_acked(file_id, self.clock.now())
        report.acks_written += 1
        return True

    def _publish_pending_acks(self, ledger: Ledger, drop: Drop, report: ReceiveReport) -> None:
        for row in ledger.pending_acks():
            self._ack(ledger, drop, row.id, report)

    # -- crash recovery and retention ----------------------------------------------------------

    def _recover(self, ledger: Ledger, report: ReceiveReport) -> None:
        for row in ledger.interrupted():
            if row.output_dir:
                self._discard(self.cfg.output_dir / row.output_dir)
            ledger.forget(row.id)
            report.recovered += 1
            self.log.warning(
                "receive.recovered",
                file=row.name,
                code="INGESTING",
                message="an interrupted ingest: output removed, the file is taken again",
            )

    def _retention(self, ledger: Ledger, drop: Drop, report: ReceiveReport) -> None:
        now = self.clock.now()
        cutoff = now - timedelta(days=self.cfg.retention_days)
        ledger.mark_expired(cutoff, now)
        for row in ledger.purging():
            try:
                if row.output_dir:
                    self._discard(self.cfg.output_dir / row.output_dir)
                drop.remove(DropFile(row.name, row.folder, row.size, row.mtime, row.sealed, None))
            except (FluxError, OSError) as exc:
                report.errors.append(f"retention of {row.name}: {exc}")
                self.log.error("receive.retention_failed", file=row.name, error=str(exc))
                continue
            ledger.delete(row.id)
            report.purged += 1
        ledger.delete_anomalies_before(cutoff)
        if report.purged:
            self.log.info("receive.purged", files=report.purged, days=self.cfg.retention_days)


def _load_rsa_key(path: Path, passphrase: bytes | None) -> Any:
    """The département's key, loaded without OpenSSL's RSA consistency check (its primality tests
    cost ~60 ms a key: six seconds for a national demo). The caller checks instead that the key
    matches the certificate and decrypts. certs.load_private_key words the errors."""
    try:
        return serialization.load_pem_private_key(
            path.read_bytes(), password=passphrase, unsafe_skip_rsa_key_validation=True
        )
    except (OSError, TypeError, ValueError, UnsupportedAlgorithm):
        certs.load_private_key(path, passphrase)  # raises the CertificateError that says what is wrong
        raise


# -- the command ------------------------------------------------------------------------------

# Which exit code wins when several départements are received in one command.
_SEVERITY = (ExitCode.OK, ExitCode.QUARANTINED, ExitCode.UNDELIVERED, ExitCode.INTERRUPTED)


def describe(report: ReceiveReport, *, files: bool = True) -> list[str]:
    """The summary lines of one département's run (file names and codes only, never content)."""
    rows = ", ".join(f"{flow} {n}" for flow, n in report.rows_by_flow.items()) or "none"
    lines = [
        f"{report.department}: {report.ingested} ingested, {report.refused} refused, "
        f"{report.duplicates} duplicate(s); rows {rows}"
        + (f"; {report.recovered} interrupted ingest(s) taken again" if report.recovered else "")
        + (f"; {report.purged} expired file(s) purged" if report.purged else "")
    ]
    for o in report.outcomes:
        if o.status == REFUSED:
            lines.append(f"  refused: {o.name} ({o.code})")
        elif o.status == DUPLICATE:
            lines.append(f"  duplicate: {o.name} (same content already taken: not ingested again)")
    lines += [f"  sequence gap: {gap}" for gap in report.gaps]
    lines += [f"  not taken: {why}" for why in report.left]
    lines += [f"  error: {error}" for error in report.errors]
    if files:
        lines += [f"  CSV:     {p}" for p in report.outputs("csv")]
        lines += [f"  Parquet: {p}" for p in report.outputs("parquet")]
    return lines


def _where(configs: list[ReceiveConfig]) -> str:
    dirs = [c.output_dir for c in configs]
    if (
        len(dirs) > 1
        and len({d.parent for d in dirs}) == 1
        and all(d.name == c.department for d, c in zip(dirs, configs, strict=True))
    ):
        return f"{dirs[0].parent}/<département>"
    return ", ".join(str(d) for d in dirs)


def _run(receiver: Receiver) -> ReceiveReport:
    """One département's run; its failure (a ledger it cannot open...) does not stop the others."""
    try:
        return receiver.run_once()
    except FluxError as exc:
        receiver.log.error("receive.failed", error=str(exc))
        return ReceiveReport(receiver.cfg.department, receiver.cfg.output_dir, errors=[str(exc)])


def _refuse_a_lost_ledger(cfg: ReceiveConfig) -> None:
    """No ledger beside outputs already written: it was deleted, or [ledger] points elsewhere now.

    A new empty ledger would take every file still in the drop again, write its records a second
    time for the PMI's import and ack it again. Found by hand: two of three files ingested twice.
    """
    if cfg.ledger.exists():
        return
    ingested = [p for flow in FLOWS if (cfg.output_dir / flow).is_dir()
                for p in (cfg.output_dir / flow).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if ingested:
        raise StorageError(cfg.ledger, f"the ledger is missing, and {cfg.output_dir} holds {len(ingested)} file(s) "
                           "ingested with it: restore it from its backup (or move those outputs away to start "
                           "afresh); nothing was taken, so nothing is ingested twice")


def _has_news(r: ReceiveReport) -> bool:
    """Something a person should look at: a refusal, a duplicate, a gap, an error, a recovery."""
    return bool(r.refused or r.duplicates or r.gaps or r.errors or r.recovered or r.left)


def _summary(reports: list[ReceiveReport], configs: list[ReceiveConfig], started: float, *,
             verbose: bool = False) -> Iterator[str]:
    """What one pass prints: with one département, all it did; with several, the ones with something
    to look at (every one that did something when `verbose`), then the totals and where the outputs are."""
    several = len(configs) > 1
    for r in reports:
        if not several or _has_news(r) or (verbose and r.outcomes):
            yield from describe(r, files=not several)
    rows: Counter[str] = Counter()
    for r in reports:
        rows.update(r.rows_by_flow)
    yield (
        f"TOTAL {len(reports)} département(s): {sum(r.ingested for r in reports)} ingested, "
        f"{sum(r.refused for r in reports)} refused, {sum(r.duplicates for r in reports)} duplicate(s); "
        f"rows {', '.join(f'{f} {n}' for f, n in sorted(rows.items())) or 'none'}; "
        f"seconds={time.monotonic() - started:.1f}"
    )
    for kind, suffix in (("CSV", "csv"), ("Parquet", "parquet")):
        example = next((p for r in reports for p in r.outputs(suffix)), None)
        if several and example is not None:
            yield f"  e.g. {kind}: {example}"
    yield (
        f"outputs (CSV and Parquet): {_where(configs)}/<FLOW>/<file>/records.csv and records.parquet"
        + ("; scans in <file>/scans/<record_key>/scan.pdf" if "SGR" in rows else "")
    )


def serve_receivers(
    configs: list[ReceiveConfig],
    *,
    clock: Clock,
    once: bool,
    emit: Callable[[str], object] = print,
    stop: threading.Event | None = None,
    parallel: int = 8,
    verbose: bool = False,
    progress: Callable[[str], object] | None = None,
) -> ExitCode:
    """`flux-pmi receive`: each département in turn; once, or every `poll_seconds` until SIGTERM/SIGINT.

    Every département's lock is held for the life of the command, so a second receiver of the
    same ledger exits 4 at once. The first signal finishes the file in hand; a second exits 8.
    """
    from ..core.stopping import GracefulStop

    poll = min(c.poll_seconds for c in configs)
    with ExitStack() as stack:
        for cfg in configs:
            stack.enter_context(receive_lock(cfg))
        guard = stack.enter_context(GracefulStop(event=stop))
        # Départements are independent (own ledger, drop, output): most of a file's time is
        # openssl's verification, a subprocess, so a few threads take a national night in quickly.
        pool = stack.enter_context(
            ThreadPoolExecutor(max_workers=max(1, min(parallel, len(configs))), thread_name_prefix="receive")
        )
        receivers = list(pool.map(lambda cfg: Receiver(cfg, clock=clock, stop=guard.event), configs))
        while True:
            started = time.monotonic()
            reports = _run_all(pool, receivers, progress)
            busy = any(r.outcomes or r.errors or r.recovered or r.purged for r in reports)
            if once or busy:
                for line in _summary(reports, configs, started, verbose=verbose):
                    emit(line)
            if once:
                return max((r.exit_code for r in reports), key=_SEVERITY.index, default=ExitCode.OK)
            if guard.event.wait(poll):
                return ExitCode.OK


def _run_all(pool: ThreadPoolExecutor, receivers: list[Receiver],
             progress: Callable[[str], object] | None) -> list[ReceiveReport]:
    """One pass over every département, in the configs' order; `progress` hears of each one done."""
    futures = {pool.submit(_run, r): i for i, r in enumerate(receivers)}
    reports: list[ReceiveReport | None] = [None] * len(receivers)
    for n, future in enumerate(as_completed(futures), 1):
        reports[futures[future]] = future.result()
        if progress is not None:
            progress(f"receive: {n}/{len(receivers)} département(s) taken in")
    return [r for r in reports if r is not None]


def _missing(gap: Gap) -> str:
    return str(gap.first) if gap.first == gap.last else f"{gap.first}-{gap.last}"
