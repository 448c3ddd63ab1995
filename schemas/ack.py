"""The acknowledgement file format, beside its XSD (ack.xsd): build one, read one.

A receiver writes back one small XML file per delivered file (docs/acks.md): the file's
name and SHA-256, OK or KO with a reason code, and its own timestamp. The sender's ack
collector (jobs/acks.py) reads them, the receiving side (receive/) writes them; both use
this module, which knows the format and nothing of either side.

The reason text (Libelle) may, against the contract, carry personal data: it is parsed and
handed to the caller but never put in an error message. Only names and codes are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from ..core.errors import FluxError, SchemaError
from ..transport.base import AckStatus
from . import validate_bytes

__all__ = ["ACK_NAMESPACE", "KO", "MAX_ACK_BYTES", "OK", "Ack", "AckError", "build_ack", "parse_ack"]

ACK_NAMESPACE = "urn:flux-pmi:ack:1"
# An ack is a few hundred bytes; a cap keeps a hostile or broken receiver from making us
# parse megabytes. The transports have their own, looser caps (1 MiB for SFTP).
MAX_ACK_BYTES = 64 * 1024

OK, KO = AckStatus.OK, AckStatus.KO

_FIELDS = ("Fichier", "Empreinte", "Statut", "Code", "Libelle", "Horodatage")


class AckError(FluxError):
    """An acknowledgement cannot be built or read. The reason never quotes the ack's content."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"acknowledgement refused: {reason}")


@dataclass(frozen=True, slots=True)
class Ack:
    file_name: str  # the delivered file, e.g. GRO_035_20261123_000001.xml.p7m
    sha256: str  # of the delivered .p7m, 64 lowercase hex
    status: AckStatus
    code: str  # reason code: OK, SIGNATURE, DECRYPT, SCHEMA, SEQUENCE_DUPLICATE...
    text: str  # reason text: for the caller only, never logged or traced
    at: datetime  # when the receiver took the file into account (aware)


def build_ack(file_name: str, sha256: str, status: str, code: str, text: str, at: datetime) -> bytes:
    """One ack document, UTF-8, valid against schemas/ack.xsd; AckError if a field does not fit."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise AckError("Horodatage needs a timezone offset")
    ns = f"{{{ACK_NAMESPACE}}}"
    # The default namespace's key is None, which lxml-stubs does not allow for.
    root = etree.Element(f"{ns}AccuseReception", nsmap={None: ACK_NAMESPACE})  # type: ignore[dict-item]
    values = (file_name, sha256, status, code, text, at.isoformat())
    try:
        for name, value in zip(_FIELDS, values, strict=True):
            etree.SubElement(root, f"{ns}{name}").text = value
    except (TypeError, ValueError):
        # lxml refuses control characters and NUL; its message would quote them.
        raise AckError("a field holds characters XML does not allow") from None
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    try:
        validate_bytes("ACK", data)
    except SchemaError as exc:
        raise AckError("; ".join(exc.errors[:5])) from None
    return data


def parse_ack(data: bytes) -> Ack:
    """Read one ack: size-capped, no DTD or entity, valid against schemas/ack.xsd, UTF-8."""
    if len(data) > MAX_ACK_BYTES:
        raise AckError(f"larger than {MAX_ACK_BYTES} bytes")
    try:
        # The hardened parse: a DOCTYPE, an entity or a network reference is refused here.
        validate_bytes("ACK", data)
    except SchemaError as exc:
        raise AckError("; ".join(exc.errors[:5])) from None
    # Valid and without a DOCTYPE: a second, equally locked-down parse only reads the values.
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)
    root = etree.fromstring(data, parser)
    encoding = (root.getroottree().docinfo.encoding or "").upper()
    if encoding not in ("UTF-8", "UTF8"):
        raise AckError("not UTF-8")
    values = {name: root.findtext(f"{{{ACK_NAMESPACE}}}{name}") or "" for name in _FIELDS}
    try:
        at = datetime.fromisoformat(values["Horodatage"])
    except ValueError:
        raise AckError("Horodatage is not a date and time this system can represent") from None
    try:
        status = AckStatus(values["Statut"])
    except ValueError:  # the schema allows no other value; said plainly if it ever does
        raise AckError("Statut is neither OK nor KO") from None
    return Ack(values["Fichier"], values["Empreinte"], status, values["Code"], values["Libelle"], at)
