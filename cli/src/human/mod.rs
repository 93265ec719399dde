//! What a command prints for people (without `--json`): sentences a nurse reads, with names,
//! drugs and doses, local dates and times; never raw JSON or epoch milliseconds. One module a
//! concept: `sync` (sync reports, status, the clock warning), `words` (names, lists, dates),
//! `medication` (orders, delegations, doses), `records` (register values and events),
//! `alerts` (allergies, flags) and `patient` (the person's page); here, what a write prints.

mod alerts;
mod medication;
mod patient;
mod records;
mod sync;
mod words;

pub(crate) use alerts::*;
pub(crate) use medication::*;
pub(crate) use patient::*;
pub(crate) use records::*;
pub(crate) use sync::*;
pub(crate) use words::*;

use super::*;

pub(crate) fn written(
    device: &Device,
    r: &care::Recorded,
    human: String,
) -> anyhow::Result<Output> {
    let mut json = to_json(r)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn order_written(device: &Device, w: &care::OrderWritten) -> anyhow::Result<Output> {
    let human = format!(
        "Order {} {}: {}; version {}",
        w.order,
        if w.created { "written" } else { "revised" },
        order_sentence(&w.value),
        w.version,
    );
    let mut json = to_json(w)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

#[cfg(test)]
mod tests;
