"""flows/records.py: records cross processes pickled as (class, field values).

A worker's parse reaches the run this way, and the run's spill reaches a worker's build: every
field of every record class must come back equal, nested records included, and a field added
to a class later must travel too (it would be lost silently if the pickling named fields itself).
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from support.records import RENNES, dsg_record, gro_record, sgr_record

from flux_pmi.flows import records
from flux_pmi.flows.records import Reject, Source, ZipMember


def _samples(tmp_path):
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    yield dsg_record(1, RENNES)
    yield gro_record(2, RENNES)
    yield sgr_record(3, RENNES, pdf)
    yield dataclasses.replace(sgr_record(4, RENNES, pdf), member=ZipMember(30, 1200, 0xDEADBEEF, 8))
    yield Reject("GRO", Source("CRI_351_20261120.xml", 7), "BAD_NIR", "the NIR fails its check key")


def test_every_record_comes_back_equal_with_every_field(tmp_path):
    for record in _samples(tmp_path):
        back = pickle.loads(pickle.dumps(record, protocol=5))
        assert type(back) is type(record) and back == record
        assert [getattr(back, f.name) for f in dataclasses.fields(record)] == [
            getattr(record, f.name) for f in dataclasses.fields(record)]


@pytest.mark.parametrize("cls", [records.Source, records.Reject, records.DsgAddress, records.DsgRecord,
                                 records.GroRecord, records.ZipMember, records.SgrRecord])
def test_each_record_class_pickles_through_its_fields(cls):
    # Its own __reduce__ (one C call for the fields), not the dataclass's field-by-field state.
    assert "__reduce__" in vars(cls)
    assert all(f.init for f in dataclasses.fields(cls))  # rebuilt through the constructor
