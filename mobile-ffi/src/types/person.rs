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
