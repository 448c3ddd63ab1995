"""Code lists and identifier shapes shared by the checks, the router and the demo.

Routing is on the INSEE commune code, never on the postal code: about twenty postal
codes straddle two départements, and Corsica's 20xxx postal codes split into 2A and 2B.
"""

from __future__ import annotations

import re

# Départements on 3 characters, as IDEPARTE carries them.
DEPARTMENTS: tuple[str, ...] = tuple(
    [f"{n:03d}" for n in range(1, 20)]
    + ["02A", "02B"]
    + [f"{n:03d}" for n in range(21, 96)]
    + ["971", "972", "973", "974", "976"]
)

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


def recipient_of_commune(code: str) -> str | None:
    """The registry code of whoever runs PMI for an INSEE commune (035, 02A, 69M...), or None.

    None means the commune is not in the official list (or has no recipient): its record is
    rejected, never guessed. Routing code calls this, never department_of_commune directly.
    """
    return department_of_commune(code)


def recipient_of_idepart(idepart: str) -> str | None:
    """The registry code for an IDEPARTE value (SGR routes on it: its index has no commune)."""
    value = idepart.strip().upper()
    return value if value in DEPARTMENTS else None
