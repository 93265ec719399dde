//! Two installations of one incarnation (a copy) write under the same write counter and
//! sequence number; the server, put back, refuses the first for lack of what it depends on and
//! records nothing for the counter, then stores the copy's. The first, still connected, is
//! sent it (it is not its own) and so finds the fork (simulation seed 4623, all faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// One device's connection, kept open while others sync.
struct Live {
    drepo: Repo<MemoryStore>,
    srepo: Repo<MemoryStore>,
    device: DeviceSession,
    session: ServerSession,
    devents: Vec<DeviceEvent>,
    sevents: Vec<ServerEvent>,
}

impl Live {
    fn open(phone: &Phone, server: &MemoryStore) -> Self {
        let mut live = Self {
            drepo: Repo::new(phone.store.clone()),
            srepo: Repo::new(server.clone()),
            device: DeviceSession::new(DeviceConfig::default()),
            session: ServerSession::new(
                Peer {
                    author: phone.author.clone(),
                },
                ServerConfig::default(),
            ),
            devents: Vec::new(),
            sevents: Vec::new(),
        };
        live.device.connect(&mut live.drepo, NOW).unwrap();
        live.pump();
        live
    }

    /// Messages both ways until neither side has anything to say.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(bytes) = self.device.poll_transmit() {
                self.session
                    .handle_bytes(&mut self.srepo, &Everyone, &bytes, NOW);
                moved = true;
            }
            while let Some(bytes) = self.session.poll_transmit() {
                self.device.handle_bytes(&mut self.drepo, &bytes, NOW);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.devents
            .extend(std::iter::from_fn(|| self.device.poll_event()));
        self.sevents
            .extend(std::iter::from_fn(|| self.session.poll_event()));
    }

    /// Another connection stored something: the live session sends what is new (its repo
    /// loaded again, as the server's one repo would hold what the other stored).
    fn feed_advanced(&mut self) {
        self.srepo = Repo::new(self.srepo.store().clone());
        self.session.feed_advanced(&mut self.srepo, &Everyone);
        self.pump();
    }
}

/// Notes too large together for the server, in one change (refused `Malformed`: the server
/// records nothing under its write counter), of text that does not compress.
fn large_change(phone: &Phone, id: &str) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let bodies: Vec<String> = (0..160).map(|_| text(16_000)).collect();
    Repo::new(phone.store.clone())
        .change(&journal(), &phone.author, NOW, |e| {
            for (i, body) in bodies.into_iter().enumerate() {
                e.record(
                    RecordId::new(format!("{id}-{i}")).unwrap(),
                    EventBody::Note {
                        body,
                        corrects: None,
                    },
                )?;
            }
            Ok(())
        })
        .unwrap();
}

/// The carer's phone is caught up and its store copied (one incarnation, one actor). The phone
/// writes p0, the first write of incarnation 0 and the first change of its actor in the
/// journal, too large for the server: refused, quarantined, nothing recorded under counter 1.
/// It stays connected. The copy writes c1 under the same counter and sequence number, which the
/// server stores. The live phone never held c1: it is sent it (it is not its own), finds that
/// c1 forks its p0, and closes to recover; at its next hello the server moves it to a new
/// incarnation. (That p0, quarantined for its size, is not taken back there, so c1 still
/// cannot join it, is a case left open: a quarantined change of the device's own that forks
/// what the server holds.)
#[test]
fn a_change_another_installation_stored_after_the_hello_is_sent_and_shows_the_fork() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    sync(&phone, &server);
    let copy = Phone {
        author: phone.author.clone(),
        store: phone.store.deep_copy().unwrap(),
    };
    large_change(&phone, "p0");
    let mut live = Live::open(&phone, &server);
    assert!(!closed(&live.devents), "{:?}", live.devents);
    assert_eq!(
        DeviceSession::quarantined(&live.drepo).unwrap().len(),
        1,
        "p0 refused"
    );
    copy.note("c1");
    let (devents, _) = sync(&copy, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert_eq!(count_in(&server, "c1"), 1, "c1 stored");

    // The live phone is sent c1, which forks its p0: it closes to recover, and at its next
    // hello goes on under a new incarnation.
    live.feed_advanced();
    assert!(
        live.devents.iter().any(|e| matches!(
            e,
            DeviceEvent::Closed { detail, .. } if detail.contains("forks one held here")
        )),
        "{:?}",
        live.devents
    );
    drop(live);
    let (_, sevents) = sync(&phone, &server);
    assert!(
        sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }),
        "{sevents:?}"
    );
    assert_eq!(count_in(&server, "c1"), 1, "c1 on the server");
    assert_eq!(copy.count("c1"), 1, "c1 on the copy");
}
