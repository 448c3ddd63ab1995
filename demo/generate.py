"""Write a realistic, reproducible inbox for one business day, in the shapes the upstream systems write.

The demo, the end-to-end tests and the benchmarks need input that looks like what the CNAF
systems really drop (docs/input-contract.md), at the national volume of DOMAIN.md, with a
few deliberately bad records whose expected reject reason is known in advance, and without
a single real person in it. Everything comes from one seeded `random.Random`: no clock is
read (the business date is given), so the same arguments give the same bytes.

Shapes (issue 11). By default ("real") the inbox holds what the upstream systems write, as
the HubEE reference samples show; all of the day's files are dated the working day before the
business date (the upstream day, D-1 below), one file per Caf for GRO and SGR:
- inbox/DSG/DGESDSGA_<D-1 YYYYMMDD>_<nnnn>.xml: DGE envelopes (Agregat, profile SORTIEDGE) of
  at most 50 Documents (Mindex, Trace, Donnee/DSGCNAF). Most are addressed (Recepteur: SIRET
  and CGD<dept>) to the département of all their declarations; a few mix départements, like
  DGE's diffusion to the CNAF, and the declarations not of the Recepteur's département are
  listed in `GenerationSummary.warnings`. A few declarations carry the optional NIR and
  Telephone; RectifDPG / RectifNbEnfANaitre are "true" only on rectifications of an earlier
  generated day (`rectify_from`).
- inbox/GRO/CRI_<numorg>_<D-1 YYYYMMDD>.xml: Cristal's file (UTF-8, APPLIEME CRI), cases in
  the sample's element order, each person with the NIR Cristal holds (input only: our GRO
  output never carries it). Some mutations keep the IDEPARTE of the département she left
  (warnings). One case is Cristal's anomaly "DOSSIER SANS PERSONNES": no Personne, its LIBANO
  in Anomalie, counted in NBTOTDOSPMITRANSMANO; it is a valid record.
- inbox/SGR/SDP_<numorg>_<D-1 YYYYMMDD>.zip: the scanning chain's zip: first the ISO-8859-1
  index CG_<dept>_<D-1 YYYY-MM-DD>_pmiich.xml (IDEPARTE, NOMIMAGED /nnnnn/IMGnnnnn.pdf and
  DTCREASDP per case), then the PDFs under the NOMIMAGED paths, except that a lone scan sits
  at the zip root, as in the sample (and at least one scan of the day does).
What only the real layout needs is drawn from a second seeded stream, so the records (people,
identifiers, planted faults) are the same in both shapes. shapes="legacy" writes the project's
earlier shapes, byte for byte as before: DSG_<date>_<n>.xml (one DSGCNAF each),
GRO_<date>.csv, SGR_<date>_index.csv and scans/<date>/<n>.pdf.

Files hold (fictitious) personal data, so they are created owner-only (0600, folders 0700),
under technical names only, and each is written under a dot-name and renamed into place, as
the contract asks of any producer (the SGR index last, after its scans; a zip is one file).

Volumes. About 650,000 births a year over ~250 working days gives ~2,600 declarations a
working day, split DSG 45 %, GRO 40 %, SGR 15 %. Each département gets a share proportional
to its approximate annual births = population (INSEE 2021, in thousands, rounded) x a rough
crude birth rate (10.5 per 1,000 by default, lower for ageing rural départements, higher for
the Paris suburbs, Guyane and Mayotte). This gives about 80 a day for Bouches-du-Rhône, Paris
and Rhône, 92 for Seine-Saint-Denis, 108 for Nord, 2-5 for Lozère, Creuse and Belfort. The
day's count is drawn around that mean (Poisson-like spread). The shares do not depend on the
subset asked for, so a département gets the same volume alone as in the national run.

Command line: `python -m flux_pmi.demo.generate INBOX --date 2026-11-20 --seed 1 [--departments 035,056]
[--shapes legacy] [--rectify-from 2026-11-19]`.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple, cast

from lxml import etree

import flux_pmi.config
from flux_pmi.demo import people
from flux_pmi.demo.pdf import one_page_pdf
from flux_pmi.flows import codes

DAILY_NATIONAL = 2_600
FLOW_SHARES: tuple[tuple[str, int], ...] = (("DSG", 45), ("GRO", 40), ("SGR", 15))

# Population in thousands (INSEE 2021, rounded): the base of each département's share.
POPULATION_K: dict[str, int] = {
    "001": 657, "002": 526, "003": 335, "004": 166, "005": 141, "006": 1098, "007": 330,
    "008": 270, "009": 155, "010": 310, "011": 375, "012": 280, "013": 2045, "014": 700,
    "015": 144, "016": 352, "017": 655, "018": 300, "019": 240, "02A": 160, "02B": 182,
    "021": 535, "022": 602, "023": 116, "024": 413, "025": 545, "026": 520, "027": 600,
    "028": 432, "029": 916, "030": 750, "031": 1420, "032": 192, "033": 1650, "034": 1190,
    "035": 1095, "036": 218, "037": 612, "038": 1275, "039": 259, "040": 415, "041": 329,
    "042": 765, "043": 228, "044": 1450, "045": 685, "046": 174, "047": 331, "048": 76,
    "049": 820, "050": 493, "051": 565, "052": 170, "053": 307, "054": 733, "055": 182,
    "056": 760, "057": 1045, "058": 201, "059": 2610, "060": 830, "061": 278, "062": 1460,
    "063": 665, "064": 690, "065": 230, "066": 485, "067": 1150, "068": 765, "069": 470, "69M": 1420,  # 069: the Rhône outside the Métropole de Lyon
    "070": 233, "071": 550, "072": 565, "073": 440, "074": 840, "075": 2130, "076": 1255,
    "077": 1430, "078": 1450, "079": 375, "080": 570, "081": 390, "082": 262, "083": 1090,
    "084": 562, "085": 690, "086": 440, "087": 373, "088": 360, "089": 335, "090": 140,
    "091": 1310, "092": 1630, "093": 1670, "094": 1410, "095": 1260, "971": 385, "972": 360,
    "973": 290, "974": 870, "976": 300,
}  # fmt: skip

# Rough crude birth rates (births per 1,000 inhabitants) where they differ much from the
# national ~10.5: only there to put the volumes in the right order of magnitude.
BIRTH_RATE: dict[str, float] = {
    **dict.fromkeys(
        ["003", "009", "012", "015", "019", "023", "024", "036", "043", "046", "048", "052",
         "055", "058", "061", "070", "089", "02A", "02B", "972"],
        8.0,
    ),
    "013": 11.5, "031": 11.0, "059": 12.0, "069": 12.5, "69M": 12.5, "075": 11.5, "077": 12.5,
    "078": 12.0, "091": 13.0, "092": 13.0, "093": 16.0, "094": 13.5, "095": 14.0,
    "974": 14.0, "973": 24.0, "976": 35.0,
}  # fmt: skip
DEFAULT_BIRTH_RATE = 10.5

# Contract columns of the Cristal extract, with the extra columns a real extract carries
# (NIR, phone, e-mail) in the middle: a reader that picks columns by position, or that
# forwards "the rest", is caught.
GRO_CONTRACT_COLUMNS: tuple[str, ...] = (
    "DTRECEP", "NUMORG", "MATRICULE", "QUAL", "NOM", "NOMNAI", "PRENOMS", "DTNAI", "TYPEDTNAI",
    "NOMCOMNAI", "SITUPRO", "DTEMM", "TYPEADR", "ETATADR", "COMPLIDEADR", "COMPLADR", "NUMVOIE",
    "LIBTYPEVOIE", "NOMVOIE", "LIEUDIST", "NUMCOM", "CODEPOS", "NOMCOM", "DTDECLGRO", "DTDEBGRO",
    "NBENFCHAPF", "MOTITRANSMDOSPMI", "NUMORGCED", "MATRICULECED",
)  # fmt: skip
GRO_EXTRA_COLUMNS: tuple[str, ...] = ("NIR", "NUMTEL", "ADRMEL")
GRO_COLUMNS: tuple[str, ...] = (
    GRO_CONTRACT_COLUMNS[:8] + ("NIR",) + GRO_CONTRACT_COLUMNS[8:11] + ("NUMTEL", "ADRMEL")
    + GRO_CONTRACT_COLUMNS[11:]
)  # fmt: skip
SGR_COLUMNS: tuple[str, ...] = ("DTRECEP", "NUMORG", "MATRICULE", "NUMCOM", "DTCREASDP", "FICHIER")

# beneficiaire:Adresse's children, in the order of the DGE sample and beneficiaire.xsd.
ADDRESS_PARTS: tuple[str, ...] = (
    "Destinataire", "PointRemise", "Complement", "NumeroVoie", "IndiceRepetition", "TypeVoie",
    "NomVoie", "MentionDistribution", "CodePostal", "Localite", "CodePays", "CodeInsee",
)  # fmt: skip

NS_DSG = "urn:cnamts:dsgcnaf"
NS_BEN = "urn:siram:beneficiaire"
NS_PS = "urn:siram:partenairesante"
_NSMAP = {"dsgcnaf": NS_DSG, "beneficiaire": NS_BEN, "partenairesante": NS_PS}
NS_DGE = "urn:ops:rncps:dge"
NS_SNGI = "urn:cnav:sngi"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XML_UTF8 = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

# "real": what the upstream systems write (DGE envelopes, Cristal XML, SDP zips: issue 11,
# the samples in the HubEE reference folder). "legacy": the project's own earlier shapes
# (one DSGCNAF per file, GRO CSV, SGR CSV index), kept while the parsers move over.
SHAPES = ("real", "legacy")
DEFAULT_SHAPES = "real"

# The DGE envelope: constants of the sample, and how the demo fills it.
DGE_EMETTEUR_RFO = "99640000"
DGE_TRANSMIS_RFO = "00810011"
DGE_VERSION = "01.01"
DGE_ECHEANCE = "FREQ=DAILY;BYHOUR=20;BYMINUTE=15"
DGE_MAX_DOCUMENTS = 50
DSG_MIXED_SHARE = 0.08  # declarations diffused in an envelope addressed to another département
DSG_WITH_NIR = 0.05  # the sample carries neither; annexe 1 allows both
DSG_WITH_PHONE = 0.08
RECTIFICATION_SHARE = 0.02  # of an earlier day's valid declarations, when rectify_from is given
RECTIFICATIONS_MAX = 5
# Cristal.
CRISTAL_VERSION = "6200"
ANOMALY_LABEL = " DOSSIER SANS PERSONNES"  # with its leading space, as in the sample
GRO_STALE_IDEPARTE = 0.3  # of mutations: still addressed to the département she left
# Where a planted GRO fault sits (DATE_FUTURE: on the first date of the case, see _cristal_case).
GRO_FAULTY_ELEMENT = {
    "COMMUNE_UNKNOWN": "DonneesAdministratives/Adresse/AdresseDetailleeFrance/NUMCOM",
    "MATRICULE_SHAPE": "IdentificationDossier/Organisme/MATRICULE",
    "CODE_UNKNOWN": "DonneesAdministratives/Personne/QUAL",
}
# Expected warnings (not rejects): the upstream addressing disagrees with the commune's route.
WARNING_RECEPTEUR = "ADDRESSING_MISMATCH"
WARNING_IDEPARTE = "ADDRESSING_MISMATCH"

REASONS = (
    "NIR_KEY",
    "DATE_ORDER",
    "DATE_FUTURE",
    "COMMUNE_UNKNOWN",
    "MATRICULE_SHAPE",
    "CODE_UNKNOWN",
    "PDF_MISSING",
    "PDF_NOT_PDF",
)
# The deliberately bad records of a day: (flow, expected reason code).
BAD_PLAN: tuple[tuple[str, str], ...] = (
    ("DSG", "NIR_KEY"),
    ("DSG", "DATE_ORDER"),
    ("GRO", "DATE_FUTURE"),
    ("GRO", "COMMUNE_UNKNOWN"),
    ("GRO", "MATRICULE_SHAPE"),
    ("GRO", "CODE_UNKNOWN"),
    ("SGR", "PDF_MISSING"),
    ("SGR", "PDF_NOT_PDF"),
)

# Weights of the code lists; each code is checked against flows.codes at import time.
SITUPRO_WEIGHTS = (("ACT", 60), ("CHO", 12), ("ETU", 7), ("INA", 16), ("AUT", 5))
TYPEDTNAI_WEIGHTS = (("N", 95), ("J", 3), ("O", 2))
MOTIF_WEIGHTS = (("01", 85), ("02", 5), ("03", 10))
assert {c for c, _ in SITUPRO_WEIGHTS} <= codes.SITUPRO
assert {c for c, _ in TYPEDTNAI_WEIGHTS} <= codes.TYPEDTNAI
assert {c for c, _ in MOTIF_WEIGHTS} <= set(codes.MOTIF)

# Received 1 to 6 working days before the business date, most of them recently.
RECEIVED_LAG_WEIGHTS = (40, 25, 15, 10, 6, 4)

PDF_TARGET_BYTES = (74_000, 86_000)
NOT_A_PDF = b"ERREUR NUMERISATION: page blanche, document a rescanner\r\n"


# --- registry ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Department:
    code: str  # 3 characters, as IDEPARTE: 035, 02A, 974
    numorg: str
    commune: str  # the chef-lieu's INSEE code: the address of everyone generated here
    commune_name: str
    postcode: str
    siret: str  # the DGE envelope's Recepteur identity


    @property
    def commune_label(self) -> str:
        """The commune as the postal and Cristal labels write it: capitals, no accents."""
        return people.ascii_fold(self.commune_name).upper().replace("-", " ").replace("'", " ")


def _postcode(code: str) -> str:
    if code == "69M":
        return "69001"
    if code == "02A":
        return "20000"
    if code == "02B":
        return "20200"
    if code.startswith("97"):
        return f"{code}00"
    return f"{code[1:]}000"


def load_departments() -> dict[str, Department]:
    """The départements of config/departments.toml, in file order."""
    path = Path(flux_pmi.config.__file__).parent / "departments.toml"
    with path.open("rb") as fh:
        table = tomllib.load(fh)["departments"]
    return {
        code: Department(
            code=code,
            numorg=entry["numorg"][0],
            commune=entry["chef_lieu"]["code"],
            commune_name=entry["chef_lieu"]["name"],
            postcode=_postcode(code),
            siret=entry["siret"],
        )
        for code, entry in table.items()
    }


def daily_volume(code: str) -> float:
    """Expected records a working day for a département, all flows together."""
    births = {d: POPULATION_K[d] * BIRTH_RATE.get(d, DEFAULT_BIRTH_RATE) for d in POPULATION_K}
    return DAILY_NATIONAL * births[code] / sum(births.values())


# --- summary -----------------------------------------------------------------------------


class BadRecord(NamedTuple):
    """A record made wrong on purpose, and the reason code the checks must give it.

    `file` is the name inside the flow folder (inbox/<flow>/), as the rejects report names
    it; `line` is 1-based: the physical CSV line (the header is line 1), or for an XML
    document the line of the faulty element (flows/parse_dsg.py points a reject there).
    Real shapes: the DGE envelope's line of the faulty element; the Cristal file's line of
    the faulty element; for an SDP zip, the line of the case's NOMIMAGED in the index.
    """

    flow: str
    file: str
    line: int
    reason: str


@dataclass
class GenerationSummary:
    business_date: date
    seed: int
    # Records written, bad ones included: flow -> count, and département -> flow -> count.
    per_flow: dict[str, int]
    per_department: dict[str, dict[str, int]]
    # The same without the bad records: what a correct pipeline delivers to each département.
    valid_per_department: dict[str, dict[str, int]]
    bad: list[BadRecord]
    # Every personal value written (NIR, names, street names, phones, e-mails, birth dates),
    # for the leak tests; only values of 5 characters or more, no place names.
    personal_values: set[str] = field(repr=False)
    files: list[str] = field(repr=False)  # paths written, relative to the inbox
    pdf_bytes: int = 0
    shapes: str = DEFAULT_SHAPES
    # Real shapes only: records whose upstream addressing (an envelope's Recepteur, a case's
    # IDEPARTE) disagrees with their commune, reason WARNING_*; they are valid all the same.
    warnings: list[BadRecord] = field(default_factory=list)
    # Real shapes only: rectifications of an earlier day's declarations, reason the flag set
    # ("RectifDPG" or "RectifNbEnfANaitre"), line that flag's. They are valid records.
    rectifications: list[BadRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_flow.values())


# --- dates -------------------------------------------------------------------------------


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def paris_offset(day: date) -> str:
    """Europe/Paris UTC offset at midday: +02:00 between the last Sundays of March and October.

    The demo's timestamps fall between 07:00 and 20:00, away from the 02:00/03:00 switch,
    so the midday rule is exact for them; no tz database is needed.
    """
    summer = _last_sunday(day.year, 3) <= day < _last_sunday(day.year, 10)
    return "+02:00" if summer else "+01:00"


def working_days_before(day: date, count: int) -> date:
    """The date `count` working days (Monday-Friday; holidays ignored in the demo) before `day`."""
    while count:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            count -= 1
    return day


def working_days_after(day: date, count: int) -> date:
    while count:
        day += timedelta(days=1)
        if day.weekday() < 5:
            count -= 1
    return day


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


# --- people and records ------------------------------------------------------------------


@dataclass
class Person:
    family: str
    usage: str
    first_names: tuple[str, ...]
    birth: date
    birth_dept: Department
    nir: str
    phone: str
    email: str
    num_voie: str
    indice: str
    type_voie: str
    nom_voie: str
    complement: str


class _Generator:
    """Holds the one random stream and the day's state (uniqueness sets, personal values)."""

    def __init__(self, rng: random.Random, business_date: date, registry: dict[str, Department]):
        self.rng = rng
        self.business_date = business_date
        self.registry = registry
        self.all_codes = list(registry)
        self.weights = [daily_volume(code) for code in self.all_codes]
        self.nirs: set[str] = set()
        self.allocataires: set[tuple[str, str]] = set()
        self.personal: set[str] = set()
        self.professionals: dict[str, list[tuple[str, str, str, str, str]]] = {}
        self.dsg_seq = 0

    # -- building blocks

    def received(self) -> date:
        lag = self.rng.choices(range(1, 7), RECEIVED_LAG_WEIGHTS)[0]
        return working_days_before(self.business_date, lag)

    def other_department(self, dept: Department) -> Department:
        while True:
            code = self.rng.choices(self.all_codes, self.weights)[0]
            if code != dept.code:
                return self.registry[code]

    def person(self, dept: Department) -> Person:
        rng = self.rng
        age_days = int(rng.triangular(18.1, 44.9, 31.0) * 365.25)
        birth = self.business_date - timedelta(days=age_days)
        # Most women were born in the département they live in; the others anywhere.
        birth_dept = dept if rng.random() < 0.6 else self.other_department(dept)
        while True:
            nir = people.make_nir(rng, birth, birth_dept.commune)
            if nir not in self.nirs:
                self.nirs.add(nir)
                break
        family = rng.choice(people.FAMILY_NAMES)
        usage = rng.choice(people.FAMILY_NAMES) if rng.random() < 0.45 else family
        first: tuple[str, ...] = (rng.choice(people.FIRST_NAMES),)
        if rng.random() < 0.3:
            first += (rng.choice(people.FIRST_NAMES),)
        complement = ""
        if rng.random() < 0.15:
            complement = f"BAT {rng.choice('ABCDEF')} APPT {rng.randint(1, 120)}"
        person = Person(
            family=family,
            usage=usage,
            first_names=first,
            birth=birth,
            birth_dept=birth_dept,
            nir=nir,
            phone=people.make_phone(rng),
            email=people.make_email(rng, first[0], family),
            num_voie=str(rng.randint(1, 180)),
            indice=rng.choice("BT") if rng.random() < 0.05 else "",
            type_voie=people.weighted(rng, people.STREET_TYPES),
            nom_voie=rng.choice(people.STREET_NAMES),
            complement=complement,
        )
        self.remember(
            nir, family, usage, *first, person.phone, person.email, person.nom_voie, birth.isoformat()
        )
        return person

    def remember(self, *values: str) -> None:
        self.personal.update(v for v in values if len(v) >= 5)

    def matricule(self, numorg: str) -> str:
        """A fresh allocataire file: 7-digit allocataire number then 8 zeros, like '063052900000000'."""
        while True:
            number = f"{self.rng.randrange(10**6, 10**7):07d}"
            if (numorg, number) not in self.allocataires:
                self.allocataires.add((numorg, number))
                return number + "00000000"

    def professional(self, dept: Department) -> tuple[str, str, str, str, str]:
        """One of the département's few dozen professionals: (id, id type, AM number, name, first name)."""
        pool = self.professionals.setdefault(dept.code, [])
        if len(pool) < 3 or (len(pool) < 40 and self.rng.random() < 0.2):
            rng = self.rng
            # AM numbers start with the département on 2 digits (20 for Corsica, 97 overseas),
            # taken from the commune so that 69M (the Métropole de Lyon) gets 69.
            am_prefix = dept.commune[:2].replace("2A", "20").replace("2B", "20")
            am = f"{am_prefix}{rng.randrange(10**7):07d}"
            if rng.random() < 0.6:
                ident, kind = f"10{rng.randrange(10**9):09d}", "RPPS"
            else:
                ident, kind = am, "ADELI"
            nom = rng.choice(people.FAMILY_NAMES)
            prenom = rng.choice(people.PS_FIRST_NAMES)
            self.remember(nom, prenom)
            pool.append((ident, kind, am, nom, prenom))
        return self.rng.choice(pool)

    # -- one record per flow (dicts: the writers below turn them into bytes)

    def dsg(self, dept: Department) -> dict:
        rng = self.rng
        person = self.person(dept)
        received = self.received()
        # The professional files the DSG online at, or just after, the examination.
        exam = received - timedelta(days=rng.choice((0, 0, 0, 1, 2, 3)))
        dpg = exam - timedelta(days=rng.randint(6 * 7, 14 * 7))
        stamp = (
            f"{received.isoformat()}T{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}{paris_offset(received)}"
        )
        self.dsg_seq += 1
        ident = (
            f"{rng.randrange(10**14):014d}d{self.business_date:%Y%m%d}{self.dsg_seq:06d}"
            f"{rng.randrange(10**6):06d}"
        )
        ps = self.professional(dept)
        return {
            "dept": dept.code,
            "Identification": ident,
            "Date": stamp,
            "NomFamille": person.family,
            "NomUsage": person.usage,
            "Prenom": " ".join(person.first_names),
            "NIR": person.nir,
            "NumeroVoie": person.num_voie,
            "IndiceRepetition": person.indice,
            "TypeVoie": person.type_voie,
            "NomVoie": person.nom_voie,
            "Complement": person.complement,
            "CodePostal": dept.postcode,
            "Localite": dept.commune_label,
            "CodeInsee": dept.commune,
            "Telephone": person.phone,
            "DateNai": person.birth.isoformat(),
            "Rang": "1" if rng.random() < 0.98 else "2",
            "DateDPG": f"{dpg.isoformat()}{paris_offset(dpg)}",
            "RectifDPG": "true" if rng.random() < 0.05 else "false",
            "NbEnfANaitre": "1" if rng.random() < 0.97 else rng.choice("223"),
            "RectifNbEnfANaitre": "true" if rng.random() < 0.01 else "false",
            "DateExamen": f"{exam.isoformat()}{paris_offset(exam)}",
            "_exam": exam,
            "ps": ps,
        }

    def gro(self, dept: Department) -> dict:
        rng = self.rng
        person = self.person(dept)
        received = self.received()
        motif = people.weighted(rng, MOTIF_WEIGHTS)
        if motif == "02":
            # A birth without prior declaration: no declaration date; the child was born
            # a few weeks ago, after a full-term pregnancy.
            decl: date | None = None
            born = received - timedelta(days=rng.randint(3, 40))
            start = born - timedelta(days=rng.randint(37 * 7, 41 * 7))
        else:
            back = rng.randint(0, 4) if motif == "01" else rng.randint(14, 140)
            decl = received - timedelta(days=back)
            start = decl - timedelta(days=rng.randint(6 * 7, 14 * 7))
        numorg_ced = matricule_ced = ""
        if motif == "03":
            previous = self.other_department(dept)
            numorg_ced, matricule_ced = previous.numorg, self.matricule(previous.numorg)
        typedtnai = people.weighted(rng, TYPEDTNAI_WEIGHTS)
        dtnai = person.birth.isoformat()
        if typedtnai == "J":
            dtnai = dtnai[:8] + "00"
        elif typedtnai == "O":
            dtnai = dtnai[:5] + "00-00"
        self.remember(dtnai)
        if motif == "03":
            # A mutation prenante: she has just moved into the département.
            moved_in = received - timedelta(days=rng.randint(5, 60))
        else:
            moved_in = received - timedelta(days=rng.randint(30, 5 * 365))
        row = {
            "DTRECEP": received.isoformat(),
            "NUMORG": dept.numorg,
            "MATRICULE": self.matricule(dept.numorg),
            "QUAL": "MME",
            "NOM": person.usage,
            "NOMNAI": person.family,
            "PRENOMS": " ".join(person.first_names),
            "NIR": person.nir,
            "DTNAI": dtnai,
            "TYPEDTNAI": typedtnai,
            "NOMCOMNAI": person.birth_dept.commune_label,
            "SITUPRO": people.weighted(rng, SITUPRO_WEIGHTS),
            "NUMTEL": person.phone,
            "ADRMEL": person.email if rng.random() < 0.8 else "",
            "DTEMM": moved_in.isoformat(),
            "TYPEADR": "D" if rng.random() < 0.94 else "P",
            "ETATADR": "VC",
            "COMPLIDEADR": "",
            "COMPLADR": person.complement,
            "NUMVOIE": person.num_voie + (f" {person.indice}" if person.indice else ""),
            "LIBTYPEVOIE": person.type_voie,
            "NOMVOIE": person.nom_voie,
            "LIEUDIST": "",
            "NUMCOM": dept.commune,
            "CODEPOS": dept.postcode,
            "NOMCOM": dept.commune_label,
            "DTDECLGRO": decl.isoformat() if decl else "",
            "DTDEBGRO": start.isoformat(),
            "NBENFCHAPF": str(rng.choices(range(6), (40, 33, 18, 6, 2, 1))[0]),
            "MOTITRANSMDOSPMI": motif,
            "NUMORGCED": numorg_ced,
            "MATRICULECED": matricule_ced,
        }
        return {"dept": dept.code, "row": row, "_received": received}

    def sgr(self, dept: Department) -> dict:
        rng = self.rng
        received = self.received()
        # Indexed the same day or up to two working days later, never after the last
        # working day before the business date.
        indexed = min(
            working_days_after(received, rng.choice((0, 0, 1, 2))),
            working_days_before(self.business_date, 1),
        )
        return {
            "dept": dept.code,
            "row": {
                "DTRECEP": received.isoformat(),
                "NUMORG": dept.numorg,
                "MATRICULE": self.matricule(dept.numorg),
                "NUMCOM": dept.commune,
                "DTCREASDP": indexed.isoformat(),
                "FICHIER": "",  # numbered when written
            },
            "pdf": one_page_pdf(rng, rng.randint(*PDF_TARGET_BYTES)),
        }

    # -- deliberately bad records: a good record, then one fault

    def bad(self, flow: str, reason: str, dept: Department) -> dict:
        rng = self.rng
        record = getattr(self, flow.lower())(dept)
        row = record.get("row")
        if reason == "NIR_KEY":
            record["NIR"] = people.bad_key_nir(record["NIR"])
            record["_field"] = "beneficiaire:NIR"
            self.remember(record["NIR"])
        elif reason == "DATE_ORDER":
            after = record["_exam"] + timedelta(days=rng.randint(3, 20))
            record["DateDPG"] = f"{after.isoformat()}{paris_offset(after)}"
            record["_field"] = "beneficiaire:DateDPG"
        elif reason == "DATE_FUTURE":
            # A year typed one too high: in the future whatever clock the checks use.
            received = date.fromisoformat(row["DTRECEP"])
            row["DTRECEP"] = _years_after(received, 1).isoformat()
        elif reason == "COMMUNE_UNKNOWN":
            row["NUMCOM"] = "99999"
        elif reason == "MATRICULE_SHAPE":
            row["MATRICULE"] = row["MATRICULE"][:-1]  # a zero lost: 14 digits
        elif reason == "CODE_UNKNOWN":
            row["QUAL"] = "MLLE"  # a civility Cristal no longer knows
        elif reason == "PDF_MISSING":
            record["pdf"] = None
        elif reason == "PDF_NOT_PDF":
            record["pdf"] = NOT_A_PDF
        else:
            raise ValueError(f"no bad record for reason {reason}")
        record["bad"] = reason
        return record


# --- writers -----------------------------------------------------------------------------


def _ensure_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; this is not


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` owner-only, via a dot-name renamed into place (the inbox ignores dot-names)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists: refusing to overwrite an inbox file")
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _el(parent: etree._Element, ns: str, tag: str, text: str = "", **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{tag}", attrib)
    if text:
        element.text = text
    return element


def dsg_xml(record: dict) -> bytes:
    """One DSGCNAF document, element for element as docs/input-contract.md shows it."""
    root = etree.Element(f"{{{NS_DSG}}}DSGCNAF", {"Nature": "DSGCNAF", "Version": "00.03"}, nsmap=_NSMAP)
    _el(root, NS_DSG, "Identification", record["Identification"])
    _el(root, NS_DSG, "Date", record["Date"])
    ben = _el(root, NS_DSG, "BENEFICIAIRE")
    for tag in ("NomFamille", "NomUsage", "Prenom", "NIR"):
        _el(ben, NS_BEN, tag, record[tag])
    address = _el(ben, NS_BEN, "Adresse")
    fixed = {"CodePays": "F", "CodeInsee": record["CodeInsee"]}
    for tag in ADDRESS_PARTS:  # the sample's order
        _el(address, NS_BEN, tag, fixed.get(tag, record.get(tag, "")))
    for tag in ("Telephone", "DateNai", "Rang"):
        _el(ben, NS_BEN, tag, record[tag])
    _mat_and_partner(root, ben, record, record["RectifDPG"], record["RectifNbEnfANaitre"])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _mat_and_partner(root: etree._Element, ben: etree._Element, record: dict, rectif_dpg: str,
                     rectif_nb: str) -> None:
    """The pregnancy block (MAT) and the health professional (PARTENAIRE) of a DSGCNAF document."""
    mat = _el(ben, NS_BEN, "MAT")
    _el(mat, NS_BEN, "DateDPG", record["DateDPG"])
    _el(mat, NS_DSG, "RectifDPG", rectif_dpg)
    _el(mat, NS_BEN, "NbEnfANaitre", record["NbEnfANaitre"])
    _el(mat, NS_DSG, "RectifNbEnfANaitre", rectif_nb)
    _el(mat, NS_BEN, "DateExamen", record["DateExamen"])
    ident, kind, am, nom, prenom = record["ps"]
    partner = _el(root, NS_DSG, "PARTENAIRE")
    _el(partner, NS_PS, "Numero", ident, R=kind)
    provider = _el(partner, NS_PS, "PRESTATAIRE")
    _el(provider, NS_PS, "Numero", am, R="AM")
    _el(provider, NS_PS, "NomFamille", nom)
    _el(provider, NS_PS, "Prenom", prenom)


def _line_of(document: bytes, tag: str) -> int:
    """The 1-based line of the element `tag` (prefix:name) in a serialised document."""
    return document.count(b"\n", 0, document.index(b"<" + tag.encode() + b">")) + 1


def _csv_bytes(columns: Iterable[str], rows: Iterable[dict]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), delimiter=";", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    # strict: a character outside ISO-8859-1 in the name lists must fail here, not downstream
    return buffer.getvalue().encode("iso-8859-1")


def _normalise(departments: Iterable[str], registry: dict[str, Department]) -> list[str]:
    selected = []
    for code in departments:
        code = code.strip().upper().zfill(3)
        if code not in registry:
            raise ValueError(f"unknown département {code!r}")
        if code not in selected:
            selected.append(code)
    if not selected:
        raise ValueError("no département to generate")
    # Registry order, so that the caller's order does not change the bytes.
    return [code for code in registry if code in selected]


def _draw(
    registry: dict[str, Department], selected: list[str], seed: int, business_date: date, bad: bool
) -> tuple[_Generator, dict[str, list[dict]]]:
    """The day's records, whatever their shape: one seeded stream, so both shapes hold the same people."""
    rng = random.Random(f"flux-pmi-demo/{seed}/{business_date.isoformat()}")
    gen = _Generator(rng, business_date, registry)
    records: dict[str, list[dict]] = {"DSG": [], "GRO": [], "SGR": []}
    flows = [flow for flow, _ in FLOW_SHARES]
    shares = [share for _, share in FLOW_SHARES]
    for code in selected:
        mean = daily_volume(code)
        count = max(1, round(rng.gauss(mean, math.sqrt(mean))))
        for flow in rng.choices(flows, shares, k=count):
            records[flow].append(getattr(gen, flow.lower())(registry[code]))
    if bad:
        for flow, reason in BAD_PLAN:
            record = gen.bad(flow, reason, registry[rng.choice(selected)])
            # Anywhere in the batch, not at its end: a reader must not stop at the first fault.
            records[flow].insert(rng.randint(0, len(records[flow])), record)
    return gen, records


def generate_inbox(
    inbox: Path,
    *,
    business_date: date,
    departments: list[str],
    seed: int,
    bad: bool = True,
    shapes: str | None = None,
    rectify_from: date | None = None,
) -> GenerationSummary:
    """Write one business day's DSG, GRO and SGR input for `departments` under `inbox`.

    The random stream is seeded with the seed *and* the business date, so that a
    multi-day demo run with one seed gets different people and identifiers each day.

    `shapes` is "real" (the default, DEFAULT_SHAPES: DGE envelopes, Cristal XML, SDP zips)
    or "legacy" (the project's own DSGCNAF-per-file, GRO CSV and SGR CSV index). Both draw
    the same records from the same stream; what only the real shapes need comes from a
    second stream, so the legacy bytes do not depend on it.

    `rectify_from`: the business date of an earlier demo day generated with the same seed
    and départements (real shapes only). A few of that day's valid declarations come
    again, rectified (RectifDPG or RectifNbEnfANaitre true). Without it, no rectification:
    the generator never flags a declaration that was not emitted before.
    """
    shapes = shapes or DEFAULT_SHAPES
    if shapes not in SHAPES:
        raise ValueError(f"unknown shapes {shapes!r}; expected one of {', '.join(SHAPES)}")
    if rectify_from is not None and (shapes != "real" or rectify_from >= business_date):
        raise ValueError("rectify_from must be an earlier business date, with the real shapes")
    registry = load_departments()
    selected = _normalise(departments, registry)
    gen, records = _draw(registry, selected, seed, business_date, bad)

    inbox = Path(inbox)
    _ensure_dir(inbox)
    for flow in records:
        _ensure_dir(inbox / flow)
    warnings: list[BadRecord] = []
    rectifications: list[BadRecord] = []
    if shapes == "legacy":
        written, bad_records, pdf_bytes = _write_legacy(inbox, records, business_date)
    else:
        shape_rng = random.Random(f"flux-pmi-demo/{seed}/{business_date.isoformat()}/real-shapes")
        writer = _RealWriter(inbox, gen, shape_rng, registry, selected)
        if rectify_from is not None:
            earlier, earlier_records = _draw(registry, selected, seed, rectify_from, bad)
            writer.add_rectifications(earlier, earlier_records["DSG"], records["DSG"])
        writer.add_anomaly(records["GRO"])
        writer.write(records)
        written, bad_records, pdf_bytes = writer.written, writer.bad, writer.pdf_bytes
        warnings, rectifications = writer.warnings, writer.rectifications

    per_department = {code: dict.fromkeys(records, 0) for code in selected}
    valid = {code: dict.fromkeys(records, 0) for code in selected}
    for flow, flow_records in records.items():
        for record in flow_records:
            per_department[record["dept"]][flow] += 1
            if "bad" not in record:
                valid[record["dept"]][flow] += 1

    # Place names are public: a family name that happens to be one is not worth a false alarm.
    places = {d.commune_name.upper() for d in registry.values()}
    places |= {d.commune_label for d in registry.values()}
    personal = {v for v in gen.personal if v.upper() not in places}

    return GenerationSummary(
        business_date=business_date,
        seed=seed,
        per_flow={flow: len(flow_records) for flow, flow_records in records.items()},
        per_department=per_department,
        valid_per_department=valid,
        bad=bad_records,
        personal_values=personal,
        files=written,
        pdf_bytes=pdf_bytes,
        shapes=shapes,
        warnings=warnings,
        rectifications=rectifications,
    )


def _write_legacy(inbox: Path, records: dict[str, list[dict]], business_date: date) -> tuple[list[str], list[BadRecord], int]:
    """The project's own shapes: one DSGCNAF per file, a GRO CSV, an SGR CSV index beside scans/."""
    day = f"{business_date:%Y%m%d}"
    written: list[str] = []
    bad_records: list[BadRecord] = []

    for n, record in enumerate(records["DSG"], start=1):
        name = f"DSG_{day}_{n:06d}.xml"
        data = dsg_xml(record)
        _write_private(inbox / "DSG" / name, data)
        written.append(f"DSG/{name}")
        if "bad" in record:
            bad_records.append(BadRecord("DSG", name, _line_of(data, record["_field"]), record["bad"]))

    name = f"GRO_{day}.csv"
    if records["GRO"]:
        _write_private(inbox / "GRO" / name, _csv_bytes(GRO_COLUMNS, (r["row"] for r in records["GRO"])))
        written.append(f"GRO/{name}")
        for line, record in enumerate(records["GRO"], start=2):
            if "bad" in record:
                bad_records.append(BadRecord("GRO", name, line, record["bad"]))

    pdf_bytes = 0
    if records["SGR"]:
        scans = Path("scans") / day
        _ensure_dir(inbox / "SGR" / "scans")
        _ensure_dir(inbox / "SGR" / scans)
        index = f"SGR_{day}_index.csv"
        # The scans first, the index last: the index must never name a scan still being written.
        for n, record in enumerate(records["SGR"], start=1):
            relative = (scans / f"{n:06d}.pdf").as_posix()
            record["row"]["FICHIER"] = relative
            if record["pdf"] is not None:
                _write_private(inbox / "SGR" / relative, record["pdf"])
                written.append(f"SGR/{relative}")
                pdf_bytes += len(record["pdf"])
        _write_private(inbox / "SGR" / index, _csv_bytes(SGR_COLUMNS, (r["row"] for r in records["SGR"])))
        written.append(f"SGR/{index}")
        for line, record in enumerate(records["SGR"], start=2):
            if "bad" in record:
                bad_records.append(BadRecord("SGR", index, line, record["bad"]))
    return written, bad_records, pdf_bytes


# --- real shapes: DGE envelopes, Cristal XML, SDP zips --------------------------------------


def _line(element: etree._Element | None) -> int:
    """The line of an element the generator has just written (lxml-stubs leave sourceline untyped)."""
    if element is None:
        raise LookupError("the generator did not write the element it marks")
    return cast(int, element.sourceline)


def _chunks(items: list[dict], size: int) -> list[list[dict]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _leaf(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    """A no-namespace child; a leaf's empty text is kept as <X></X>, as Cristal writes it."""
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


class _RealWriter:
    """Lays the day's records out as the upstream systems do, from its own random stream.

    Everything here (which DSG carries a NIR, which envelope mixes départements, where a
    PDF sits in its zip...) is drawn from `rng`, never from the generator's stream, so that
    the records themselves, and the legacy bytes, do not depend on the real layout.
    """

    def __init__(
        self,
        inbox: Path,
        gen: _Generator,
        rng: random.Random,
        registry: dict[str, Department],
        selected: list[str],
    ):
        self.inbox = inbox
        self.gen = gen
        self.rng = rng
        self.registry = registry
        self.selected = selected
        # Upstream files of the day: written the working day before the business date.
        self.flow_day = working_days_before(gen.business_date, 1)
        self.refdge = rng.randrange(10**7, 5 * 10**7)
        self.written: list[str] = []
        self.bad: list[BadRecord] = []
        self.warnings: list[BadRecord] = []
        self.rectifications: list[BadRecord] = []
        self.pdf_bytes = 0

    # -- records only the real shapes have

    def add_rectifications(self, earlier: _Generator, earlier_dsg: list[dict], dsg: list[dict]) -> None:
        """A few valid declarations of an earlier demo day, again, with one value rectified."""
        rng = self.rng
        candidates = [r for r in earlier_dsg if "bad" not in r]
        if not candidates:
            return
        count = min(len(candidates), RECTIFICATIONS_MAX, max(1, round(len(candidates) * RECTIFICATION_SHARE)))
        for original in rng.sample(candidates, count):
            record = dict(original)
            record["Date"] = self._stamp(self.flow_day)
            record["RectifDPG"] = record["RectifNbEnfANaitre"] = "false"
            if rng.random() < 0.6:
                exam, old = original["_exam"], date.fromisoformat(original["DateDPG"][:10])
                back = rng.choice([d for d in range(6 * 7, 14 * 7 + 1) if exam - timedelta(days=d) != old])
                new = exam - timedelta(days=back)
                record["DateDPG"] = f"{new.isoformat()}{paris_offset(new)}"
                record["RectifDPG"] = "true"
                record["_rectif"] = "RectifDPG"
            else:
                record["NbEnfANaitre"] = "2" if original["NbEnfANaitre"] == "1" else "1"
                record["RectifNbEnfANaitre"] = "true"
                record["_rectif"] = "RectifNbEnfANaitre"
            # The earlier day's person: her values are personal data of this day's inbox too.
            self.gen.remember(*(record[k] for k in ("NomFamille", "NomUsage", "Prenom", "NIR", "Telephone",
                                                    "NomVoie", "DateNai")))
            dsg.insert(rng.randint(0, len(dsg)), record)

    def add_anomaly(self, gro: list[dict]) -> None:
        """One case Cristal flags 'DOSSIER SANS PERSONNES', like the GRO sample: an address, no person."""
        rng = self.rng
        without = [c for c in self.selected if not any(r["dept"] == c for r in gro)]
        dept = self.registry[rng.choice(without or self.selected)]
        while True:
            number = f"{rng.randrange(10**6, 10**7):07d}"
            if (dept.numorg, number) not in self.gen.allocataires:
                self.gen.allocataires.add((dept.numorg, number))
                break
        street = rng.choice(people.STREET_NAMES)
        self.gen.remember(street)
        row = {
            "NUMORG": dept.numorg, "MATRICULE": number + "00000000",
            "DTEMM": (self.flow_day - timedelta(days=rng.randint(30, 3 * 365))).isoformat(),
            "TYPEADR": "D", "ETATADR": "VC", "COMPLIDEADR": "", "COMPLADR": "",
            "NUMVOIE": str(rng.randint(1, 180)), "LIBTYPEVOIE": people.weighted(rng, people.STREET_TYPES),
            "NOMVOIE": street, "LIEUDIST": "", "NUMCOM": dept.commune, "CODEPOS": dept.postcode,
            "NOMCOM": dept.commune_label, "MOTITRANSMDOSPMI": "01", "NBENFCHAPF": "0",
        }  # fmt: skip
        gro.insert(rng.randint(0, len(gro)), {"dept": dept.code, "row": row, "anomaly": ANOMALY_LABEL})

    # -- writing

    def write(self, records: dict[str, list[dict]]) -> None:
        self.write_dsg(records["DSG"])
        self.write_gro(records["GRO"])
        self.write_sgr(records["SGR"])

    def _stamp(self, day: date, hours: tuple[int, int] = (7, 19)) -> str:
        rng = self.rng
        return (
            f"{day.isoformat()}T{rng.randint(*hours):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}{paris_offset(day)}"
        )

    def _store(self, flow: str, name: str, data: bytes) -> None:
        _write_private(self.inbox / flow / name, data)
        self.written.append(f"{flow}/{name}")

    def write_dsg(self, dsg: list[dict]) -> None:
        rng = self.rng
        for record in dsg:
            record["_with_nir"] = record.get("bad") == "NIR_KEY" or rng.random() < DSG_WITH_NIR
            record["_with_phone"] = rng.random() < DSG_WITH_PHONE
        for n, (code, docs) in enumerate(self._dge_envelopes(dsg), start=1):
            name = f"DGESDSGA_{self.flow_day:%Y%m%d}_{n:04d}.xml"
            data = self.dge_envelope(n, self.registry[code], docs)
            self._store("DSG", name, data)
            self._note_dsg_lines(name, code, docs, data)

    def _dge_envelopes(self, dsg: list[dict]) -> list[tuple[str, list[dict]]]:
        """(département named Recepteur, its documents) of each DGE envelope.

        Most envelopes carry one département's declarations; a few, like DGE's daily
        diffusion to the CNAF, several (one of them at least three when there are)."""
        rng = self.rng
        present = [c for c in self.selected if any(r["dept"] == c for r in dsg)]
        mixed: list[dict] = []
        if len(present) >= 2:
            for code in sorted(rng.sample(present, min(3, len(present)))):
                mixed.append(next(r for r in dsg if r["dept"] == code))
        chosen = {id(r) for r in mixed}
        by_dept: dict[str, list[dict]] = {c: [] for c in self.selected}
        for record in dsg:
            if id(record) in chosen:
                continue
            if len(present) >= 2 and rng.random() < DSG_MIXED_SHARE:
                mixed.append(record)
            else:
                by_dept[record["dept"]].append(record)
        envelopes = [(code, chunk) for code in self.selected for chunk in _chunks(by_dept[code], DGE_MAX_DOCUMENTS)]
        envelopes += [(chunk[0]["dept"], chunk) for chunk in _chunks(mixed, DGE_MAX_DOCUMENTS)]
        return envelopes

    def _note_dsg_lines(self, name: str, code: str, docs: list[dict], data: bytes) -> None:
        """Where, in the written envelope, each planted fault, warning and rectification stands."""
        documents = etree.fromstring(data, _SAFE_PARSER).findall(f"{{{NS_DGE}}}Document")
        for record, document in zip(docs, documents, strict=True):
            def line(tag: str, document: etree._Element = document) -> int:
                prefix, local = tag.split(":")
                return _line(document.find(f".//{{{_NSMAP[prefix]}}}{local}"))

            if "bad" in record:
                self.bad.append(BadRecord("DSG", name, line(record["_field"]), record["bad"]))
            if record["dept"] != code:
                self.warnings.append(BadRecord("DSG", name, line("beneficiaire:CodeInsee"), WARNING_RECEPTEUR))
            if "_rectif" in record:
                self.rectifications.append(
                    BadRecord("DSG", name, line(f"dsgcnaf:{record['_rectif']}"), record["_rectif"])
                )

    def dge_envelope(self, n: int, recepteur: Department, docs: list[dict]) -> bytes:
        """An Agregat of profile SORTIEDGE, element for element as the DGE sample."""
        rng = self.rng
        # Diffused in the evening, after the day's last declaration.
        diffused = (
            f"{self.flow_day.isoformat()}T20:{rng.randint(15, 59):02d}:{rng.randint(0, 59):02d}."
            f"{rng.randint(0, 999):03d}{paris_offset(self.flow_day)}"
        )
        root = etree.Element("Agregat", nsmap={"ns2": NS_SNGI, "ns3": NS_DGE})
        entete = _el(root, NS_DGE, "Entete", Profil_Version="01.02", PGMD_Profil="SORTIEDGE")
        _el(entete, NS_DGE, "Identification", f"CNAF.DGESDSGA.D{self.flow_day:%Y%m%d}.{n:04d}")
        _el(entete, NS_DGE, "Temps", diffused)
        _el(entete, NS_DGE, "RefService", "M0002E001")
        _el(entete, NS_DGE, "VersionService", DGE_VERSION)
        _el(entete, NS_DGE, "NbDoc", str(len(docs)))
        sender = _el(entete, NS_DGE, "Emetteur")
        _el(sender, NS_DGE, "Identite", DGE_EMETTEUR_RFO, R="RFO")
        _el(sender, NS_DGE, "Qualite", "OPDGE")
        receiver = _el(entete, NS_DGE, "Recepteur")
        _el(receiver, NS_DGE, "Identite", recepteur.siret, R="SIRET")
        _el(receiver, NS_DGE, "Qualite", f"CGD{recepteur.code}")
        for record in docs:
            document = _el(root, NS_DGE, "Document")
            mindex = _el(document, NS_DGE, "Mindex")
            _el(mindex, NS_DGE, "Profil", "DSGCNAF")
            _el(mindex, NS_DGE, "Identification", record["Identification"])
            _el(mindex, NS_DGE, "Temps", record["Date"])
            self.refdge += 1
            _el(mindex, NS_DGE, "RefDGE", f"DGEM{self.refdge:08d}")
            _el(mindex, NS_DGE, "VersionService", DGE_VERSION)
            producer = _el(mindex, NS_DGE, "Producteur")
            # The CPAM that received the declaration: an RFO-shaped code of its département.
            _el(producer, NS_DGE, "Identite", f"0{self.registry[record['dept']].numorg}0021", R="RFO")
            trace = _el(document, NS_DGE, "Trace")
            _el(trace, NS_DGE, "Activite", "DIFFUSION")
            _el(trace, NS_DGE, "Temps", diffused)
            sent = _el(trace, NS_DGE, "Transmis")
            _el(sent, NS_DGE, "Identite", DGE_TRANSMIS_RFO, R="RFO")
            _el(sent, NS_DGE, "LibOrganisme", "CNAF")
            _el(sent, NS_DGE, "Echeance", DGE_ECHEANCE)
            _el(sent, NS_DGE, "VersionService", DGE_VERSION)
            _dsgcnaf(_el(document, NS_DGE, "Donnee"), record)
        return _XML_UTF8 + etree.tostring(root, encoding="UTF-8", pretty_print=True)

    def _by_caf(self, records: list[dict]) -> list[tuple[Department, list[dict]]]:
        """The records of each selected Caf (NUMORG), in registry order: one upstream file each."""
        out, cafs = [], set()
        for code in self.selected:
            dept = self.registry[code]
            if dept.numorg in cafs:  # one Caf serves two recipients (691: the Rhône and the Métropole)
                continue
            cafs.add(dept.numorg)
            mine = [r for r in records if r["row"]["NUMORG"] == dept.numorg]
            if mine:
                out.append((dept, mine))
        return out

    def _flux_header(self, root: etree._Element, appli: str, typeflux: str, natflux: str, numorg: str,
                     hours: tuple[int, int]) -> None:
        rng = self.rng
        head = _leaf(root, "IdentificationFlux")
        _leaf(head, "APPLIEME", appli)
        _leaf(head, "NUMVERSIONAPPLIEME", CRISTAL_VERSION)
        _leaf(head, "TYPEFLUX", typeflux)
        _leaf(head, "NATFLUX", natflux)
        _leaf(head, "DTCREAFLUX", self.flow_day.isoformat())
        _leaf(head, "HEUCREAFLUX", f"{rng.randint(*hours):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.0000")
        _leaf(head, "DTREF", self.flow_day.isoformat())
        _leaf(head, "FONORG", "CAF")
        _leaf(head, "NUMORG", numorg)

    def write_gro(self, gro: list[dict]) -> None:
        rng = self.rng
        mutations = [r for r in gro if r["row"].get("MOTITRANSMDOSPMI") == "03" and "bad" not in r]
        stale = {id(r) for r in mutations if rng.random() < GRO_STALE_IDEPARTE}
        if mutations and not stale:
            stale.add(id(mutations[0]))
        numorg_dept = {d.numorg: d.code for d in self.registry.values()}
        for dept, cases in self._by_caf(gro):
            for record in cases:
                # A mutation Cristal still addresses to the département she left.
                record["_idepart"] = numorg_dept[record["row"]["NUMORGCED"]] if id(record) in stale else record["dept"]
            name = f"CRI_{dept.numorg}_{self.flow_day:%Y%m%d}.xml"
            data = self._cristal_file(dept, cases)
            self._store("GRO", name, data)
            self._note_gro_lines(name, cases, data)

    def _cristal_file(self, dept: Department, cases: list[dict]) -> bytes:
        """One Caf's GRO file as Cristal writes it."""
        root = etree.Element("Racine")
        self._flux_header(root, "CRI", "H", "G", dept.numorg, (19, 22))
        for record in cases:
            _cristal_case(root, record)
            if "anomaly" in record:  # Cristal's Anomalie follows the case it marks, as in the sample
                _leaf(_leaf(root, "Anomalie"), "LIBANO", record["anomaly"])
        anomalies = [r["anomaly"] for r in cases if "anomaly" in r]
        total = _leaf(root, "TransmissionFlux")
        if len(cases) > len(anomalies):
            _leaf(total, "NBTOTDOSPMITRANSM", str(len(cases) - len(anomalies)))
        if anomalies:
            _leaf(total, "NBTOTDOSPMITRANSMANO", str(len(anomalies)))
        return _XML_UTF8 + etree.tostring(root, encoding="UTF-8", pretty_print=True)

    def _note_gro_lines(self, name: str, cases: list[dict], data: bytes) -> None:
        """Where, in the written file, each planted fault and stale IDEPARTE stands."""
        elements = etree.fromstring(data, _SAFE_PARSER).findall("InfoSuiviGrossessePMI")
        for record, case in zip(cases, elements, strict=True):
            if "bad" in record:
                path = GRO_FAULTY_ELEMENT.get(record["bad"]) or f"DossierPMI/{record['_future']}"
                self.bad.append(BadRecord("GRO", name, _line(case.find(path)), record["bad"]))
            if record["_idepart"] != record["dept"]:
                line = _line(case.find("IdentificationDossier/Partenaire/IDEPARTE"))
                self.warnings.append(BadRecord("GRO", name, line, WARNING_IDEPARTE))

    def write_sgr(self, sgr: list[dict]) -> None:
        zips = self._by_caf(sgr)
        # Like the sample, a lone scan sits at the zip root whatever NOMIMAGED says; at least one does.
        at_root = {id(cases[0]) for _, cases in zips if len(cases) == 1 and cases[0]["pdf"] is not None}
        if not at_root:
            first = next((r for _, cases in zips for r in cases if r["pdf"] is not None), None)
            if first is not None:
                at_root.add(id(first))
        for dept, cases in zips:
            root = etree.Element("Racine", {f"{{{NS_XSI}}}noNamespaceSchemaLocation": "vsgp0101.xsd"},
                                 nsmap={"xsi": NS_XSI})
            self._flux_header(root, "SDP", "J", "P", dept.numorg, (18, 21))
            members: list[tuple[str, bytes]] = []
            for rank, record in enumerate(cases, start=1):
                row = record["row"]
                case = _identified_case(root, row, typeparte="CG", idepart=record["dept"])
                folder = _leaf(case, "DossierPMI")
                _leaf(folder, "NOMIMAGED", f"/{rank:05d}/IMG{rank:05d}.pdf")
                # The scan's own date: the day the paper form was scanned and indexed.
                _leaf(folder, "DTCREASDP", row["DTCREASDP"])
                if record["pdf"] is not None:
                    member = f"IMG{rank:05d}.pdf" if id(record) in at_root else f"{rank:05d}/IMG{rank:05d}.pdf"
                    members.append((member, record["pdf"]))
            _leaf(_leaf(root, "TransmissionFlux"), "NBTOTDOSPMITRANSM", f"{len(cases):05d}")
            index_name = f"CG_{dept.code}_{self.flow_day.isoformat()}_pmiich.xml"
            index = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + cast(bytes, etree.tostring(
                root, encoding="ISO-8859-1", xml_declaration=False, pretty_print=True
            ))
            name = f"SDP_{dept.numorg}_{self.flow_day:%Y%m%d}.zip"
            self._store("SGR", name, self._zip([(index_name, index), *members]))
            self.pdf_bytes += sum(len(data) for _, data in members)
            elements = etree.fromstring(index, _SAFE_PARSER).findall("InfoSuiviGrossessePMI")
            for record, case in zip(cases, elements, strict=True):
                if "bad" in record:
                    self.bad.append(BadRecord("SGR", name, _line(case.find("DossierPMI/NOMIMAGED")), record["bad"]))

    def _zip(self, members: list[tuple[str, bytes]]) -> bytes:
        buffer = io.BytesIO()
        stamp = (self.flow_day.year, self.flow_day.month, self.flow_day.day, 19, 46, 0)
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o600 << 16
                archive.writestr(info, data)
        return buffer.getvalue()


def _dsgcnaf(parent: etree._Element, record: dict) -> etree._Element:
    """One DSGCNAF inside a DGE Donnee; the NIR and phone only where the record carries them."""
    root = etree.SubElement(
        parent, f"{{{NS_DSG}}}DSGCNAF", {"Nature": "DSGCNAF", "Version": "00.03"}, nsmap=_NSMAP
    )
    _el(root, NS_DSG, "Identification", record["Identification"])
    _el(root, NS_DSG, "Date", record["Date"])
    ben = _el(root, NS_DSG, "BENEFICIAIRE")
    for tag in ("NomFamille", "NomUsage", "Prenom"):
        _el(ben, NS_BEN, tag, record[tag])
    if record.get("_with_nir"):
        _el(ben, NS_BEN, "NIR", record["NIR"])
    address = _el(ben, NS_BEN, "Adresse")
    fixed = {"CodePays": "F", "CodeInsee": record["CodeInsee"]}
    for tag in ADDRESS_PARTS:
        _el(address, NS_BEN, tag, fixed.get(tag, record.get(tag, "")))
    if record.get("_with_phone"):
        _el(ben, NS_BEN, "Telephone", record["Telephone"])
    for tag in ("DateNai", "Rang"):
        _el(ben, NS_BEN, tag, record[tag])
    # Only a rectification of an emitted declaration says "true" (add_rectifications).
    rectified = record.get("_rectif", "")
    _mat_and_partner(root, ben, record, "true" if rectified == "RectifDPG" else "false",
                     "true" if rectified == "RectifNbEnfANaitre" else "false")
    return root


def _identified_case(root: etree._Element, row: dict, *, typeparte: str, idepart: str) -> etree._Element:
    """A new InfoSuiviGrossessePMI with its IdentificationDossier, the block Cristal and SDP share."""
    case = _leaf(root, "InfoSuiviGrossessePMI")
    ident = _leaf(case, "IdentificationDossier")
    org = _leaf(ident, "Organisme")
    _leaf(org, "FONORG", "CAF")
    _leaf(org, "NUMORG", row["NUMORG"])
    _leaf(org, "MATRICULE", row["MATRICULE"])
    partner = _leaf(ident, "Partenaire")
    _leaf(partner, "TYPEPARTE", typeparte)
    _leaf(partner, "IDEPARTE", idepart)
    return case


def _cristal_case(root: etree._Element, record: dict) -> None:
    """One InfoSuiviGrossessePMI, in the GRO sample's element order (schemas/gro.xsd)."""
    row = record["row"]
    # Cristal pads TYPEPARTE with spaces, as the GRO sample shows; the scanning chain does not.
    case = _identified_case(root, row, typeparte="CG  ", idepart=record["_idepart"])
    admin = _leaf(case, "DonneesAdministratives")
    if "anomaly" not in record:
        person = _leaf(admin, "Personne")
        for tag in ("QUAL", "NOM", "NOMNAI", "PRENOMS"):
            _leaf(person, tag, row[tag])
        # Cristal's own data holds the NIR; annexe 1 does not let it leave in the GRO flow.
        _leaf(person, "NIR", row["NIR"])
        for tag in ("DTNAI", "TYPEDTNAI", "NOMCOMNAI", "SITUPRO"):
            _leaf(person, tag, row[tag])
    address = _leaf(admin, "Adresse")
    common = _leaf(address, "TroncCommunAdresse")
    _leaf(common, "RGADR", "1")
    _leaf(common, "DTEMM", row["DTEMM"])
    _leaf(common, "PAYS", "FRA")
    _leaf(common, "TYPEADR", row["TYPEADR"])
    _leaf(common, "ETATADR", row["ETATADR"])
    detail = _leaf(address, "AdresseDetailleeFrance")
    for tag in ("COMPLIDEADR", "COMPLADR", "NUMVOIE", "LIBTYPEVOIE", "NOMVOIE", "LIEUDIST", "NUMCOM", "CODEPOS",
                "NOMCOM"):
        value = row[tag]
        if tag == "LIBTYPEVOIE":
            value = people.STREET_TYPE_LABELS.get(value, value)  # Cristal writes the label: AVENUE
        _leaf(detail, tag, value)
    folder = _leaf(case, "DossierPMI")
    _leaf(folder, "MOTITRANSMDOSPMI", row["MOTITRANSMDOSPMI"])
    _leaf(folder, "NBENFCHAPF", row["NBENFCHAPF"])
    dates = {tag: row.get(tag, "") for tag in ("DTDECLGRO", "DTDEBGRO")}
    if record.get("bad") == "DATE_FUTURE":
        # A year typed one too high on the case's first date.
        future = "DTDECLGRO" if dates["DTDECLGRO"] else "DTDEBGRO"
        dates[future] = _years_after(date.fromisoformat(dates[future]), 1).isoformat()
        record["_future"] = future
    for tag, value in dates.items():
        if value:
            _leaf(folder, tag, value)
    if row.get("NUMORGCED"):
        mutation = _leaf(folder, "MutationPrenante")
        _leaf(mutation, "NUMORG", row["NUMORGCED"])
        _leaf(mutation, "MATRICULE", row["MATRICULECED"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a fictitious day of DSG/GRO/SGR input.")
    parser.add_argument("inbox", type=Path)
    parser.add_argument("--date", type=date.fromisoformat, required=True, help="business date, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--departments", default="", help="comma-separated codes (default: all)")
    parser.add_argument("--no-bad", action="store_true", help="no deliberately bad records")
    parser.add_argument("--shapes", choices=SHAPES, default=DEFAULT_SHAPES, help="real (default) or legacy")
    parser.add_argument("--rectify-from", type=date.fromisoformat, default=None,
                        help="an earlier business date generated with the same seed: rectify a few of its DSG")
    args = parser.parse_args(argv)
    codes_wanted = [c for c in args.departments.split(",") if c] or list(load_departments())
    summary = generate_inbox(
        args.inbox, business_date=args.date, departments=codes_wanted, seed=args.seed, bad=not args.no_bad,
        shapes=args.shapes, rectify_from=args.rectify_from,
    )
    # Counts only: the summary's personal values must not reach a terminal or a log.
    print(
        f"{summary.total} records {summary.per_flow}, {len(summary.bad)} deliberately bad, "
        f"{len(summary.files)} files, {summary.pdf_bytes} bytes of scans"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
