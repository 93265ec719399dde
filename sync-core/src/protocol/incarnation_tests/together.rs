//! Batches that arrive together are stored as one (`device/together.rs`): one commit for the
//! server's whole window, every batch acknowledged, and the device ends exactly where it
//! ends taking them one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::wire::ServerMessage;
use crate::store::SqliteStore;

/// A device connected to its own session of `server`, batches of one change each.
struct Link<S: Store> {
    device: DeviceSession,
    drepo: Repo<S>,
    session: ServerSession,
    srepo: Repo<MemoryStore>,
}

impl<S: Store> Link<S> {
    fn open(store: S, server: &MemoryStore, phone: Author) -> Self {
        let mut link = Link {
            device: DeviceSession::new(DeviceConfig::default()),
            drepo: Repo::new(store),
            session: ServerSession::new(
                Peer { author: phone },
                ServerConfig {
                    // One change a batch, whatever the link.
                    batch_bytes: 1,
                    batch_bytes_fast: 1,
                    ..ServerConfig::default()
                },
            ),
            srepo: Repo::new(server.clone()),
        };
        link.device.connect(&mut link.drepo, NOW).unwrap();
        link.settle(false);
        link
    }

    /// Rounds until neither side has anything to say.
    fn settle(&mut self, together: bool) {
        for _ in 0..1000 {
            self.flush();
            if self.round(together) == 0 {
                return;
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Hands the server what the device has sent.
    fn flush(&mut self) {
        while let Some(bytes) = self.device.poll_transmit() {
            self.session
                .handle_bytes(&mut self.srepo, &Everyone, &bytes, NOW);
        }
    }

    /// Hands the device what the server has sent, together (one call) or one at a time, and
    /// the server what the device answered. Returns how many frames the device got.
    fn round(&mut self, together: bool) -> usize {
        let frames: Vec<Vec<u8>> = std::iter::from_fn(|| self.session.poll_transmit()).collect();
        if together {
            let msgs: Vec<ServerMessage> = frames
                .iter()
                .map(|f| self.device.decode(f, NOW).unwrap())
                .collect();
            self.device.handle_messages(&mut self.drepo, msgs, NOW);
        } else {
            for f in &frames {
                self.device.handle_bytes(&mut self.drepo, f, NOW);
            }
        }
        self.flush();
        frames.len()
    }
}

#[test]
fn batches_that_arrive_together_are_stored_in_one_commit_and_all_acknowledged() {
    let server = MemoryStore::new();
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    nurse.note("first");
    sync(&nurse, &server);

    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("phone.db-wal");
    let store = SqliteStore::open(dir.path().join("phone.db")).unwrap();
    let mut anna = Link::open(store, &server, author("anna", Role::Carer, "phone-a"));
    let mut bo = Link::open(
        MemoryStore::new(),
        &server,
        author("bo", Role::Carer, "phone-b"),
    );
    assert_eq!(count_in_repo(&mut bo.drepo, "first"), 1);

    // Twelve more notes reach the server while both are connected and caught up.
    for n in 0..12 {
        nurse.note(&format!("n{n}"));
    }
    sync(&nurse, &server);
    anna.session.feed_advanced(&mut anna.srepo, &Everyone);
    bo.session.feed_advanced(&mut bo.srepo, &Everyone);

    let mut rounds = 0;
    loop {
        let before = commits(&wal);
        let frames = anna.round(true);
        if frames == 0 {
            break;
        }
        rounds += 1;
        // The window's batches (one change each), in one commit.
        assert!(frames > 1 || rounds > 1, "round {rounds}: {frames} frames");
        assert_eq!(commits(&wal) - before, 1, "round {rounds}: {frames} frames");
        assert!(rounds < 20, "the batches never ended");
    }
    // Twelve batches in windows of four: three rounds, where one at a time commits twelve
    // times.
    assert_eq!(rounds, 3);
    bo.settle(false);

    let devents: Vec<DeviceEvent> = std::iter::from_fn(|| anna.device.poll_event()).collect();
    assert!(!closed(&devents), "{devents:?}");
    assert!(devents.contains(&DeviceEvent::CaughtUp), "{devents:?}");
    let sevents: Vec<ServerEvent> = std::iter::from_fn(|| anna.session.poll_event()).collect();
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed { .. })),
        "every batch acknowledged, none twice: {sevents:?}"
    );
    // The same notes, the same journal, the same cursor and state as one at a time.
    for n in 0..12 {
        assert_eq!(count_in_repo(&mut anna.drepo, &format!("n{n}")), 1);
    }
    assert_eq!(
        anna.drepo.get(&journal()).unwrap().heads(),
        bo.drepo.get(&journal()).unwrap().heads()
    );
    assert_eq!(
        DeviceSession::load_state(&anna.drepo).unwrap(),
        DeviceSession::load_state(&bo.drepo).unwrap()
    );
    assert!(anna.device.is_caught_up());

    // The next change goes on as before.
    nurse.note("last");
    sync(&nurse, &server);
    anna.session.feed_advanced(&mut anna.srepo, &Everyone);
    anna.settle(true);
    assert_eq!(count_in_repo(&mut anna.drepo, "last"), 1);
}

fn count_in_repo<S: Store>(repo: &mut Repo<S>, id: &str) -> usize {
    let doc = repo.get(&journal()).unwrap();
    let path = format!("events/{id}");
    doc.history()
        .iter()
        .filter(|h| h.writes.contains(&path))
        .count()
}
