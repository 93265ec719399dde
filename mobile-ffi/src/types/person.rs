//! "What matters to me" as the app shows it: the person's own words with who wrote them.

use nara_client::care::WhatMattersShown;

use super::FfiAuthor;

/// One of the person's own entries in their plan (read only: staff cannot write or change it).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiWhatMatters {
    pub id: String,
    /// The person (role `Person`) and the device they wrote on.
    pub author: FfiAuthor,
    /// Milliseconds since the Unix epoch, as the writer's device told it.
    pub at_ms: i64,
    pub text: String,
}

impl From<WhatMattersShown> for FfiWhatMatters {
    fn from(e: WhatMattersShown) -> Self {
        Self {
            id: e.id.to_string(),
            author: e.author.into(),
            at_ms: e.at.0,
            text: e.text,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sync_core::{Author, DeviceId, RecordId, Role, Timestamp, UserId};

    use super::*;
    use crate::types::FfiRole;

    #[test]
    fn the_persons_words_cross_with_who_wrote_them() {
        let shown = WhatMattersShown {
            id: RecordId::new("wm-1").unwrap(),
            author: Author::new(
                UserId::new("p1").unwrap(),
                Role::Person,
                DeviceId::new("web-p1").unwrap(),
            ),
            at: Timestamp(42),
            text: "Kaffe på altanen".into(),
        };
        let ffi = FfiWhatMatters::from(shown);
        assert_eq!(ffi.author.role, FfiRole::Person);
        assert_eq!(ffi.author.user, "p1");
        assert_eq!(
            (ffi.id.as_str(), ffi.at_ms, ffi.text.as_str()),
            ("wm-1", 42, "Kaffe på altanen")
        );
    }
}
