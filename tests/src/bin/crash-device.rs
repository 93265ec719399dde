//! The device process of the process crash test (`tests/tests/process_crash.rs`): a real
//! [`nara_client::Device`] that writes through [`nara_client::care`] and syncs with a real
//! `nara-server`, and that the test SIGKILLs at random moments.
//!
//! Usage:
//! - `crash-device enroll <home> <server url> <code> <fingerprint>`: enrolls, then exits.
//! - `crash-device run <home> <patient,patient,...> <seed> <YYYY-MM>`: loops until killed: one
//!   to four writes dated in that month (a journal note, an administration, or for a nurse the
//!   patient's medication order if it has none), then one `sync_once`. It prints, one line each, flushed:
//!   - `saved <document> <record> <change hash>` once `care` returned, i.e. the change is durable;
//!   - `acked <document> <change hash>` once the change is no longer pending upload and was not
//!     refused, i.e. the server acknowledged it as stored (also for changes an earlier process
//!     left pending);
//!   - `refused <document> <change hash> <detail>` for a change the server refused;
//!   - `sync` before each `sync_once` and `sync-end` after it (and the lines above).
//! - `crash-device settle <home>`: one `sync_once` (retried while the server does not answer),
//!   then `synced <received> <uploaded> <pending>` and the same `acked`/`refused` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use nara_client::care::{self, Clock, OrderInput};
use nara_client::{Device, SyncOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::model::{AdministrationOutcome, Register, RegisterState};
use sync_core::{ChangeHash, DocumentId, Month, PatientId, RecordId, Role};

/// The order every patient gets (from its first day to the end of the test's months).
const ORDER: &str = "crash-order";
const ORDER_START: &str = "2026-01-01";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["enroll", home, enrollment] => runtime.block_on(async {
            let request = nara_client::EnrollRequest::from_link(enrollment)?;
            Device::enroll_with(Path::new(home), &request, options())
                .await
                .context("enrolling")?;
            println!("enrolled");
            Ok(())
        }),
        ["run", home, patients, seed, month] => {
            let patients = patients
                .split(',')
                .map(PatientId::new)
                .collect::<Result<Vec<_>, _>>()?;
            let seed: u64 = seed.parse().context("seed")?;
            let month: Month = month.parse()?;
            runtime.block_on(run(Path::new(home), &patients, seed, month))
        }
        ["settle", home] => runtime.block_on(settle(Path::new(home))),
        _ => bail!(
            "usage: crash-device enroll <home> <enrollment string> | \
             run <home> <patients> <seed> <month> | settle <home>"
        ),
    }
}

fn options() -> SyncOptions {
    SyncOptions {
        quiet_for: Duration::from_millis(40),
        connect_timeout: Duration::from_secs(3),
        stall_after_ms: Some(5_000),
        ..SyncOptions::default()
    }
}

/// Prints one line and flushes it: the test reads only whole lines.
fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Changes this process knows were saved and not yet seen acknowledged or refused.
struct Watch {
    waiting: BTreeSet<(DocumentId, ChangeHash)>,
    refused_seen: BTreeSet<ChangeHash>,
}

impl Watch {
    fn new(device: &Device) -> anyhow::Result<Self> {
        // What an earlier process saved and did not see acknowledged: it may be now.
        let waiting = pending(device)?;
        Ok(Self {
            waiting,
            refused_seen: BTreeSet::new(),
        })
    }

    /// Prints `refused` for new quarantined changes and `acked` for the changes no longer pending.
    fn report(&mut self, device: &Device) -> anyhow::Result<()> {
        let refused: BTreeMap<ChangeHash, (DocumentId, String)> = device
            .quarantined()?
            .into_iter()
            .map(|q| (q.change, (q.doc, q.detail)))
            .collect();
        for (hash, (doc, detail)) in &refused {
            if self.refused_seen.insert(*hash) {
                say(&format!(
                    "refused {doc} {hash} {}",
                    detail.replace('\n', " ")
                ))?;
            }
        }
        let now_pending = pending(device)?;
        let done: Vec<(DocumentId, ChangeHash)> = self
            .waiting
            .iter()
            .filter(|w| !now_pending.contains(*w))
            .cloned()
            .collect();
        for (doc, hash) in done {
            self.waiting.remove(&(doc.clone(), hash));
            if !refused.contains_key(&hash) {
                say(&format!("acked {doc} {hash}"))?;
            }
        }
        Ok(())
    }
}

fn pending(device: &Device) -> anyhow::Result<BTreeSet<(DocumentId, ChangeHash)>> {
    Ok(device.with_repo(|r| r.pending())?.into_iter().collect())
}

/// Runs one `care` write and prints it as saved with the change it made (the one new pending
/// change: this process is the only writer and nothing syncs meanwhile).
fn write(
    device: &Device,
    watch: &mut Watch,
    f: impl FnOnce() -> nara_client::Result<(DocumentId, RecordId)>,
) -> anyhow::Result<bool> {
    let before = pending(device)?;
    let (doc, record) = match f() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("write refused locally: {e}");
            return Ok(false);
        }
    };
    let after = pending(device)?;
    let mut new = after.difference(&before).filter(|(d, _)| *d == doc);
    let Some((_, hash)) = new.next() else {
        bail!("{doc} {record}: saved but no new pending change");
    };
    say(&format!("saved {doc} {record} {hash}"))?;
    watch.waiting.insert((doc, *hash));
    Ok(true)
}

fn has_order(device: &Device, patient: &PatientId) -> anyhow::Result<bool> {
    let order = RecordId::new(ORDER)?;
    let state = device.with_repo(|r| -> anyhow::Result<RegisterState> {
        Ok(r.get(&DocumentId::medication(patient))?
            .register(&Register::Order(order)))
    })?;
    Ok(!matches!(state, RegisterState::Unset))
}

async fn run(home: &Path, patients: &[PatientId], seed: u64, month: Month) -> anyhow::Result<()> {
    let device = Device::open_with(home, options())?;
    let nurse = device.author().role == Role::Nurse;
    let mut watch = Watch::new(&device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let order = RecordId::new(ORDER)?;
    loop {
        for _ in 0..rng.random_range(1..=4) {
            let Some(patient) = patients.get(rng.random_range(0..patients.len())) else {
                bail!("no patients");
            };
            let clock = Clock::new(nara_client::now(), format!("{month}-24"))?;
            if nurse && !has_order(&device, patient)? {
                let input = OrderInput {
                    drug: Some("Metoprolol".into()),
                    strength: Some("50 mg".into()),
                    dose: Some("1 tablet".into()),
                    route: Some("oral".into()),
                    times: Some(vec!["08:00".into(), "20:00".into()]),
                    start: Some(ORDER_START.into()),
                    stop: None,
                    // Not delegated: the carers' doses here need no delegation (this test
                    // is about durability, not the medication round's rules).
                    delegated: Some(false),
                    ..OrderInput::default()
                };
                write(&device, &mut watch, || {
                    care::write_order(&device, patient, &order, &input, &clock)
                        .map(|w| (w.document, w.revision))
                })?;
            } else if rng.random_bool(0.5) && has_order(&device, patient)? {
                let slot = format!(
                    "{month}-{:02}T{}",
                    rng.random_range(1..=28),
                    if rng.random_bool(0.5) {
                        "08:00"
                    } else {
                        "20:00"
                    }
                );
                write(&device, &mut watch, || {
                    care::give(
                        &device,
                        patient,
                        &order,
                        &slot,
                        AdministrationOutcome::Given,
                        None,
                        true,
                        false,
                        &clock,
                    )
                    .map(|a| (a.document, a.record))
                })?;
            } else {
                let text = format!("Visit {}: lunch, a short walk.", rng.random::<u32>());
                write(&device, &mut watch, || {
                    care::add_note(&device, patient, &text, &clock).map(|r| (r.document, r.record))
                })?;
            }
        }
        say("sync")?;
        let synced = device.sync_once().await;
        watch.report(&device)?;
        say("sync-end")?;
        if let Err(e) = synced {
            eprintln!("sync failed: {e}");
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        }
    }
}

async fn settle(home: &Path) -> anyhow::Result<()> {
    let device = Device::open_with(home, options())?;
    let mut watch = Watch::new(&device)?;
    let mut tries = 0;
    let report = loop {
        match device.sync_once().await {
            Ok(report) => break report,
            Err(e) if tries < 100 => {
                eprintln!("sync failed: {e}; again");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("syncing"),
        }
    };
    watch.report(&device)?;
    say(&format!(
        "synced {} {} {}",
        report.received, report.uploaded, report.pending
    ))
}
