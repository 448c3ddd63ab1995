"""Record factories shared by the build tests and the receive-side extraction tests.

One seeded record per index, in a place (Caf, commune): each test module passes its place and
overrides only what its own checks are about (accents, special characters, another PS number).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from flux_pmi.flows.records import DsgAddress, DsgRecord, GroRecord, SgrRecord, Source


@dataclass(frozen=True)
class Place:
    numorg: str  # the Caf
    num_com: str  # INSEE commune code
    code_pos: str
    nom_com: str


RENNES = Place("351", "35238", "35000", "RENNES")
AJACCIO = Place("201", "2A004", "20000", "AJACCIO")


def gro_record(i: int, place: Place, **over: Any) -> GroRecord:
    values: dict[str, Any] = dict(
        source=Source("gro.csv", i + 1),
        received=date(2026, 11, 20),
        numorg=place.numorg,
        matricule=f"{1234500 + i:07d}00000000",
        qual="MME",
        nom=f"USAGE{i}",
        nomnai=f"NAISSANCE{i}",
        prenoms=f"PRENOM{i} SECOND",
        dtnai="1992-05-00",
        typedtnai="J",
        nomcomnai=place.nom_com,
        situpro="ACT",
        dtemm=date(2025, 1, 1),
        typeadr="D",
        etatadr="VC",
        compl_ide_adr="",
        compl_adr="BAT B",
        num_voie=str(i + 1),
        lib_type_voie="RUE",
        nom_voie="DE L'ÉGLISE & DU <MARCHÉ>",
        lieu_dist="",
        num_com=place.num_com,
        code_pos=place.code_pos,
        nom_com=place.nom_com,
        dtdeclgro=date(2026, 11, 18),
        dtdebgro=date(2026, 9, 1),
        nbenfchapf=i % 3,
        motif="01",
        numorg_ced="",
        matricule_ced="",
    )
    values.update(over)
    return GroRecord(**values)


def dsg_record(i: int, place: Place, *, address: dict[str, str] | None = None, **over: Any) -> DsgRecord:
    values: dict[str, Any] = dict(
        source=Source(f"dsg-{i:04d}.xml", 1),
        received=date(2026, 11, 20),
        identification=f"08002781800019d8800025051000132{i:04d}",
        date="2026-11-20T08:40:05.000+01:00",
        nom_famille=f"FAMILLE{i}",
        nom_usage=f"USAGE{i}",
        prenom=f"PRENOM{i}",
        nir="290033523804212",
        adresse=DsgAddress(**{
            "destinataire": f"MME DESTINATAIRE{i}", "point_remise": "", "complement": "",
            "numero_voie": str(i + 1), "indice_repetition": "", "type_voie": "RUE", "nom_voie": "DU CLOCHER",
            "mention_distribution": "", "code_postal": place.code_pos, "localite": place.nom_com,
            "code_pays": "F", "code_insee": place.num_com, **(address or {}),
        }),
        telephone="06 01 02 03 04",
        date_nai="1990-03-03",
        rang=1,
        date_dpg="2026-09-03+02:00",
        rectif_dpg=bool(i % 2),
        nb_enf_a_naitre=1,
        rectif_nb_enf_a_naitre=False,
        date_examen="2026-11-19+01:00",
        ps_numero="511019861",
        ps_numero_type="ADELI",
        ps_numero_am="511019861",
        ps_nom="DOCTEUR",
        ps_prenom="JEANNE",
    )
    values.update(over)
    return DsgRecord(**values)


def sgr_record(i: int, place: Place, pdf: Path, **over: Any) -> SgrRecord:
    values: dict[str, Any] = dict(
        source=Source("sgr.csv", i + 1),
        received=date(2026, 11, 19),
        numorg=place.numorg,
        matricule=f"{7381900 + i:07d}00000000",
        num_com=place.num_com,
        dtcreasdp=date(2026, 11, 20),
        pdf=pdf,
        pdf_size=pdf.stat().st_size,
    )
    values.update(over)
    return SgrRecord(**values)
