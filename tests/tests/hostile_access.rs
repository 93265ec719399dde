//! Issue 11: a device holding a valid credential cannot stretch its access (real server, TLS,
//! SQLite; the hostile device is a tampered app speaking the protocol by hand).
//!
//! - hole 4: the write grace after an unassignment is the server's to end, not the device's: a
//!   device sent `Withdrawn` may finish only the uploads that can have crossed it on the wire
//!   (`GRACE_UPLOADS`), whether or not it acknowledges; and a change written in the grace may
//!   only build on what the server held when the assignment ended.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use nara_tests::hostile::*;
use nara_tests::net::{TestDevice, TestServer, client_config};
use nara_tests::*;
use server::directory::Directory;
use sync_core::protocol::GRACE_UPLOADS;
use sync_core::protocol::wire::{
    self, DeviceMessage, DocChanges, Hello, RefusalCode, Refused, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A tampered app: the device's credential, messages written by hand (it never acknowledges).
async fn connect(server: &TestServer, device: &TestDevice) -> Ws {
    let url = format!("wss://localhost:{}/v1/sync", server.addr.port());
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}.{}", device.author.device, device.secret)
            .parse()
            .unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector = tokio_tungstenite::Connector::Rustls(client_config(&server.fingerprint));
    let (ws, _) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
            .await
            .unwrap();
    ws
}

async fn send(ws: &mut Ws, msg: DeviceMessage) {
    let bytes = wire::encode(&msg).unwrap();
    ws.send(Message::Binary(bytes.into())).await.unwrap();
}

/// The next message from the server for which `pick` gives a value (others are skipped).
async fn until<T>(ws: &mut Ws, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    let msg: ServerMessage = wire::decode(&bytes).unwrap();
                    if let Some(v) = pick(msg) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the server did not answer")
}

async fn upload_ack(ws: &mut Ws, number: u32) -> Vec<Refused> {
    until(ws, |m| match m {
        ServerMessage::UploadAck { upload, refused } if upload == number => Some(refused),
        _ => None,
    })
    .await
}

fn hello(upload: Vec<DocChanges>) -> DeviceMessage {
    DeviceMessage::Hello(Hello {
        cursor: None,
        received: Vec::new(),
        priority: Vec::new(),
        backfill: Vec::new(),
        upload,
    })
}

async fn unassign(server: &TestServer, user: &str, p: &str) {
    server
        .directory
        .unassign(&uid(user), &patient(p), server.state.ended_now().unwrap())
        .unwrap();
    server.state.refresh().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole4_the_grace_ends_on_the_servers_word_not_the_devices_acknowledgement() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    quiet(bo.sync(&server).await);
    // Written while bo cares for p1, not uploaded yet: S4 says it is kept.
    note(&mut bo, "p1", "bo-before", "Visit: all well.");
    unassign(&server, "bo", "p1").await;

    let outcome = with_honest_pair(&server, &mut nina, &mut anna, "h4", async {
        let mut ws = connect(&server, &bo).await;
        send(
            &mut ws,
            hello(changes(journal("p1"), pending(&mut bo, &journal("p1")))),
        )
        .await;
        // The Hello's upload is stored (within the grace), and bo is told (at once: that
        // upload is what disclosed p1 to this device).
        let (mut acked, mut told) = (None, false);
        while acked.is_none() || !told {
            until(&mut ws, |m| match m {
                ServerMessage::UploadAck { upload: 0, refused } => {
                    acked = Some(refused);
                    Some(())
                }
                ServerMessage::Withdrawn { .. } => {
                    told = true;
                    Some(())
                }
                _ => None,
            })
            .await;
        }
        let refused = acked.unwrap_or_default();
        assert!(
            refused.is_empty(),
            "the note made while assigned was refused: {refused:?}"
        );
        // Told, the app writes on anyway and never acknowledges anything. What may have
        // crossed the withdrawal on the wire still counts; the upload after that does not.
        for n in 1..=GRACE_UPLOADS + 1 {
            note(
                &mut bo,
                "p1",
                &format!("bo-after-{n}"),
                "Written after being told.",
            );
            let last = pending(&mut bo, &journal("p1")).last().unwrap().clone();
            send(
                &mut ws,
                DeviceMessage::Upload {
                    upload: n,
                    docs: changes(journal("p1"), vec![last.clone()]),
                },
            )
            .await;
            let refused = upload_ack(&mut ws, n).await;
            if n <= GRACE_UPLOADS {
                assert!(refused.is_empty(), "upload {n}: {refused:?}");
            } else {
                return (refused, last);
            }
        }
        unreachable!()
    })
    .await;
    let (refused_live, last) = outcome;
    let outcome = with_honest_pair(&server, &mut nina, &mut anna, "h4-again", async {
        // Nor on a new connection.
        let mut ws = connect(&server, &bo).await;
        send(&mut ws, hello(changes(journal("p1"), vec![last]))).await;
        upload_ack(&mut ws, 0).await
    })
    .await;
    for refused in [refused_live, outcome] {
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].code, RefusalCode::NotPermitted);
    }
    // The nurse has what bo wrote while assigned, not what came after.
    quiet(nina.sync(&server).await);
    assert!(has(&mut nina, "p1", "bo-before"));
    let last_note = format!("bo-after-{}", GRACE_UPLOADS + 1);
    assert!(!has(&mut nina, "p1", &last_note));
    let refusals = audited(&server, "refuse", &bo.author, 2).await;
    assert!(
        refusals.iter().all(|d| d.contains("NotPermitted")),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole4_a_write_in_the_grace_builds_only_on_what_was_held_when_access_ended() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    note(&mut nina, "p1", "nina-before", "Morning visit.");
    quiet(nina.sync(&server).await);
    quiet(bo.sync(&server).await);
    assert!(has(&mut bo, "p1", "nina-before"));
    // Made while assigned, not uploaded: builds on what the server held.
    note(&mut bo, "p1", "bo-legit", "Evening visit.");
    unassign(&server, "bo", "p1").await;
    // After the unassignment the nurse writes; a tampered app gets hold of that change from
    // elsewhere and writes on top of it, as if it still cared for p1.
    note(&mut nina, "p1", "nina-after", "New plan from tomorrow.");
    quiet(nina.sync(&server).await);
    let later = {
        let d = nina.repo.get(&journal("p1")).unwrap();
        let head = d.heads()[0];
        d.automerge_change(&head).unwrap()
    };
    bo.repo.apply_changes(&journal("p1"), vec![later]).unwrap();
    note(&mut bo, "p1", "bo-on-later", "Seen the new plan.");

    let refused = with_honest_pair(&server, &mut nina, &mut anna, "h4b", async {
        let mut ws = connect(&server, &bo).await;
        let upload = pending(&mut bo, &journal("p1"));
        assert_eq!(upload.len(), 2);
        send(&mut ws, hello(changes(journal("p1"), upload))).await;
        upload_ack(&mut ws, 0).await
    })
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].index, 1);
    assert_eq!(refused[0].code, RefusalCode::NotPermitted);
    quiet(nina.sync(&server).await);
    assert!(has(&mut nina, "p1", "bo-legit"));
    assert!(!has(&mut nina, "p1", "bo-on-later"));
}

/// Issue 12: the access state is directory rows that every node reads. Bo, taken off p1, is
/// told of it through node 1 (he acknowledges a batch sent after `Withdrawn`): his grace is
/// over on node 2 too, which refuses a note he made while assigned (within the grace, and
/// building on nothing later: node 2 alone would take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_told_through_one_node_ends_the_grace_on_another() {
    let World {
        server,
        mut nina,
        mut bo,
        ..
    } = world(short()).await;
    // p1's journal reaches bo while he cares for p1: the server knows he holds it.
    note(&mut nina, "p1", "nina-1", "Morning visit.");
    quiet(nina.sync(&server).await);
    quiet(bo.sync(&server).await);
    assert!(has(&mut bo, "p1", "nina-1"));
    let node2 = server.another_node().await;
    note(&mut bo, "p1", "bo-before", "Visit: all well.");
    let made_while_assigned = pending(&mut bo, &journal("p1"));
    assert_eq!(made_while_assigned.len(), 1);
    unassign(&server, "bo", "p1").await;
    node2.state.refresh().unwrap();

    // Through node 1: told, and the device says something after it.
    let mut ws = connect(&server, &bo).await;
    send(&mut ws, hello(Vec::new())).await;
    until(&mut ws, |m| {
        matches!(m, ServerMessage::Withdrawn { .. }).then_some(())
    })
    .await;
    let batch = until(&mut ws, |m| match m {
        ServerMessage::Batch { batch, .. } | ServerMessage::Batch3 { batch, .. } => Some(batch),
        _ => None,
    })
    .await;
    send(&mut ws, DeviceMessage::BatchAck { batch }).await;
    // The told row is written by node 1's sync step; node 2 reads it at its next refresh.
    let key = (uid("bo"), bo.author.device.clone(), patient("p1"));
    tokio::time::timeout(PATIENCE, async {
        while !server
            .directory
            .access()
            .unwrap()
            .withdrawals
            .get(&key)
            .is_some_and(|w| w.told)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("node 1 never recorded that bo was told");
    drop(ws);
    node2.state.refresh().unwrap();

    // Through node 2: the note made while assigned is refused.
    let mut ws = connect(&node2, &bo).await;
    send(&mut ws, hello(changes(journal("p1"), made_while_assigned))).await;
    let refused = upload_ack(&mut ws, 0).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].code, RefusalCode::NotPermitted);
}
