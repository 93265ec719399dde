//! Batch sizes follow the device's link (`sync-core/src/protocol/server/pace.rs`): small on a
//! slow one, where a batch is the unit of resumption, growing on a fast one, where each batch's
//! fixed cost on the phone is paid fewer times; every change arrives either way.

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
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        paced(),
    );
    let mut now = NOW.0;
    phone
        .session
        .connect(&mut phone.repo, Timestamp(now))
        .unwrap();
    let mut sizes = Vec::new();
    loop {
        let mut moved = false;
        while let Some(b) = phone.session.poll_transmit() {
            moved = true;
            session.handle_bytes(&mut server.repo, &server.policy, &b, Timestamp(now));
        }
        while let Some(b) = session.poll_transmit() {
            moved = true;
            now += i64::try_from(b.len() as u64 * 1000 / bytes_per_s).unwrap();
            if let ServerMessage::Batch { docs, .. } | ServerMessage::Batch3 { docs, .. } =
                wire::decode::<ServerMessage>(&b).unwrap()
            {
                let bytes = docs.iter().flat_map(|d| &d.changes).map(Vec::len).sum();
                if bytes > 0 {
                    sizes.push(bytes);
                }
            }
            phone
                .session
                .handle_bytes(&mut phone.repo, &b, Timestamp(now));
        }
        if !moved {
            phone.session.disconnected();
            return sizes;
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
