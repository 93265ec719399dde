//! What goes first on a short window: a device's pending changes go up most urgent first,
//! (0) administrations, their corrections and medication orders, (1) journal changes that
//! record an observation, (2) everything else (notes, visits, plans), each document's changes
//! still in the order they were made (each builds on the one before it). Uploads are bounded
//! ([`DeviceConfig::upload_bytes`]) and each is acknowledged on its own, so a window that
//! closes mid-way has the most urgent ones stored, and what was acknowledged is not sent again.

use super::*;
use crate::ids::RecordId;
use crate::model::{ChangeMessage, EventKind};

/// 0 most urgent.
fn urgency<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    hash: &ChangeHash,
) -> Result<u8, RepoError> {
    match doc.kind() {
        DocKind::MedicationAdministration | DocKind::MedicationRequest => return Ok(0),
        DocKind::Journal => {}
        _ => return Ok(2),
    }
    let d = repo.get(doc)?;
    let Some(change) = d.automerge_change(hash) else {
        return Ok(2);
    };
    let writes = change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        .map(|m| m.writes)
        .unwrap_or_default();
    let observes = writes
        .iter()
        .filter_map(|w| w.strip_prefix("events/"))
        .filter_map(|id| RecordId::new(id).ok())
        .any(|id| d.event(&id).map(|e| e.body.kind()) == Some(EventKind::Observation));
    Ok(if observes { 1 } else { 2 })
}

/// `items` (each document's changes in the order they were made) in the order they go up:
/// at each step the most urgent change whose predecessors in its document have gone, the
/// earlier one first between equals.
pub(super) fn by_urgency<S: Store>(
    repo: &mut Repo<S>,
    items: Vec<(DocumentId, ChangeHash)>,
) -> Result<VecDeque<(DocumentId, ChangeHash)>, RepoError> {
    let mut chains: BTreeMap<DocumentId, VecDeque<(u8, usize, ChangeHash)>> = BTreeMap::new();
    for (i, (doc, hash)) in items.iter().enumerate() {
        let u = urgency(repo, doc, hash)?;
        chains
            .entry(doc.clone())
            .or_default()
            .push_back((u, i, *hash));
    }
    // The head of each document's chain, ordered by (urgency, position).
    let mut heads: BTreeSet<(u8, usize, DocumentId)> = chains
        .iter()
        .filter_map(|(doc, c)| c.front().map(|&(u, i, _)| (u, i, doc.clone())))
        .collect();
    let mut out = VecDeque::with_capacity(items.len());
    while let Some((_, _, doc)) = heads.pop_first() {
        let Some(chain) = chains.get_mut(&doc) else {
            continue;
        };
        if let Some((_, _, hash)) = chain.pop_front() {
            out.push_back((doc.clone(), hash));
        }
        if let Some(&(u, i, _)) = chain.front() {
            heads.insert((u, i, doc));
        }
    }
    Ok(out)
}
