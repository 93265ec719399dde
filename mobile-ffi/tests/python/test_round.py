"""The medication round through the bindings against a real server (issue 14, part 2): the
signing list with a slot unknown while a phone has not synced and overdue once it has, a dose
refused on the device without a valid delegation, and a "when needed" dose refused past its
limit, given anyway and flagged, with its follow-up."""

import datetime
import time

import pytest

from mobile_ffi import FfiDoseEffect, FfiOrderInput, FfiOutcome, FfiPrnRule, NaraError, new_id
from support import TODAY, days_from_today, delegate, sync_all, utc_offset_minutes

HOUR_MS = 3_600_000


def now_ms():
    return int(time.time() * 1000)


def local(ms):
    """`YYYY-MM-DDTHH:MM`, local, of an instant."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%dT%H:%M")


def scheduled(times):
    return FfiOrderInput(drug="Metoprolol", strength="50 mg", dose="1 tablet", route="oral",
                         times=times, start=days_from_today(-3), stop=None, delegated=True)


def signing_list(device, patient):
    return device.round(patient, now_ms() - 6 * HOUR_MS, now_ms() + HOUR_MS, utc_offset_minutes())


def slot_of(round_, order):
    return next(s for s in round_.slots if s.order == order)


def test_signing_list_is_unknown_until_every_phone_has_synced_then_overdue_and_flagged(devices):
    anna, bo, nina, nils = devices["anna"], devices["bo"], devices["nina"], devices["nils"]
    order = new_id()
    slot = local(now_ms() - 3 * HOUR_MS)  # its window closed two hours ago
    nina.write_order("p1", order, scheduled([slot[11:]]), TODAY)
    delegate(nina, "p1", "anna")
    sync_all(nina, anna)

    # Nothing recorded; Bo's and Nils's phones have never synced: unknown, naming them.
    anna.refresh_round(utc_offset_minutes())
    s = slot_of(signing_list(anna, "p1"), order)
    assert s.slot == slot and s.drug == "Metoprolol"
    assert s.status.is_unknown(), s.status
    assert {p.user for p in s.status.phones} == {"bo", "nils"}
    # Staff by the directory's names (`add-user --name`), sent with the round's answer.
    assert {p.name for p in s.status.phones} == {"Bo", "Nils"}
    assert {m.user: m.name for m in anna.staff()}["nina"] == "Nina"
    assert all(p.last_synced_ms is None for p in s.status.phones)

    # Once they have synced, the slot is overdue, and the server's flag reaches the phone.
    sync_all(bo, nils)
    anna.refresh_round(utc_offset_minutes())
    round_ = signing_list(anna, "p1")
    assert slot_of(round_, order).status.is_overdue()
    assert f"overdue/{order}/{slot}" in [f.id for f in round_.flags if f.open]


def test_a_dose_without_a_valid_delegation_is_refused_on_the_device(devices):
    anna, bo, nina = devices["anna"], devices["bo"], devices["nina"]
    order = new_id()
    nina.write_order("p2", order, scheduled(["08:00"]), TODAY)
    delegate(nina, "p2", "bo")
    sync_all(nina, anna, bo)
    with pytest.raises(NaraError.InvalidArgument) as refused:
        anna.give("p2", order, f"{TODAY}T08:00", FfiOutcome.GIVEN, None, False, TODAY)
    assert "delegation" in str(refused.value)
    given = bo.give("p2", order, f"{TODAY}T08:00", FfiOutcome.GIVEN, None, False, TODAY)
    assert given.slot_status.is_given()
    listed = nina.delegations("p2", 31)
    assert [d.to for d in listed] == ["bo"] and listed[0].by.user == "nina"
    nina.refresh_staff()  # the directory's names alone (what `nara sync` asks for)
    listed = nina.delegations("p2", 31)
    assert listed[0].to_name == "Bo" and listed[0].by.name == "Nina"
    revoked = nina.revoke_delegation("p2", listed[0].delegation, TODAY)
    assert revoked[0].revoked and revoked[0].version == 2


def test_a_when_needed_dose_past_its_limit_is_refused_given_anyway_flagged_and_followed_up(devices):
    anna, nina = devices["anna"], devices["nina"]
    order = new_id()
    prn = FfiOrderInput(drug="Paracetamol", strength="500 mg", dose="2 tablets", route="oral",
                        start=days_from_today(-3), delegated=True,
                        prn=FfiPrnRule(max_per_day=3, min_interval_minutes=240, follow_up_minutes=60))
    written = nina.write_order("p1", order, prn, TODAY)
    assert written.value.prn.max_per_day == 3 and written.value.times == []
    sync_all(nina, anna)
    offset = utc_offset_minutes()

    first = anna.give_when_needed("p1", order, None, offset, TODAY)
    with pytest.raises(NaraError.InvalidArgument) as refused:
        anna.give_when_needed("p1", order, None, offset, TODAY)
    assert "less than 4 h" in str(refused.value)
    anyway = anna.give_when_needed("p1", order, "pain after a fall", offset, TODAY)
    flags = [f for f in anna.flags("p1") if f.kind == "prn-limit"]
    assert [f.evidence for f in flags] == [[anyway.record]]

    follow_ups = {f.administration: f for f in signing_list(anna, "p1").follow_ups}
    assert set(follow_ups) == {first.record, anyway.record}
    f = follow_ups[first.record]
    assert f.due_ms - f.given_at_ms == HOUR_MS and not f.overdue and f.effect is None
    anna.record_effect("p1", first.record, FfiDoseEffect.PARTIAL, "some pain left", TODAY)
    done = next(x for x in signing_list(anna, "p1").follow_ups if x.administration == first.record)
    assert done.effect == FfiDoseEffect.PARTIAL and done.note == "some pain left"

    # The nurse's phone shows the flag after a sync.
    sync_all(anna, nina)
    assert any(f.kind == "prn-limit" and f.open for f in nina.flags("p1"))
