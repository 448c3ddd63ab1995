"""Code lists and identifier shapes shared by the checks, the router and the demo.

Routing is on the INSEE commune code, never on the postal code: about twenty postal
codes straddle two départements, and Corsica's 20xxx postal codes split into 2A and 2B.
A commune routes to whoever runs PMI there (a *recipient*), read from INSEE's official list
(data/communes.tsv, see data/README.md): usually its département, but the Métropole de Lyon
(69M) for its communes. docs/recipients.md gives each choice and its reason.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

# Départements on 3 characters, as IDEPARTE carries them.
DEPARTMENTS: tuple[str, ...] = tuple(
    [f"{n:03d}" for n in range(1, 20)]
    + ["02A", "02B"]
    + [f"{n:03d}" for n in range(21, 96)]
    + ["971", "972", "973", "974", "976"]
)

# The Métropole de Lyon holds the département's powers, PMI included, on its communes
# (loi MAPTAM, 2015): a recipient apart from the Département du Rhône (069).
METROPOLE_DE_LYON = "69M"

# Whoever receives the flows (config/departments.toml): every département, plus 69M.
RECIPIENTS: tuple[str, ...] = tuple(sorted(DEPARTMENTS + (METROPOLE_DE_LYON,)))

COMMUNES_FILE = Path(__file__).with_name("data") / "communes.tsv"

QUAL = {"MME", "MR"}
TYPEDTNAI = {"N", "J", "O"}  # N: known; J: day unknown; O: day and month unknown
TYPEADR = {"D", "P"}  # définitive / provisoire
SITUPRO = {"ACT", "CHO", "ETU", "INA", "AUT"}  # activité, chômage, études, sans activité, autre
MOTIF = {"01": "declaration", "02": "birth-without-declaration", "03": "mutation-prenante"}
PS_ID_TYPES = {"ADELI", "RPPS"}

COMMUNE_RE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
NUMORG_RE = re.compile(r"^(?:\d{3}|20[12])$")
MATRICULE_RE = re.compile(r"^\d{15}$")  # the allocataire number is its first 7 digits
POSTCODE_RE = re.compile(r"^\d{5}$")


def department_of_commune(code: str) -> str | None:
    """The département (3 characters) of an INSEE commune code, or None if it has none.

    Shape only (a birth place in a NIR, a demo address): it says nothing of whether the
    commune exists or who runs PMI there; routing uses recipient_of_commune.

    97x overseas communes take three digits (97411 -> 974); Corsica's 2A/2B are literal.
    """
    code = code.strip().upper()
    if not COMMUNE_RE.match(code):
        return None
    if code.startswith("97"):
        dept = code[:3]
    elif code[:2] in ("2A", "2B"):
        dept = "0" + code[:2]
    else:
        dept = "0" + code[:2]
    return dept if dept in DEPARTMENTS else None


def department_of_numorg(numorg: str) -> str | None:
    """The département a Caf organisation code belongs to (351 -> 035, 201 -> 02A, 974 -> 974)."""
    if not NUMORG_RE.match(numorg):
        return None
    if numorg == "201":
        return "02A"
    if numorg == "202":
        return "02B"
    if numorg.startswith("97"):
        return numorg if numorg in DEPARTMENTS else None
    dept = "0" + numorg[:2]
    return dept if dept in DEPARTMENTS else None


@lru_cache(maxsize=1)
def _communes() -> dict[str, str]:
    """INSEE code -> recipient, read once (about 37,000 lines, a few milliseconds)."""
    out: dict[str, str] = {}
    with COMMUNES_FILE.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or line.startswith("code\t"):
                continue
            code, _, recipient = line.rstrip("\n").partition("\t")
            out[code] = recipient
    return out


def commune_exists(code: str) -> bool:
    """Whether `code` is in INSEE's COG (communes, arrondissements municipaux, communes
    déléguées and associées), as it is written: no case folding, no padding."""
    return code in _communes()


def recipient_of_commune(code: str) -> str | None:
    """The registry code of whoever runs PMI for an INSEE commune (035, 02A, 69M...), or None.

    None means the commune is not in the official list (or has no recipient): its record is
    rejected, never guessed. Routing code calls this, never department_of_commune directly.
    """
    return _communes().get(code)


def recipient_of_idepart(idepart: str) -> str | None:
    """The registry code for an IDEPARTE value (SGR routes on it: its index has no commune).

    IDEPARTE is a département on 3 characters, so "069" goes to the Département du Rhône.
    Whether Cristal and the scanning chain mark the Métropole de Lyon's cases apart is not in
    any sample: "69M" is taken if they send it, and "069" is the Rhône's until the CNAF says
    otherwise (docs/recipients.md, "to be confirmed").
    """
    value = idepart.strip().upper()
    return value if value in RECIPIENTS else None
