//! People's names, from the directory (`nara-server admin add-patient --name`) into each
//! person's header document, so that every device on their care team shows them. The server
//! writes the display name as a revision by the directory (role admin, the one thing that role
//! may write), only when the directory's name is not the one it last wrote: a name a nurse
//! corrects on a device stays until the directory's name changes. A name that is only the
//! person's id is not written.

use rand::Rng;
use sync_core::model::{Register, RegisterState, RegisterValue};
use sync_core::store::Store;
use sync_core::{Author, DeviceId, DocumentId, PatientId, RecordId, Role, Timestamp, UserId};

/// The author of the names the server writes from the directory.
pub(super) fn registrar() -> anyhow::Result<Author> {
    Ok(Author::new(
        UserId::new("directory")?,
        Role::Admin,
        DeviceId::new("directory")?,
    ))
}

fn meta_key(patient: &PatientId) -> String {
    format!("directory-name/{patient}")
}

/// A name written: the person, their header document and the change.
#[derive(Debug)]
pub(super) struct NameWritten {
    pub patient: PatientId,
    pub document: DocumentId,
    pub change: Option<sync_core::ChangeHash>,
}

/// Writes each person's directory name into their header where it is not the name last
/// written from the directory. Each name is its own change, durable (and marked as needing
/// no upload) before the next.
pub(super) fn write_names(
    repo: &mut super::ServerRepo,
    patients: &[(PatientId, String)],
    now_ms: i64,
) -> anyhow::Result<Vec<NameWritten>> {
    let author = registrar()?;
    let mut written = Vec::new();
    for (patient, name) in patients {
        let key = meta_key(patient);
        let last = repo.store().meta(&key)?;
        // A name that is only the person's id (or nothing) tells a device nothing it does not
        // show already: not written.
        if last.as_deref() == Some(name.as_bytes())
            || name.trim().is_empty()
            || name.trim() == patient.as_str()
        {
            continue;
        }
        let document = DocumentId::patient_header(patient);
        let state = repo.get(&document)?.register(&Register::DisplayName);
        let same = matches!(&state, RegisterState::Value(v)
            if v.revision.value == RegisterValue::DisplayName { name: name.clone() });
        let change = if same {
            None
        } else {
            let bits: u64 = rand::rng().random();
            let id = RecordId::new(format!("name-{bits:016x}"))?;
            let value = RegisterValue::DisplayName { name: name.clone() };
            let conflict = matches!(state, RegisterState::Conflict(_));
            let saved = repo.change(&document, &author, Timestamp(now_ms), |e| {
                if conflict {
                    e.resolve(id, Register::DisplayName, value)
                } else {
                    e.update(id, Register::DisplayName, value)
                }
            })?;
            if let Some(hash) = saved.change {
                // The server's own change: in its feed, never waiting for an upload.
                repo.mark_uploaded(&document, &[hash])?;
            }
            saved.change
        };
        repo.store_mut().set_meta(&key, name.as_bytes())?;
        written.push(NameWritten {
            patient: patient.clone(),
            document,
            change,
        });
    }
    Ok(written)
}
