"""The GRO output: Cristal case data for a département's PMI, shaped like HubEE's GRO.xml.

UTF-8, no namespace, root `Racine`: IdentificationFlux (APPLIEME CRI, TYPEFLUX H,
NATFLUX G, our NUMSEQFLUX), one InfoSuiviGrossessePMI per case, then TransmissionFlux
with the count. There is no `Anomalie`: every record that reaches a builder has passed
the checks, so none is incomplete. There is no NIR either: annexe 1 does not let it leave
in this flow, GroRecord does not hold one, and gro.xsd refuses the element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .build import (
    BuiltPart,
    FlowHeader,
    Out,
    build_xml,
    cristal_identification_dossier,
    cristal_identification_flux,
)
from .records import GroRecord

# As Cristal pads it in the HubEE sample.
TYPEPARTE = "CG  "


class GroLayout:
    encoding = "UTF-8"
    declaration = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    indent = "    "
    root_tag = "Racine"
    root_attrib: dict[str, str] = {}
    root_nsmap = None

    def __init__(self, header: FlowHeader):
        self.flow_header = header

    def header(self, out: Out, count: int, seq: int) -> None:
        cristal_identification_flux(out, self.flow_header, applieme="CRI", typeflux="H", natflux="G", seq=seq)

    def record(self, out: Out, r: GroRecord, index: int, seq: int) -> None:
        with out.node("InfoSuiviGrossessePMI"):
            cristal_identification_dossier(
                out,
                numorg=r.numorg,
                matricule=r.matricule,
                department=self.flow_header.department,
                typeparte=TYPEPARTE,
            )
            with out.node("DonneesAdministratives"):
                with out.node("Personne"):
                    out.leaf("QUAL", r.qual)
                    out.leaf("NOM", r.nom)
                    out.leaf("NOMNAI", r.nomnai)
                    out.leaf("PRENOMS", r.prenoms)
                    out.leaf("DTNAI", r.dtnai)
                    out.leaf("TYPEDTNAI", r.typedtnai)
                    out.leaf("NOMCOMNAI", r.nomcomnai)
                    out.leaf("SITUPRO", r.situpro)
                with out.node("Adresse"):
                    with out.node("TroncCommunAdresse"):
                        out.leaf("RGADR", "1")
                        out.leaf("DTEMM", r.dtemm.isoformat())
                        out.leaf("PAYS", "FRA")
                        out.leaf("TYPEADR", r.typeadr)
                        out.leaf("ETATADR", r.etatadr)
                    with out.node("AdresseDetailleeFrance"):
                        out.leaf("COMPLIDEADR", r.compl_ide_adr)
                        out.leaf("COMPLADR", r.compl_adr)
                        out.leaf("NUMVOIE", r.num_voie)
                        out.leaf("LIBTYPEVOIE", r.lib_type_voie)
                        out.leaf("NOMVOIE", r.nom_voie)
                        out.leaf("LIEUDIST", r.lieu_dist)
                        out.leaf("NUMCOM", r.num_com)
                        out.leaf("CODEPOS", r.code_pos)
                        out.leaf("NOMCOM", r.nom_com)
            with out.node("DossierPMI"):
                out.leaf("MOTITRANSMDOSPMI", r.motif)
                out.leaf("NBENFCHAPF", str(r.nbenfchapf))
                if r.dtdeclgro is not None:
                    out.leaf("DTDECLGRO", r.dtdeclgro.isoformat())
                if r.dtdebgro is not None:
                    out.leaf("DTDEBGRO", r.dtdebgro.isoformat())
                if r.motif == "03":
                    with out.node("MutationPrenante"):
                        out.leaf("NUMORG", r.numorg_ced)
                        out.leaf("MATRICULE", r.matricule_ced)

    def trailer(self, out: Out, count: int) -> None:
        with out.node("TransmissionFlux"):
            out.leaf("NBTOTDOSPMITRANSM", str(count))


def build_gro(
    header: FlowHeader,
    records: Iterable[GroRecord],
    *,
    out_dir: Path,
    max_bytes: int,
    seq_for_part: Callable[[int], int],
) -> list[BuiltPart]:
    return build_xml(
        header, GroLayout(header), records, out_dir=out_dir, max_bytes=max_bytes, seq_for_part=seq_for_part
    )
