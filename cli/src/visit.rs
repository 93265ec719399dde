//! `nara visit`: a visit's records, read as JSON, saved together (`care::visit`).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use nara_client::care;
use serde_json::json;
use sync_core::PatientId;

use crate::{Ctx, Output, to_json};

/// Most bytes of a visit's JSON.
const MAX_VISIT_JSON: u64 = 1024 * 1024;

pub(crate) fn run(
    ctx: &Ctx,
    home: &Path,
    patient: &PatientId,
    file: &Path,
) -> anyhow::Result<Output> {
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .take(MAX_VISIT_JSON)
            .read_to_string(&mut text)
            .context("reading the visit from stdin")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_VISIT_JSON).read_to_string(&mut text))
            .with_context(|| format!("reading the visit from {}", file.display()))?;
    }
    let visit: care::Visit = serde_json::from_str(&text).context("the visit's JSON")?;
    let device = ctx.open(home)?;
    let saved = care::visit(&device, patient, &visit, &ctx.clock()?)?;
    let mut json = to_json(&saved)?;
    json["pending"] = json!(device.pending_count()?);
    let human = format!(
        "Visit {} saved: {} in {}",
        saved.visit,
        crate::human::count(saved.records.len() as u64, "record"),
        crate::human::count(saved.changes as u64, "change")
    );
    Ok(Output { json, human })
}
