//! The samod side's documents: shaped like ours, seeded once, copied into storages, and watched for
//! the changes a device must hold.

use super::*;

/// A UUID-shaped id from the seeded stream.
pub(super) fn uuid(rng: &mut ChaCha8Rng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The empty document of one kind for one person (one commit).
pub(super) fn new_document(kind: &str, person: usize) -> Result<Automerge> {
    let mut doc = Automerge::new();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "kind", kind)?;
        tx.put(ROOT, "person", format!("p{person:05}"))?;
        tx.put(ROOT, "month", workload::MONTH)?;
        tx.put_object(ROOT, "records", ObjType::Map)?;
        Ok(())
    })
    .map_err(|f| anyhow!("creating a document: {}", f.error))?;
    Ok(doc)
}

/// Puts one record (a map of `fields`) under `id` in the `records` map, as one commit.
pub(super) fn put_record(
    doc: &mut Automerge,
    id: &str,
    fields: &[(&str, ScalarValue)],
) -> Result<ChangeHash> {
    let (_, records) = doc
        .get(ROOT, "records")?
        .context("the document has no records map")?;
    let ok = doc
        .transact::<_, _, automerge::AutomergeError>(|tx| {
            let r = tx.put_object(&records, id, ObjType::Map)?;
            for (k, v) in fields {
                tx.put(&r, *k, v.clone())?;
            }
            Ok(())
        })
        .map_err(|f| anyhow!("writing a record: {}", f.error))?;
    ok.hash.context("the record write made no change")
}

pub(super) fn at_ms(day: u32, minute: i64) -> i64 {
    workload::at(day, minute).0
}

/// One journal event (start, task outcomes, a note, stop) of visit `visit` on `day`.
pub(super) fn journal_event(
    doc: &mut Automerge,
    rng: &mut ChaCha8Rng,
    author: &str,
    day: u32,
    visit: u32,
    n: u32,
    of: u32,
) -> Result<ChangeHash> {
    let id = uuid(rng);
    let minute = 7 * 60 + 40 + i64::from(visit) * 240 + i64::from(n) * 4;
    let at = ScalarValue::Timestamp(at_ms(day, minute));
    let visit_id = format!("d{day:02}v{visit}");
    let (kind, extra): (&str, (&str, ScalarValue)) = if n == 0 {
        ("visit_started", ("place", "home".into()))
    } else if n + 1 == of {
        ("visit_ended", ("duration_min", ScalarValue::Int(35)))
    } else if n + 2 == of {
        ("note", ("body", workload::note(rng).into()))
    } else {
        ("task_outcome", ("outcome", "done".into()))
    };
    put_record(
        doc,
        &id,
        &[
            ("type", kind.into()),
            ("at", at),
            ("author", author.into()),
            ("visit", visit_id.into()),
            extra,
        ],
    )
}

/// One medication administration of visit `visit` on `day`.
pub(super) fn administration(
    doc: &mut Automerge,
    rng: &mut ChaCha8Rng,
    author: &str,
    day: u32,
    visit: u32,
    n: u32,
) -> Result<ChangeHash> {
    let id = uuid(rng);
    let minute = 7 * 60 + 45 + i64::from(visit) * 240 + i64::from(n);
    put_record(
        doc,
        &id,
        &[
            ("type", "administration".into()),
            ("order", format!("order-{n}").into()),
            ("slot", format!("2026-11-{day:02}T08:00").into()),
            ("outcome", "given".into()),
            ("occurred_at", ScalarValue::Timestamp(at_ms(day, minute))),
            ("author", author.into()),
        ],
    )
}

/// Creates `docs` in a seeding repo and returns their ids and samod's storage entries for them
/// (without the seeding repo's own storage id).
pub(super) async fn seed(
    docs: Vec<Automerge>,
) -> Result<(Vec<DocumentId>, Vec<(StorageKey, Vec<u8>)>)> {
    let storage = InMemoryStorage::new();
    let repo = Repo::build_tokio()
        .with_storage(storage.clone())
        .load()
        .await;
    let handles: Vec<Result<DocHandle, samod::Stopped>> = futures_util::stream::iter(docs)
        .map(|d| repo.create(d))
        .buffered(64)
        .collect()
        .await;
    let mut ids = Vec::with_capacity(handles.len());
    for h in handles {
        ids.push(
            h.map_err(|_| anyhow!("the seeding repo stopped"))?
                .document_id()
                .clone(),
        );
    }
    repo.stop().await;
    let all = StorageKey::from_parts(Vec::<&str>::new())
        .map_err(|_| anyhow!("the empty storage prefix"))?;
    let own_id = StorageKey::storage_id_path();
    let entries = storage
        .load_range(all)
        .await
        .into_iter()
        .filter(|(k, _)| *k != own_id)
        .collect();
    Ok((ids, entries))
}

pub(super) async fn copy_into<S: Storage>(storage: &S, entries: &[(StorageKey, Vec<u8>)]) {
    futures_util::stream::iter(entries)
        .for_each_concurrent(32, |(k, v)| storage.put(k.clone(), v.clone()))
        .await;
}

/// A device repo holding `entries`, with a handle on each of `ids` (loaded from its storage).
pub(super) async fn device_repo<S: Storage>(
    storage: S,
    peer: &str,
    ids: &[DocumentId],
    entries: &[(StorageKey, Vec<u8>)],
) -> Result<(Repo, Vec<DocHandle>)> {
    copy_into(&storage, entries).await;
    let repo = Repo::build_tokio()
        .with_storage(storage)
        .with_peer_id(PeerId::from(peer))
        .load()
        .await;
    let found: Vec<_> = futures_util::stream::iter(ids.iter().cloned())
        .map(|id| repo.find(id))
        .buffered(64)
        .collect()
        .await;
    let mut handles = Vec::with_capacity(found.len());
    for f in found {
        handles.push(
            f.map_err(|_| anyhow!("the repo stopped"))?
                .context("a seeded document is missing from the device's storage")?,
        );
    }
    Ok((repo, handles))
}

pub(super) fn holds(handle: &DocHandle, hashes: &[ChangeHash]) -> bool {
    handle.with_document(|d| hashes.iter().all(|h| d.get_change_by_hash(h).is_some()))
}

/// Waits until `handle` holds `hashes` (true) or `deadline` passes (false).
pub(super) async fn wait_holds(
    handle: &DocHandle,
    hashes: &[ChangeHash],
    deadline: Instant,
) -> bool {
    let mut changes = Box::pin(handle.changes());
    loop {
        if holds(handle, hashes) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = tokio::time::timeout(POLL.min(deadline - now), changes.next()).await;
    }
}

/// Waits until the server (on the dialer's connection) has every change of `handles`.
pub(super) async fn uploaded(dialer: &DialerHandle, handles: &[DocHandle]) -> Result<()> {
    let conn = dialer
        .connection_id()
        .context("the dialer is not connected")?;
    let all = futures_util::stream::iter(handles)
        .for_each_concurrent(256, |h| h.they_have_our_changes(conn));
    tokio::time::timeout(SETUP_TIMEOUT, all)
        .await
        .context("samod-server did not acknowledge the documents")
}

pub(super) async fn stop(repo: &Repo) {
    let _ = tokio::time::timeout(Duration::from_secs(10), repo.stop()).await;
}
