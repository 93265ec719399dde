"""The compiled mobile-ffi library, through its generated Python bindings, against a real
`nara-server` started here: enrollment, offline work and sync, a double dose flagged on every
device, a conflict between two nurses and its resolution, and withdrawn access.

Run through run.sh, which builds the library and the server and generates the bindings
(`NARA_SERVER` names the server binary; the bindings are on PYTHONPATH). The tests assert
behaviour, never timings: where something happens in the background (the server polls its
directory every second; listeners are called on a background thread) they wait for it with a
generous deadline.
"""

import json
import time

import pytest

from mobile_ffi import (
    FfiDeviceEvent,
    FfiOrderInput,
    FfiOutcome,
    FfiRole,
    FfiStatus,
    NaraDevice,
    NaraError,
    new_id,
)
from support import (
    TODAY,
    Recorder,
    delegate,
    full_order,
    key_of,
    sync_all,
    utc_offset_minutes,
    wait_for,
)


# ---- enrollment ----


def test_enrollment_pins_the_server_and_knows_the_role(server, devices, homes):
    nina = devices["nina"].enrollment()
    assert nina.user == "nina"
    assert nina.role == FfiRole.NURSE
    pin = server.enrollment("nina").split("#")[1]
    assert nina.pin == f"spki-sha256:{pin}"
    assert devices["nina"].offline_lease_hours() == 72
    assert devices["anna"].enrollment().role == FfiRole.CARER
    assert devices["anna"].status() == FfiStatus.OFFLINE()
    assert devices["anna"].last_in_sync_ms() is None

    # A second enrollment into the same home is refused; the code is not spent...
    link = server.enrollment("anna")
    with pytest.raises(NaraError.AlreadyEnrolled):
        NaraDevice.enroll(str(homes / "anna"), link, key_of(homes / "anna"), None, False)
    # ... a wrong pinned key cannot reach the server ...
    wrong = link.split("#")[0] + "#" + "A" * 43
    with pytest.raises(NaraError.ServerNotTrusted):
        NaraDevice.enroll(str(homes / "anna-2"), wrong, key_of(homes / "anna-2"), None, False)
    # ... no pin at all is refused unless trust on first use is asked for ...
    with pytest.raises(NaraError.ServerNotTrusted):
        NaraDevice.enroll(str(homes / "anna-2"), link.split("#")[0], key_of(homes / "anna-2"), None, False)
    # ... and a used code is the server's refusal.
    NaraDevice.enroll(str(homes / "anna-3"), link, key_of(homes / "anna-3"), None, False)
    with pytest.raises(NaraError.Server) as used:
        NaraDevice.enroll(str(homes / "anna-4"), link, key_of(homes / "anna-4"), None, False)
    assert used.value.status == 400
    # device.json holds nothing secret.
    assert "secret" not in (homes / "anna-3" / "device.json").read_text()

    # A device reopens from its home with its key; an empty home holds none.
    assert NaraDevice.open(str(homes / "nina"), key_of(homes / "nina")).enrollment() == nina
    with pytest.raises(NaraError.NotEnrolled):
        NaraDevice.open(str(homes / "nobody"), key_of(homes / "nobody"))
    # The store is encrypted at rest: a wrong key is a clear error, a short one is refused, and
    # the file shows nothing in clear.
    with pytest.raises(NaraError.WrongKey):
        NaraDevice.open(str(homes / "nina"), b"\x00" * 32)
    with pytest.raises(NaraError.InvalidArgument):
        NaraDevice.open(str(homes / "nina"), b"short")
    raw = (homes / "nina" / "device.db").read_bytes()
    assert b"SQLite format 3" not in raw
    with pytest.raises(NaraError.InvalidArgument):
        devices["anna"].add_note("not a valid id!", "text", TODAY)


# ---- offline work and sync ----


def test_offline_notes_sync_to_the_other_device(devices):
    anna, bo = devices["anna"], devices["bo"]
    statuses, events = Recorder(), Recorder()
    status_sub = bo.subscribe(statuses)
    event_sub = bo.subscribe_events(events)

    # Offline: written and durable, waiting for upload.
    before = anna.pending_count()
    first = anna.add_note("p1", "Slept well.", TODAY)
    anna.add_note("p1", "Ate breakfast.", TODAY)
    assert first.document.startswith("p1/journal/")
    assert anna.pending_count() == before + 2
    assert [e for e in anna.overview("p1", TODAY, utc_offset_minutes()).journal if e.body.is_note()]

    report = anna.sync_now()
    assert report.uploaded >= 2
    assert report.pending == 0 and anna.pending_count() == 0
    assert report.in_sync_at_ms is not None
    assert anna.last_in_sync_ms() == report.in_sync_at_ms
    assert anna.status() == FfiStatus.OFFLINE()  # a one-off sync disconnects when done

    report = bo.sync_now()
    assert report.received >= 2
    assert first.document in report.documents_updated
    notes = {
        (e.author.user, e.body.body)
        for e in bo.overview("p1", TODAY, utc_offset_minutes()).journal
        if e.body.is_note()
    }
    assert {("anna", "Slept well."), ("anna", "Ate breakfast.")} <= notes
    assert "p1" in [p.patient for p in bo.patients()]

    # The listeners heard it: connecting, in sync, and the journal updated.
    wait_for(lambda: any(s.is_in_sync() for s in statuses.seen()), "an in-sync status")
    assert statuses.seen()[0] == FfiStatus.OFFLINE()  # the current status comes first
    # Every change is told, in order, even one over before the listener's thread ran.
    seen = statuses.seen()
    connecting = next(i for i, s in enumerate(seen) if s.is_connecting())
    assert connecting < next(i for i, s in enumerate(seen) if s.is_in_sync())
    wait_for(
        lambda: FfiDeviceEvent.DOCUMENT_UPDATED(document=first.document) in events.seen(),
        "a document-updated event",
    )

    # Cancelled and dropped subscriptions hear nothing more.
    status_sub.cancel()
    del event_sub
    heard = (len(statuses.seen()), len(events.seen()))
    anna.add_note("p1", "Walked to the shop.", TODAY)
    sync_all(anna, bo)
    assert (len(statuses.seen()), len(events.seen())) == heard


def test_background_sync_uploads_a_change_without_being_asked(devices):
    anna, bo = devices["anna"], devices["bo"]
    statuses = Recorder()
    sub = anna.subscribe(statuses)
    watch = anna.start_watch()
    try:
        wait_for(lambda: anna.status().is_in_sync(), "background sync to get in sync")
        anna.add_note("p1", "Written while online.", TODAY)
        wait_for(lambda: anna.pending_count() == 0, "the note to be uploaded")
    finally:
        report = watch.stop()
        sub.cancel()
    assert not watch.is_running()
    assert report is not None and report.uploaded >= 1
    assert watch.stop() is None  # already stopped
    assert anna.status() == FfiStatus.OFFLINE()
    bo.sync_now()
    assert any(
        e.body.is_note() and e.body.body == "Written while online."
        for e in bo.overview("p1", TODAY, utc_offset_minutes()).journal
    )


# ---- a double dose ----


def test_a_double_dose_is_flagged_on_every_device(devices):
    anna, bo, nina = devices["anna"], devices["bo"], devices["nina"]
    order = new_id()
    written = nina.write_order("p1", order, full_order(["08:00", "20:00"]), TODAY)
    assert written.created and written.version == 1
    delegate(nina, "p1", "anna", "bo")
    sync_all(nina, anna, bo)

    # Carers may not write orders.
    with pytest.raises(NaraError.NotPermitted):
        anna.write_order("p1", new_id(), full_order(["09:00"]), TODAY)

    # Both carers give the 08:00 dose, each offline: each sees it given once.
    slot = f"{TODAY}T08:00"
    a = anna.give("p1", order, slot, FfiOutcome.GIVEN, None, False, TODAY)
    b = bo.give("p1", order, slot, FfiOutcome.GIVEN, None, False, TODAY)
    assert a.slot_status.is_given() and b.slot_status.is_given()
    # A second dose on the same device needs `again`.
    with pytest.raises(NaraError.InvalidArgument):
        anna.give("p1", order, slot, FfiOutcome.GIVEN, None, False, TODAY)

    anna.sync_now()
    report = bo.sync_now()
    assert "p1" in [f.patient for f in report.flags_raised]
    sync_all(anna, nina)

    for user in ["anna", "bo", "nina"]:
        flags = [
            f
            for f in devices[user].flags("p1")
            if f.kind == "double-dose" and f.order == order and f.slot == slot
        ]
        assert len(flags) == 1, user
        assert flags[0].open
        assert set(flags[0].evidence) == {a.record, b.record}
    overview = nina.overview("p1", TODAY, utc_offset_minutes())
    assert any(f.order == order for f in overview.open_flags)
    slots = {s.slot: s.status for s in overview.today if s.order == order}
    assert slots[slot].is_possible_double_dose()
    # The evening slot has nothing recorded: open, or past its window overdue or unknown, as
    # the signing list says.
    evening = slots[f"{TODAY}T20:00"]
    assert evening.is_open() or evening.is_overdue() or evening.is_unknown(), evening

    # The nurse acknowledges it; every device sees it closed.
    flag = next(f for f in nina.flags("p1") if f.order == order)
    nina.ack_flag("p1", flag.id, "Spoke with the GP; monitor pulse.", TODAY)
    sync_all(nina, anna)
    closed = next(f for f in anna.flags("p1") if f.id == flag.id)
    assert not closed.open
    assert closed.acknowledgements[0].author.user == "nina"


# ---- a conflict ----


def test_two_nurses_revising_one_order_offline_conflict_until_resolved(devices):
    anna, nina, nils = devices["anna"], devices["nina"], devices["nils"]
    order = new_id()
    nina.write_order("p2", order, full_order(["08:00"]), TODAY)
    delegate(nina, "p2", "anna")
    sync_all(nina, nils)

    nina.write_order("p2", order, FfiOrderInput(dose="2 tablets"), TODAY)
    nils.write_order("p2", order, FfiOrderInput(dose="half a tablet"), TODAY)
    assert nina.conflicts("p2") == [] and nils.conflicts("p2") == []

    nina.sync_now()
    report = nils.sync_now()
    assert report.conflicts_raised
    sync_all(nina, anna)

    for device in [nina, nils, anna]:
        conflicts = device.conflicts("p2")
        assert len(conflicts) == 1
        doses = {c.value.order.dose for c in conflicts[0].candidates}
        assert doses == {"2 tablets", "half a tablet"}
        assert {c.author.user for c in conflicts[0].candidates} == {"nina", "nils"}
    assert any(c.patient == "p2" for c in anna.conflicts(None))

    # Nothing is given on an order in conflict, and a plain revision is refused.
    with pytest.raises(NaraError.InvalidArgument):
        anna.give("p2", order, f"{TODAY}T08:00", FfiOutcome.GIVEN, None, False, TODAY)
    with pytest.raises(NaraError.InvalidArgument):
        nina.write_order("p2", order, FfiOrderInput(dose="1 tablet"), TODAY)

    # A nurse resolves it from one candidate; the conflict is gone everywhere.
    candidates = nina.conflicts("p2")[0].candidates
    chosen = next(c for c in candidates if c.value.order.dose == "2 tablets")
    resolved = nina.resolve_order("p2", order, chosen.revision, FfiOrderInput(), TODAY)
    assert set(resolved.supersedes) == {c.revision for c in candidates}
    assert resolved.value.dose == "2 tablets"
    sync_all(nina, nils, anna)
    for device in [nina, nils, anna]:
        assert device.conflicts("p2") == []
    given = anna.give("p2", order, f"{TODAY}T08:00", FfiOutcome.GIVEN, None, False, TODAY)
    assert given.order_revision == resolved.revision


# ---- withdrawn access ----


def test_unassignment_withdraws_access(server, devices):
    anna, nina = devices["anna"], devices["nina"]
    # The server tells a device to forget the people it sent it something about.
    nina.add_note("p3", "Care plan agreed.", TODAY)
    nina.sync_now()
    anna.add_note("p3", "First visit.", TODAY)
    anna.sync_now()
    assert "p3" in [p.patient for p in anna.patients()]
    assert any(
        e.author.user == "nina" for e in anna.overview("p3", TODAY, utc_offset_minutes()).journal
    )

    events = Recorder()
    sub = anna.subscribe_events(events)
    server.admin("unassign", "--user", "anna", "--patient", "p3")

    # The server picks the change up from its directory within about a second.
    def withdrawn():
        time.sleep(1)
        return "p3" in anna.sync_now().withdrawn

    wait_for(withdrawn, "p3 to be withdrawn")
    wait_for(
        lambda: any(
            e.is_access_withdrawn() and "p3" in e.patients for e in events.seen()
        ),
        "an access-withdrawn event",
    )
    sub.cancel()
    # Still allowed: the people anna cares for.
    assert "p1" not in anna.sync_now().withdrawn


def test_a_withdrawn_person_is_purged_from_the_device(devices):
    # Runs after test_unassignment_withdraws_access: the device uploaded what it had for p3,
    # then forgot p3 (at once, or on the next connection if something was still pending).
    anna = devices["anna"]
    report = anna.sync_now()
    assert report.pending == 0
    assert "p3" not in [p.patient for p in anna.patients()]
    assert anna.pending_count() == 0
