"""The DSG output: déclarations simplifiées de grossesse in the DGE envelope of HubEE's DSG.xml.

Root `Agregat` (ns2/ns3 declared as in the sample), one `ns3:Entete` whose NbDoc is the
number of Documents in this part and whose Identification carries the sequence number
(`CNAF.DGESDSGA.<dépt>.<YYYYMMDD>.<seq on 6>`), then one `ns3:Document` per declaration
holding its `dsgcnaf:DSGCNAF`, rebuilt field by field from the record: every annexe-1
datum, including the NIR (after Prenom) and the phone (after Adresse), which the HubEE
sample lacks. An empty NIR or phone is left out rather than written empty, and so is
PRESTATAIRE when the declaration named none (it is optional in the input).

RefDGE is `DGEM` + the sequence number on 4 digits + the Document's rank in the part on
4 digits: unique within a part, and across parts while both stay under 10000 (a longer
number is written in full, so the value stays a valid DGEM + digits).
"""

from __future__ import annotations

from collections.abc import Iterable

from .build_common import BuiltPart, FlowHeader, HubeeUtf8Style, Out, Target, build_xml
from .records import DsgRecord

DGE = "urn:ops:rncps:dge"
SNGI = "urn:cnav:sngi"
DSGCNAF = "urn:cnamts:dsgcnaf"
BENEF = "urn:siram:beneficiaire"
PS = "urn:siram:partenairesante"

# As declared on dsgcnaf:DSGCNAF in the sample.
_DSGCNAF_NSMAP = {"DGE": DGE, "dsgcnaf": DSGCNAF, "beneficiaire": BENEF, "SNGI": SNGI, "partenairesante": PS}

EMETTEUR_RFO = "99640000"
PRODUCTEUR_RFO = "01110021"
TRANSMIS_RFO = "00810011"
ECHEANCE = "FREQ=DAILY;BYHOUR=12;BYMINUTE=15"


def _d(local: str) -> str:
    return f"{{{DGE}}}{local}"


def _c(local: str) -> str:
    return f"{{{DSGCNAF}}}{local}"


def _b(local: str) -> str:
    return f"{{{BENEF}}}{local}"


def _p(local: str) -> str:
    return f"{{{PS}}}{local}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


class DsgLayout(HubeeUtf8Style):
    root_tag = "Agregat"
    root_attrib: dict[str, str] = {}
    root_nsmap = {"ns2": SNGI, "ns3": DGE}

    def __init__(self, header: FlowHeader):
        self.flow_header = header
        self.temps = header.local_created_at.isoformat(timespec="milliseconds")

    def header(self, out: Out, count: int, seq: int) -> None:
        h = self.flow_header
        with out.node(_d("Entete"), {"Profil_Version": "01.02", "PGMD_Profil": "SORTIEDGE"}):
            out.leaf(_d("Identification"), f"CNAF.DGESDSGA.{h.department}.{h.business_date:%Y%m%d}.{seq:06d}")
            out.leaf(_d("Temps"), self.temps)
            out.leaf(_d("RefService"), "M0002E001")
            out.leaf(_d("VersionService"), "01.01")
            out.leaf(_d("NbDoc"), str(count))
            with out.node(_d("Emetteur")):
                out.leaf(_d("Identite"), EMETTEUR_RFO, {"R": "RFO"})
                out.leaf(_d("Qualite"), "OPDGE")
            with out.node(_d("Recepteur")):
                out.leaf(_d("Identite"), h.siret, {"R": "SIRET"})
                out.leaf(_d("Qualite"), f"CGD{h.department}")

    def record(self, out: Out, r: DsgRecord, index: int, seq: int) -> None:
        with out.node(_d("Document")):
            with out.node(_d("Mindex")):
                out.leaf(_d("Profil"), "DSGCNAF")
                out.leaf(_d("Identification"), r.identification)
                out.leaf(_d("Temps"), r.date)
                out.leaf(_d("RefDGE"), f"DGEM{seq:04d}{index:04d}")
                out.leaf(_d("VersionService"), "01.01")
                with out.node(_d("Producteur")):
                    out.leaf(_d("Identite"), PRODUCTEUR_RFO, {"R": "RFO"})
            with out.node(_d("Trace")):
                out.leaf(_d("Activite"), "DIFFUSION")
                out.leaf(_d("Temps"), self.temps)
                with out.node(_d("Transmis")):
                    out.leaf(_d("Identite"), TRANSMIS_RFO, {"R": "RFO"})
                    out.leaf(_d("LibOrganisme"), "CNAF")
                    out.leaf(_d("Echeance"), ECHEANCE)
                    out.leaf(_d("VersionService"), "01.01")
            with out.node(_d("Donnee")):
                self._dsgcnaf(out, r)

    def _dsgcnaf(self, out: Out, r: DsgRecord) -> None:
        a = r.adresse
        with out.node(_c("DSGCNAF"), {"Nature": "DSGCNAF", "Version": "00.03"}, nsmap=_DSGCNAF_NSMAP):
            out.leaf(_c("Identification"), r.identification)
            out.leaf(_c("Date"), r.date)
            with out.node(_c("BENEFICIAIRE")):
                out.leaf(_b("NomFamille"), r.nom_famille)
                out.leaf(_b("NomUsage"), r.nom_usage)
                out.leaf(_b("Prenom"), r.prenom)
                if r.nir:
                    out.leaf(_b("NIR"), r.nir)
                with out.node(_b("Adresse")):
                    out.leaf(_b("Destinataire"), a.destinataire)
                    out.leaf(_b("PointRemise"), a.point_remise)
                    out.leaf(_b("Complement"), a.complement)
                    out.leaf(_b("NumeroVoie"), a.numero_voie)
                    out.leaf(_b("IndiceRepetition"), a.indice_repetition)
                    out.leaf(_b("TypeVoie"), a.type_voie)
                    out.leaf(_b("NomVoie"), a.nom_voie)
                    out.leaf(_b("MentionDistribution"), a.mention_distribution)
                    out.leaf(_b("CodePostal"), a.code_postal)
                    out.leaf(_b("Localite"), a.localite)
                    out.leaf(_b("CodePays"), a.code_pays)
                    out.leaf(_b("CodeInsee"), a.code_insee)
                if r.telephone:
                    out.leaf(_b("Telephone"), r.telephone)
                out.leaf(_b("DateNai"), r.date_nai)
                out.leaf(_b("Rang"), str(r.rang))
                with out.node(_b("MAT")):
                    out.leaf(_b("DateDPG"), r.date_dpg)
                    out.leaf(_c("RectifDPG"), _bool(r.rectif_dpg))
                    out.leaf(_b("NbEnfANaitre"), str(r.nb_enf_a_naitre))
                    out.leaf(_c("RectifNbEnfANaitre"), _bool(r.rectif_nb_enf_a_naitre))
                    out.leaf(_b("DateExamen"), r.date_examen)
            with out.node(_c("PARTENAIRE")):
                out.leaf(_p("Numero"), r.ps_numero, {"R": r.ps_numero_type})
                # Optional in the input: written when the declaration named one.
                if r.ps_numero_am or r.ps_nom or r.ps_prenom:
                    with out.node(_p("PRESTATAIRE")):
                        out.leaf(_p("Numero"), r.ps_numero_am, {"R": "AM"})
                        out.leaf(_p("NomFamille"), r.ps_nom)
                        out.leaf(_p("Prenom"), r.ps_prenom)

    def trailer(self, out: Out, count: int) -> None:
        # The DGE envelope has no trailer: its count is in the Entete.
        return None


def build_dsg(header: FlowHeader, records: Iterable[DsgRecord], target: Target) -> list[BuiltPart]:
    return build_xml(header, DsgLayout(header), records, target)
