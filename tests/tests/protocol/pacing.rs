//! Batch sizes follow the device's link (`sync-core/src/protocol/server/pace.rs`): small on a
//! slow one, where a batch is the unit of resumption, growing on a fast one, where each batch's
//! fixed cost on the phone is paid fewer times; every change arrives either way. So does how
//! hard a busy server compresses them (`compress::Effort`).

use sync_core::protocol::compress::{self, Effort};

use super::*;

/// Floor and ceiling of a batch, in bytes of changes.
const FLOOR: usize = 600;
const CEILING: usize = 20_000;

fn paced() -> ServerConfig {
    ServerConfig {
        batch_bytes: FLOOR,
        batch_bytes_fast: CEILING,
        max_in_flight: 2,
        stall_after_ms: None,
        compress: true,
    }
}

/// Runs a connection until quiet over a link that carries `bytes_per_s` towards the phone, one
/// message after another (the phone's short messages take no time). Returns the bytes of
/// changes in each batch, in the order sent.
fn run_over_link(phone: &mut Phone, server: &mut Server, bytes_per_s: u64) -> Vec<usize> {
    let mut sizes = Vec::new();
    drive(phone, server, bytes_per_s, paced(), false, |_, msg| {
        if let ServerMessage::Batch { docs, .. } | ServerMessage::Batch3 { docs, .. } = msg {
            let bytes = docs.iter().flat_map(|d| &d.changes).map(Vec::len).sum();
            if bytes > 0 {
                sizes.push(bytes);
            }
        }
    });
    sizes
}

/// Runs a connection as [`run_over_link`] does, on a server session configured by `config` and
/// told it is `busy` before every step, handing each frame it sends (as sent, and decoded) to
/// `sent`.
fn drive(
    phone: &mut Phone,
    server: &mut Server,
    bytes_per_s: u64,
    config: ServerConfig,
    busy: bool,
    mut sent: impl FnMut(&[u8], &ServerMessage),
) {
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        config,
    );
    let mut now = NOW.0;
    phone
        .session
        .connect(&mut phone.repo, Timestamp(now))
        .unwrap();
    loop {
        let mut moved = false;
        while let Some(b) = phone.session.poll_transmit() {
            moved = true;
            session.server_busy(busy);
            session.handle_bytes(&mut server.repo, &server.policy, &b, Timestamp(now));
        }
        while let Some(b) = session.poll_transmit() {
            moved = true;
            now += i64::try_from(b.len() as u64 * 1000 / bytes_per_s).unwrap();
            sent(&b, &wire::decode::<ServerMessage>(&b).unwrap());
            phone
                .session
                .handle_bytes(&mut phone.repo, &b, Timestamp(now));
        }
        if !moved {
            phone.session.disconnected();
            return;
        }
    }
}

#[test]
fn batches_grow_on_a_fast_link_and_stay_small_on_a_slow_one() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 150);
    let journal = DocumentId::journal(&p, november());
    let largest_change = server
        .repo
        .get(&journal)
        .unwrap()
        .changes_since(&[])
        .iter()
        .map(|c| c.raw_bytes().len())
        .max()
        .unwrap();

    // 10 bytes a second: four seconds of it is far below the floor.
    let mut slow = Phone::new(carer("anna"));
    server.assign(&slow.author, &[&p]);
    let on_slow = run_over_link(&mut slow, &mut server, 10);
    // 10 MB a second.
    let mut fast = Phone::new(carer("bo"));
    server.assign(&fast.author, &[&p]);
    let on_fast = run_over_link(&mut fast, &mut server, 10_000_000);

    for phone in [&mut slow, &mut fast] {
        assert!(phone.session.is_caught_up());
        assert_eq!(phone.repo.get(&journal).unwrap().events().len(), 150);
    }
    // A batch stops at the first change that reaches its target.
    assert!(
        on_slow.iter().all(|&b| b < FLOOR + largest_change),
        "slow link: {on_slow:?}"
    );
    assert!(on_fast[0] < FLOOR + largest_change, "{on_fast:?}");
    assert!(
        on_fast.iter().all(|&b| b < CEILING + largest_change),
        "fast link: {on_fast:?}"
    );
    assert!(
        on_fast.iter().any(|&b| b >= CEILING),
        "fast link: {on_fast:?}"
    );
    assert!(
        on_fast.len() * 4 < on_slow.len(),
        "{} batches on the fast link, {} on the slow one",
        on_fast.len(),
        on_slow.len()
    );
}

/// A server short of CPU (`ServerSession::server_busy`) compresses what goes to a device on a
/// fast link quickly (`Effort::Quick`) once the link has shown itself fast; what goes to a weak
/// link, and everything from a server that is not busy, is compressed for bytes.
#[test]
fn a_busy_server_compresses_quickly_only_for_a_fast_link() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 150);
    // Batch frames above the small-frame size, counted by how they were compressed.
    let tally = |server: &mut Server, who: &str, bytes_per_s: u64, busy: bool| {
        let mut phone = Phone::new(carer(who));
        server.assign(&phone.author, &[&p]);
        let config = ServerConfig {
            // A batch at the floor is already above the small-frame size.
            batch_bytes: 3_000,
            batch_bytes_fast: 40_000,
            ..paced()
        };
        let (mut quick, mut full) = (0, 0);
        drive(
            &mut phone,
            server,
            bytes_per_s,
            config,
            busy,
            |bytes, msg| {
                if !matches!(
                    msg,
                    ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }
                ) {
                    return;
                }
                let plain = compress::unpack(bytes).unwrap().into_owned();
                if plain.len() <= compress::SMALL_FRAME {
                    return;
                }
                let at_quick = compress::pack_with(plain.clone(), Effort::Quick);
                let at_full = compress::pack_with(plain, Effort::Full);
                assert_ne!(at_quick, at_full);
                if bytes == at_quick.as_slice() {
                    quick += 1;
                } else {
                    assert_eq!(bytes, at_full.as_slice(), "compressed neither way");
                    full += 1;
                }
            },
        );
        assert!(phone.session.is_caught_up());
        assert_eq!(
            phone
                .repo
                .get(&DocumentId::journal(&p, november()))
                .unwrap()
                .events()
                .len(),
            150
        );
        (quick, full)
    };
    // 10 MB a second: the batches before the link is measured for bytes, the rest quickly.
    let (quick, full) = tally(&mut server, "anna", 10_000_000, true);
    assert!(quick > 0 && full > 0, "{quick} quick, {full} full");
    // The same link from a server that is not busy: for bytes.
    let (quick, full) = tally(&mut server, "bo", 10_000_000, false);
    assert_eq!(quick, 0);
    assert!(full > 0);
    // A weak link (100 bytes a second on the wire, below the floor's pace) from a busy server:
    // for bytes.
    let (quick, full) = tally(&mut server, "carl", 100, true);
    assert_eq!(quick, 0);
    assert!(full > 0);
}
