//! A handover as the app shows it: what others recorded for one person since this user last
//! viewed them on this device (their page or a handover).

use nara_client::care::{Handover, HandoverItem, HandoverWhat};

use super::{FfiAuthor, FfiEventBody, FfiFlag, FfiRegisterValue, all, count};

/// What one new record is.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FfiHandoverWhat {
    Event {
        body: FfiEventBody,
    },
    Revision {
        register: String,
        version: u32,
        value: FfiRegisterValue,
    },
}

/// One record written since the user last viewed the person.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiHandoverItem {
    pub document: String,
    pub record: String,
    /// `note`, `observation`, `dose`, `correction`, `flag-review`, `visit`, `order`,
    /// `allergy`, `resuscitation`, `plan` or `header`.
    pub kind: String,
    pub author: FfiAuthor,
    pub at_ms: i64,
    /// For a dose: the drug and strength of the order version it names.
    pub drug: Option<String>,
    pub what: FfiHandoverWhat,
}

impl From<HandoverItem> for FfiHandoverItem {
    fn from(i: HandoverItem) -> Self {
        Self {
            document: i.document.to_string(),
            record: i.record.into(),
            kind: i.kind.to_owned(),
            author: i.author.into(),
            at_ms: i.at.0,
            drug: i.drug,
            what: match i.what {
                HandoverWhat::Event { body } => FfiHandoverWhat::Event { body: body.into() },
                HandoverWhat::Revision {
                    register,
                    version,
                    value,
                } => FfiHandoverWhat::Revision {
                    register,
                    version,
                    value: value.into(),
                },
            },
        }
    }
}

/// What changed for one person since this user last viewed them on this device.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiHandover {
    pub patient: String,
    pub display_name: Option<String>,
    /// When the user last viewed the person (their page or a handover); `None`: never (the
    /// last 24 hours).
    pub since_ms: Option<i64>,
    /// Newest first.
    pub items: Vec<FfiHandoverItem>,
    /// Older records not listed.
    pub left_out: u64,
    /// Flags whose evidence or review is among the new records.
    pub flags: Vec<FfiFlag>,
}

impl From<Handover> for FfiHandover {
    fn from(h: Handover) -> Self {
        Self {
            patient: h.patient.into(),
            display_name: h.display_name,
            since_ms: h.since.map(|t| t.0),
            items: all(h.items),
            left_out: count(h.left_out),
            flags: all(h.flags),
        }
    }
}
