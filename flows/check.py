"""Record checks shared by the three flow parsers, and the list of reason codes.

A record that fails a check is refused with a reason code and a message. Both reach the
rejects report and the trace, which operators and the départements' DSI read, so a
message names the field and the rule and NEVER the value: no NIR, name, address, phone
or birth date, not even a fragment (the convention's art. 8 and professional secrecy
cover logs and error messages too). For uniformity, codes that are not personal (a
commune code, a NUMORG) are not quoted either.

Checks raise `Invalid(code, message, field)`; the parser turns the first one raised
into a `Reject` (one reject per record) and uses `field` to point at the right line.
The checks are pure functions, except `check_pdf`, which has to look at the scan.

Decisions worth knowing:
- Text: surrounding spaces are stripped (by the parsers), case is kept. Control
  characters (C0, DEL, C1), invisible format characters (soft hyphen, zero-width and
  bidi controls, BOM), surrogates, private-use characters and line/paragraph separators
  are refused in every field (TEXT_INVALID): they have no place in a name or an
  address, C1 controls in an ISO-8859-1 file betray a cp1252 or UTF-8 producer, and
  bidi controls can disguise a value in the départements' tools.
- Formula prefixes: names, address lines and commune names that start with `=`, `+`,
  `-` or `@` are refused (TEXT_INVALID) rather than escaped. No legitimate name or
  address line starts that way, and such a value, once in a département's CSV, would
  be run as a spreadsheet formula. Tab and CR are already control characters. The
  phone number (which may legitimately start with `+`) has its own shape check
  instead. Output writers should still quote/neutralise cells: this is a first fence.
- NIR: sex digit 1, 2 (a pregnant person may carry a 1: trans men), 3, 4 (foreign-born
  people being registered) and 7, 8 (temporary numbers, NIA) are accepted; 0, 5, 6, 9
  are refused (NIR_FORMAT). Month 01-12, 20-42 and 50-99 are accepted (INSEE codes
  for an unknown or fictitious month); 00, 13-19, 43-49 are refused (NIR_MONTH). The
  birth-year cross-check (NIR_BIRTH_MISMATCH) applies only when the NIR's month is a
  real month (01-12): a fictitious month says the birth date was not known when the
  NIR was built, so its year may be an estimate too. The month is not cross-checked.
- Pregnancy span: the pregnancy start must be strictly before the examination or
  declaration date (DATE_ORDER) and at most MAX_PREGNANCY_DAYS (~10 months) before it
  (DATE_RANGE).
- Age: the person must be 10 to 65 years old (whole years, both included) at the
  examination (DSG) or declaration (GRO; DTRECEP when there is no declaration date).
  A GRO birth date with an unknown day or month is refused only if every possible
  date in its range is out of bounds.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

from stdnum.exceptions import InvalidChecksum, ValidationError
from stdnum.fr import nir as stdnum_nir

from . import codes

# Record-level reasons: the record is refused, the rest of the file goes on.
REASONS: dict[str, str] = {
    "FIELD_MISSING": "a required field or element is absent or empty",
    "FIELD_REPEATED": "an element that must appear once appears several times (XML shapes)",
    "FIELD_TOO_LONG": "a field is longer than its maximum length (MAX_LENGTHS, mirrored by the XSDs' maxLength)",
    "TEXT_INVALID": "a text field holds a control/invisible character or starts like a spreadsheet formula",
    "NIR_FORMAT": "the NIR is not 15 characters of the NIR shape, or its sex digit is not 1, 2, 3, 4, 7 or 8",
    "NIR_KEY": "the NIR's control key does not match its first 13 characters",
    "NIR_MONTH": "the NIR's month is not 01-12, 20-42 or 50-99",
    "NIR_BIRTH_MISMATCH": "the NIR's birth year disagrees with the birth date",
    "DATE_INVALID": "a date is not a valid date of the expected format (or a GRO DTNAI disagrees with TYPEDTNAI)",
    "DATE_FUTURE": "a date that cannot be in the future is after the processing day",
    "DATE_ORDER": "two dates are in the wrong order (pregnancy start after examination, scan before receipt)",
    "DATE_RANGE": "a date is implausibly far from another (pregnancy over ~10 months, age outside 10-65)",
    "CODE_UNKNOWN": "a coded field holds a value outside its code list",
    "VALUE_RANGE": "a number or identifier is outside its allowed range or shape",
    "MATRICULE_SHAPE": "a MATRICULE is not 15 digits",
    "NUMORG_SHAPE": "a NUMORG is not 3 characters naming a real département and a Caf rank",
    "COMMUNE_UNKNOWN": "the INSEE commune code is malformed or belongs to no served département",
    "POSTCODE_SHAPE": "a postal code is not 5 digits",
    "MUTATION_FIELDS": "NUMORGCED/MATRICULECED missing or malformed for a mutation (03), or present otherwise",
    "PATH_TRAVERSAL": "an SGR FICHIER is absolute, has a drive or '..' or backslash, or leaves the batch folder",
    "PDF_MISSING": "an SGR scan does not exist, is a symlink or is not a regular file",
    "PDF_TOO_LARGE": "an SGR scan is larger than limits.max_pdf_bytes",
    "PDF_NOT_PDF": "an SGR scan does not start with %PDF- or has no %%EOF in its last 1024 bytes",
    "PDF_ENCRYPTED": "an SGR zip member holding a scan is encrypted",
    "ZIP_BOMB": "an SGR zip member inflates beyond its bound (size or compression ratio)",
    "ZIP_INVALID": "an SGR zip member cannot be read (corrupt, unsupported compression, a directory)",
}

# Warnings: the record is delivered, but the rejects report carries a row with this code.
WARNINGS: dict[str, str] = {
    "ADDRESSING_MISMATCH": "the upstream file's own addressing (a DGE Recepteur, a case's IDEPARTE) disagrees "
    "with the recipient the record's commune routes to; the record goes where its commune says",
}

# Whole-file reasons (errors.InputFileError.code): the file is quarantined.
FILE_REASONS: dict[str, str] = {
    "EMPTY": "the file is zero bytes long",
    "TOO_LARGE": "the file exceeds limits.max_input_bytes or holds more than limits.max_records_per_file records",
    "ENCODING": "a CSV is not ISO-8859-1: UTF-8/UTF-16 byte-order mark, UTF-8 text, or NUL bytes",
    "CSV_HEADER": "the CSV header is missing, lacks a required column, or has an empty or duplicate column",
    "CSV_SHAPE": "a CSV row has more or fewer fields than the header, or broken quoting",
    "XML_ENCODING": "an XML file is not in its expected encoding (UTF-8; the SDP index may be ISO-8859-1)",
    "XML_DTD": "an XML file carries a DOCTYPE, an entity declaration or an entity reference",
    "XML_MALFORMED": "an XML file is not well-formed XML",
    "XML_ROOT": "an XML file's root is not the flow's (DSG: Agregat or dsgcnaf:DSGCNAF; GRO/SGR index: Racine)",
    "XML_SHAPE": "an XML file's frame is wrong: envelope header, IdentificationFlux, Anomalie placement or count",
    "ZIP_INVALID": "an SGR zip cannot be read as a zip, its index is encrypted or unreadable",
    "ZIP_INDEX": "an SGR zip holds no CG_<dept>_<date>_pmiich.xml index, or more than one",
    "ZIP_BOMB": "an SGR zip has too many members, or its index inflates beyond its bound",
}

MAX_PREGNANCY_DAYS = 305  # ~10 months: beyond that a "pregnancy start" is a typo
MIN_AGE, MAX_AGE = 10, 65
PARIS = ZoneInfo("Europe/Paris")


class Invalid(Exception):
    """A failed check: a reason code, a value-free message, and the field it is about."""

    def __init__(self, code: str, message: str, field: str | None = None):
        assert code in REASONS, code
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.field = code, message, field

    @property
    def failure(self) -> tuple[str, str]:
        return self.code, self.message


# --- text -----------------------------------------------------------------------------

# C0, DEL, C1, soft hyphen, zero-width/bidi/invisible formatting, line/paragraph
# separators, BOM, interlinear annotation, surrogates and private use.
_FORBIDDEN_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\ue000-\uf8ff]"
)
_FORMULA_PREFIXES = ("=", "+", "-", "@")


def check_text(value: str, field: str, *, free_text: bool) -> str:
    """Refuse control/invisible characters anywhere, and formula prefixes in free text."""
    if _FORBIDDEN_CHARS.search(value):
        raise Invalid("TEXT_INVALID", f"{field}: contains a control or invisible character", field)
    if free_text and value.startswith(_FORMULA_PREFIXES):
        raise Invalid("TEXT_INVALID", f"{field}: must not start with =, +, - or @", field)
    return value


def check_texts(values: dict[str, str], free_text: frozenset[str]) -> None:
    """`check_text` over a record's fields, in order, with one regex pass in the common case."""
    if _FORBIDDEN_CHARS.search("".join(values.values())):
        for name, value in values.items():
            check_text(value, name, free_text=False)
    for name, value in values.items():
        if name in free_text and value.startswith(_FORMULA_PREFIXES):
            raise Invalid("TEXT_INVALID", f"{name}: must not start with =, +, - or @", name)


# Maximum lengths (characters) of the free-text and coded fields, per the real formats and
# the AFNOR address lines (38) with room to spare; the XSDs carry the same xs:maxLength.
MAX_LENGTHS: dict[str, int] = {
    # DSG (beneficiaire / partenairesante)
    "Identification": 64,
    "NomFamille": 80,
    "NomUsage": 80,
    "Prenom": 80,
    "Destinataire": 80,
    "PointRemise": 80,
    "Complement": 80,
    "NumeroVoie": 10,
    "IndiceRepetition": 10,
    "TypeVoie": 30,
    "NomVoie": 80,
    "MentionDistribution": 80,
    "CodePostal": 5,
    "Localite": 80,
    "CodePays": 3,
    "CodeInsee": 5,
    "Telephone": 32,
    "PRESTATAIRE/NomFamille": 80,
    "PRESTATAIRE/Prenom": 80,
    "PRESTATAIRE/Numero": 20,
    "PARTENAIRE/Numero": 11,
    # GRO (Cristal)
    "NOM": 80,
    "NOMNAI": 80,
    "PRENOMS": 100,
    "NOMCOMNAI": 80,
    "COMPLIDEADR": 80,
    "COMPLADR": 80,
    "NUMVOIE": 10,
    "LIBTYPEVOIE": 30,
    "NOMVOIE": 80,
    "LIEUDIST": 80,
    "NUMCOM": 5,
    "CODEPOS": 5,
    "NOMCOM": 80,
    "LIBANO": 200,
    # SGR
    "NOMIMAGED": 255,
    "FICHIER": 255,
}
# Anything else a parser reads (dates, codes, numbers) has its own shape check; this
# ceiling stops a megabyte-long value before any other check looks at it.
DEFAULT_MAX_LENGTH = 64


def check_lengths(values: dict[str, str]) -> None:
    """FIELD_TOO_LONG for the first field beyond its maximum length."""
    for name, value in values.items():
        limit = MAX_LENGTHS.get(name, DEFAULT_MAX_LENGTH)
        if len(value) > limit:
            raise Invalid("FIELD_TOO_LONG", f"{name}: longer than {limit} characters", name)


def require(value: str, field: str) -> str:
    if not value:
        raise Invalid("FIELD_MISSING", f"{field}: required, absent or empty", field)
    return value


# --- codes and numbers ----------------------------------------------------------------


def check_code(value: str, allowed: set[str] | dict[str, str], field: str) -> str:
    if value not in allowed:
        raise Invalid("CODE_UNKNOWN", f"{field}: not one of {', '.join(sorted(allowed))}", field)
    return value


_UINT = re.compile(r"[0-9]{1,9}")


def parse_int(value: str, field: str, lo: int, hi: int) -> int:
    # int() would also take signs, underscores and non-ASCII digits: accept ASCII digits only.
    if not _UINT.fullmatch(value):
        raise Invalid("VALUE_RANGE", f"{field}: must be a whole number from {lo} to {hi}", field)
    number = int(value)
    if not lo <= number <= hi:
        raise Invalid("VALUE_RANGE", f"{field}: must be from {lo} to {hi}", field)
    return number


def parse_bool(value: str, field: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise Invalid("CODE_UNKNOWN", f"{field}: must be true or false", field)


def check_matricule(value: str, field: str = "MATRICULE") -> str:
    if not codes.MATRICULE_RE.fullmatch(value):
        raise Invalid("MATRICULE_SHAPE", f"{field}: must be 15 digits", field)
    return value


def check_numorg(value: str, field: str = "NUMORG") -> str:
    if codes.department_of_numorg(value) is None:
        raise Invalid("NUMORG_SHAPE", f"{field}: must be 3 characters, a real département then a rank", field)
    return value


def check_commune(value: str, field: str) -> str:
    """The routing key. Strict (no case folding): the router must see what we saw."""
    if not codes.COMMUNE_RE.fullmatch(value) or not codes.commune_exists(value):
        raise Invalid("COMMUNE_UNKNOWN", f"{field}: not an INSEE commune code of a served département", field)
    return value


def check_postcode(value: str, field: str) -> str:
    """Shape only: a postal code may straddle départements, it never routes."""
    if not codes.POSTCODE_RE.fullmatch(value):
        raise Invalid("POSTCODE_SHAPE", f"{field}: must be 5 digits", field)
    return value


def check_mutation(motif: str, numorg_ced: str, matricule_ced: str) -> None:
    """A mutation prenante names the previous Caf and file; other motifs must not."""
    if motif == "03":
        if not numorg_ced or not matricule_ced:
            raise Invalid("MUTATION_FIELDS", "NUMORGCED and MATRICULECED: required for motif 03", "NUMORGCED")
        if codes.department_of_numorg(numorg_ced) is None:
            raise Invalid("MUTATION_FIELDS", "NUMORGCED: must be a valid NUMORG", "NUMORGCED")
        if not codes.MATRICULE_RE.fullmatch(matricule_ced):
            raise Invalid("MUTATION_FIELDS", "MATRICULECED: must be 15 digits", "MATRICULECED")
    elif numorg_ced or matricule_ced:
        raise Invalid(
            "MUTATION_FIELDS", "NUMORGCED and MATRICULECED: must be empty unless motif is 03", "NUMORGCED"
        )


_PS_ID = {"ADELI": re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}"), "RPPS": re.compile(r"[0-9]{11}")}
_PS_ID_RULE = {"ADELI": "9 characters (2A/2B allowed for Corsica)", "RPPS": "11 digits"}


def check_ps_id(numero: str, kind: str, field: str = "Numero") -> str:
    """The health professional's identifier: ADELI on 9 characters or RPPS on 11 digits."""
    if kind not in codes.PS_ID_TYPES:
        raise Invalid("CODE_UNKNOWN", f"{field}: attribute R must be one of ADELI, RPPS", field)
    if not _PS_ID[kind].fullmatch(numero):
        raise Invalid("VALUE_RANGE", f"{field}: a {kind} number must be {_PS_ID_RULE[kind]}", field)
    return numero


_PHONE = re.compile(r"\+?[0-9][0-9 .]{4,28}[0-9]")


def check_phone(value: str, field: str = "Telephone") -> str:
    if not _PHONE.fullmatch(value):
        raise Invalid("VALUE_RANGE", f"{field}: must be digits (spaces, dots, a leading + allowed)", field)
    return value


_DSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_identifier(value: str, field: str) -> str:
    if not _DSG_ID.fullmatch(value):
        raise Invalid("VALUE_RANGE", f"{field}: must be 1 to 64 letters, digits, '.', '_' or '-'", field)
    return value


# --- NIR ------------------------------------------------------------------------------

_NIR_SHAPE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_NIR_SEX = set("123478")


def _nir_month_ok(month: int) -> bool:
    return 1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99


def check_nir(nir: str, birth: date | None, field: str = "NIR") -> str:
    """Shape, key (stdnum, 2A/2B aware), sex digit, month, and the year against the birth date."""
    # Our own shape first: stdnum.compact would also accept spaces, dots and lower case.
    if not _NIR_SHAPE.fullmatch(nir):
        raise Invalid("NIR_FORMAT", f"{field}: must be 15 characters (digits, 2A/2B for Corsica)", field)
    try:
        stdnum_nir.validate(nir)
    except InvalidChecksum:
        raise Invalid("NIR_KEY", f"{field}: control key does not match", field) from None
    except ValidationError:
        raise Invalid("NIR_FORMAT", f"{field}: not a valid NIR", field) from None
    if nir[0] not in _NIR_SEX:
        raise Invalid("NIR_FORMAT", f"{field}: first digit must be 1, 2, 3, 4, 7 or 8", field)
    month = int(nir[3:5])
    if not _nir_month_ok(month):
        raise Invalid("NIR_MONTH", f"{field}: month must be 01-12, 20-42 or 50-99", field)
    if birth is not None and 1 <= month <= 12 and nir[1:3] != f"{birth.year % 100:02d}":
        raise Invalid("NIR_BIRTH_MISMATCH", f"{field}: birth year disagrees with the birth date", field)
    return nir


# --- dates ----------------------------------------------------------------------------

_CSV_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_XS_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?")
_XS_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if minutes > 59 or hours * 60 + minutes > 14 * 60:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


# No date in these flows is older than this: a year 0001 (a producer's "no date") would start an
# 8-working-day clock that ran out centuries ago, or pass for a birth date.
EARLIEST_DATE = date(1900, 1, 1)


def _plausible(value: date) -> date:
    if value < EARLIEST_DATE:
        raise ValueError
    return value


def parse_date(value: str, field: str) -> date:
    """A CSV date: exactly YYYY-MM-DD, from 1900 on."""
    return _calendar_date(_CSV_DATE.fullmatch(value), field, "a valid date YYYY-MM-DD from 1900 on")


def parse_xs_date(value: str, field: str) -> date:
    """An xs:date, optionally with a timezone offset; the calendar date is what counts."""
    return _calendar_date(_XS_DATE.fullmatch(value), field, "a valid xs:date from 1900 on", offset_group=4)


def _calendar_date(m: re.Match[str] | None, field: str, expected: str, *, offset_group: int | None = None) -> date:
    """The date of a matched (year, month, day) value; DATE_INVALID, saying it must be `expected`,
    when it did not match, is no calendar day, is implausible or has an offset out of range."""
    try:
        if not m:
            raise ValueError
        if offset_group is not None:
            _offset(m[offset_group])
        return _plausible(date(int(m[1]), int(m[2]), int(m[3])))
    except ValueError:
        raise Invalid("DATE_INVALID", f"{field}: must be {expected}", field) from None


def parse_received_datetime(value: str, field: str) -> date:
    """The local (Europe/Paris) date of an xs:dateTime; without an offset it is Paris time."""
    m = _XS_DATETIME.fullmatch(value)
    try:
        if not m:
            raise ValueError
        micro = int((m[7] or ".0")[1:7].ljust(6, "0"))
        tz = _offset(m[8]) or PARIS
        moment = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), micro, tzinfo=tz)
        return _plausible(moment.astimezone(PARIS).date())
    except (ValueError, OverflowError):
        raise Invalid("DATE_INVALID", f"{field}: must be a valid xs:dateTime from 1900 on", field) from None


def not_future(value: date, field: str, today: date) -> date:
    if value > today:
        raise Invalid("DATE_FUTURE", f"{field}: must not be after the processing day", field)
    return value


def parse_gro_birth(value: str, typedtnai: str, field: str = "DTNAI") -> tuple[date, date]:
    """The earliest and latest birth dates a Cristal DTNAI allows, given TYPEDTNAI."""
    m = _CSV_DATE.fullmatch(value)
    try:
        if not m:
            raise ValueError
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        if typedtnai == "N":
            born = date(year, month, day)
            return born, born
        if typedtnai == "J" and day == 0:
            first = date(year, month, 1)
            last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            return first, last
        if typedtnai == "O" and month == 0 and day == 0:
            return date(year, 1, 1), date(year, 12, 31)
        raise ValueError
    except ValueError:
        raise Invalid(
            "DATE_INVALID",
            f"{field}: must be YYYY-MM-DD, with day 00 for TYPEDTNAI J, month and day 00 for O",
            field,
        ) from None


def _age(born: date, at: date) -> int:
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def check_age(earliest: date, latest: date, at: date, field: str, at_field: str) -> None:
    """Refuse only if every birth date in [earliest, latest] gives an age outside 10-65."""
    if _age(earliest, at) < MIN_AGE or _age(latest, at) > MAX_AGE:
        raise Invalid(
            "DATE_RANGE", f"{field}: age at {at_field} must be from {MIN_AGE} to {MAX_AGE} years", field
        )


def check_pregnancy(start: date, ref: date, start_field: str, ref_field: str, *, span: bool = True) -> None:
    """The pregnancy starts before the examination/declaration, and not ~10 months before."""
    if start >= ref:
        raise Invalid("DATE_ORDER", f"{start_field}: must be before {ref_field}", start_field)
    if span and (ref - start).days > MAX_PREGNANCY_DAYS:
        raise Invalid(
            "DATE_RANGE",
            f"{start_field}: must be at most {MAX_PREGNANCY_DAYS} days before {ref_field}",
            start_field,
        )


def check_not_before(later: date, earlier: date, later_field: str, earlier_field: str) -> None:
    if later < earlier:
        raise Invalid("DATE_ORDER", f"{later_field}: must be on or after {earlier_field}", later_field)


# --- SGR scans ------------------------------------------------------------------------

_DRIVE = re.compile(r"[A-Za-z]:")
PDF_HEAD = b"%PDF-"
PDF_TAIL = 1024


def check_pdf(fichier: str, inbox_root: Path, max_bytes: int, field: str = "FICHIER") -> tuple[Path, int]:
    """Resolve an SGR FICHIER inside `inbox_root` and check the scan; return (path, size).

    The index is data from outside: a FICHIER must not make us read (and then send to a
    département) a file outside the claimed batch, so the path is checked lexically and
    again after resolution, and the final component is opened without following links.
    """
    parts = fichier.split("/")
    if (
        not fichier
        or fichier.startswith("/")
        or "\\" in fichier
        or _DRIVE.match(fichier)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise Invalid(
            "PATH_TRAVERSAL",
            f"{field}: must be a relative path with '/' separators and no '.', '..' or empty segment",
            field,
        )
    root = inbox_root.resolve()
    candidate = root.joinpath(*PurePosixPath(fichier).parts)
    # A symlinked directory could lead outside the batch: resolve and check containment.
    if not candidate.resolve().is_relative_to(root):
        raise Invalid("PATH_TRAVERSAL", f"{field}: resolves outside the batch folder", field)
    try:
        info = candidate.lstat()
    except OSError:
        raise Invalid("PDF_MISSING", f"{field}: the scan does not exist", field) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise Invalid("PDF_MISSING", f"{field}: the scan is not a regular file (or is a symlink)", field)
    try:
        fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise Invalid("PDF_MISSING", f"{field}: the scan cannot be opened", field) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Invalid("PDF_MISSING", f"{field}: the scan is not a regular file", field)
        size = info.st_size
        if size > max_bytes:
            raise Invalid("PDF_TOO_LARGE", f"{field}: the scan exceeds {max_bytes} bytes", field)
        head = fh.read(len(PDF_HEAD))
        fh.seek(max(0, size - PDF_TAIL))
        tail = fh.read(PDF_TAIL)
    check_pdf_bytes(head, tail, field)
    return candidate.resolve(), size


def check_pdf_bytes(head: bytes, tail: bytes, field: str) -> None:
    """A scan's first bytes and its last PDF_TAIL bytes: a PDF's header, and its end-of-file mark."""
    if head != PDF_HEAD or b"%%EOF" not in tail:
        raise Invalid("PDF_NOT_PDF", f"{field}: not a PDF (no %PDF- header or no %%EOF trailer)", field)
