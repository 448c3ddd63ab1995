"""Typed records of the three flows, as they travel from the parsers to the builders.

Each record holds only what annexe 1 lets leave for its flow: the parsers drop
everything else (the GRO extract's NIR, phone, e-mail...) at the door, so a builder
cannot emit what it never received. Dates that the real formats carry with an
offset (DSG: `2021-12-03+01:00`) are kept as their lexical form, so that the
output says exactly what the source said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from: the inbox file name (never personal data) and its line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Reject:
    """A record refused by a check. `message` is for operators and carries no personal data."""

    flow: str
    source: Source
    code: str
    message: str


# --- DSG: déclaration simplifiée de grossesse (Assurance Maladie) -------------------------


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

    @property
    def commune_code(self) -> str:
        return self.adresse.code_insee

    @property
    def key(self) -> str:
        """Stable identity of the declaration, used to refuse a duplicate."""
        return f"DSG:{self.identification}"


# --- GRO: case data from Cristal ---------------------------------------------------------


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

    @property
    def commune_code(self) -> str:
        return self.num_com

    @property
    def key(self) -> str:
        return f"GRO:{self.numorg}:{self.matricule}:{self.motif}:{self.dtdeclgro or ''}:{self.received}"


# --- SGR: scanned Cerfa forms -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SgrRecord:
    source: Source
    received: date  # DTRECEP
    numorg: str
    matricule: str
    num_com: str  # residence commune, for routing only: it never leaves
    dtcreasdp: date  # date the scan was indexed
    pdf: Path  # resolved path of the scan, inside the claimed batch
    pdf_size: int

    @property
    def commune_code(self) -> str:
        return self.num_com

    @property
    def key(self) -> str:
        return f"SGR:{self.numorg}:{self.matricule}:{self.pdf.name}:{self.received}"


Record = DsgRecord | GroRecord | SgrRecord
FLOWS = ("DSG", "SGR", "GRO")
