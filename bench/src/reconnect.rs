//! `reconnect`: a device holding a whole caseload reconnects after some documents changed on one
//! side, over an in-process link (the real protocol state machines and SQLite stores, no
//! sockets). Counts messages, bytes and round trips against the physical floor: the encoded size
//! of exactly the changes the other side lacked.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sync_core::model::{EventBody, GoalStatus, Register, RegisterValue};
use sync_core::protocol::{
    AccessPolicy, DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerSession,
};
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// The server holds the changes the device lacks.
    Server,
    /// The device holds the changes the server lacks.
    Device,
}

pub struct Params {
    pub docs: usize,
    pub changed: usize,
    pub side: Side,
}

/// Everyone may read and write everything: access is not what this measures.
pub(crate) struct OpenPolicy(pub(crate) Vec<PatientId>);

impl AccessPolicy for OpenPolicy {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        self.0.clone()
    }
}

pub(crate) fn author(user: &str, role: Role) -> Result<Author> {
    Ok(Author::new(
        UserId::new(user)?,
        role,
        DeviceId::new(format!("{user}-phone"))?,
    ))
}

fn rid(s: String) -> Result<RecordId> {
    Ok(RecordId::new(s)?)
}

#[derive(Default)]
struct Traffic {
    messages_up: usize,
    messages_down: usize,
    bytes_up: usize,
    bytes_down: usize,
    round_trips: usize,
}

/// Runs one connection until both sides are quiet. A round trip is a flight of messages up
/// that is answered by a flight down.
fn drive(
    device: &mut DeviceSession,
    device_repo: &mut Repo<SqliteStore>,
    server: &mut ServerSession,
    server_repo: &mut Repo<SqliteStore>,
    policy: &OpenPolicy,
    now: Timestamp,
) -> Result<Traffic> {
    let mut t = Traffic::default();
    device.connect(device_repo, now)?;
    for _ in 0..10_000 {
        let mut up = Vec::new();
        while let Some(b) = device.poll_transmit() {
            up.push(b);
        }
        for b in &up {
            t.messages_up += 1;
            t.bytes_up += b.len();
            server.handle_bytes(server_repo, policy, b, now);
        }
        let mut down = Vec::new();
        while let Some(b) = server.poll_transmit() {
            down.push(b);
        }
        if !up.is_empty() && !down.is_empty() {
            t.round_trips += 1;
        }
        for b in &down {
            t.messages_down += 1;
            t.bytes_down += b.len();
            device.handle_bytes(device_repo, b, now);
        }
        while server.poll_event().is_some() {}
        while let Some(ev) = device.poll_event() {
            if let DeviceEvent::Closed { reason, detail } = ev {
                bail!("the connection closed: {reason:?} {detail}");
            }
        }
        if up.is_empty() && down.is_empty() {
            device.disconnected();
            return Ok(t);
        }
    }
    bail!("the protocol did not go quiet")
}

pub fn run(p: &Params) -> Result<Value> {
    if p.docs < 5 || p.changed > p.docs {
        bail!("--docs must be at least 5 and --changed at most --docs");
    }
    let dir = tempfile::tempdir()?;
    let mut server_repo = Repo::new(SqliteStore::open(dir.path().join("server.db"))?);
    let mut device_repo = Repo::new(SqliteStore::open(dir.path().join("device.db"))?);
    let mut other_repo = Repo::new(SqliteStore::open(dir.path().join("other.db"))?);
    let nurse = author("nurse", Role::Nurse)?;
    let month: Month = "2026-11".parse()?;
    let t0 = Timestamp(1_795_478_400_000);

    // A caseload: five documents per person, each with some history, written on another phone.
    let (patients, docs) = caseload(p.docs, month)?;
    let setup = Instant::now();
    for (i, doc) in docs.iter().enumerate() {
        write_something(&mut other_repo, doc, &nurse, t0, i)?;
    }
    let policy = OpenPolicy(patients.clone());
    // The measured phone is a district nurse's, so any of the documents may change on it.
    let device_author = author("nurse-2", Role::Nurse)?;
    let other_peer = Peer {
        author: nurse.clone(),
    };
    let device_peer = Peer {
        author: device_author.clone(),
    };
    let mut other = DeviceSession::new(DeviceConfig::default());
    let mut s = ServerSession::new(other_peer.clone(), ServerConfig::default());
    drive(
        &mut other,
        &mut other_repo,
        &mut s,
        &mut server_repo,
        &policy,
        t0,
    )?;
    // The measured device syncs once, fully.
    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut s = ServerSession::new(device_peer.clone(), ServerConfig::default());
    drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        t0,
    )?;
    let setup_s = setup.elapsed().as_secs_f64();

    // A day later, `changed` documents change on one side.
    let later = Timestamp(t0.0 + 86_400_000);
    let step = (docs.len() / p.changed.max(1)).max(1);
    let changed: Vec<&DocumentId> = docs.iter().step_by(step).take(p.changed).collect();
    let mut missing_change_bytes = 0usize;
    let (writer_repo, writer) = match p.side {
        Side::Server => (&mut other_repo, &nurse),
        Side::Device => (&mut device_repo, &device_author),
    };
    let mut new_hashes = BTreeSet::new();
    for (i, doc) in changed.iter().enumerate() {
        let hash = write_something(writer_repo, doc, writer, later, 100_000 + i)?;
        let bytes = writer_repo
            .get(doc)?
            .automerge_change(&hash)
            .context("the change just written is missing")?
            .raw_bytes()
            .len();
        missing_change_bytes += bytes;
        new_hashes.insert(hash);
    }
    if p.side == Side::Server {
        let mut s = ServerSession::new(other_peer, ServerConfig::default());
        drive(
            &mut other,
            &mut other_repo,
            &mut s,
            &mut server_repo,
            &policy,
            later,
        )?;
    }

    // The measured reconnect.
    let started = Instant::now();
    let mut s = ServerSession::new(device_peer, ServerConfig::default());
    let t = drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;

    // Check it did its job: both sides now hold every new change.
    for doc in &changed {
        for repo in [&mut device_repo, &mut server_repo] {
            let d = repo.get(doc)?;
            if !new_hashes.iter().any(|h| d.automerge_change(h).is_some()) {
                bail!("{doc} did not sync");
            }
        }
    }
    let total = t.bytes_up + t.bytes_down;
    let budget = 1.2 * missing_change_bytes as f64 + 64.0 * p.changed as f64 + 512.0;
    Ok(json!({
        "bench": "reconnect",
        "transport": "in-process",
        "side": match p.side { Side::Server => "server", Side::Device => "device" },
        "docs": docs.len(),
        "changed": p.changed,
        "messages_up": t.messages_up,
        "messages_down": t.messages_down,
        "bytes_up": t.bytes_up,
        "bytes_down": t.bytes_down,
        "round_trips": t.round_trips,
        "missing_change_bytes": missing_change_bytes,
        "byte_budget": budget,
        "overhead_bytes": total as i64 - missing_change_bytes as i64,
        "goal": {
            "round_trips_1": t.round_trips == 1,
            "messages_each_way_le_2": t.messages_up <= 2 && t.messages_down <= 2,
            "bytes_within_budget": (total as f64) <= budget,
        },
        "reconnect_ms": elapsed_ms,
        "setup_s": setup_s,
    }))
}

/// A caseload of `docs` documents: five per person (header, plan, medication, the month's
/// administrations and journal), the last person's cut short.
pub(crate) fn caseload(docs: usize, month: Month) -> Result<(Vec<PatientId>, Vec<DocumentId>)> {
    let patients: Vec<PatientId> = (0..docs.div_ceil(5))
        .map(|i| PatientId::new(format!("p{i:04}")))
        .collect::<Result<_, _>>()?;
    let mut all: Vec<DocumentId> = Vec::new();
    for pt in &patients {
        all.extend([
            DocumentId::patient_header(pt),
            DocumentId::care_plan(pt),
            DocumentId::medication(pt),
            DocumentId::administrations(pt, month),
            DocumentId::journal(pt, month),
        ]);
    }
    all.truncate(docs);
    Ok((patients, all))
}

/// Writes one ordinary change to `doc` (what depends on the kind) and returns its hash.
pub(crate) fn write_something(
    repo: &mut Repo<SqliteStore>,
    doc: &DocumentId,
    who: &Author,
    at: Timestamp,
    n: usize,
) -> Result<sync_core::ChangeHash> {
    let saved = repo.change(doc, who, at, edit_for(doc, who.role, at, n)?)?;
    saved.change.context("the write changed nothing")
}

/// An edit to use as change number `n` of `doc`: one ordinary record of the document's kind
/// that an author of `role` may write.
pub type SomeEdit =
    Box<dyn FnOnce(&mut sync_core::model::Edit<'_>) -> Result<(), sync_core::ModelError> + Send>;

pub fn edit_for(doc: &DocumentId, role: Role, at: Timestamp, n: usize) -> Result<SomeEdit> {
    use sync_core::DocKind;
    let id = rid(format!("r{n}"))?;
    let e_id = rid(format!("e{n}"))?;
    Ok(match doc.kind() {
        DocKind::Patient => Box::new(move |e| {
            e.revise(
                id,
                Register::Risk(e_id),
                Vec::new(),
                RegisterValue::Risk {
                    description: format!("Fall risk, assessed visit {n}"),
                    active: true,
                },
            )
        }),
        DocKind::CarePlan => Box::new(move |e| {
            e.create(
                id,
                Register::Goal(e_id),
                RegisterValue::Goal {
                    title: format!("Goal {n}"),
                    status: GoalStatus::Active,
                },
                Some("Manage the stairs with support twice a day."),
            )
        }),
        DocKind::MedicationRequest => Box::new(move |e| {
            e.create(
                id,
                Register::Order(e_id),
                RegisterValue::Order(sync_core::model::MedicationOrder {
                    drug: "Paracetamol".into(),
                    strength: "500 mg".into(),
                    dose: "2 tablets".into(),
                    route: "oral".into(),
                    times: vec!["08:00".into(), "20:00".into()],
                    start: "2026-11-01".into(),
                    stop: None,
                    delegated: true,
                    window_minutes: None,
                    prn: None,
                    valid_from: at,
                }),
                None,
            )
        }),
        DocKind::MedicationAdministration if role == Role::Nurse => Box::new(move |e| {
            e.record(
                id,
                EventBody::FlagAcknowledgement {
                    flag: format!("review/{n}"),
                    covers: vec![e_id],
                    comment: Some("Reviewed at the weekly round.".into()),
                },
            )
        }),
        DocKind::MedicationAdministration => Box::new(move |e| {
            e.record(
                id,
                EventBody::Administration {
                    order: e_id.clone(),
                    order_revision: e_id,
                    slot: "2026-11-24T08:00".into(),
                    outcome: sync_core::model::AdministrationOutcome::Given,
                    reason: None,
                    occurred_at: at,
                },
            )
        }),
        DocKind::Journal => Box::new(move |e| {
            e.record(id, EventBody::Note {
                body: "Morning visit: helped with shower and breakfast, took a short walk to the mailbox. In good spirits.".into(),
                corrects: None,
            })
        }),
    })
}

/// `reconnect --transport tls`: the real `nara-server` process, real devices (`nara_client`)
/// over TLS WebSockets. Device B writes one change into each of `docs` documents (200 people's
/// five documents for 1,000), device A syncs them all; A goes away, B changes `changed` of
/// them; then A reconnects through a [`crate::meter::CountingProxy`]: seconds from opening the
/// connection until A has stored every missing change (A's `DocumentUpdated` events), bytes
/// and flights at the proxy for the whole connection (TLS handshake, WebSocket upgrade and
/// close included).
pub async fn run_tls(spec: &crate::spec::ReconnectSpec) -> Result<crate::spec::ReconnectResult> {
    use crate::{meter, procs, team};
    use std::time::Duration;
    if spec.docs < 5 || spec.changed > spec.docs {
        bail!("--docs must be at least 5 and --changed at most --docs");
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let dir = team::directory(&data)?;
    let nurses = team::users(&dir, "nurse-", 2, Role::Nurse)?;
    let patients = team::patients(&dir, spec.docs.div_ceil(5))?;
    team::assign_all(&dir, &nurses, &patients)?;
    let server = procs::ServerProc::start(&data, &[])?;
    let proxy = meter::start(server.addr).await?;

    let b = team::enroll(
        &dir,
        &server.url(),
        &server.pin,
        &nurses[1],
        &tmp.path().join("b"),
        team::options(),
    )
    .await?;
    let a = team::enroll(
        &dir,
        &format!("https://{}", proxy.addr),
        &server.pin,
        &nurses[0],
        &tmp.path().join("a"),
        team::options(),
    )
    .await?;
    let mut docs = Vec::new();
    for p in &patients {
        docs.extend(team::documents(p)?);
    }
    docs.truncate(spec.docs);
    team::write_each(&b, &docs, 0)?;
    b.sync_once().await?;
    let first = a.sync_once().await?;
    if first.received < docs.len() as u64 {
        bail!(
            "device A received {} of {} changes in its first sync",
            first.received,
            docs.len()
        );
    }

    // While A is away, B changes `changed` documents.
    let step = (docs.len() / spec.changed.max(1)).max(1);
    let changed: Vec<DocumentId> = docs
        .iter()
        .step_by(step)
        .take(spec.changed)
        .cloned()
        .collect();
    let mut missing_change_bytes = 0u64;
    for (i, doc) in changed.iter().enumerate() {
        let at = Timestamp(team::DAY_MS + 86_400_000 + i as i64);
        let saved = b.change(doc, at, edit_for(doc, Role::Nurse, at, 100_000 + i)?)?;
        let hash = saved.change.context("the write changed nothing")?;
        missing_change_bytes += b.with_repo(|r| -> Result<u64> {
            Ok(r.get(doc)?
                .automerge_change(&hash)
                .context("the change just written is missing")?
                .raw_bytes()
                .len() as u64)
        })?;
    }
    b.sync_once().await?;

    // The measured reconnect.
    let mut events = a.events();
    proxy.reset();
    let started = Instant::now();
    let mut waiting: BTreeSet<DocumentId> = changed.iter().cloned().collect();
    let mut seconds = None;
    let sync = a.sync_once();
    tokio::pin!(sync);
    let deadline = tokio::time::sleep(Duration::from_secs(spec.timeout_secs));
    tokio::pin!(deadline);
    let mut report = None;
    while report.is_none() || (seconds.is_none() && !waiting.is_empty()) {
        tokio::select! {
            r = &mut sync, if report.is_none() => report = Some(r?),
            ev = events.recv() => match ev {
                Ok(DeviceEvent::DocumentUpdated { doc }) => {
                    waiting.remove(&doc);
                    if waiting.is_empty() && seconds.is_none() {
                        seconds = Some(started.elapsed().as_secs_f64());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
            _ = &mut deadline => break,
        }
    }
    // Let the close reach the proxy.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = proxy.traffic();
    let completed = waiting.is_empty();
    Ok(crate::spec::ReconnectResult {
        system: "nara".into(),
        spec: spec.clone(),
        completed,
        seconds: seconds.unwrap_or_else(|| started.elapsed().as_secs_f64()),
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        flights_up: t.flights_up,
        flights_down: t.flights_down,
        // Flights up, less TLS's own (the ClientHello) and the close frame: the protocol's
        // round trips, the first of which also carries the TLS finish and the WebSocket
        // upgrade request (early frames: the hello does not wait for the upgrade's answer).
        round_trips: t.flights_up.saturating_sub(2),
        missing_change_bytes,
    })
}
