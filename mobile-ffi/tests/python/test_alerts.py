"""Alerts, corrections and handover through the compiled library's Python bindings, against a
real `nara-server`: an allergy recorded on one phone warns on another phone's dose after sync
(and the dose is recorded once confirmed), two nurses revising one allergy offline conflict
until one resolves it, two nurses marking one note entered in error both keep their mark, and a
handover lists what others wrote since the user last viewed the person (a handover or their page).

Run through run.sh (see test_device.py)."""

import pytest

from mobile_ffi import (
    FfiAllergyInput,
    FfiAllergyStatus,
    FfiCriticality,
    FfiOrderInput,
    FfiOutcome,
    FfiResuscitationDecision,
    NaraError,
    new_id,
)
from support import TODAY, delegate, sync_all, utc_offset_minutes


def allergy(substance, criticality, reaction=None):
    return FfiAllergyInput(
        substance=substance,
        criticality=criticality,
        reaction=reaction,
        status=FfiAllergyStatus.ACTIVE,
    )


def penicillin_order():
    return FfiOrderInput(
        drug="Fenoximetylpenicillin",
        strength="1 g",
        dose="1 tablet",
        route="oral",
        times=["08:00", "20:00"],
        start=TODAY,
        stop=None,
        delegated=True,
    )


def test_an_allergy_from_one_phone_warns_a_dose_on_another(devices):
    anna, nina = devices["anna"], devices["nina"]
    order = new_id()
    nina.write_order("p1", order, penicillin_order(), TODAY)
    delegate(nina, "p1", "anna")
    written = nina.record_allergy("p1", None, allergy("Penicillin", FfiCriticality.HIGH, "rash"), False, TODAY)
    assert written.created and written.register == f"allergy/{written.allergy}"
    decision = nina.record_resuscitation(
        "p1", FfiResuscitationDecision.DO_NOT_ATTEMPT, "decided with the family", False, TODAY
    )
    assert decision.register == "resuscitation" and decision.allergy is None
    sync_all(nina, anna)

    warnings = anna.allergy_warnings("p1", "Fenoximetylpenicillin")
    assert [(w.substance, w.criticality) for w in warnings] == [("Penicillin", FfiCriticality.HIGH)]
    slot = f"{TODAY}T08:00"
    pending = anna.pending_count()
    with pytest.raises(NaraError.AllergyWarning) as warned:
        anna.give("p1", order, slot, FfiOutcome.GIVEN, None, False, TODAY)
    assert warned.value.drug == "Fenoximetylpenicillin"
    assert "Penicillin" in warned.value.allergies[0]
    assert anna.pending_count() == pending, "nothing written"
    given = anna.give("p1", order, slot, FfiOutcome.GIVEN, None, False, TODAY, allergy_confirmed=True)
    assert given.slot_status.is_given()
    # A dose not given is never an allergy risk.
    anna.give("p1", order, f"{TODAY}T20:00", FfiOutcome.NOT_GIVEN, "asleep", False, TODAY)

    overview = anna.overview("p1", TODAY, utc_offset_minutes())
    assert overview.display_name == "Person p1", "the name `add-patient --name` gave"
    assert overview.resuscitation.is_value()
    assert len(overview.allergies) == 1


def test_two_nurses_revising_one_allergy_conflict_until_one_resolves(devices):
    anna, nina, nils = devices["anna"], devices["nina"], devices["nils"]
    first = nina.record_allergy("p2", None, allergy("Latex", FfiCriticality.LOW), False, TODAY)
    sync_all(nina, nils)
    nina.record_allergy("p2", None, allergy("Latex", FfiCriticality.HIGH), False, TODAY)
    nils.record_allergy("p2", None, allergy("latex", FfiCriticality.LOW, "hives"), False, TODAY)
    sync_all(nina, nils, nina, anna)
    for device in (nina, nils, anna):
        entry = next(a for a in device.overview("p2", TODAY, utc_offset_minutes()).allergies if a.id == first.allergy)
        assert entry.value.is_conflict() and len(entry.value.candidates) == 2
        values = sorted(c.value.criticality.name for c in entry.value.candidates if c.value.is_allergy())
        assert values == ["HIGH", "LOW"]
    # Not written over without resolve; a carer may not resolve; a nurse does.
    with pytest.raises(NaraError.InvalidArgument):
        nina.record_allergy("p2", first.allergy, allergy("Latex", FfiCriticality.HIGH, "hives"), False, TODAY)
    with pytest.raises(NaraError.NotPermitted):
        anna.record_allergy("p2", first.allergy, allergy("Latex", FfiCriticality.HIGH, "hives"), True, TODAY)
    resolved = nina.record_allergy("p2", first.allergy, allergy("Latex", FfiCriticality.HIGH, "hives"), True, TODAY)
    assert resolved.resolved and len(resolved.supersedes) == 2
    sync_all(nina, anna)
    assert anna.conflicts("p2") == []


def test_two_nurses_marking_one_note_entered_in_error_both_keep_their_mark(devices):
    anna, nina, nils = devices["anna"], devices["nina"], devices["nils"]
    note = anna.add_note("p2", "Signed on the wrong person.", TODAY)
    sync_all(anna, nina, nils)
    nina.correct("p2", note.record, "wrong person", TODAY)
    corrected = nils.correct("p2", note.record, "belongs to p1", TODAY)
    assert corrected.body.is_note() and len(corrected.marks) == 1
    # A second mark on a phone that already holds one is refused (the model's rule).
    with pytest.raises(NaraError.Refused):
        nina.correct("p2", note.record, "again", TODAY)
    sync_all(nina, nils, nina, anna)
    for device in (anna, nina, nils):
        record = device.record("p2", note.record)
        assert record.entered_in_error and len(record.marks) == 2
        entries = [e for e in device.overview("p2", TODAY, utc_offset_minutes()).journal if e.id == note.record]
        assert len(entries) == 1, "shown once"
        assert entries[0].entered_in_error
        assert sorted(m.author.user for m in entries[0].marks) == ["nils", "nina"]


def test_handover_lists_what_others_wrote_since_the_last_one(devices):
    anna, bo, nina = devices["anna"], devices["bo"], devices["nina"]
    sync_all(anna, bo, nina)
    anna.handover("p1", TODAY)
    anna.add_note("p1", "Anna's own note is not news to her.", TODAY)
    bo.add_note("p1", "Fell in the hallway, no injury.", TODAY)
    nina.record_allergy("p1", None, allergy("Ibuprofen", FfiCriticality.LOW), False, TODAY)
    sync_all(bo, nina, anna)
    h = anna.handover("p1", TODAY)
    assert h.since_ms is not None
    assert sorted(i.kind for i in h.items) == ["allergy", "note"]
    note = next(i for i in h.items if i.kind == "note")
    assert note.author.user == "bo" and note.what.body.body == "Fell in the hallway, no injury."
    assert anna.handover("p1", TODAY).items == []
    decision = anna.overview("p1", TODAY, utc_offset_minutes()).resuscitation
    assert decision.revision.value.decision == FfiResuscitationDecision.DO_NOT_ATTEMPT

    # Opening the person's page counts as viewing them: the handover lists only what came after.
    nina.add_note("p1", "Written before the page.", TODAY)
    sync_all(nina, anna)
    anna.overview("p1", TODAY, utc_offset_minutes())
    bo.add_note("p1", "Written after the page.", TODAY)
    sync_all(bo, anna)
    after = anna.handover("p1", TODAY)
    assert [i.what.body.body for i in after.items] == ["Written after the page."], after.items
