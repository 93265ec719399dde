//! Typed identifiers, authorship and time.
//!
//! Everything here is plain data. Time is always passed in by the caller
//! ([`Timestamp`], milliseconds since the Unix epoch, UTC); nothing in
//! `sync-core`'s model reads a clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::IdError;

/// Milliseconds since the Unix epoch (UTC), as told by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// Longest identifier we accept (patients, users, devices, records).
pub const MAX_ID_LEN: usize = 64;

fn check_token(kind: &'static str, s: &str) -> Result<(), IdError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid {
            kind,
            value: s.chars().take(80).collect(),
        })
    }
}

macro_rules! token_id {
    ($(#[$m:meta])* $name:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and checks an identifier: 1 to 64 characters of `A-Z a-z 0-9 - _ .`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_token($kind, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// A pseudonymous person identifier (never a personnummer).
    PatientId,
    "patient id"
);
token_id!(
    /// A staff member.
    UserId,
    "user id"
);
token_id!(
    /// One enrolled installation of the app. A reinstalled phone is a new device.
    DeviceId,
    "device id"
);
token_id!(
    /// The unique id of a record (revision or event) or entity (order, goal, allergy...).
    /// Callers generate them ([`RecordId::countdown`] in the app and the server's pages);
    /// uniqueness is what makes records merge.
    RecordId,
    "record id"
);

/// The largest instant (ms since 1970) whose record ids still sort before those of every
/// earlier instant: 2^44 ms, the year 2527.
const ID_TIME_SPAN: u64 = 1 << 44;

impl RecordId {
    /// A fresh id for a record written at `now`: 11 hex digits that count down as time goes
    /// on, then the 64 `random` bits (16 hex digits), which alone keep ids unique.
    ///
    /// Why counting down: Automerge 0.12 applies a foreign change to a map by walking every
    /// operation of that map whose key sorts before the change's key (and reading its value),
    /// so a record whose id sorts after the others, or at a random place, costs work that
    /// grows with the document: on a journal of 3,000 records, 1.3 ms a change with such ids
    /// against 85 µs with ids that sort first (release, session 18, BENCHMARKS.md). A month's
    /// journal holds 450 to 1,500 records (`shared/WORKLOAD.md`), and every phone and the
    /// server apply every change of it. A wrong clock only costs that work again: the order
    /// is never read as time. Randomness and time come in (no clock or generator here).
    pub fn countdown(now: Timestamp, random: u64) -> Self {
        let ms = u64::try_from(now.0).unwrap_or(0).min(ID_TIME_SPAN - 1);
        Self(format!("{:011x}{random:016x}", ID_TIME_SPAN - 1 - ms))
    }
}

/// A calendar month, the unit in which journals and administration logs are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: u16,
    month: u8,
}

impl Month {
    pub fn new(year: u16, month: u8) -> Result<Self, IdError> {
        if (2000..=9999).contains(&year) && (1..=12).contains(&month) {
            Ok(Self { year, month })
        } else {
            Err(IdError::Invalid {
                kind: "month",
                value: format!("{year}-{month}"),
            })
        }
    }
    pub fn year(self) -> u16 {
        self.year
    }
    pub fn month(self) -> u8 {
        self.month
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Invalid {
            kind: "month",
            value: s.chars().take(80).collect(),
        };
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let month = m.parse().map_err(|_| bad())?;
        Month::new(year, month).map_err(|_| bad())
    }
}

/// The kinds of document a person's record is split into. Names follow FHIR R4 where one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DocKind {
    /// Patient header: display name and alerts (allergies, resuscitation decision, risks).
    Patient,
    /// The shared care plan (SIP): participants, goals, interventions, responsibility, follow-up.
    CarePlan,
    /// Medication orders (MedicationRequest), each as versioned revisions.
    MedicationRequest,
    /// One month of administrations (MedicationAdministration) and flag acknowledgements.
    MedicationAdministration,
    /// One month of journal: notes, observations, visits, task outcomes.
    Journal,
}

impl DocKind {
    pub const ALL: [DocKind; 5] = [
        DocKind::Patient,
        DocKind::CarePlan,
        DocKind::MedicationRequest,
        DocKind::MedicationAdministration,
        DocKind::Journal,
    ];

    /// Whether documents of this kind are split by month.
    pub fn is_monthly(self) -> bool {
        matches!(self, DocKind::MedicationAdministration | DocKind::Journal)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Patient => "patient",
            DocKind::CarePlan => "careplan",
            DocKind::MedicationRequest => "medication",
            DocKind::MedicationAdministration => "administration",
            DocKind::Journal => "journal",
        }
    }
}

impl FromStr for DocKind {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        DocKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| IdError::Invalid {
                kind: "document kind",
                value: s.chars().take(80).collect(),
            })
    }
}

/// Identifies one Automerge document: a person, a kind and, for monthly kinds, a month.
///
/// Its text form is `patient/kind` or `patient/kind/YYYY-MM`, e.g. `p-17/journal/2026-11`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocumentId {
    patient: PatientId,
    kind: DocKind,
    month: Option<Month>,
}

impl DocumentId {
    pub fn patient_header(patient: &PatientId) -> Self {
        Self::single(patient, DocKind::Patient)
    }
    pub fn care_plan(patient: &PatientId) -> Self {
        Self::single(patient, DocKind::CarePlan)
    }
    pub fn medication(patient: &PatientId) -> Self {
        Self::single(patient, DocKind::MedicationRequest)
    }
    pub fn administrations(patient: &PatientId, month: Month) -> Self {
        Self::monthly(patient, DocKind::MedicationAdministration, month)
    }
    pub fn journal(patient: &PatientId, month: Month) -> Self {
        Self::monthly(patient, DocKind::Journal, month)
    }
    fn single(patient: &PatientId, kind: DocKind) -> Self {
        Self {
            patient: patient.clone(),
            kind,
            month: None,
        }
    }
    fn monthly(patient: &PatientId, kind: DocKind, month: Month) -> Self {
        Self {
            patient: patient.clone(),
            kind,
            month: Some(month),
        }
    }
    pub fn patient(&self) -> &PatientId {
        &self.patient
    }
    pub fn kind(&self) -> DocKind {
        self.kind
    }
    pub fn month(&self) -> Option<Month> {
        self.month
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.month {
            Some(m) => write!(f, "{}/{}/{}", self.patient, self.kind.as_str(), m),
            None => write!(f, "{}/{}", self.patient, self.kind.as_str()),
        }
    }
}

impl FromStr for DocumentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Invalid {
            kind: "document id",
            value: s.chars().take(80).collect(),
        };
        let mut parts = s.split('/');
        let patient = PatientId::new(parts.next().ok_or_else(bad)?)?;
        let kind: DocKind = parts.next().ok_or_else(bad)?.parse()?;
        let month = parts.next().map(str::parse::<Month>).transpose()?;
        if parts.next().is_some() || kind.is_monthly() != month.is_some() {
            return Err(bad());
        }
        Ok(Self {
            patient,
            kind,
            month,
        })
    }
}

impl Serialize for DocumentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a user may do is decided by role (see [`crate::model::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Home-care worker (undersköterska): records administrations, notes, observations, visits.
    Carer,
    /// Municipal or district nurse: also orders, alerts and the plan; resolves conflicts, clears flags.
    Nurse,
    /// Administrator: no clinical content.
    Admin,
    /// The person receiving care, writing in their own record (the web view, "what matters to
    /// me"): their own entries only, never anything of the staff's. The author's user id is
    /// the person's patient id.
    Person,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Carer => "carer",
            Role::Nurse => "nurse",
            Role::Admin => "admin",
            Role::Person => "person",
        }
    }
}

impl FromStr for Role {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s {
            "carer" => Ok(Role::Carer),
            "nurse" => Ok(Role::Nurse),
            "admin" => Ok(Role::Admin),
            "person" => Ok(Role::Person),
            _ => Err(IdError::Invalid {
                kind: "role",
                value: s.chars().take(80).collect(),
            }),
        }
    }
}

/// Who makes a change: user, role and device. Every change and every record carries it.
///
/// The Automerge actor id of a change is derived from the device and the incarnation of its
/// store ([`Author::actor_id`]), so a server that knows which device is on a connection, and
/// which incarnations it issued to it, can check the claim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Author {
    pub user: UserId,
    pub role: Role,
    pub device: DeviceId,
    /// Which incarnation of the device's store wrote (see docs/protocol.md, "Incarnations"):
    /// 0 for a store that never had another, and then absent from the encoding, so changes and
    /// records written before incarnations existed decode and encode exactly as before. Set on
    /// the author of a change message; records always name their author with 0, so a record
    /// written again under a new incarnation keeps its exact content.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u32,
    /// On a change's author: the change's number among those its store wrote under this
    /// incarnation (1 for the first), the write counter by which the server sees a store that
    /// went back in time. 0, and absent from the encoding, on records and on changes made
    /// before counters existed. Here rather than beside the author in the change message
    /// because builds before it read an author's unknown fields and ignore them, while the
    /// message itself refuses unknown fields: their phones keep taking in new changes.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub write: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl Author {
    pub fn new(user: UserId, role: Role, device: DeviceId) -> Self {
        Self {
            user,
            role,
            device,
            incarnation: 0,
            write: 0,
        }
    }

    /// The same author under incarnation `incarnation`.
    pub fn in_incarnation(&self, incarnation: u32) -> Self {
        Self {
            incarnation,
            ..self.clone()
        }
    }

    /// The same author, as the author of its store's write number `write`.
    pub fn with_write(&self, write: u64) -> Self {
        Self {
            write,
            ..self.clone()
        }
    }

    /// The person and device, without incarnation and write number: what a record names.
    pub fn person(&self) -> Self {
        Self {
            incarnation: 0,
            write: 0,
            ..self.clone()
        }
    }

    /// The Automerge actor id that every change from this device's current incarnation carries.
    pub fn actor_id(&self) -> automerge::ActorId {
        actor_for_incarnation(&self.device, self.incarnation)
    }
}

/// The actor id bound to a device's first incarnation: the first 16 bytes of
/// SHA-256("nara-actor\0" + device id).
pub fn actor_for_device(device: &DeviceId) -> automerge::ActorId {
    actor_for_incarnation(device, 0)
}

/// The actor id of incarnation `number` of a device's store: number 0 is
/// [`actor_for_device`] (what every store wrote before incarnations existed); number k > 0
/// hashes the number in too: SHA-256("nara-actor\0" + device id + "\0" + k as 4 bytes
/// big-endian), first 16 bytes.
pub fn actor_for_incarnation(device: &DeviceId, number: u32) -> automerge::ActorId {
    let mut hasher = Sha256::new()
        .chain_update(b"nara-actor\0")
        .chain_update(device.as_str().as_bytes());
    if number > 0 {
        hasher = hasher
            .chain_update(b"\0")
            .chain_update(number.to_be_bytes());
    }
    let digest = hasher.finalize();
    automerge::ActorId::from(&digest[..16])
}

/// The actor id of a document's genesis change, derived from the document id alone.
pub(crate) fn genesis_actor(doc: &DocumentId) -> automerge::ActorId {
    let digest = Sha256::new()
        .chain_update(b"nara-genesis\0")
        .chain_update(doc.to_string().as_bytes())
        .finalize();
    automerge::ActorId::from(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A later record's id sorts before every earlier one's, whatever their random parts
    /// (what keeps Automerge's apply from walking the whole document), and is a valid id.
    #[test]
    fn countdown_ids_of_later_records_sort_first() {
        let instants = [
            -1,
            0,
            1,
            1_795_000_000_000,
            1_795_000_000_001,
            1_795_086_400_000,
            i64::MAX,
        ];
        for pair in instants.windows(2) {
            for (a, b) in [(0, u64::MAX), (u64::MAX, 0), (7, 7)] {
                let earlier = RecordId::countdown(Timestamp(pair[0]), a);
                let later = RecordId::countdown(Timestamp(pair[1]), b);
                // Before 1970 (a clock gone wrong) counts as 1970.
                if pair[0] >= 0 {
                    assert!(later < earlier, "{later} at {} vs {earlier}", pair[1]);
                }
                assert_eq!(RecordId::new(later.as_str()).unwrap(), later);
                assert_eq!(later.as_str().len(), 27);
            }
        }
        assert_ne!(
            RecordId::countdown(Timestamp(5), 1),
            RecordId::countdown(Timestamp(5), 2)
        );
    }

    #[test]
    fn document_ids_round_trip_through_text() {
        let p = PatientId::new("p-17").unwrap();
        let m: Month = "2026-11".parse().unwrap();
        for id in [
            DocumentId::patient_header(&p),
            DocumentId::care_plan(&p),
            DocumentId::medication(&p),
            DocumentId::administrations(&p, m),
            DocumentId::journal(&p, m),
        ] {
            let text = id.to_string();
            assert_eq!(text.parse::<DocumentId>().unwrap(), id, "{text}");
        }
        assert_eq!(
            DocumentId::journal(&p, m).to_string(),
            "p-17/journal/2026-11"
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["", "p 1", "p/1", "ä", &"x".repeat(65)] {
            assert!(PatientId::new(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "p-1/journal",
            "p-1/patient/2026-11",
            "p-1/nope",
            "p-1/journal/2026-13",
            "p-1/journal/26-1",
        ] {
            assert!(bad.parse::<DocumentId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn incarnations_have_their_own_actor_and_zero_keeps_the_old_one() {
        let d = DeviceId::new("dev-1").unwrap();
        let a = Author::new(UserId::new("u").unwrap(), Role::Carer, d.clone());
        assert_eq!(a.actor_id(), actor_for_device(&d));
        assert_ne!(a.in_incarnation(1).actor_id(), a.actor_id());
        assert_ne!(
            a.in_incarnation(1).actor_id(),
            a.in_incarnation(2).actor_id()
        );
        // Incarnation 0 is not in the encoding: old changes and records are unchanged.
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("incarnation"));
        assert_eq!(serde_json::from_str::<Author>(&json).unwrap(), a);
        let later = serde_json::to_string(&a.in_incarnation(3).with_write(7)).unwrap();
        assert!(later.contains("\"incarnation\":3"));
        assert!(later.contains("\"write\":7"));
        // A build that knows neither field still reads the author.
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct OldAuthor {
            user: UserId,
            role: Role,
            device: DeviceId,
        }
        let old: OldAuthor = serde_json::from_str(&later).unwrap();
        assert_eq!(old.device, d);
        assert_eq!(a.in_incarnation(3).with_write(7).person(), a);
    }

    #[test]
    fn actor_ids_are_stable_per_device() {
        let d = DeviceId::new("dev-1").unwrap();
        assert_eq!(actor_for_device(&d), actor_for_device(&d));
        assert_ne!(
            actor_for_device(&d),
            actor_for_device(&DeviceId::new("dev-2").unwrap())
        );
    }
}
