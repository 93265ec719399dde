"""A visit's records saved together through the bindings (`save_visit`): one change per
document, all or nothing, and synced to another device."""

import pytest

from mobile_ffi import (
    FfiObservationCode,
    FfiVisit,
    FfiVisitObservation,
    FfiVisitTask,
    NaraError,
)
from support import TODAY, utc_offset_minutes


def test_a_visit_is_saved_as_one_change_per_document_and_syncs(devices):
    anna, bo = devices["anna"], devices["bo"]
    before = anna.pending_count()
    visit = FfiVisit(
        started_ms=None,
        tasks=[FfiVisitTask(task="shower", done=True, reason=None)],
        notes=["Calm, ate well."],
        observations=[
            FfiVisitObservation(code=FfiObservationCode.HEART_RATE, value=72.0, unit="/min")
        ],
        doses=[],
    )
    saved = anna.save_visit("p1", visit, TODAY)
    # Start, task, note, observation, stop: one change to the month's journal.
    assert len(saved.records) == 5
    assert saved.changes == 1
    assert anna.pending_count() == before + 1
    # A visit that cannot be saved whole saves nothing.
    with pytest.raises(NaraError):
        anna.save_visit(
            "p1",
            FfiVisit(started_ms=None, tasks=[], notes=["  "], observations=[], doses=[]),
            TODAY,
        )
    assert anna.pending_count() == before + 1
    assert anna.sync_now().pending == 0
    bo.sync_now()
    notes = [e.body.body for e in bo.overview("p1", TODAY, utc_offset_minutes()).journal if e.body.is_note()]
    assert "Calm, ate well." in notes
