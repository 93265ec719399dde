//! `slowlink`: one worker's day (`people` visited, WORKLOAD.md: 4 visits of 7 journal events
//! and 4 administrations each, one commit per event) uploaded from a real device to the real
//! `nara-server` over a bad mobile link, against the floors of LIMITS.md (28.5 KB: the day
//! gzip'd as one stream of per-visit Automerge commits; 3.6 s at 64 kbit/s).
//!
//! The link, device side first: a [`CountingProxy`] (bytes, flights), the integration tests'
//! `FaultProxy` (bandwidth cap per direction; loss as stalls: TCP retransmits, so a lost
//! segment shows above TCP as a wait of about a retransmission timeout), then a delay line of
//! half the round trip each way that does not serialise chunks (a propagation delay).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nara_client::Device;
use nara_tests::net::{FaultProxy, LinkFaults};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sync_core::model::{AdministrationOutcome, EventBody};
use sync_core::{DocumentId, PatientId, RecordId, Role, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::meter::{self, CountingProxy};
use crate::procs::ServerProc;
use crate::spec::MorningSpec;
use crate::team;

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub people: usize,
    pub visits_per_person: usize,
    pub events_per_visit: usize,
    pub doses_per_visit: usize,
    pub bits_per_second: usize,
    pub round_trip_ms: u64,
    pub loss_percent: u32,
    /// The wait a lost segment costs (about a retransmission timeout).
    pub loss_stall_ms: u64,
    pub seed: u64,
    pub timeout_secs: u64,
    /// The app's shape: one commit per event (as before issue 13), or a visit's records saved
    /// together at its end (one change per document and visit).
    pub per_event: bool,
    /// Plain frames (no compression), as before issue 13.
    pub plain: bool,
    /// Target KiB of changes per upload (the unit acknowledged).
    pub upload_kib: usize,
    /// The hello and first uploads written behind the WebSocket upgrade request (the
    /// default), or after its answer (as before).
    pub early_frames: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlowlinkResult {
    pub system: String,
    pub params: Params,
    pub completed: bool,
    pub changes: u64,
    /// From opening the connection until the server acknowledged every change.
    pub seconds: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub flights_up: u64,
    pub flights_down: u64,
    /// LIMITS.md: the day as a gzip'd stream of per-visit commits, and its time at 64 kbit/s.
    pub floor_bytes: u64,
    pub floor_seconds: f64,
    pub bytes_over_floor: f64,
    pub seconds_over_floor: f64,
    /// Where the time goes (estimates from the link's parameters): sending the bytes up at
    /// the link's rate, the round trips of the connection (TLS 1.3, then the data's way up and
    /// the last acknowledgement's way down: 2; 3 without early frames, which wait for the
    /// WebSocket upgrade's answer; TCP's own handshake is not on this link, which the proxies
    /// accept locally), and the stalls (one per lost 1 KiB chunk, expected). `phases` has
    /// what was measured.
    pub seconds_for_bytes_up: f64,
    pub seconds_for_round_trips: f64,
    pub seconds_for_stalls_expected: f64,
    /// What the device saw when, in ms from opening the connection (measured).
    pub phases: Phases,
    /// Every flight (a maximal run of bytes one way) on the device's side of the link, in ms
    /// from opening the connection.
    pub flights: Vec<meter::Flight>,
}

/// The measured connection's timeline on the device, in ms from opening it: the TLS server's
/// flight arriving (the first bytes down), the runtime starting the protocol (status
/// `Syncing`: the WebSocket is open, or with early frames, its upgrade is sent), the server's
/// answer to the hello (`ClockChecked`), each upload's acknowledgement, caught up, and in sync
/// (caught up with nothing in flight).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    pub tls_server_flight_ms: Option<f64>,
    pub protocol_started_ms: Option<f64>,
    pub hello_answered_ms: Option<f64>,
    pub upload_acks_ms: Vec<f64>,
    pub caught_up_ms: Option<f64>,
    pub in_sync_ms: Option<f64>,
    /// The last byte up (the last upload's tail leaving the device).
    pub last_byte_up_ms: Option<f64>,
}

pub async fn run(p: &Params) -> Result<SlowlinkResult> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let dir = team::directory(&data)?;
    let nurse = team::users(&dir, "nurse-", 1, Role::Nurse)?;
    let carer = team::users(&dir, "carer-", 1, Role::Carer)?;
    let patients = team::patients(&dir, p.people)?;
    team::assign_all(&dir, &nurse, &patients)?;
    team::assign_all(&dir, &carer, &patients)?;
    let server = ServerProc::start(&data, &[])?;

    // The people's documents exist (written by the nurse over a good link).
    team::seed(
        &dir,
        &server,
        &nurse[0],
        &patients,
        &tmp.path().join("nurse"),
    )
    .await?;

    // The worker's phone sits behind the bad link from the start.
    let delay = delay_line(server.addr, Duration::from_millis(p.round_trip_ms / 2)).await?;
    let faults = LinkFaults {
        bytes_per_second: p.bits_per_second / 8,
        delay: Duration::ZERO,
        stall_per_mille: p.loss_percent * 10,
        stall: Duration::from_millis(p.loss_stall_ms),
        cut_after_down: None,
    };
    let fault = FaultProxy::start(delay, faults, p.seed).await;
    let counter: CountingProxy = meter::start(fault.addr).await?;
    let options = nara_client::SyncOptions {
        compress: !p.plain,
        upload_bytes: p.upload_kib * 1024,
        early_frames: p.early_frames,
        ..team::options()
    };
    let phone = team::enroll(
        &dir,
        &format!("https://{}", counter.addr),
        &server.pin,
        &carer[0],
        &tmp.path().join("carer"),
        options,
    )
    .await?;
    phone.sync_once().await?;

    // The day, offline.
    let spec = MorningSpec {
        devices: 1,
        people: p.people,
        visited: p.people,
        visits_per_person: p.visits_per_person,
        events_per_visit: p.events_per_visit,
        doses_per_visit: p.doses_per_visit,
        seed: p.seed,
        timeout_secs: p.timeout_secs,
    };
    if p.per_event {
        crate::morning::write_day(&phone, 0, &patients, &spec)?;
    } else {
        write_day_per_visit(&phone, &patients, &spec)?;
    }
    let changes = phone.pending_count()? as u64;

    counter.reset();
    let started = Instant::now();
    let watcher = watch_phases(&phone, started);
    let report = tokio::time::timeout(Duration::from_secs(p.timeout_secs), phone.sync_once()).await;
    let seconds = started.elapsed().as_secs_f64();
    let flights = counter.flights();
    let mut phases = watcher.finish().await;
    phases.tls_server_flight_ms = flights.iter().find(|f| f.dir == "down").map(|f| f.end_ms);
    phases.last_byte_up_ms = flights
        .iter()
        .filter(|f| f.dir == "up")
        .map(|f| f.end_ms)
        .reduce(f64::max);
    let completed = match report {
        Ok(Ok(r)) => r.pending == 0 && r.uploaded as u64 == changes,
        Ok(Err(e)) => bail!("the sync failed: {e}"),
        Err(_) => false,
    };
    let t = counter.traffic();
    let floor_bytes = 28_500u64 * p.people as u64 / 10;
    let floor_seconds = floor_bytes as f64 * 8.0 / p.bits_per_second as f64;
    // The quiet period sync_once waits before it disconnects is not transfer time.
    let seconds = (seconds - team::options().quiet_for.as_secs_f64()).max(0.0);
    let bytes_per_second = (p.bits_per_second / 8).max(1) as f64;
    let chunks_up = t.bytes_up.div_ceil(1024) as f64;
    Ok(SlowlinkResult {
        system: "nara".into(),
        params: p.clone(),
        completed,
        changes,
        seconds,
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        flights_up: t.flights_up,
        flights_down: t.flights_down,
        floor_bytes,
        floor_seconds,
        bytes_over_floor: (t.bytes_up + t.bytes_down) as f64 / floor_bytes as f64,
        seconds_over_floor: seconds / floor_seconds,
        seconds_for_bytes_up: t.bytes_up as f64 / bytes_per_second,
        seconds_for_round_trips: if p.early_frames { 2.0 } else { 3.0 } * p.round_trip_ms as f64
            / 1000.0,
        seconds_for_stalls_expected: chunks_up * f64::from(p.loss_percent) / 100.0
            * p.loss_stall_ms as f64
            / 1000.0,
        phases,
        flights,
    })
}

/// Records the device's status changes and events with their times, until finished.
struct PhaseWatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Phases>,
}

impl PhaseWatcher {
    async fn finish(self) -> Phases {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

fn watch_phases(phone: &Device, started: Instant) -> PhaseWatcher {
    use nara_client::Status;
    use sync_core::protocol::DeviceEvent;
    // Every change in order: the latest value alone could coalesce a short "syncing" away.
    let mut status = phone.status_changes();
    let mut events = phone.events();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let ms = move || started.elapsed().as_secs_f64() * 1000.0;
    let task = tokio::spawn(async move {
        let mut ph = Phases::default();
        let mut status_open = true;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                changed = status.next(), if status_open => {
                    let Some(now) = changed else {
                        status_open = false;
                        continue;
                    };
                    match now {
                        Status::Syncing { .. } if ph.protocol_started_ms.is_none() => {
                            ph.protocol_started_ms = Some(ms());
                        }
                        Status::InSync { .. } if ph.in_sync_ms.is_none() => {
                            ph.in_sync_ms = Some(ms());
                        }
                        _ => {}
                    }
                }
                event = events.recv() => match event {
                    Ok(DeviceEvent::ClockChecked { .. }) if ph.hello_answered_ms.is_none() => {
                        ph.hello_answered_ms = Some(ms());
                    }
                    Ok(DeviceEvent::UploadAcknowledged { .. }) => ph.upload_acks_ms.push(ms()),
                    Ok(DeviceEvent::CaughtUp) if ph.caught_up_ms.is_none() => {
                        ph.caught_up_ms = Some(ms());
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        ph
    });
    PhaseWatcher { stop, task }
}

/// The day of `morning::write_day` (the same records, times and notes) as the app saves it
/// when a visit's records are written together at its end: per visit, one change to the
/// journal (start, task outcomes, the note, stop) and one to the administration log (the
/// doses), committed together (`Device::change_together`, as `care::visit` does).
fn write_day_per_visit(d: &Device, patients: &[PatientId], spec: &MorningSpec) -> Result<()> {
    let month = team::month()?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    for k in 0..spec.visited {
        let p = &patients[k % patients.len()];
        let journal = DocumentId::journal(p, month);
        let admin = DocumentId::administrations(p, month);
        for v in 0..spec.visits_per_person {
            let visit_start = team::DAY_MS + (v as i64) * 3 * 3_600_000;
            // Saved at the visit's end.
            let end = Timestamp(visit_start + 40 * 60_000);
            let mut notes = Vec::new();
            for e in 0..spec.events_per_visit {
                let body = if e + 2 == spec.events_per_visit {
                    crate::workload::note(&mut rng)
                } else {
                    format!("Visit {v}: task {e} done.")
                };
                // The app's ids, as `care::visit` makes them (`Clock::new_id` at the save):
                // the bytes on the wire are the app's.
                notes.push((nara_client::care::id_at(end), body));
            }
            let mut doses = Vec::new();
            for s in 0..spec.doses_per_visit {
                let at = Timestamp(visit_start + 30 * 60_000 + s as i64);
                let id = nara_client::care::id_at(end);
                let order = RecordId::new(format!("o{}", rng.random_range(0..2)))?;
                doses.push((id, order, format!("2026-11-24T{:02}:00", 8 + v * 3 + s), at));
            }
            d.change_together(&[journal.clone(), admin.clone()], end, |doc, ed| {
                if *doc == journal {
                    for (id, body) in &notes {
                        ed.record(
                            id.clone(),
                            EventBody::Note {
                                body: body.clone(),
                                corrects: None,
                            },
                        )?;
                    }
                } else {
                    for (id, order, slot, at) in &doses {
                        ed.record(
                            id.clone(),
                            EventBody::Administration {
                                order: order.clone(),
                                order_revision: order.clone(),
                                slot: slot.clone(),
                                outcome: AdministrationOutcome::Given,
                                reason: None,
                                occurred_at: *at,
                            },
                        )?;
                    }
                }
                Ok(())
            })
            .with_context(|| format!("writing a visit of {p}"))?;
        }
    }
    Ok(())
}

/// A TCP relay that delivers every chunk `one_way` after it was read, in order, without
/// holding back the chunks behind it (a propagation delay, not a per-chunk wait).
async fn delay_line(upstream: SocketAddr, one_way: Duration) -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed(cr, sw, one_way));
            tokio::spawn(delayed(sr, cw, one_way));
        }
    });
    Ok(addr)
}

async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    one_way: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if tx
            .send((tokio::time::Instant::now() + one_way, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
