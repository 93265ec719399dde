//! `morning`: S8 of `shared/SCENARIOS.md`. The real `nara-server` process; `devices` real
//! devices (`nara_client::Device`, each its own SQLite store) in this process, each of its own
//! carer, all assigned to the team's `people`.
//!
//! Untimed setup: a nurse's phone writes one change into each of the people's five documents and
//! uploads them; every device enrolls and syncs them; then each device, offline, writes a day of
//! edits for `visited` people (`visits_per_person` visits of `events_per_visit` journal notes and
//! `doses_per_visit` administrations, one durable commit each; device `i` visits people
//! `i * visited ..` round the team, so visits overlap when devices x visited > people).
//!
//! With `--database` and `--nodes N` the server is N processes on one PostgreSQL database
//! (`nodes.rs`) and device `i` enrolls with and syncs through node `i % N`, so every upload must
//! reach the other nodes' devices through the database.
//!
//! Timed: every device starts `watch` at once (stays connected, uploads, receives what the others
//! upload). A device is in sync once its store holds every change the other devices wrote (read
//! at its `Progress` events: `morning_check.rs`); the run ends when all are. Afterwards (untimed) every device's heads of
//! every document are compared: `completed` needs them all equal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nara_client::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::model::{AdministrationOutcome, EventBody};
use sync_core::store::Store;
use sync_core::{DocumentId, PatientId, RecordId, Role, Timestamp};
use tokio::sync::{oneshot, watch};

use crate::morning_check::{self, Tally};
use crate::nodes::Deployment;
use crate::spec::{MorningResult, MorningSpec};
use crate::team;

/// Devices that enroll or sync at once during setup.
const SETUP_PARALLEL: usize = 8;

/// Runs S8 against `deployment` (device `i` connects to node `i % nodes`).
pub async fn run(spec: &MorningSpec, deployment: &Deployment) -> Result<MorningResult> {
    if spec.devices == 0 || spec.people == 0 || spec.visited > spec.people {
        bail!("need --devices >= 1, --people >= 1 and --visited <= --people");
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let dir = deployment.directory(&data)?;
    let dir = &*dir;
    let nurse = team::users(dir, "nurse-", 1, Role::Nurse)?;
    let carers = team::users(dir, "carer-", spec.devices, Role::Carer)?;
    let patients = team::patients(dir, spec.people)?;
    team::assign_all(dir, &nurse, &patients)?;
    team::assign_all(dir, &carers, &patients)?;
    let nodes = deployment.start(tmp.path())?;

    // The team's documents, written on the nurse's phone (on node 0).
    let docs = team::seed(
        dir,
        nodes.first(),
        &nurse[0],
        &patients,
        &tmp.path().join("nurse"),
    )
    .await?;

    // Every carer's phone enrolls and syncs the team.
    let mut devices: Vec<Arc<Device>> = Vec::with_capacity(spec.devices);
    for (c, chunk) in carers.chunks(SETUP_PARALLEL).enumerate() {
        let mut batch = Vec::new();
        for (j, user) in chunk.iter().enumerate() {
            let home = tmp.path().join(user.as_str());
            let node = nodes.for_device(c * SETUP_PARALLEL + j);
            let (url, fp) = (node.url(), &node.pin);
            batch.push(async move {
                let d = team::enroll(dir, &url, fp, user, &home, team::options()).await?;
                d.sync_once().await?;
                anyhow::Ok(d)
            });
        }
        for d in futures_util::future::join_all(batch).await {
            devices.push(Arc::new(d?));
        }
    }

    // The offline day, written locally (durably) on every device: in threads, untimed.
    let per_device =
        spec.visited * spec.visits_per_person * (spec.events_per_visit + spec.doses_per_visit);
    let changes_written = (per_device * spec.devices) as u64;
    {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let devices = &devices;
        let patients = &patients;
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    s.spawn(move || -> Result<()> {
                        for i in (w..devices.len()).step_by(workers) {
                            write_day(&devices[i], i, patients, spec)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
            }
            Ok(())
        })?;
    }
    tracing::info!(changes_written, "offline day written; all devices connect");

    // All connect at once.
    let target = (per_device * (spec.devices - 1)) as u64;
    let started = Instant::now();
    let (done_tx, mut done_rx) = watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let mut tallies: Vec<Arc<Tally>> = Vec::with_capacity(devices.len());
    for d in &devices {
        tallies.push(Arc::new(Tally::new(feed_head(d)?)));
    }
    for (d, tally) in devices.iter().zip(&tallies) {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let mut events = d.events();
        let done_tx = done_tx.clone();
        let tally = tally.clone();
        let device = d.clone();
        // Counts the changes the device received, at each of its events (see `morning_check`),
        // and, once it is in sync, its sessions that still end, until the run ends.
        tasks.push(tokio::spawn(async move {
            let mut counted = false;
            loop {
                let event = match events.recv().await {
                    Ok(e) => Some(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => return,
                };
                let head = || tokio::task::block_in_place(|| feed_head(&device));
                match tally.observe(event.as_ref(), target, head) {
                    Ok(true) if !counted => {
                        counted = true;
                        done_tx.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a device's store failed");
                        return;
                    }
                }
            }
        }));
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = d
                .watch(async {
                    let _ = stop_rx.await;
                })
                .await
            {
                tracing::warn!(error = %e, "a device's watch ended");
            }
        }));
    }
    let all = spec.devices;
    let finished = tokio::time::timeout(
        Duration::from_secs(spec.timeout_secs),
        done_rx.wait_for(|n| *n >= all),
    )
    .await
    .is_ok();
    let seconds = started.elapsed().as_secs_f64();
    let devices_in_sync = *done_rx.borrow();
    let server_peak_rss_bytes = nodes.peak_rss();
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.abort();
    }
    let sessions_failed = tallies
        .iter()
        .map(|t| t.failed.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let relayed_signature_checks = devices.iter().map(|d| d.signature_checks()).sum();
    if !finished {
        diagnose(deployment, &devices, &tallies, target, &docs)?;
    }
    keep_logs(deployment, tmp.path())?;

    // Check (untimed): every device holds the same heads of every document.
    let mut converged = finished;
    if finished {
        for doc in &docs {
            let first = heads(&devices[0], doc)?;
            for d in &devices[1..] {
                if heads(d, doc)? != first {
                    tracing::warn!(%doc, "heads differ");
                    converged = false;
                }
            }
        }
    }
    Ok(MorningResult {
        system: "nara".into(),
        backend: deployment.backend().into(),
        nodes: deployment.nodes,
        spec: spec.clone(),
        completed: converged,
        seconds_to_all_in_sync: seconds,
        changes_written,
        changes_per_second: if finished {
            changes_written as f64 / seconds
        } else {
            0.0
        },
        server_peak_rss_bytes,
        devices_in_sync,
        sessions_failed,
        relayed_signature_checks,
    })
}

/// With `NARA_BENCH_LOGS_TO=DIR`, copies every node's log to `DIR/BACKEND-xNODES/node-K.log`
/// (one folder per deployment, so `--compare-backends` keeps each run's), whether the run
/// finished or not: a finished run's failed sessions are in them too.
fn keep_logs(deployment: &Deployment, base: &std::path::Path) -> Result<()> {
    let Some(to) = std::env::var_os("NARA_BENCH_LOGS_TO") else {
        return Ok(());
    };
    let to = std::path::PathBuf::from(to).join(format!(
        "{}-x{}",
        deployment.backend(),
        deployment.nodes
    ));
    std::fs::create_dir_all(&to)?;
    for k in 0..deployment.nodes {
        let from = crate::nodes::node_dir(base, k).join("server.log");
        std::fs::copy(&from, to.join(format!("node-{k}.log")))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// Says which devices were short and how their documents compare with the server's store.
fn diagnose(
    deployment: &Deployment,
    devices: &[Arc<Device>],
    tallies: &[Arc<Tally>],
    target: u64,
    docs: &[DocumentId],
) -> Result<()> {
    if let Some(url) = &deployment.database {
        server::offload::offload(|| -> Result<()> {
            let store = server::pg::PgStore::open(url)?;
            let repo = std::cell::RefCell::new(sync_core::repo::Repo::new(store));
            morning_check::report(devices, tallies, target, deployment.nodes, docs, |doc| {
                let mut h = repo.borrow_mut().get(doc)?.heads();
                h.sort();
                Ok(h)
            })
        })?;
    }
    if let Some(secs) = std::env::var("NARA_BENCH_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        tracing::warn!(
            secs,
            database = deployment.database.as_deref().unwrap_or("(sqlite)"),
            "holding the nodes and the database for a look"
        );
        std::thread::sleep(Duration::from_secs(secs));
    }
    Ok(())
}

/// The device's store's feed head: every change it stored, its own and others'.
fn feed_head(d: &Device) -> Result<u64> {
    d.with_repo(|r| Ok(r.store().feed_head()?))
}

fn heads(d: &Device, doc: &DocumentId) -> Result<Vec<sync_core::ChangeHash>> {
    d.with_repo(|r| -> Result<_> {
        let mut h = r.get(doc)?.heads();
        h.sort();
        Ok(h)
    })
}

/// Device `i`'s day: for each visited person, visits of journal notes and administrations.
pub fn write_day(d: &Device, i: usize, patients: &[PatientId], spec: &MorningSpec) -> Result<()> {
    let month = team::month()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
    for k in 0..spec.visited {
        let p = &patients[(i * spec.visited + k) % patients.len()];
        let journal = DocumentId::journal(p, month);
        let admin = DocumentId::administrations(p, month);
        for v in 0..spec.visits_per_person {
            let visit_start = team::DAY_MS + (v as i64) * 3 * 3_600_000;
            for e in 0..spec.events_per_visit {
                let at = Timestamp(visit_start + (e as i64) * 60_000);
                // The app's ids (`care::id_at`), not the bench's own: their order sets what
                // Automerge's apply costs.
                let id = nara_client::care::id_at(at);
                // A start, task outcomes, one longer note, a stop (WORKLOAD.md).
                let body = if e + 2 == spec.events_per_visit {
                    crate::workload::note(&mut rng)
                } else {
                    format!("Visit {v}: task {e} done.")
                };
                d.change(&journal, at, |ed| {
                    ed.record(
                        id,
                        EventBody::Note {
                            body,
                            corrects: None,
                        },
                    )
                })
                .with_context(|| format!("writing {journal}"))?;
            }
            for s in 0..spec.doses_per_visit {
                let at = Timestamp(visit_start + 30 * 60_000 + s as i64);
                let id = nara_client::care::id_at(at);
                let order = RecordId::new(format!("o{}", rng.random_range(0..2)))?;
                d.change(&admin, at, |ed| {
                    ed.record(
                        id,
                        EventBody::Administration {
                            order: order.clone(),
                            order_revision: order,
                            slot: format!("2026-11-24T{:02}:00", 8 + v * 3 + s),
                            outcome: AdministrationOutcome::Given,
                            reason: None,
                            occurred_at: at,
                        },
                    )
                })
                .with_context(|| format!("writing {admin}"))?;
            }
        }
    }
    Ok(())
}
