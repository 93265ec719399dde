//! The baseline: the same workloads (`spec.rs`) on samod 0.16, the Rust automerge-repo, from the
//! Rust registry, used as its documentation describes.
//!
//! - Server: `samod-server` (this package's binary), its own child process, samod's axum
//!   WebSocket acceptor and its on-disk storage (`TokioFilesystemStorage`) in a temporary
//!   directory; killed (and the directory removed) when a run ends, also on error or timeout.
//! - Clients: samod `Repo`s in the bench process (tokio runtime), each dialing the server over a
//!   plain WebSocket (tokio-tungstenite, `Transport::new`), with samod's reconnecting dialer.
//! - Documents: plain Automerge documents shaped like ours (a root with the document's kind and
//!   person, and a `records` map keyed by UUID-like ids, one map per record), one commit per
//!   event. Each document gets its own samod document id.
//! - Setup is untimed and skips the network where samod's public storage API allows: the
//!   documents are created once in a seeding repo and its storage entries (samod's own format)
//!   are copied into the server's directory and into each device's storage, which is what a
//!   complete earlier sync leaves behind (samod keeps no per-peer sync state on disk, so a later
//!   connection costs the same either way).
//! - Completion is observed in the documents themselves: a device is in sync with a change when
//!   its `DocHandle`'s Automerge document holds that change's hash, checked at every change
//!   notification (`DocHandle::changes`) and at a short poll interval.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samod::storage::{InMemoryStorage, Storage, StorageKey, TokioFilesystemStorage};
use samod::{
    BackoffConfig, DialError, Dialer, DialerHandle, DocHandle, DocumentId, PeerId, Repo, Transport,
};
use tokio_tungstenite::tungstenite::Message;

use crate::spec::{
    LatencyResult, LatencySpec, MorningResult, MorningSpec, ReconnectResult, ReconnectSpec,
};
use crate::stats::{Samples, round3};
use crate::{meter, procs, workload};

mod docs;
mod net;

use docs::*;
use net::*;

pub const SYSTEM: &str = "samod";

/// Days of a person's journal in each reconnect document (4 visits of 7 events a day) before
/// the timed reconnect. Zero: each document holds only its first change, as on the Nära Sync
/// side, so both hold the same. It is the kindest case for samod: its sync messages (Bloom
/// filters of the history) grow with each document's history, ours do not.
const RECONNECT_DAYS: u32 = 0;
/// How often completion is re-checked when no change notification arrives.
const POLL: Duration = Duration::from_millis(20);
/// Untimed setup steps give up after this long.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Document kinds of a person, in the order of `workload::Person::documents`.
const KINDS: [&str; 5] = [
    "patient",
    "care_plan",
    "medication_request",
    "medication_administration",
    "journal",
];
const ADMINISTRATIONS: usize = 3;
const JOURNAL: usize = 4;

// ---------------------------------------------------------------------------------------------
// reconnect

pub async fn reconnect(spec: &ReconnectSpec) -> Result<ReconnectResult> {
    if spec.changed == 0 || spec.changed > spec.docs {
        bail!("changed must be between 1 and docs");
    }
    let tmp = tempfile::tempdir()?;
    let server_dir = tmp.path().join("server");
    let device_dir = tmp.path().join("device");

    // Each document: a person's month journal with RECONNECT_DAYS days, one commit per event.
    let docs = tokio::task::spawn_blocking({
        let (n, seed) = (spec.docs, spec.seed);
        move || -> Result<Vec<Automerge>> {
            (0..n)
                .map(|i| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37));
                    let mut doc = new_document("journal", i)?;
                    #[allow(clippy::reversed_empty_ranges)] // empty while RECONNECT_DAYS is 0
                    for day in 1..=RECONNECT_DAYS {
                        for visit in 0..workload::VISITS_PER_DAY {
                            for e in 0..workload::EVENTS_PER_VISIT {
                                journal_event(
                                    &mut doc,
                                    &mut rng,
                                    "carer-1",
                                    day,
                                    visit,
                                    e,
                                    workload::EVENTS_PER_VISIT,
                                )?;
                            }
                        }
                    }
                    Ok(doc)
                })
                .collect()
        }
    })
    .await??;
    let (ids, entries) = seed(docs).await?;
    copy_into(&TokioFilesystemStorage::new(&server_dir), &entries).await;
    let server = ServerProcess::start(&server_dir).await?;
    let proxy = meter::start(server.addr).await?;

    // The device: samod's on-disk storage, a handle on every document; one full sync first so
    // that the server has every document loaded (warm), as after a day of use.
    let (device, handles) = device_repo(
        TokioFilesystemStorage::new(&device_dir),
        "device-a",
        &ids,
        &entries,
    )
    .await?;
    let warm = dial(&device, proxy.addr).await?;
    uploaded(&warm, &handles).await?;
    warm.close();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile another device changes `changed` documents on the server.
    let step = (spec.docs / spec.changed).max(1);
    let changed: Vec<usize> = (0..spec.changed).map(|i| i * step).collect();
    let other = Repo::build_tokio()
        .with_peer_id(PeerId::from("device-b"))
        .load()
        .await;
    let other_dial = dial(&other, server.addr).await?;
    let mut expected: Vec<(usize, ChangeHash)> = Vec::new();
    let mut missing_change_bytes = 0u64;
    let mut other_handles = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0xb0b);
    for &i in &changed {
        let id = ids.get(i).context("a changed document index")?.clone();
        let h = tokio::time::timeout(SETUP_TIMEOUT, other.find(id))
            .await
            .context("device-b's find timed out")?
            .map_err(|_| anyhow!("device-b stopped"))?
            .context("samod-server does not have a seeded document")?;
        let (hash, len) = h.with_document(|d| -> Result<(ChangeHash, usize)> {
            let hash = journal_event(d, &mut rng, "carer-2", RECONNECT_DAYS + 1, 0, 5, 7)?;
            let len = d
                .get_change_by_hash(&hash)
                .context("the change just written")?
                .raw_bytes()
                .len();
            Ok((hash, len))
        })?;
        missing_change_bytes += len as u64;
        expected.push((i, hash));
        other_handles.push(h);
    }
    uploaded(&other_dial, &other_handles).await?;
    other_dial.close();
    stop(&other).await;

    // The measured reconnect: a new connection through the counting proxy.
    proxy.reset();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(spec.timeout_secs);
    let dialer = device
        .dial(backoff(), WsDialer::new(proxy.addr)?)
        .map_err(|_| anyhow!("the device repo stopped"))?;
    let mut completed = true;
    for (i, hash) in &expected {
        let h = handles.get(*i).context("a changed document's handle")?;
        if !wait_holds(h, std::slice::from_ref(hash), deadline).await {
            completed = false;
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // samod goes on syncing every other document after the changes arrived: the bytes are the
    // whole catch-up, counted once the connection is quiet (no byte for 500 ms) or at the deadline.
    let mut last = proxy.traffic();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = proxy.traffic();
        let quiet = now.bytes_up == last.bytes_up && now.bytes_down == last.bytes_down;
        last = now;
        if quiet || Instant::now() >= deadline {
            break;
        }
    }
    dialer.close();
    stop(&device).await;
    drop(proxy);
    drop(server);
    drop(tmp);
    // Connection setup costs two round trips (the WebSocket upgrade and samod's join/peer).
    let round_trips = last.flights_up.min(last.flights_down).saturating_sub(2);
    Ok(ReconnectResult {
        system: SYSTEM.into(),
        spec: spec.clone(),
        completed,
        seconds: round3(seconds),
        bytes_up: last.bytes_up,
        bytes_down: last.bytes_down,
        flights_up: last.flights_up,
        flights_down: last.flights_down,
        round_trips,
        missing_change_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// morning

/// The people device `d` visited: `visited` consecutive people from an offset per device, so
/// that every person is visited about equally often.
fn visited_people(spec: &MorningSpec, d: usize) -> Vec<usize> {
    if spec.people == 0 {
        return Vec::new();
    }
    let n = spec.visited.min(spec.people);
    (0..n)
        .map(|j| (d * spec.visited + j) % spec.people)
        .collect()
}

/// The team's documents before the day: five per person, with a patient header, a care plan
/// and two medication orders.
fn team_documents(people: usize, seed: u64) -> Result<Vec<Automerge>> {
    let mut out = Vec::with_capacity(people * 5);
    for p in 0..people {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (p as u64).wrapping_mul(0x51ed));
        for kind in KINDS {
            let mut doc = new_document(kind, p)?;
            match kind {
                "patient" => {
                    put_record(
                        &mut doc,
                        &uuid(&mut rng),
                        &[
                            ("type", "header".into()),
                            ("name", format!("Person {p}").into()),
                            ("resuscitation", "full".into()),
                            ("allergy", "penicillin".into()),
                        ],
                    )?;
                }
                "care_plan" => {
                    for g in 0..3 {
                        put_record(
                            &mut doc,
                            &uuid(&mut rng),
                            &[
                                ("type", "goal".into()),
                                ("title", format!("Goal {g}").into()),
                                ("status", "active".into()),
                                ("text", workload::note(&mut rng).into()),
                            ],
                        )?;
                    }
                }
                "medication_request" => {
                    for o in 0..2 {
                        put_record(
                            &mut doc,
                            &uuid(&mut rng),
                            &[
                                ("type", "order".into()),
                                ("drug", format!("Drug {o}").into()),
                                ("dose", "2 tablets".into()),
                                ("times", "08:00,20:00".into()),
                                ("delegated", true.into()),
                            ],
                        )?;
                    }
                }
                _ => {}
            }
            out.push(doc);
        }
    }
    Ok(out)
}

pub async fn morning(spec: &MorningSpec) -> Result<MorningResult> {
    let tmp = tempfile::tempdir()?;
    let server_dir = tmp.path().join("server");
    let docs = tokio::task::spawn_blocking({
        let (people, seed) = (spec.people, spec.seed);
        move || team_documents(people, seed)
    })
    .await??;
    let (ids, entries) = seed(docs).await?;
    copy_into(&TokioFilesystemStorage::new(&server_dir), &entries).await;
    let server = ServerProcess::start(&server_dir).await?;

    // Each device holds every document (in memory: the server's storage is what is compared)
    // and writes its day offline, one commit per event. `expected[doc]` is the last change each
    // device wrote to it; holding it means holding all that device's changes to it.
    let mut devices: Vec<(Repo, Vec<DocHandle>)> = Vec::with_capacity(spec.devices);
    let mut expected: BTreeMap<usize, Vec<ChangeHash>> = BTreeMap::new();
    let mut changes_written = 0u64;
    for d in 0..spec.devices {
        let (repo, handles) = device_repo(
            InMemoryStorage::new(),
            &format!("device-{d}"),
            &ids,
            &entries,
        )
        .await?;
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ ((d as u64) << 20) ^ 0xda7);
        let author = format!("carer-{d}");
        let mut last: HashMap<usize, ChangeHash> = HashMap::new();
        for p in visited_people(spec, d) {
            let (journal, admin) = (p * 5 + JOURNAL, p * 5 + ADMINISTRATIONS);
            let jh = handles.get(journal).context("a journal handle")?;
            let ah = handles.get(admin).context("an administration handle")?;
            for v in 0..spec.visits_per_person as u32 {
                for e in 0..spec.events_per_visit as u32 {
                    let h = jh.with_document(|doc| {
                        journal_event(
                            doc,
                            &mut rng,
                            &author,
                            workload::DAYS_IN_MONTH,
                            v,
                            e,
                            spec.events_per_visit as u32,
                        )
                    })?;
                    last.insert(journal, h);
                    changes_written += 1;
                }
                for n in 0..spec.doses_per_visit as u32 {
                    let h = ah.with_document(|doc| {
                        administration(doc, &mut rng, &author, workload::DAYS_IN_MONTH, v, n)
                    })?;
                    last.insert(admin, h);
                    changes_written += 1;
                }
            }
        }
        for (doc, h) in last {
            expected.entry(doc).or_default().push(h);
        }
        devices.push((repo, handles));
    }
    let expected: Arc<Vec<(usize, Vec<ChangeHash>)>> = Arc::new(expected.into_iter().collect());

    // All connect at once; each device's watcher records when it holds every change.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(spec.timeout_secs);
    let mut dialers = Vec::with_capacity(devices.len());
    for (repo, _) in &devices {
        dialers.push(
            repo.dial(backoff(), WsDialer::new(server.addr)?)
                .map_err(|_| anyhow!("a device repo stopped"))?,
        );
    }
    let mut watchers = Vec::with_capacity(devices.len());
    for (_, handles) in &devices {
        let handles = handles.clone();
        let expected = expected.clone();
        watchers.push(tokio::spawn(async move {
            let mut pending: Vec<&(usize, Vec<ChangeHash>)> = expected.iter().collect();
            loop {
                pending.retain(|(doc, hashes)| handles.get(*doc).is_none_or(|h| !holds(h, hashes)));
                if pending.is_empty() {
                    return Some(started.elapsed());
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(POLL).await;
            }
        }));
    }
    let mut in_sync = 0usize;
    let mut slowest = Duration::ZERO;
    for w in watchers {
        if let Ok(Some(t)) = w.await {
            in_sync += 1;
            slowest = slowest.max(t);
        }
    }
    let completed = in_sync == spec.devices;
    let seconds = if completed {
        slowest.as_secs_f64()
    } else {
        started.elapsed().as_secs_f64()
    };
    let server_peak_rss_bytes = server.peak_rss();
    for d in &dialers {
        d.close();
    }
    // Stopped together, within one bound: a stalled repo must not hold the run up.
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(devices.iter().map(|(repo, _)| repo.stop())),
    )
    .await;
    drop(server);
    drop(tmp);
    Ok(MorningResult {
        system: SYSTEM.into(),
        backend: "filesystem".into(),
        nodes: 1,
        sessions_failed: 0,
        relayed_signature_checks: 0,
        spec: spec.clone(),
        completed,
        seconds_to_all_in_sync: round3(seconds),
        changes_written,
        changes_per_second: if completed && seconds > 0.0 {
            round3(changes_written as f64 / seconds)
        } else {
            0.0
        },
        server_peak_rss_bytes,
        devices_in_sync: in_sync,
    })
}

// ---------------------------------------------------------------------------------------------
// latency

pub async fn latency(spec: &LatencySpec) -> Result<LatencyResult> {
    let tmp = tempfile::tempdir()?;
    let server_dir: PathBuf = tmp.path().join("server");
    let server = ServerProcess::start(&server_dir).await?;
    let a = Repo::build_tokio()
        .with_peer_id(PeerId::from("device-a"))
        .load()
        .await;
    let b = Repo::build_tokio()
        .with_peer_id(PeerId::from("device-b"))
        .load()
        .await;
    let da = dial(&a, server.addr).await?;
    let db = dial(&b, server.addr).await?;
    let ha = a
        .create(new_document("journal", 0)?)
        .await
        .map_err(|_| anyhow!("device-a stopped"))?;
    uploaded(&da, std::slice::from_ref(&ha)).await?;
    let hb = tokio::time::timeout(SETUP_TIMEOUT, b.find(ha.document_id().clone()))
        .await
        .context("device-b's find timed out")?
        .map_err(|_| anyhow!("device-b stopped"))?
        .context("device-b did not find the document")?;

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut changes = Box::pin(hb.changes());
    let mut samples = Samples::with_capacity(spec.edits);
    let deadline = Instant::now() + Duration::from_secs(spec.timeout_secs);
    let mut completed = true;
    'edits: for i in 0..spec.edits {
        let (day, visit) = (1 + (i / 28) as u32 % 30, (i / 7) as u32 % 4);
        let t = Instant::now();
        let hash = ha.with_document(|d| journal_event(d, &mut rng, "carer-1", day, visit, 5, 7))?;
        loop {
            if holds(&hb, std::slice::from_ref(&hash)) {
                samples.push(t.elapsed());
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                completed = false;
                break 'edits;
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), changes.next()).await;
        }
    }
    da.close();
    db.close();
    stop(&a).await;
    stop(&b).await;
    drop(server);
    drop(tmp);
    Ok(LatencyResult {
        system: SYSTEM.into(),
        backend: "filesystem".into(),
        nodes: 1,
        spec: spec.clone(),
        completed,
        p50_ms: samples.percentile(0.5).unwrap_or(0.0),
        p99_ms: samples.percentile(0.99).unwrap_or(0.0),
        max_ms: samples.max().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    //! Small runs of each workload against a real samod-server process (which these build with
    //! cargo, so they are ignored by default): `cargo test -p nara-bench samod -- --ignored`.

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "builds samod-server in the test profile (minutes of dependencies) and spawns it; CI runs the same code through nara-bench --baseline samod in BENCHMARKS.md, not here"]
    async fn samod_reconnect_small() -> Result<()> {
        let r = reconnect(&ReconnectSpec {
            docs: 50,
            changed: 5,
            seed: 1,
            timeout_secs: 60,
        })
        .await?;
        println!("{}", serde_json::to_string(&r)?);
        assert!(r.completed);
        assert!(r.missing_change_bytes > 0);
        assert!(r.bytes_down > r.missing_change_bytes);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "builds samod-server in the test profile (minutes of dependencies) and spawns it; CI runs the same code through nara-bench --baseline samod in BENCHMARKS.md, not here"]
    async fn samod_morning_small() -> Result<()> {
        let r = morning(&MorningSpec {
            devices: 3,
            people: 4,
            visited: 2,
            visits_per_person: 2,
            events_per_visit: 7,
            doses_per_visit: 2,
            seed: 1,
            timeout_secs: 60,
        })
        .await?;
        println!("{}", serde_json::to_string(&r)?);
        assert!(r.completed);
        assert_eq!(r.devices_in_sync, 3);
        assert_eq!(r.changes_written, 3 * 2 * 2 * 9);
        assert!(r.server_peak_rss_bytes > 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "builds samod-server in the test profile (minutes of dependencies) and spawns it; CI runs the same code through nara-bench --baseline samod in BENCHMARKS.md, not here"]
    async fn samod_latency_small() -> Result<()> {
        let r = latency(&LatencySpec {
            edits: 50,
            seed: 1,
            timeout_secs: 60,
        })
        .await?;
        println!("{}", serde_json::to_string(&r)?);
        assert!(r.completed);
        assert!(r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms);
        Ok(())
    }
}
