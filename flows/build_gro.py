"""The GRO output: Cristal case data for a département's PMI, shaped like HubEE's GRO.xml.

UTF-8, no namespace, root `Racine`: IdentificationFlux (APPLIEME CRI, TYPEFLUX H,
NATFLUX G, our NUMSEQFLUX), one InfoSuiviGrossessePMI per case, then TransmissionFlux
with the count. There is no NIR: annexe 1 does not let it leave in this flow, GroRecord
does not hold one, and gro.xsd refuses the element.

A case that Cristal marked with an Anomalie passes through as the real flow carries it:
the case (without Personne when it had none), then its own `Anomalie` with its LIBANO
texts. When the emission holds any such case, TransmissionFlux also carries
NBTOTDOSPMITRANSMANO, the number of marked cases in the part, written on as many digits as
NBTOTDOSPMITRANSM (so a part's size does not depend on which of its cases are marked,
which the exact part sizing needs); NBTOTDOSPMITRANSM counts every case.
"""

from __future__ import annotations

from collections.abc import Iterable

from .build_common import (
    BuiltPart,
    FlowHeader,
    HubeeUtf8Style,
    Out,
    Target,
    build_xml,
    cristal_identification_dossier,
    cristal_identification_flux,
)
from .records import GroRecord

# As Cristal pads it in the HubEE sample.
TYPEPARTE = "CG  "


class GroLayout(HubeeUtf8Style):
    root_tag = "Racine"
    root_attrib: dict[str, str] = {}
    root_nsmap = None

    def __init__(self, header: FlowHeader, with_anomalies: bool = False):
        self.flow_header = header
        self.with_anomalies = with_anomalies
        self._part_anomalies = 0

    def start_part(self, records) -> None:
        self._part_anomalies = sum(1 for r in records if r.anomalies)

    def header(self, out: Out, count: int, seq: int) -> None:
        cristal_identification_flux(out, self.flow_header, applieme="CRI", typeflux="H", natflux="G", seq=seq)

    def record(self, out: Out, r: GroRecord, index: int, seq: int) -> None:
        with out.node("InfoSuiviGrossessePMI"):
            cristal_identification_dossier(out, r, department=self.flow_header.department, typeparte=TYPEPARTE)
            with out.node("DonneesAdministratives"):
                if r.has_person:
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
        if r.anomalies:
            with out.node("Anomalie"):
                for text in r.anomalies:
                    out.leaf("LIBANO", text)

    def trailer(self, out: Out, count: int) -> None:
        with out.node("TransmissionFlux"):
            out.leaf("NBTOTDOSPMITRANSM", str(count))
            if self.with_anomalies:
                out.leaf("NBTOTDOSPMITRANSMANO", str(self._part_anomalies).zfill(len(str(count))))


def build_gro(header: FlowHeader, records: Iterable[GroRecord], target: Target) -> list[BuiltPart]:
    records = list(records)
    layout = GroLayout(header, with_anomalies=any(r.anomalies for r in records))
    return build_xml(header, layout, records, target)
