"""A stand-in for a scanned Cerfa: a valid one-page PDF of about 80 KB, without any dependency.

The SGR flow carries scans (one A4 page, ~80 KB each). The demo needs files of that size
and shape so that sizing, hashing, sealing and transport are exercised with realistic
bytes, yet it must not ship a PDF library. This writes the PDF by hand: header, objects,
an xref table with exact byte offsets, trailer, startxref, %%EOF.

The page is one greyscale image (a light "paper" grain with darker text-like bands) drawn
over the whole A4 page, plus a "fictitious document" label. The image stream uses
/FlateDecode with *stored* (level 0) deflate blocks: the size then equals the pixel count,
so a target size is hit within a few hundred bytes, and noise cannot compress away.
Only the given `rng` is used, so the bytes are reproducible.
"""

from __future__ import annotations

import math
import random
import zlib

A4_POINTS = (595, 842)  # width, height in PostScript points

# Everything that is not pixels: header, dictionaries, content stream, xref, trailer.
_OVERHEAD = 1_000

# Byte translation tables that turn uniform noise into grey levels.
_PAPER = bytes(0xE4 + (i % 28) for i in range(256))  # light paper grain, 0xE4..0xFF
_INK = bytes(0x18 + (i % 80) if i % 5 < 2 else 0xE8 + (i % 20) for i in range(256))  # ~40 % ink

_LABEL = "DOCUMENT FICTIF - DEMONSTRATION flux-pmi - Cerfa premier examen m\351dical pr\351natal"


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsiEncoding, with the delimiters escaped."""
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _pixels(rng: random.Random, width: int, height: int) -> bytes:
    raw = bytearray(rng.randbytes(width * height).translate(_PAPER))
    margin = width // 12
    line_height = max(2, height // 140)
    # Text-like bands: a scan is mostly paper with lines of ink, which is what a viewer
    # should show, rather than television snow.
    y = height // 10
    while y < height - height // 12:
        if rng.random() < 0.75:
            end = rng.randint(width // 3, width - margin)
            for row in range(y, min(y + line_height, height)):
                start = row * width + margin
                stop = row * width + end
                raw[start:stop] = rng.randbytes(stop - start).translate(_INK)
        y += line_height * 3
    # A frame, like the border of the printed form.
    dark = bytes([0x30]) * (width - 2 * margin)
    for row in (height // 14, height - height // 14):
        raw[row * width + margin : (row + 1) * width - margin] = dark
    return bytes(raw)


def one_page_pdf(rng: random.Random, target_bytes: int = 80_000) -> bytes:
    """A valid single-page A4 PDF holding one DeviceGray image, about `target_bytes` long."""
    pixels = max(target_bytes - _OVERHEAD, 4_096)
    width = max(32, round(math.sqrt(pixels * A4_POINTS[0] / A4_POINTS[1])))
    # zlib's stored blocks cost 5 bytes each; take them back from the pixel budget.
    height = max(32, (pixels - 5 * (pixels // 16_000 + 2)) // width)
    image = zlib.compress(_pixels(rng, width, height), 0)

    page_w, page_h = A4_POINTS
    content = b"q %d 0 0 %d 0 0 cm /Im1 Do Q\nBT /F1 9 Tf 40 20 Td %s Tj ET\n" % (
        page_w,
        page_h,
        _pdf_string(_LABEL),
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d]"
        b" /Resources << /XObject << /Im1 4 0 R >> /Font << /F1 6 0 R >> /ProcSet [/PDF /Text /ImageB] >>"
        b" /Contents 5 0 R >>" % (page_w, page_h),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (width, height, len(image), image),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]

    # The binary comment line tells transfer tools the file is binary (PDF 1.4, 7.5.2).
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    # Each xref entry is exactly 20 bytes: 10-digit offset, 5-digit generation, type, EOL.
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF" % (len(objects) + 1, xref_at)
    return bytes(out)
