//! The medication round as the app shows and writes it: the signing list, "when needed"
//! limits and follow-ups, delegations, and the flags the server raised.

use nara_client::care::{
    DelegationShown, FollowUpShown, Round, RoundSlotShown, RoundStatusView, ServerFlagShown,
};
use sync_core::model::round::PhoneSync;
use sync_core::model::{DoseEffect, PrnRule};

use super::{FfiAuthor, all};

/// The limits of a "when needed" (PRN) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct FfiPrnRule {
    /// Most doses in any 24 hours.
    pub max_per_day: u32,
    /// Least minutes between two doses.
    pub min_interval_minutes: u32,
    /// Minutes after a dose when its effect is followed up.
    pub follow_up_minutes: u32,
}

impl From<PrnRule> for FfiPrnRule {
    fn from(r: PrnRule) -> Self {
        Self {
            max_per_day: r.max_per_day,
            min_interval_minutes: r.min_interval_minutes,
            follow_up_minutes: r.follow_up_minutes,
        }
    }
}

impl From<FfiPrnRule> for PrnRule {
    fn from(r: FfiPrnRule) -> Self {
        Self {
            max_per_day: r.max_per_day,
            min_interval_minutes: r.min_interval_minutes,
            follow_up_minutes: r.follow_up_minutes,
        }
    }
}

/// The effect of a "when needed" dose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FfiDoseEffect {
    Good,
    Partial,
    None,
}

impl From<FfiDoseEffect> for DoseEffect {
    fn from(e: FfiDoseEffect) -> Self {
        match e {
            FfiDoseEffect::Good => DoseEffect::Good,
            FfiDoseEffect::Partial => DoseEffect::Partial,
            FfiDoseEffect::None => DoseEffect::None,
        }
    }
}

impl From<DoseEffect> for FfiDoseEffect {
    fn from(e: DoseEffect) -> Self {
        match e {
            DoseEffect::Good => FfiDoseEffect::Good,
            DoseEffect::Partial => FfiDoseEffect::Partial,
            DoseEffect::None => FfiDoseEffect::None,
        }
    }
}

/// A phone that could record a person's doses, and when it last synced (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiPhoneSync {
    pub device: String,
    pub user: String,
    /// The directory's name of `user`, if this device holds one.
    pub name: Option<String>,
    pub last_synced_ms: Option<i64>,
}

impl From<PhoneSync> for FfiPhoneSync {
    fn from(p: PhoneSync) -> Self {
        Self {
            device: p.device.into(),
            name: super::name_of(&p.user),
            user: p.user.into(),
            last_synced_ms: p.last_synced.map(|t| t.0),
        }
    }
}

/// A slot's status on the signing list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum FfiRoundStatus {
    Given {
        administration: String,
        by: FfiAuthor,
    },
    NotGiven {
        administration: String,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: String,
    },
    PossibleDoubleDose {
        administrations: Vec<String>,
    },
    /// Nothing recorded, and its window has not closed.
    Open,
    /// Nothing recorded, its window closed, and every phone that could have recorded it has
    /// synced since.
    Overdue,
    /// Nothing recorded here, and these phones have not synced since the window closed (empty:
    /// the server has not said which phones could have recorded it; call `refresh_round`).
    Unknown {
        phones: Vec<FfiPhoneSync>,
    },
}

impl From<RoundStatusView> for FfiRoundStatus {
    fn from(s: RoundStatusView) -> Self {
        match s {
            RoundStatusView::Given { administration, by } => Self::Given {
                administration: administration.into(),
                by: by.into(),
            },
            RoundStatusView::NotGiven {
                administration,
                reason,
            } => Self::NotGiven {
                administration: administration.into(),
                reason,
            },
            RoundStatusView::SelfAdministered { administration } => Self::SelfAdministered {
                administration: administration.into(),
            },
            RoundStatusView::PossibleDoubleDose { administrations } => Self::PossibleDoubleDose {
                administrations: all(administrations),
            },
            RoundStatusView::Open => Self::Open,
            RoundStatusView::Overdue => Self::Overdue,
            RoundStatusView::Unknown { phones } => Self::Unknown {
                phones: all(phones),
            },
        }
    }
}

/// One due slot on the signing list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRoundSlot {
    pub patient: String,
    pub display_name: Option<String>,
    pub order: String,
    pub revision: String,
    pub version: u32,
    pub drug: String,
    pub strength: String,
    pub dose: String,
    pub route: String,
    /// The order is in conflict: a nurse must resolve it before a dose is recorded.
    pub in_conflict: bool,
    /// `YYYY-MM-DDTHH:MM`, local.
    pub slot: String,
    pub due_ms: i64,
    pub window_minutes: u32,
    pub status: FfiRoundStatus,
}

impl From<RoundSlotShown> for FfiRoundSlot {
    fn from(s: RoundSlotShown) -> Self {
        Self {
            patient: s.patient.into(),
            display_name: s.display_name,
            order: s.order.into(),
            revision: s.revision.into(),
            version: s.version,
            drug: s.drug,
            strength: s.strength,
            dose: s.dose,
            route: s.route,
            in_conflict: s.in_conflict,
            slot: s.slot,
            due_ms: s.due.0,
            window_minutes: s.window_minutes,
            status: s.status.into(),
        }
    }
}

/// The follow-up of a "when needed" dose.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiFollowUp {
    pub patient: String,
    pub display_name: Option<String>,
    pub administration: String,
    pub order: String,
    pub drug: Option<String>,
    pub document: String,
    pub given_at_ms: i64,
    pub due_ms: i64,
    pub effect: Option<FfiDoseEffect>,
    pub note: Option<String>,
    pub overdue: bool,
}

impl From<FollowUpShown> for FfiFollowUp {
    fn from(f: FollowUpShown) -> Self {
        Self {
            patient: f.patient.into(),
            display_name: f.display_name,
            administration: f.administration.into(),
            order: f.order.into(),
            drug: f.drug,
            document: f.document.to_string(),
            given_at_ms: f.given_at.0,
            due_ms: f.due.0,
            effect: f.effect.map(Into::into),
            note: f.note,
            overdue: f.overdue,
        }
    }
}

/// A flag the server raised, open as this device sees it now.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiServerFlag {
    pub patient: String,
    pub display_name: Option<String>,
    pub id: String,
    /// `overdue`, `follow-up`, `no-delegation`, `prn-limit`, `double-dose`, ...
    pub kind: String,
    pub order: String,
    pub slot: Option<String>,
    pub administration: Option<String>,
    pub document: String,
    pub evidence: Vec<String>,
    pub open: bool,
}

impl From<ServerFlagShown> for FfiServerFlag {
    fn from(f: ServerFlagShown) -> Self {
        Self {
            patient: f.patient.into(),
            display_name: f.display_name,
            id: f.flag.id,
            kind: f.flag.kind,
            order: f.flag.order.into(),
            slot: f.flag.slot,
            administration: f.flag.administration.map(Into::into),
            document: f.flag.document.to_string(),
            evidence: all(f.flag.evidence),
            open: f.flag.open,
        }
    }
}

/// The signing list of a shift, its follow-ups and the server's flags.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiRound {
    pub from_ms: i64,
    pub to_ms: i64,
    /// When the server last said which phones had synced; `None`: never.
    pub server_checked_at_ms: Option<i64>,
    pub slots: Vec<FfiRoundSlot>,
    pub follow_ups: Vec<FfiFollowUp>,
    pub flags: Vec<FfiServerFlag>,
}

impl From<Round> for FfiRound {
    fn from(r: Round) -> Self {
        Self {
            from_ms: r.from.0,
            to_ms: r.to.0,
            server_checked_at_ms: r.server_checked_at.map(|t| t.0),
            slots: all(r.slots),
            follow_ups: all(r.follow_ups),
            flags: all(r.flags),
        }
    }
}

/// A delegation as listed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiDelegation {
    pub patient: String,
    pub display_name: Option<String>,
    pub delegation: String,
    pub version: u32,
    pub to: String,
    /// The directory's name of `to`, if this device holds one.
    pub to_name: Option<String>,
    pub scope: Vec<String>,
    pub from_ms: i64,
    /// Exclusive: valid until just before this instant.
    pub until_ms: i64,
    pub revoked: bool,
    /// The nurse who signed this version.
    pub by: FfiAuthor,
    pub at_ms: i64,
    pub in_conflict: bool,
}

impl From<DelegationShown> for FfiDelegation {
    fn from(d: DelegationShown) -> Self {
        Self {
            patient: d.patient.into(),
            display_name: d.display_name,
            delegation: d.delegation.into(),
            version: d.version,
            to_name: super::name_of(&d.to),
            to: d.to.into(),
            scope: d.scope,
            from_ms: d.from.0,
            until_ms: d.until.0,
            revoked: d.revoked,
            by: d.by.into(),
            at_ms: d.at.0,
            in_conflict: d.in_conflict,
        }
    }
}
