"""The SGR output: a zip of scanned first-prenatal-examination forms and their index.

Each part is a zip holding the index `CG_<dépt>_<YYYY-MM-DD>_pmiich.xml` (ISO-8859-1,
deflated, first member, laid out like HubEE's sample: APPLIEME SDP, TYPEFLUX J, NATFLUX
P, our NUMSEQFLUX, NBTOTDOSPMITRANSM on 5 digits) and, for the i-th case of the part,
its scan as `{i:05d}/IMG{i:05d}.pdf`, which the index names `/{i:05d}/IMG{i:05d}.pdf`.
Member names come from the rank alone, never from the source file names (which could carry
a name or a NIR).

A scan from the scanning chain's zip is copied as that zip holds it: the same bytes, under
the same compression (deflated, as in HubEE's sample, or stored), CRC and sizes. The parse
read it through and checked it (flows/parse_sgr_zip.py); inflating it to store it again
would cost the whole chain a third more bytes to sign, encrypt, archive and send. A scan
that came as a file (the CSV index) is stored (PDFs are already compressed).

Scans are streamed into the zip (never read whole into memory) and must still be where,
and the size, the checks saw: a scan that changed since is not shipped. `max_bytes` covers
the PDFs too; the zip's size is bounded from above (index counted uncompressed plus
deflate's worst-case overhead, plus every header and the central directory), so a part
never exceeds it unless it holds a single case that does on its own.

The zip is deterministic: fixed member order and metadata, timestamps from created_at.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Iterable
from typing import Any

from ..core.errors import InputFileError
from .build_common import (
    BuiltPart,
    FlowHeader,
    Out,
    PartWriter,
    Sizer,
    Target,
    cristal_identification_dossier,
    cristal_identification_flux,
    output_name,
    plan_parts,
    write_xml,
)
from .records import SgrRecord

XSI = "http://www.w3.org/2001/XMLSchema-instance"

# Local header (30) + central directory entry (46), each with the name, plus a data
# descriptor (16) that zipfile writes only to an unseekable file: counted anyway.
_MEMBER_OVERHEAD = 30 + 46 + 16
_END_OF_CENTRAL_DIRECTORY = 22
_COPY_CHUNK = 1 << 20


def pdf_member(index: int) -> str:
    return f"{index:05d}/IMG{index:05d}.pdf"


def index_member(header: FlowHeader) -> str:
    return f"CG_{header.department}_{header.business_date:%Y-%m-%d}_pmiich.xml"


def _deflate_slack(size: int) -> int:
    # Deflate's worst case on incompressible input: 5 bytes per 16 KiB stored block, + end.
    return 5 * (size // 16384 + 1) + 8


class SgrIndexLayout:
    encoding = "ISO-8859-1"
    declaration = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n'
    indent = ""  # the sample puts every element on its own line, unindented
    root_tag = "Racine"
    root_attrib = {f"{{{XSI}}}noNamespaceSchemaLocation": "vsgp0101.xsd"}  # as the sample
    root_nsmap = {"xsi": XSI}

    def __init__(self, header: FlowHeader):
        self.flow_header = header

    def header(self, out: Out, count: int, seq: int) -> None:
        cristal_identification_flux(out, self.flow_header, applieme="SDP", typeflux="J", natflux="P", seq=seq)

    def record(self, out: Out, r: SgrRecord, index: int, seq: int) -> None:
        with out.node("InfoSuiviGrossessePMI"):
            cristal_identification_dossier(out, r, department=self.flow_header.department, typeparte="CG")
            with out.node("DossierPMI"):
                out.leaf("NOMIMAGED", "/" + pdf_member(index))
                out.leaf("DTCREASDP", r.dtcreasdp.isoformat())

    def trailer(self, out: Out, count: int) -> None:
        with out.node("TransmissionFlux"):
            out.leaf("NBTOTDOSPMITRANSM", f"{count:05d}")


def _zip_info(name: str, header: FlowHeader, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=header.local_created_at.timetuple()[:6])
    info.compress_type = compress_type
    info.create_system = 3  # Unix, whatever the build host: part of being deterministic
    info.external_attr = (stat.S_IFREG | 0o600) << 16
    return info


def _open_scan(record: SgrRecord):
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.fdopen(os.open(record.pdf, flags), "rb")
    except OSError:
        raise InputFileError(
            record.source.file, record.source.line, "the scan cannot be opened", "PDF_MISSING"
        ) from None


def _changed(record: SgrRecord, when: str) -> InputFileError:
    return InputFileError(record.source.file, record.source.line, f"the scan changed {when}", "PDF_CHANGED")


def _copy_member(record: SgrRecord, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Add the scan's member as the source zip holds it: its bytes, compression, CRC and sizes.

    zipfile has no public call to add bytes it did not compress itself; this is what its own
    `mkdir` does to add a member it writes no data for (Python 3.11 to 3.13), plus the data.
    The archive is a seekable file: the sizes are in the local header, no data descriptor.
    """
    member = record.member
    assert member is not None
    info.compress_type, info.CRC = member.compress_type, member.crc
    info.compress_size, info.file_size = member.compress_size, record.pdf_size
    raw: Any = archive  # zipfile's internals, which its stubs leave out
    with _open_scan(record) as src:
        if os.fstat(src.fileno()).st_size < member.offset + member.compress_size:
            raise _changed(record, "since it was checked")
        src.seek(member.offset)
        with raw._lock:
            raw.fp.seek(raw.start_dir)
            info.header_offset = raw.fp.tell()
            raw._writecheck(info)
            raw._didModify = True
            raw.fp.write(info.FileHeader(False))
            left = member.compress_size
            while left:
                chunk = src.read(min(_COPY_CHUNK, left))
                if not chunk:
                    raise _changed(record, "while it was copied")
                raw.fp.write(chunk)
                left -= len(chunk)
            raw.filelist.append(info)
            raw.NameToInfo[info.filename] = info
            raw.start_dir = raw.fp.tell()


def _copy_scan(record: SgrRecord, dst) -> None:
    with _open_scan(record) as src:
        if os.fstat(src.fileno()).st_size != record.pdf_size:
            raise _changed(record, "since it was checked")
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
        if src.tell() != record.pdf_size:
            raise _changed(record, "while it was copied")


def build_sgr(header: FlowHeader, records: Iterable[SgrRecord], target: Target) -> list[BuiltPart]:
    layout = SgrIndexLayout(header)
    index_name = index_member(header)

    with PartWriter(target.out_dir) as writer, Sizer(layout) as sizer:

        def frame_cost(count: int, seq: int) -> int:
            xml = sizer.frame(count, seq)
            return (
                xml + _deflate_slack(xml) + _MEMBER_OVERHEAD + 2 * len(index_name) + _END_OF_CENTRAL_DIRECTORY
            )

        def record_cost(r: SgrRecord, index: int, seq: int) -> int:
            xml = sizer.record(r, index, seq)
            # Deflate slack for this record's share of the index (>= 5 bytes per 16 KiB).
            return xml + xml // 3000 + 1 + r.stored_size + _MEMBER_OVERHEAD + 2 * len(pdf_member(index))

        def emit(part_no: int, seq: int, batch: list[SgrRecord], planned: int) -> BuiltPart:
            name = output_name(header, seq)
            with writer.create(name) as fobj:
                with zipfile.ZipFile(fobj, "w") as archive:
                    with archive.open(_zip_info(index_name, header, zipfile.ZIP_DEFLATED), "w") as member:
                        write_xml(member, layout, batch, seq, rendered=sizer.rendered)
                    for index, record in enumerate(batch, 1):
                        info = _zip_info(pdf_member(index), header, zipfile.ZIP_STORED)
                        if record.member is not None:
                            _copy_member(record, archive, info)
                            continue
                        with archive.open(info, "w") as member:
                            _copy_scan(record, member)
                written = fobj.tell()
            if written > planned:
                raise RuntimeError(f"{name}: wrote {written} bytes, bound was {planned}")
            return writer.part(writer.out_dir / name, part_no, seq, batch)

        return plan_parts(
            records,
            target,
            frame_cost=frame_cost,
            record_cost=record_cost,
            emit=emit,
        )
