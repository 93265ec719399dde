//! Where each user last viewed each person on this device: every document's heads at the
//! view, and when. The person's page ([`super::overview`]) and the handover
//! ([`super::handover`]) move it; the handover lists what others wrote after it. Causal, by
//! heads, not by the clock. Kept per user in the device's store, so a phone shared by two
//! users keeps one place for each.

use std::collections::BTreeMap;

use sync_core::ChangeHash;
use sync_core::UserId;
use sync_core::store::Store;

use super::*;

/// Where a user was: each document's heads (by document id), and when (this device's clock).
#[derive(Debug, Default, serde::Deserialize, Serialize)]
pub(super) struct Seen {
    pub(super) at: Option<i64>,
    heads: BTreeMap<String, Vec<String>>,
}

impl Seen {
    /// The heads of `doc` at the view; none if the document was not there then.
    pub(super) fn heads(&self, doc: &DocumentId) -> Vec<ChangeHash> {
        self.heads
            .get(&doc.to_string())
            .map(|hs| hs.iter().filter_map(|h| h.parse().ok()).collect())
            .unwrap_or_default()
    }
}

fn meta_key(user: &UserId, patient: &PatientId) -> String {
    format!("viewed/{user}/{patient}")
}

/// Before views were kept per user, the handover kept one place per person
/// (`handover/<patient>`), the enrolled user's: read as theirs until they view the person again.
fn legacy_key(patient: &PatientId) -> String {
    format!("handover/{patient}")
}

/// Where `user` last viewed `patient` on this device; `None`: never.
pub(super) fn last_viewed(
    repo: &Repo<SqliteStore>,
    user: &UserId,
    patient: &PatientId,
    enrolled: &UserId,
) -> Result<Option<Seen>> {
    let mut bytes = repo.store().meta(&meta_key(user, patient))?;
    if bytes.is_none() && user == enrolled {
        bytes = repo.store().meta(&legacy_key(patient))?;
    }
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Records that `user` viewed `patient` at `now`: where each of the person's documents is.
pub(super) fn mark_viewed(
    repo: &mut Repo<SqliteStore>,
    user: &UserId,
    patient: &PatientId,
    now: Timestamp,
) -> Result<()> {
    let mut heads = BTreeMap::new();
    for doc in repo
        .document_ids()?
        .into_iter()
        .filter(|d| d.patient() == patient)
    {
        let hs = repo.get(&doc)?.heads();
        heads.insert(
            doc.to_string(),
            hs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        );
    }
    let seen = Seen {
        at: Some(now.0),
        heads,
    };
    let bytes = serde_json::to_vec(&seen)
        .map_err(|e| ClientError::Invalid(format!("where {user} viewed {patient}: {e}")))?;
    repo.store_mut()
        .set_meta(&meta_key(user, patient), &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sync_core::{DeviceId, Role};

    #[test]
    fn each_user_of_a_device_has_their_own_place() {
        let mut repo = Repo::new(SqliteStore::open(":memory:").unwrap());
        let p = PatientId::new("p-1").unwrap();
        let (anna, bo) = (UserId::new("anna").unwrap(), UserId::new("bo").unwrap());
        let author = Author::new(anna.clone(), Role::Carer, DeviceId::new("phone").unwrap());
        let journal = DocumentId::journal(&p, "2026-11".parse().unwrap());
        let write = |repo: &mut Repo<SqliteStore>, id: &str| {
            repo.change(&journal, &author, Timestamp(1), |e| {
                e.record(
                    RecordId::new(id).unwrap(),
                    EventBody::Note {
                        body: "Slept well.".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        };
        write(&mut repo, "n-1");
        assert!(last_viewed(&repo, &anna, &p, &anna).unwrap().is_none());
        mark_viewed(&mut repo, &anna, &p, Timestamp(10)).unwrap();
        let first = repo.get(&journal).unwrap().heads();
        write(&mut repo, "n-2");

        let annas = last_viewed(&repo, &anna, &p, &anna).unwrap().unwrap();
        assert_eq!(annas.at, Some(10));
        assert_eq!(annas.heads(&journal), first);
        // Bo, on the same phone, has not viewed the person.
        assert!(last_viewed(&repo, &bo, &p, &anna).unwrap().is_none());
        mark_viewed(&mut repo, &bo, &p, Timestamp(20)).unwrap();
        let bos = last_viewed(&repo, &bo, &p, &anna).unwrap().unwrap();
        assert_eq!(bos.heads(&journal), repo.get(&journal).unwrap().heads());
        // Anna's place stays where she left it.
        let annas = last_viewed(&repo, &anna, &p, &anna).unwrap().unwrap();
        assert_eq!(annas.heads(&journal), first);
    }
}
