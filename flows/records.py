"""Typed records of the three flows, as they travel from the parsers to the builders.

Each record holds only what annexe 1 lets leave for its flow: the parsers drop
everything else (the GRO extract's NIR, phone, e-mail...) at the door, so a builder
cannot emit what it never received. Dates that the real formats carry with an
offset (DSG: `2021-12-03+01:00`) are kept as their lexical form, so that the
output says exactly what the source said.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def _pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle a record as (its class, its fields' values), rebuilt through its constructor.

    Why: records cross processes twice (a worker's parse to the run, the run's spill to a
    worker's build), a catch-up's 77,000 of them. The dataclass's own pickling of a slotted class
    reads and sets each field in Python; this reads them in one C call, and costs less than half
    (2,621 records of a night: 20 to 8 µs each way). Every field is an `__init__` argument.
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    get = attrgetter(*names)
    if len(names) == 1:
        def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
            return type(self), (get(self),)
    else:
        def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
            return type(self), get(self)
    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls



@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: the inbox file name (never personal data) and its line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Reject:
    """A record refused by a check. `message` is for operators and carries no personal data."""

    flow: str
    source: Source
    code: str
    message: str


# --- DSG: déclaration simplifiée de grossesse (Assurance Maladie) -------------------------


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class DsgAddress:
    destinataire: str
    point_remise: str
    complement: str
    numero_voie: str
    indice_repetition: str
    type_voie: str
    nom_voie: str
    mention_distribution: str
    code_postal: str
    localite: str
    code_pays: str
    code_insee: str


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class DsgRecord:
    source: Source
    received: date  # date the Caf received it: the 8-working-day clock starts here
    identification: str  # dsgcnaf:Identification, the declaration's id
    date: str  # dsgcnaf:Date, xs:dateTime as received
    nom_famille: str
    nom_usage: str
    prenom: str
    nir: str
    adresse: DsgAddress
    telephone: str
    date_nai: str  # xs:date
    rang: int
    date_dpg: str  # presumed pregnancy start, xs:date (may carry an offset)
    rectif_dpg: bool
    nb_enf_a_naitre: int
    rectif_nb_enf_a_naitre: bool
    date_examen: str  # xs:date (may carry an offset)
    ps_numero: str  # health professional's identifier
    ps_numero_type: str  # ADELI or RPPS
    ps_numero_am: str
    ps_nom: str
    ps_prenom: str
    # The envelope's Recepteur (CGDnnn's nnn, SIRET), for the ADDRESSING_MISMATCH warning only.
    addressed_to: str = ""
    addressed_siret: str = ""

    @property
    def commune_code(self) -> str:
        return self.adresse.code_insee

    @property
    def is_rectification(self) -> bool:
        return self.rectif_dpg or self.rectif_nb_enf_a_naitre

    @property
    def original_key(self) -> str:
        """The identity of the declaration itself, whether this is it or a rectification of it."""
        return f"DSG:{self.identification}"

    @property
    def key(self) -> str:
        """Stable identity used to refuse a duplicate.

        A rectification is a new emission of an already-emitted declaration: its identity adds
        what it rectifies and when (dsgcnaf:Date), so that it is not refused as a duplicate of
        the original, while the same rectification received twice still is.
        """
        if not self.is_rectification:
            return self.original_key
        return (f"DSG:{self.identification}:R:{self.date}:{int(self.rectif_dpg)}{int(self.rectif_nb_enf_a_naitre)}"
                f":{self.date_dpg}:{self.nb_enf_a_naitre}")


# --- GRO: case data from Cristal ---------------------------------------------------------

# A case Cristal marked with an Anomalie may lack the person block: its person fields are
# then empty (qual, nomnai, prenoms, dtnai, typedtnai, situpro), and it carries its LIBANO.


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class GroRecord:
    source: Source
    received: date  # DTRECEP
    numorg: str
    matricule: str
    qual: str  # MME / MR
    nom: str  # nom d'usage
    nomnai: str  # nom de famille
    prenoms: str
    dtnai: str  # YYYY-MM-DD, with 00 for an unknown day (TYPEDTNAI J) or day and month (O)
    typedtnai: str  # N / J / O
    nomcomnai: str
    situpro: str
    dtemm: date  # effective date of the address
    typeadr: str  # D / P
    etatadr: str
    compl_ide_adr: str
    compl_adr: str
    num_voie: str
    lib_type_voie: str
    nom_voie: str
    lieu_dist: str
    num_com: str  # INSEE commune code: the routing key
    code_pos: str
    nom_com: str
    dtdeclgro: date | None  # declaration date (empty for a birth without declaration)
    dtdebgro: date | None  # presumed pregnancy start
    nbenfchapf: int
    motif: str  # MOTITRANSMDOSPMI: 01 declaration, 02 birth without declaration, 03 mutation prenante
    numorg_ced: str  # mutation: the previous Caf's NUMORG
    matricule_ced: str  # mutation: the previous allocataire number
    anomalies: tuple[str, ...] = ()  # Cristal's LIBANO texts for this case (Cristal XML only)
    idepart: str = ""  # the case's IDEPARTE as Cristal wrote it: ADDRESSING_MISMATCH warning only

    @property
    def has_person(self) -> bool:
        return bool(self.qual)

    @property
    def commune_code(self) -> str:
        return self.num_com

    @property
    def key(self) -> str:
        return f"GRO:{self.numorg}:{self.matricule}:{self.motif}:{self.dtdeclgro or ''}:{self.received}"


# --- SGR: scanned Cerfa forms -------------------------------------------------------------


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class ZipMember:
    """Where a scan's bytes sit in the claimed SGR zip, as the scanning chain stored them.

    The parse has read the member through (inflated, its CRC and its PDF marks checked); the
    build copies these bytes as they are into our zip, under the same compression, CRC and
    sizes, instead of inflating the scan to disk and storing it again.
    """

    offset: int  # first byte of the member's data in the zip file
    compress_size: int
    crc: int
    compress_type: int  # zipfile.ZIP_STORED or ZIP_DEFLATED


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class SgrRecord:
    source: Source
    received: date  # DTRECEP (CSV index), or the earliest of DTCREASDP / DTREF (SDP zip)
    numorg: str
    matricule: str
    num_com: str  # residence commune (CSV index only), for routing only: it never leaves
    dtcreasdp: date  # date the scan was indexed
    pdf: Path  # resolved path of the scan, or of the zip holding it (`member`), inside the claimed batch
    pdf_size: int  # the scan's own size (inflated)
    idepart: str = ""  # IDEPARTE (SDP zip): the routing key, since the real index has no commune
    image: str = ""  # NOMIMAGED as the index names it (SDP zip)
    member: ZipMember | None = None  # SDP zip: the scan's bytes in `pdf`, copied as they are

    @property
    def stored_size(self) -> int:
        """What the scan takes in a zip we build: its member's bytes as they are, or the PDF stored."""
        return self.member.compress_size if self.member is not None else self.pdf_size

    @property
    def commune_code(self) -> str:
        return self.num_com

    @property
    def key(self) -> str:
        return f"SGR:{self.numorg}:{self.matricule}:{self.image or self.pdf.name}:{self.received}"


Record = DsgRecord | GroRecord | SgrRecord
FLOWS = ("DSG", "SGR", "GRO")
