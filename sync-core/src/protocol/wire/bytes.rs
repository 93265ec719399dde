//! Byte strings on the wire: a change, a signature, an Automerge sync message.
//!
//! Serde's `Vec<u8>` is a sequence of numbers, which postcard reads one byte at a time through
//! the sequence visitor (2.4% of what thirty phones spent storing a team's morning, profiled
//! in `nara-bench morning`). As byte strings they are read as one copy. Postcard encodes a
//! sequence of `u8` and a byte string alike (a varint length, then the bytes), so the wire does
//! not change: old and new peers read each other's messages (`wire::tests`).
//!
//! `serde_bytes` covers one `Vec<u8>`; a list of them (a document's changes) is written here:
//! a sequence of byte strings.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;

/// `#[serde(with = "bytes::list")]` for `Vec<Vec<u8>>`.
pub(crate) mod list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| serde_bytes::Bytes::new(b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of byte strings")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The length a peer declares is not trusted for the allocation: at most what a
            // message's bound could hold of the smallest entries, growing as they are read.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<serde_bytes::ByteBuf>()? {
                out.push(b.into_vec());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::{Deserialize, Serialize};

    use crate::ids::{DeviceId, DocumentId};
    use crate::protocol::wire::{DocChanges, HeadsSignature};

    /// The messages as they were encoded before (serde's sequences of numbers).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct DocChangesBefore {
        doc: DocumentId,
        changes: Vec<Vec<u8>>,
        positions: Vec<u64>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SignatureBefore {
        doc: DocumentId,
        heads: Vec<[u8; 32]>,
        device: DeviceId,
        signature: Vec<u8>,
    }

    fn doc() -> DocumentId {
        "p-1/journal/2026-11".parse().unwrap()
    }

    #[test]
    fn byte_strings_are_encoded_as_the_sequences_were_and_read_both_ways() {
        let changes: Vec<Vec<u8>> = vec![vec![], vec![0x85, 0x6f, 0x4a, 0x83], (0..=255).collect()];
        let now = DocChanges {
            doc: doc(),
            changes: changes.clone(),
            positions: vec![1, 2, 300],
        };
        let before = DocChangesBefore {
            doc: doc(),
            changes,
            positions: vec![1, 2, 300],
        };
        let bytes = postcard::to_stdvec(&now).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&before).unwrap());
        assert_eq!(postcard::from_bytes::<DocChanges>(&bytes).unwrap(), now);
        assert_eq!(
            postcard::from_bytes::<DocChangesBefore>(&bytes).unwrap(),
            before
        );

        let device = DeviceId::new("anna-phone").unwrap();
        let now = HeadsSignature {
            doc: doc(),
            heads: vec![[7; 32]],
            device: device.clone(),
            signature: vec![9; 64],
        };
        let before = SignatureBefore {
            doc: doc(),
            heads: vec![[7; 32]],
            device,
            signature: vec![9; 64],
        };
        let bytes = postcard::to_stdvec(&now).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&before).unwrap());
        assert_eq!(postcard::from_bytes::<HeadsSignature>(&bytes).unwrap(), now);
    }

    #[test]
    fn a_list_that_claims_more_than_it_holds_is_refused_without_taking_its_word() {
        let mut bytes = postcard::to_stdvec(&doc()).unwrap();
        // A varint of 2^62 changes, then one short change and the end of the message.
        bytes.extend([
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 1, 0xaa,
        ]);
        assert!(postcard::from_bytes::<DocChanges>(&bytes).is_err());
        // A change that claims more bytes than follow.
        let mut bytes = postcard::to_stdvec(&doc()).unwrap();
        bytes.extend([1, 0xff, 0x7f, 0xaa]);
        assert!(postcard::from_bytes::<DocChanges>(&bytes).is_err());
    }
}
