//! When the device, and each document it holds, was last in sync with the server: nothing of it
//! waiting for upload, everything the server had for it received. Written in the commit of the
//! message that made the session quiet (or in one of its own), read for display and for the
//! offline lease (`Device::check_lease`).
//!
//! Two store meta keys: [`LAST_IN_SYNC_KEY`], the time of the last in-sync moment, and
//! [`DOC_IN_SYNC_KEY`], a JSON map from each document ever in sync to `null` ("as of the last
//! in-sync moment") or the time it was last in sync, kept for a document that had changes
//! waiting at a later moment. So a moment with nothing new (a reconnection that only
//! received, say) rewrites the one time and not the map: with a caseload of 1,000 documents
//! the map (about 70 kB with a time for each, as it used to be kept) was parsed, rebuilt and
//! written at every reconnection, on the path of the changes it brought. A map written with
//! a time for every document (by an older build) reads the same.

use std::collections::{BTreeMap, BTreeSet};

use sync_core::error::StoreError;
use sync_core::store::Store;
use sync_core::{DocumentId, Timestamp};

/// The last in-sync moment (device ms, decimal text).
pub(super) const LAST_IN_SYNC_KEY: &str = "client.last_in_sync";
/// The documents' in-sync marks (see the module).
pub(super) const DOC_IN_SYNC_KEY: &str = "client.documents_in_sync";

/// A document's mark: `None`, in sync as of the last in-sync moment; `Some(ms)`, last in sync
/// then (it has had changes waiting since).
type Marks = BTreeMap<String, Option<i64>>;

/// Records an in-sync moment at `at`: every document held with nothing waiting for upload is
/// in sync as of `at`, one with changes waiting keeps the time it last was, one no longer held
/// loses its mark. Inside the caller's group.
pub(super) fn record<S: Store>(store: &mut S, at: Timestamp) -> Result<(), StoreError> {
    let previous = last(store)?;
    let marks = marks(store)?;
    let waiting: BTreeSet<String> = store
        .pending()?
        .into_iter()
        .map(|(d, _)| d.to_string())
        .collect();
    let mut next = Marks::new();
    for doc in store.documents()? {
        let doc = doc.to_string();
        let mark = if !waiting.contains(&doc) {
            Some(None)
        } else {
            match marks.get(&doc) {
                // In sync as of the moment before this one, changed since.
                Some(None) => previous.map(|t| Some(t.0)),
                Some(Some(t)) => Some(Some(*t)),
                // Never in sync.
                None => None,
            }
        };
        if let Some(mark) = mark {
            next.insert(doc, mark);
        }
    }
    store.set_meta(LAST_IN_SYNC_KEY, at.0.to_string().as_bytes())?;
    if next != marks {
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| StoreError::BadRow(format!("in-sync marks: {e}")))?;
        store.set_meta(DOC_IN_SYNC_KEY, &bytes)?;
    }
    Ok(())
}

/// The last in-sync moment, if there was one.
pub(super) fn last<S: Store>(store: &S) -> Result<Option<Timestamp>, StoreError> {
    Ok(store
        .meta(LAST_IN_SYNC_KEY)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .map(Timestamp))
}

/// When `doc` was last in sync, if it ever was.
pub(super) fn of<S: Store>(store: &S, doc: &DocumentId) -> Result<Option<Timestamp>, StoreError> {
    Ok(match marks(store)?.get(&doc.to_string()) {
        Some(Some(t)) => Some(Timestamp(*t)),
        Some(None) => last(store)?,
        None => None,
    })
}

/// The documents' marks as stored (none if unreadable: they are a display, kept again at the
/// next in-sync moment).
fn marks<S: Store>(store: &S) -> Result<Marks, StoreError> {
    Ok(store
        .meta(DOC_IN_SYNC_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sync_core::ChangeHash;
    use sync_core::store::{MemoryStore, Origin};

    fn doc(n: &str) -> DocumentId {
        DocumentId::journal(
            &sync_core::PatientId::new(n).unwrap(),
            "2026-11".parse().unwrap(),
        )
    }

    /// `doc` held, with a change waiting for upload (`Origin::Local`) or not.
    fn hold(store: &mut MemoryStore, d: &DocumentId, n: u8, waiting: bool) {
        let origin = if waiting {
            Origin::Local
        } else {
            Origin::Remote
        };
        store
            .append(d, &[(ChangeHash([n; 32]), &[n][..])], origin)
            .unwrap();
    }

    fn at(store: &MemoryStore, d: &DocumentId) -> Option<i64> {
        of(store, d).unwrap().map(|t| t.0)
    }

    #[test]
    fn each_document_keeps_the_last_moment_it_had_nothing_waiting() {
        let mut store = MemoryStore::new();
        let (a, b, c) = (doc("p1"), doc("p2"), doc("p3"));
        hold(&mut store, &a, 1, false);
        hold(&mut store, &b, 2, false);
        hold(&mut store, &c, 3, true);
        assert_eq!(last(&store).unwrap(), None);
        record(&mut store, Timestamp(10)).unwrap();
        assert_eq!((at(&store, &a), at(&store, &b)), (Some(10), Some(10)));
        assert_eq!(at(&store, &c), None, "written here, never uploaded");

        // b changes here and waits; c was uploaded.
        hold(&mut store, &b, 4, true);
        store.mark_uploaded(&c, &[ChangeHash([3; 32])]).unwrap();
        record(&mut store, Timestamp(20)).unwrap();
        assert_eq!(last(&store).unwrap(), Some(Timestamp(20)));
        assert_eq!(
            (at(&store, &a), at(&store, &b), at(&store, &c)),
            (Some(20), Some(10), Some(20))
        );

        // Still waiting a moment later: still 10.
        record(&mut store, Timestamp(30)).unwrap();
        assert_eq!((at(&store, &a), at(&store, &b)), (Some(30), Some(10)));
        // Uploaded: in sync again.
        store.mark_uploaded(&b, &[ChangeHash([4; 32])]).unwrap();
        record(&mut store, Timestamp(40)).unwrap();
        assert_eq!(at(&store, &b), Some(40));

        // A document no longer held loses its mark.
        store.remove_document(&a).unwrap();
        record(&mut store, Timestamp(50)).unwrap();
        assert_eq!(at(&store, &a), None);
        assert_eq!(marks(&store).unwrap().len(), 2);
    }

    #[test]
    fn a_moment_with_nothing_new_rewrites_the_time_not_the_map() {
        let mut store = MemoryStore::new();
        for n in 0..50u8 {
            hold(&mut store, &doc(&format!("p{n}")), n, false);
        }
        record(&mut store, Timestamp(10)).unwrap();
        let map = store.meta(DOC_IN_SYNC_KEY).unwrap().unwrap();
        // Changes received (not written here) change no mark.
        hold(&mut store, &doc("p0"), 200, false);
        record(&mut store, Timestamp(20)).unwrap();
        assert_eq!(store.meta(DOC_IN_SYNC_KEY).unwrap().unwrap(), map);
        assert_eq!(at(&store, &doc("p7")), Some(20));
        // One more document held: the map grows by it.
        hold(&mut store, &doc("q"), 201, false);
        record(&mut store, Timestamp(30)).unwrap();
        assert_ne!(store.meta(DOC_IN_SYNC_KEY).unwrap().unwrap(), map);
        assert_eq!(at(&store, &doc("q")), Some(30));
    }

    #[test]
    fn marks_an_older_build_wrote_with_a_time_each_read_the_same() {
        let mut store = MemoryStore::new();
        let (a, b) = (doc("p1"), doc("p2"));
        hold(&mut store, &a, 1, false);
        hold(&mut store, &b, 2, true);
        store.set_meta(LAST_IN_SYNC_KEY, b"20").unwrap();
        let old = format!(r#"{{"{a}":20,"{b}":10}}"#);
        store.set_meta(DOC_IN_SYNC_KEY, old.as_bytes()).unwrap();
        assert_eq!((at(&store, &a), at(&store, &b)), (Some(20), Some(10)));
        record(&mut store, Timestamp(30)).unwrap();
        assert_eq!((at(&store, &a), at(&store, &b)), (Some(30), Some(10)));
    }
}
