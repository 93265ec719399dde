//! `latency`: devices A and B (real `nara_client::Device`s, both `watch`ing the real
//! `nara-server` process over TLS) share one person. A writes `edits` journal notes one after
//! another; each is timed from before A's local durable write until B's runtime reports the
//! journal updated (`DeviceEvent::DocumentUpdated`). The next edit starts after B saw the last.
//! A and B each run on a task of their own (until session 32 they shared one, so B's batch
//! waited while A took the acknowledgement of its upload, which arrives at the same moment).
//! With `--database` and `--nodes 2` or more, A and B sync through different nodes (one
//! PostgreSQL database), so each edit crosses nodes through the database's feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nara_client::Status;
use sync_core::model::EventBody;
use sync_core::protocol::DeviceEvent;
use sync_core::{DocumentId, Role, Timestamp};
use tokio::sync::oneshot;

use crate::nodes::Deployment;
use crate::spec::{LatencyResult, LatencySpec};
use crate::stats::Samples;
use crate::team;

/// Runs the latency workload against `deployment` (A on node 0, B on node `1 % nodes`).
pub async fn run(spec: &LatencySpec, deployment: &Deployment) -> Result<LatencyResult> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let dir = deployment.directory(&data)?;
    let dir = &*dir;
    let users = team::users(dir, "carer-", 2, Role::Carer)?;
    let patients = team::patients(dir, 1)?;
    team::assign_all(dir, &users, &patients)?;
    let nodes = deployment.start(tmp.path())?;
    let (node_a, node_b) = (nodes.for_device(0), nodes.for_device(1));
    let a = team::enroll(
        dir,
        &node_a.url(),
        &node_a.pin,
        &users[0],
        &tmp.path().join("a"),
        team::options(),
    )
    .await?;
    let b = team::enroll(
        dir,
        &node_b.url(),
        &node_b.pin,
        &users[1],
        &tmp.path().join("b"),
        team::options(),
    )
    .await?;
    let journal = DocumentId::journal(&patients[0], team::month()?);

    // Each device runs on its own task, as two phones would (and as samod's repos run theirs,
    // `samod_baseline.rs`): one device taking a message does not hold up the other.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (stop_a, stop_a_rx) = oneshot::channel::<()>();
    let (stop_b, stop_b_rx) = oneshot::channel::<()>();
    let mut events = b.events();
    let deadline = Instant::now() + Duration::from_secs(spec.timeout_secs);
    let measure = async {
        // Both connected and in sync first.
        for d in [&*a, &*b] {
            let mut status = d.subscribe();
            tokio::time::timeout(
                Duration::from_secs(30),
                status.wait_for(|s| matches!(s, Status::InSync { .. })),
            )
            .await
            .context("a device did not get in sync")??;
        }
        let mut samples = Samples::with_capacity(spec.edits);
        for n in 0..spec.edits {
            if Instant::now() > deadline {
                return Ok::<_, anyhow::Error>((samples, false));
            }
            let at = Timestamp(team::DAY_MS + n as i64);
            // The app's ids (`care::id_at`): their order sets what Automerge's apply costs.
            let id = nara_client::care::id_at(at);
            let started = Instant::now();
            a.change(&journal, at, |e| {
                e.record(
                    id,
                    EventBody::Note {
                        body: format!("Edit {n}: checked in, all well."),
                        corrects: None,
                    },
                )
            })?;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, events.recv()).await {
                    Err(_) => return Ok((samples, false)),
                    Ok(Ok(DeviceEvent::DocumentUpdated { doc })) if doc == journal => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(_)) => bail!("device B's events ended"),
                }
            }
            samples.push(started.elapsed());
        }
        Ok((samples, true))
    };
    // Each watches until its stop is sent.
    let watching = |device: &Arc<nara_client::Device>, stop: oneshot::Receiver<()>| {
        let device = device.clone();
        tokio::spawn(async move {
            device
                .watch(async {
                    let _ = stop.await;
                })
                .await
        })
    };
    let watch_a = watching(&a, stop_a_rx);
    let watch_b = watching(&b, stop_b_rx);
    let measured = measure.await;
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    watch_a.await??;
    watch_b.await??;
    let (mut samples, completed) = measured?;
    drop(nodes);
    Ok(LatencyResult {
        system: "nara".into(),
        backend: deployment.backend().into(),
        nodes: deployment.nodes,
        spec: spec.clone(),
        completed,
        p50_ms: samples.median().unwrap_or(f64::NAN),
        p99_ms: samples.percentile(0.99).unwrap_or(f64::NAN),
        max_ms: samples.max().unwrap_or(f64::NAN),
    })
}
