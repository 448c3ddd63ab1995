"""Fictitious French people for the demo inbox: names, NIRs, phones, e-mail addresses.

The demo must look like production data without being anyone's data. The name lists are
small, hand-picked and deliberately carry accents (é, è, ç, ë, ï...) so that a reader that
gets the GRO extract's ISO-8859-1 encoding wrong fails loudly. Every character here must be
encodable in ISO-8859-1 (no œ, no Ÿ). Names that are also common words or place names are
avoided, because the leak tests search outputs and logs for these values.
"""

from __future__ import annotations

import random
from datetime import date

from stdnum.fr import nir as stdnum_nir

# Pregnant women: the beneficiaries of all three flows.
FIRST_NAMES: tuple[str, ...] = (
    "Léa",
    "Chloé",
    "Manon",
    "Inès",
    "Anaïs",
    "Maëlle",
    "Zoé",
    "Hélène",
    "Noémie",
    "Mélanie",
    "Céline",
    "Élodie",
    "Aurélie",
    "Émilie",
    "Gaëlle",
    "Joëlle",
    "Françoise",
    "Sévérine",
    "Stéphanie",
    "Laëtitia",
    "Amélie",
    "Bérénice",
    "Clémence",
    "Cécile",
    "Justine",
    "Pauline",
    "Camille",
    "Sarah",
    "Julie",
    "Laura",
    "Lucie",
    "Margaux",
    "Mathilde",
    "Charlotte",
    "Sophie",
    "Fatoumata",
    "Yasmine",
    "Aïcha",
    "Nadège",
    "Ophélie",
    "Solène",
    "Loïse",
    "Héloïse",
    "Maïwenn",
    "Anne-Sophie",
    "Marie-Hélène",
)

# Birth names and usage names alike.
FAMILY_NAMES: tuple[str, ...] = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "LEFÈVRE",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRÉ",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANÇOIS",
    "MARTINEZ",
    "GUÉRIN",
    "MÉNARD",
    "BÉNARD",
    "LEMAÎTRE",
    "FAURÉ",
    "HÉBERT",
    "GÉRARD",
    "CÔTÉ",
    "BRISSON",
    "PELLETIER",
    "CHEVALIER",
    "GAUTHIER",
    "PERRIN",
    "MORIN",
    "CLÉMENT",
    "ROUSSEL",
    "GARNIER",
    "BOUVIER",
    "LEROUX",
    "RENAUD",
    "BARBIER",
    "KERGOËT",
    "LE GOFFIC",
    "QUÉMÉNER",
    "GONÇALVES",
    "DIALLO",
    "BENSAÏD",
    "NGUYEN",
    "HAMIDOU",
    "ETCHEVERRY",
    "MULLER",
    "SCHNEIDER",
    "BECKER",
    "DESCAMPS",
    "VERHAEGHE",
    "CAZENAVE",
)

# Health professionals who file the DSG: men and women.
PS_FIRST_NAMES: tuple[str, ...] = (
    "Jérôme",
    "François",
    "Stéphane",
    "Frédéric",
    "Hervé",
    "Benoît",
    "Jean-Noël",
    "Thierry",
    "Olivier",
    "Nathalie",
    "Valérie",
    "Isabelle",
    "Véronique",
    "Sandrine",
    "Agnès",
    "Béatrice",
    "Géraldine",
    "Karine",
)

# Street names without a place name in them (a chef-lieu name would false-positive the
# leak tests, and place names are public anyway).
STREET_NAMES: tuple[str, ...] = (
    "DU CLOCHER",
    "DES ÉCOLES",
    "DE LA GARE",
    "DU MOULIN",
    "DES LILAS",
    "PASTEUR",
    "VICTOR HUGO",
    "JEAN JAURÈS",
    "DE L'ÉGLISE",
    "DU CHÂTEAU",
    "DES ÉRABLES",
    "DE LA FONTAINE",
    "DU STADE",
    "DES PRÉS FLEURIS",
    "DE LA RÉPUBLIQUE",
    "DES CERISIERS",
    "DES TILLEULS",
    "DU GÉNÉRAL LECLERC",
    "GAMBETTA",
    "DES ACACIAS",
    "DU PRESSOIR",
    "DES MÛRIERS",
    "DE LA FORÊT",
    "DES GLYCINES",
    "ÉMILE ZOLA",
    "DES PEUPLIERS",
    "DU VERGER",
    "DES ALOUETTES",
    "DE LA CÔTE",
    "DES HIRONDELLES",
)

# (type de voie, weight): the Cristal and DSG abbreviations.
STREET_TYPES: tuple[tuple[str, int], ...] = (
    ("RUE", 55),
    ("AV", 12),
    ("BD", 6),
    ("CHE", 6),
    ("IMP", 6),
    ("ALL", 6),
    ("PL", 4),
    ("RTE", 5),
)

# What Cristal writes in LIBTYPEVOIE for each abbreviation: the label, as in the GRO sample.
STREET_TYPE_LABELS: dict[str, str] = {
    "RUE": "RUE",
    "AV": "AVENUE",
    "BD": "BOULEVARD",
    "CHE": "CHEMIN",
    "IMP": "IMPASSE",
    "ALL": "ALLEE",
    "PL": "PLACE",
    "RTE": "ROUTE",
}

# RFC 2606 reserved domains: the fictitious addresses can never reach a real mailbox.
MAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.fr", "example.org", "example.net")

_ASCII = str.maketrans(
    "ÀÂÄÇÉÈÊËÎÏÔÖÙÛÜàâäçéèêëîïôöùûü",
    "AAACEEEEIIOOUUUaaaceeeeiioouuu",
)


def ascii_fold(text: str) -> str:
    """Drop the accents (e-mail local parts and postal commune labels carry none)."""
    return text.translate(_ASCII)


def nir_key(first13: str) -> str:
    """The NIR control key: 97 - (first 13 digits mod 97), with Corsica's 2A -> 19, 2B -> 18."""
    digits = first13.replace("2A", "19", 1) if first13[5:7] == "2A" else first13
    digits = digits.replace("2B", "18", 1) if first13[5:7] == "2B" else digits
    return f"{97 - int(digits) % 97:02d}"


def make_nir(rng: random.Random, birth: date, birth_commune: str) -> str:
    """A valid NIR for a woman (sex 2) born on `birth` in the INSEE commune `birth_commune`.

    The 5 characters after the year and month are the birth commune's INSEE code as is:
    2 + 3 in metropolitan France and Corsica (35 238, 2A 004), 3 + 2 overseas (974 11).
    """
    if len(birth_commune) != 5:
        raise ValueError("an INSEE commune code has 5 characters")
    first13 = f"2{birth.year % 100:02d}{birth.month:02d}{birth_commune}{rng.randint(1, 999):03d}"
    nir = first13 + nir_key(first13)
    # Guard against a slip in the key computation: stdnum is the independent reference.
    if not stdnum_nir.is_valid(nir):
        raise AssertionError("generated NIR failed stdnum validation")
    return nir


def bad_key_nir(nir: str) -> str:
    """The same NIR with a wrong control key (a typing slip on the declaration)."""
    good = int(nir[13:])
    return nir[:13] + f"{good % 97 + 1:02d}"


def make_phone(rng: random.Random) -> str:
    """A French mobile number: 06 or 07 followed by 8 digits."""
    return f"0{rng.choice('67')}{rng.randrange(10**8):08d}"


def make_email(rng: random.Random, first: str, family: str) -> str:
    local = ascii_fold(f"{first}.{family}").lower().replace(" ", "").replace("'", "")
    return f"{local}{rng.randint(1, 99)}@{rng.choice(MAIL_DOMAINS)}"


def weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    """One value of a (value, weight) table: a tuple, so the order never depends on hashing."""
    values = [value for value, _ in choices]
    weights = [weight for _, weight in choices]
    return rng.choices(values, weights)[0]
