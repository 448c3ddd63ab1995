"""The SGR output: a zip of scanned first-prenatal-examination forms and their index.

Each part is a zip holding the index `CG_<dépt>_<YYYY-MM-DD>_pmiich.xml` (ISO-8859-1,
deflated, first member, laid out like HubEE's sample: APPLIEME SDP, TYPEFLUX J, NATFLUX
P, our NUMSEQFLUX, NBTOTDOSPMITRANSM on 5 digits) and, for the i-th case of the part,
its scan stored (PDFs are already compressed) as `{i:05d}/IMG{i:05d}.pdf`, which the
index names `/{i:05d}/IMG{i:05d}.pdf`. Member names come from the rank alone, never
from the source file names (which could carry a name or a NIR).

Scans are streamed into the zip (never read whole into memory) and must still be the
size the checks saw: a scan that changed since is not shipped. `max_bytes` covers the
PDFs too; the zip's size is bounded from above (index counted uncompressed plus
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


def _copy_scan(record: SgrRecord, dst) -> None:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(record.pdf, flags)
    except OSError:
        raise InputFileError(
            record.source.file, record.source.line, "the scan cannot be opened", "PDF_MISSING"
        ) from None
    with os.fdopen(fd, "rb") as src:
        if os.fstat(src.fileno()).st_size != record.pdf_size:
            raise InputFileError(
                record.source.file,
                record.source.line,
                "the scan changed since it was checked",
                "PDF_CHANGED",
            )
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
        if src.tell() != record.pdf_size:
            raise InputFileError(
                record.source.file,
                record.source.line,
                "the scan changed while it was copied",
                "PDF_CHANGED",
            )


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
            return xml + xml // 3000 + 1 + r.pdf_size + _MEMBER_OVERHEAD + 2 * len(pdf_member(index))

        def emit(part_no: int, seq: int, batch: list[SgrRecord], planned: int) -> BuiltPart:
            name = output_name(header, seq)
            with writer.create(name) as fobj:
                with zipfile.ZipFile(fobj, "w") as archive:
                    with archive.open(_zip_info(index_name, header, zipfile.ZIP_DEFLATED), "w") as member:
                        write_xml(member, layout, batch, seq, rendered=sizer.rendered)
                    for index, record in enumerate(batch, 1):
                        info = _zip_info(pdf_member(index), header, zipfile.ZIP_STORED)
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
