//! The medication round: the signing list of a shift, and the flags that depend on the time.
//!
//! A slot's status never claims more than is known. With nothing recorded for it, a slot is
//! *open* until its window (per order, default ±[`DEFAULT_WINDOW_MINUTES`]) closes; after that
//! it is *overdue* only if every other phone that could have recorded it has synced since the
//! window closed, and otherwise *unknown*, naming those phones and when they last synced.
//! Which phones could have recorded it, and when they last synced, is the server's knowledge
//! (its directory), passed in as [`PhoneSync`]; the server raises the overdue flags with the
//! same function ([`timed_flags`]). Pure: the time and the local UTC offset are arguments
//! (slots are local `YYYY-MM-DDTHH:MM`, instants are UTC milliseconds).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{Author, DeviceId, DocKind, DocumentId, RecordId, Timestamp, UserId};
use crate::model::chart::{Chart, Flag, FlagKind, RaisedFlag, SlotStatus};
use crate::model::document::RegisterState;
use crate::model::records::{MedicationOrder, Register, RegisterValue, is_slot};

/// A slot's window either side of its time when the order sets none, in minutes.
pub const DEFAULT_WINDOW_MINUTES: u32 = 60;
/// The widest window an order may set, in minutes.
pub const MAX_WINDOW_MINUTES: u32 = 12 * 60;
/// The longest shift a signing list covers (slots enumerated are bounded by it).
pub const MAX_SHIFT_MS: i64 = 7 * DAY_MS;
/// How far back the server raises overdue flags.
pub const OVERDUE_LOOKBACK_MS: i64 = DAY_MS;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// A phone that could have recorded a person's doses, and when it last synced with the server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PhoneSync {
    pub device: DeviceId,
    pub user: UserId,
    /// `None`: never.
    pub last_synced: Option<Timestamp>,
}

/// A shift: the window of time the list covers, and the local offset from UTC its slots are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Minutes east of UTC (Sweden: 60, in summer 120).
    pub utc_offset_minutes: i32,
}

/// The status of one slot on the signing list (`status` in JSON: `given`, `not-given`,
/// `self-administered`, `possible-double-dose`, `open`, `overdue`, `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RoundStatus {
    Given {
        administration: RecordId,
        by: Author,
    },
    NotGiven {
        administration: RecordId,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: RecordId,
    },
    /// Two or more "given" records for the slot.
    PossibleDoubleDose {
        administrations: Vec<RecordId>,
    },
    /// Nothing recorded, and its window has not closed.
    Open,
    /// Nothing recorded, the window closed, and every phone that could have recorded it has
    /// synced since.
    Overdue,
    /// Nothing recorded here, the window closed, and these phones have not synced since it
    /// closed: one of them may hold a record. Empty: which phones could have recorded it is
    /// not known (the server has not said).
    Unknown {
        phones: Vec<PhoneSync>,
    },
}

/// One due slot of one order.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSlot {
    pub order: RecordId,
    /// The order's current revision (in a conflict: the first candidate).
    pub revision: RecordId,
    pub version: u32,
    pub value: MedicationOrder,
    /// The order is in conflict: a nurse must resolve it before a dose is recorded.
    pub in_conflict: bool,
    /// `YYYY-MM-DDTHH:MM`, local.
    pub slot: String,
    pub due: Timestamp,
    pub window_minutes: u32,
    pub status: RoundStatus,
}

/// Schema rules of an order's window and "when needed" limits (run on every revision).
pub fn check_order(o: &MedicationOrder) -> Result<(), (&'static str, String)> {
    if o.window_minutes.is_some_and(|w| w > MAX_WINDOW_MINUTES) {
        return Err((
            "value/window_minutes",
            format!("at most {MAX_WINDOW_MINUTES}"),
        ));
    }
    if let Some(p) = &o.prn {
        if !o.times.is_empty() {
            return Err(("value/times", "a when-needed order has no times".into()));
        }
        if !(1..=48).contains(&p.max_per_day) {
            return Err(("value/prn/max_per_day", "must be 1 to 48".into()));
        }
        if p.min_interval_minutes > 7 * 24 * 60 {
            return Err(("value/prn/min_interval_minutes", "at most a week".into()));
        }
        if !(1..=7 * 24 * 60).contains(&p.follow_up_minutes) {
            return Err((
                "value/prn/follow_up_minutes",
                "must be 1 minute to a week".into(),
            ));
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The instant of a local slot `YYYY-MM-DDTHH:MM` at `utc_offset_minutes`.
pub fn slot_instant(slot: &str, utc_offset_minutes: i32) -> Option<Timestamp> {
    if !is_slot(slot) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| slot.get(r).and_then(|s| s.parse::<i64>().ok());
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let minutes = days * 24 * 60 + n(11..13)? * 60 + n(14..16)? - i64::from(utc_offset_minutes);
    Some(Timestamp(minutes * MINUTE_MS))
}

/// The local slot (`YYYY-MM-DDTHH:MM`) of an instant at `utc_offset_minutes`.
pub fn local_slot(t: Timestamp, utc_offset_minutes: i32) -> String {
    let minutes = t.0.div_euclid(MINUTE_MS) + i64::from(utc_offset_minutes);
    let (y, m, d) = civil_from_days(minutes.div_euclid(24 * 60));
    let in_day = minutes.rem_euclid(24 * 60);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}", in_day / 60, in_day % 60)
}

/// Every order of the chart by its drug and strength (`Metoprolol 50 mg`; in a conflict, the
/// first candidate's): how people name an order, for sentences about it.
pub fn order_names(chart: &Chart<'_>) -> BTreeMap<RecordId, String> {
    orders(chart)
        .into_iter()
        .filter_map(
            |(id, heads)| match heads.into_iter().next()?.revision.value {
                RegisterValue::Order(o) => Some((id, format!("{} {}", o.drug, o.strength))),
                _ => None,
            },
        )
        .collect()
}

/// Every order of the chart with its current revision(s).
fn orders(chart: &Chart<'_>) -> Vec<(RecordId, Vec<crate::model::RevisionView>)> {
    let Some(meds) = chart.of_kind(DocKind::MedicationRequest).next() else {
        return Vec::new();
    };
    meds.registers()
        .into_iter()
        .filter_map(|r| {
            let Register::Order(id) = &r else {
                return None;
            };
            let heads = match meds.register(&r) {
                RegisterState::Unset => return None,
                RegisterState::Value(v) => vec![v],
                RegisterState::Conflict(c) => c,
            };
            Some((id.clone(), heads))
        })
        .collect()
}

/// The status of one slot given what is recorded, the time and the other phones.
fn status(
    recorded: SlotStatus,
    due: Timestamp,
    window_minutes: u32,
    now: Timestamp,
    phones: Option<&[PhoneSync]>,
) -> RoundStatus {
    match recorded {
        SlotStatus::Given { administration, by } => RoundStatus::Given { administration, by },
        SlotStatus::NotGiven {
            administration,
            reason,
        } => RoundStatus::NotGiven {
            administration,
            reason,
        },
        SlotStatus::SelfAdministered { administration } => {
            RoundStatus::SelfAdministered { administration }
        }
        SlotStatus::PossibleDoubleDose { administrations } => {
            RoundStatus::PossibleDoubleDose { administrations }
        }
        SlotStatus::Open => {
            let closes = Timestamp(due.0 + i64::from(window_minutes) * MINUTE_MS);
            if now <= closes {
                return RoundStatus::Open;
            }
            let Some(phones) = phones else {
                return RoundStatus::Unknown { phones: Vec::new() };
            };
            let behind: Vec<PhoneSync> = phones
                .iter()
                .filter(|p| p.last_synced.is_none_or(|t| t < closes))
                .cloned()
                .collect();
            if behind.is_empty() {
                RoundStatus::Overdue
            } else {
                RoundStatus::Unknown { phones: behind }
            }
        }
    }
}

/// The signing list of `shift`: every due slot (time within the shift) of every scheduled
/// order of the chart, in time order. `phones`: the other phones that could record this
/// person's doses (not the one asking: its own records are in the chart); `None`: not known,
/// so a closed slot with nothing recorded is unknown, never overdue.
pub fn signing_list(
    chart: &Chart<'_>,
    shift: &Shift,
    now: Timestamp,
    phones: Option<&[PhoneSync]>,
) -> Vec<RoundSlot> {
    let to = Timestamp(shift.to.0.min(shift.from.0.saturating_add(MAX_SHIFT_MS)));
    let offset = shift.utc_offset_minutes;
    let first_day = local_slot(shift.from, offset);
    let last_day = local_slot(to, offset);
    let (Some(first), Some(last)) = (
        slot_instant(&format!("{}T00:00", &first_day[..10]), 0),
        slot_instant(&format!("{}T00:00", &last_day[..10]), 0),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (order, heads) in orders(chart) {
        let Some(head) = heads.first() else {
            continue;
        };
        let RegisterValue::Order(value) = &head.revision.value else {
            continue;
        };
        let mut times = BTreeSet::new();
        let (mut start, mut stop) = (value.start.clone(), value.stop.clone());
        for h in &heads {
            if let RegisterValue::Order(o) = &h.revision.value {
                times.extend(o.times.iter().cloned());
                start = start.min(o.start.clone());
                stop = match (stop, &o.stop) {
                    (Some(a), Some(b)) => Some(a.max(b.clone())),
                    _ => None,
                };
            }
        }
        let window = value.window_minutes.unwrap_or(DEFAULT_WINDOW_MINUTES);
        let mut day = first;
        while day <= last {
            let date = &local_slot(day, 0)[..10];
            day = Timestamp(day.0 + DAY_MS);
            if date < start.as_str() || stop.as_deref().is_some_and(|s| date > s) {
                continue;
            }
            for time in &times {
                let slot = format!("{date}T{time}");
                let Some(due) = slot_instant(&slot, offset) else {
                    continue;
                };
                if due < shift.from || due > to {
                    continue;
                }
                let recorded = chart.slot_status(&order, &slot);
                out.push(RoundSlot {
                    order: order.clone(),
                    revision: head.id.clone(),
                    version: head.version,
                    value: value.clone(),
                    in_conflict: heads.len() > 1,
                    status: status(recorded, due, window, now, phones),
                    slot,
                    due,
                    window_minutes: window,
                });
            }
        }
    }
    out.sort_by(|a, b| (a.due, &a.order).cmp(&(b.due, &b.order)));
    out
}

/// The flags that depend on the time: slots overdue in the last [`OVERDUE_LOOKBACK_MS`] (with
/// what `phones` says of the other phones) and "when needed" follow-ups not done in time. The
/// server raises them with its knowledge of every phone; devices show what it raised.
pub fn timed_flags(
    chart: &Chart<'_>,
    now: Timestamp,
    utc_offset_minutes: i32,
    phones: &[PhoneSync],
) -> Vec<Flag> {
    let shift = Shift {
        from: Timestamp(now.0 - OVERDUE_LOOKBACK_MS),
        to: now,
        utc_offset_minutes,
    };
    let mut raised: BTreeMap<String, RaisedFlag> = BTreeMap::new();
    for s in signing_list(chart, &shift, now, Some(phones)) {
        if s.status != RoundStatus::Overdue {
            continue;
        }
        let Ok(month) = s.slot[..7].parse() else {
            continue;
        };
        raised.insert(
            format!("overdue/{}/{}", s.order, s.slot),
            (
                FlagKind::OverdueSlot {
                    order: s.order.clone(),
                    slot: s.slot.clone(),
                },
                DocumentId::administrations(chart.patient(), month),
                [s.revision].into_iter().collect(),
            ),
        );
    }
    raised.extend(crate::model::prn::follow_up_flags(chart, now));
    chart.finish(raised)
}

/// A flag as the server sends it to devices (JSON), and as they keep and show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRecord {
    pub id: String,
    /// `overdue`, `follow-up`, ... (the id's first part).
    pub kind: String,
    pub order: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administration: Option<RecordId>,
    pub document: DocumentId,
    pub evidence: Vec<RecordId>,
    pub open: bool,
}

impl FlagRecord {
    /// Whether the flag is open with the acknowledgements `chart` holds now (a nurse's
    /// acknowledgement made after the server raised it closes it here at once).
    pub fn open_in(&self, chart: &Chart<'_>) -> bool {
        let acks = chart.acknowledgements();
        let covered: BTreeSet<&RecordId> = acks
            .get(&self.id)
            .into_iter()
            .flatten()
            .flat_map(|a| a.covers.iter())
            .collect();
        self.open && !self.evidence.iter().all(|e| covered.contains(e))
    }
}

impl From<&Flag> for FlagRecord {
    fn from(f: &Flag) -> Self {
        let (order, slot, administration) = f.kind.subject();
        Self {
            id: f.id.clone(),
            kind: f.kind.name().to_owned(),
            order,
            slot,
            administration,
            document: f.document.clone(),
            evidence: f.evidence.clone(),
            open: f.open,
        }
    }
}

impl FlagKind {
    /// The kind's name, as the first part of its flag ids.
    pub fn name(&self) -> &'static str {
        match self {
            FlagKind::PossibleDoubleDose { .. } => "double-dose",
            FlagKind::GivenOnSupersededOrder { .. } => "superseded-order",
            FlagKind::SupersededOrderTimeUncertain { .. } => "time-uncertain",
            FlagKind::NoValidDelegation { .. } => "no-delegation",
            FlagKind::PrnLimitExceeded { .. } => "prn-limit",
            FlagKind::OverdueSlot { .. } => "overdue",
            FlagKind::FollowUpOverdue { .. } => "follow-up",
        }
    }

    /// What the flag is about: the order, the slot, the administration.
    pub fn subject(&self) -> (RecordId, Option<String>, Option<RecordId>) {
        match self {
            FlagKind::PossibleDoubleDose { order, slot }
            | FlagKind::OverdueSlot { order, slot } => (order.clone(), Some(slot.clone()), None),
            FlagKind::GivenOnSupersededOrder {
                administration,
                order,
                ..
            }
            | FlagKind::SupersededOrderTimeUncertain {
                administration,
                order,
                ..
            }
            | FlagKind::NoValidDelegation {
                administration,
                order,
            }
            | FlagKind::PrnLimitExceeded {
                administration,
                order,
            }
            | FlagKind::FollowUpOverdue {
                administration,
                order,
            } => (order.clone(), None, Some(administration.clone())),
        }
    }
}

#[cfg(test)]
#[path = "round_tests.rs"]
pub(crate) mod tests;
