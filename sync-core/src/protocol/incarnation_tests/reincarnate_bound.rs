//! A device takes no incarnation number past the most a server issues (`MAX_INCARNATION`):
//! under it, every later hello would be refused, and the phone could never sync again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::protocol::server::MAX_INCARNATION;
use crate::protocol::wire::{self, CloseReason, ServerMessage};

#[test]
fn a_reincarnation_past_the_bound_is_refused_by_the_device() {
    let (server, carer, _) = team();
    carer.note("a1");
    sync(&carer, &server);
    let before = Repo::new(carer.store.clone()).incarnation().unwrap();
    let Open {
        mut device,
        mut drepo,
        ..
    } = open(&carer, &server, usize::MAX, &ASSIGNED, false);
    let bytes = wire::encode(&ServerMessage::Reincarnate {
        incarnation: MAX_INCARNATION + 1,
    })
    .unwrap();
    device.handle_bytes(&mut drepo, &bytes, NOW);
    let events: Vec<DeviceEvent> = std::iter::from_fn(|| device.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            DeviceEvent::Closed {
                reason: CloseReason::ProtocolViolation,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(drepo.incarnation().unwrap().number, before.number);
    // The next connection goes on as before.
    let (devents, _) = sync(&carer, &server);
    assert!(!closed(&devents), "{devents:?}");
}
