//! The care plan's goals: their shared text, and a nurse's acknowledgement of a flag.

use super::*;

/// A goal's text written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoalWritten {
    pub document: DocumentId,
    pub goal: RecordId,
    pub created: bool,
    pub text: String,
}

/// Edits a goal's description (anyone on the case; concurrent edits merge), or creates the
/// goal with it (nurse; the title defaults to the text's first line).
pub fn set_goal(
    device: &Device,
    patient: &PatientId,
    goal: &RecordId,
    text: &str,
    title: Option<&str>,
    clock: &Clock,
) -> Result<GoalWritten> {
    let document = DocumentId::care_plan(patient);
    let register = Register::Goal(goal.clone());
    let exists = device.with_repo(|repo| -> Result<bool> {
        Ok(!matches!(
            repo.get(&document)?.register(&register),
            RegisterState::Unset
        ))
    })?;
    let key = TextKey::GoalDescription(goal.clone());
    let revision = clock.new_id();
    device.change(&document, clock.now, |e| {
        if exists {
            e.set_text(&key, text)?;
            if let Some(t) = title {
                e.update(
                    revision,
                    register.clone(),
                    RegisterValue::Goal {
                        title: t.to_owned(),
                        status: GoalStatus::Active,
                    },
                )?;
            }
            Ok(())
        } else {
            let title = title
                .map(str::to_owned)
                .unwrap_or_else(|| first_line(text, 80));
            e.create(
                revision,
                register.clone(),
                RegisterValue::Goal {
                    title,
                    status: GoalStatus::Active,
                },
                Some(text),
            )
        }
    })?;
    let text = device
        .with_repo(|repo| -> Result<Option<String>> { Ok(repo.get(&document)?.text(&key)) })?
        .unwrap_or_default();
    Ok(GoalWritten {
        document,
        goal: goal.clone(),
        created: !exists,
        text,
    })
}

fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = if line.is_empty() { "Goal" } else { line };
    line.chars().take(max_chars).collect()
}

/// Acknowledges a flag (nurse), covering the evidence seen now; later evidence reopens it.
pub fn ack_flag(
    device: &Device,
    patient: &PatientId,
    flag: &str,
    comment: Option<&str>,
    clock: &Clock,
) -> Result<Recorded> {
    let found = device.with_repo(|repo| -> Result<Option<Flag>> {
        Ok(repo
            .chart(patient, &[])?
            .flags()
            .into_iter()
            .find(|f| f.id == flag))
    })?;
    // Not derived here: one the server raised (overdue, follow-up), as it last said.
    let (document, flag_id, evidence) = match found {
        Some(f) => (f.document, f.id, f.evidence),
        None => super::round::server_flag(device, patient, flag)?
            .map(|f| (f.document, f.id, f.evidence))
            .ok_or_else(|| {
                ClientError::Invalid(format!("no flag {flag:?} for {patient} on this device"))
            })?,
    };
    let record = clock.new_id();
    device.change(&document, clock.now, |e| {
        e.record(
            record.clone(),
            EventBody::FlagAcknowledgement {
                flag: flag_id.clone(),
                covers: evidence.clone(),
                comment: comment.map(str::to_owned),
            },
        )
    })?;
    Ok(Recorded { document, record })
}
