//! Property test: random concurrent edit sequences on three replicas, with random partial syncs
//! along the way, merged in random orders, converge to the same state and the same conflict and
//! flag sets. Also: every replica's changes replayed into a fresh replica in two different random
//! orders give the same state (merge is order-independent through the validating ingestion path).
//!
//! `PROPTEST_CASES=N` runs more cases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::*;
use proptest::prelude::*;
use sync_core::model::{
    AdministrationOutcome, CareDocument, Chart, EventBody, FlagKind, GoalStatus, Register,
    RegisterState, RegisterValue, TextKey,
};
use sync_core::{Author, DocumentId, ModelError};

const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Action {
    /// A nurse revises one of the orders this replica knows (resolving it if in conflict), or
    /// creates a new order (entity ids are unique, as UUIDs are in the app).
    ReviseOrder { pick: u8, dose: u8 },
    /// A carer records an administration for (order, slot) on a current version of an order.
    Give { pick: u8, slot: u8, outcome: u8 },
    /// A nurse acknowledges every open flag this replica sees.
    AcknowledgeFlags,
    /// A nurse marks the n-th administration this replica holds as entered in error.
    MarkError { nth: u8 },
    /// A carer edits the goal's text: insert at a position, or delete a range.
    EditText { at: u8, insert: String, delete: u8 },
    /// A nurse sets who holds overall responsibility (resolving a conflict if there is one).
    Responsibility { org: u8 },
}

#[derive(Debug, Clone)]
enum Op {
    Edit {
        replica: usize,
        action: Action,
    },
    /// Sends one document's missing changes from one replica to another.
    Sync {
        from: usize,
        to: usize,
        doc: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (any::<u8>(), 0u8..4).prop_map(|(pick, dose)| Action::ReviseOrder { pick, dose }),
        5 => (any::<u8>(), 0u8..3, 0u8..4).prop_map(|(pick, slot, outcome)| Action::Give { pick, slot, outcome }),
        1 => Just(Action::AcknowledgeFlags),
        1 => any::<u8>().prop_map(|nth| Action::MarkError { nth }),
        3 => (any::<u8>(), "[a-zåäö ]{0,6}", 0u8..4).prop_map(|(at, insert, delete)| Action::EditText { at, insert, delete }),
        2 => (0u8..3).prop_map(|org| Action::Responsibility { org }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..REPLICAS, action()).prop_map(|(replica, action)| Op::Edit { replica, action }),
        1 => (0..REPLICAS, 0..REPLICAS, 0..3usize).prop_map(|(from, to, doc)| Op::Sync { from, to, doc }),
    ]
}

struct World {
    ids: [DocumentId; 3],
    replicas: Vec<Vec<CareDocument>>,
    next_id: u64,
    clock: i64,
}

const MEDS: usize = 0;
const LOG: usize = 1;
const PLAN: usize = 2;

fn carer_of(r: usize) -> Author {
    carer(&format!("c{r}"))
}
fn nurse_of(r: usize) -> Author {
    nurse(&format!("n{r}"))
}

impl World {
    fn new() -> Self {
        let p = patient("p-prop");
        let ids = [
            DocumentId::medication(&p),
            DocumentId::administrations(&p, november()),
            DocumentId::care_plan(&p),
        ];
        // Replica 0 creates the goal; everyone starts from that shared state.
        let mut base: Vec<CareDocument> = ids
            .iter()
            .map(|id| CareDocument::new(id.clone()).unwrap())
            .collect();
        base[PLAN]
            .change(&nurse_of(0), at(6, 0), |e| {
                e.create(
                    rid("g1-v1"),
                    Register::Goal(rid("g1")),
                    RegisterValue::Goal {
                        title: "Stay at home".into(),
                        status: GoalStatus::Active,
                    },
                    Some("Manage stairs safely."),
                )
            })
            .unwrap();
        let replicas = (0..REPLICAS)
            .map(|_| {
                base.iter()
                    .map(|d| {
                        let mut copy = CareDocument::new(d.id().clone()).unwrap();
                        let out = copy.apply_changes(d.changes_since(&[])).unwrap();
                        assert!(out.refused.is_empty());
                        copy
                    })
                    .collect()
            })
            .collect();
        Self {
            ids,
            replicas,
            next_id: 0,
            clock: 0,
        }
    }

    fn fresh(&mut self, r: usize) -> sync_core::RecordId {
        self.next_id += 1;
        rid(&format!("r{r}-{}", self.next_id))
    }

    fn tick(&mut self) -> sync_core::Timestamp {
        self.clock += 1;
        at(7, self.clock % 600)
    }

    fn sync(&mut self, from: usize, to: usize, doc: usize) {
        if from == to {
            return;
        }
        let changes = self.replicas[from][doc].changes_since(&[]);
        let outcome = self.replicas[to][doc].apply_changes(changes).unwrap();
        assert!(outcome.refused.is_empty(), "refused: {:?}", outcome.refused);
    }

    fn apply(&mut self, r: usize, action: Action) {
        let id = self.fresh(r);
        let now = self.tick();
        let result: Result<(), ModelError> = match action {
            Action::ReviseOrder { pick, dose } => {
                let known = known_orders(&self.replicas[r][MEDS]);
                let reg = if known.is_empty() || pick % 4 == 3 {
                    Register::Order(rid(&format!("o-{id}")))
                } else {
                    known[pick as usize % known.len()].clone()
                };
                let value = order_value(dose, now);
                let doc = &mut self.replicas[r][MEDS];
                let state = doc.register(&reg);
                doc.change(&nurse_of(r), now, |e| match state {
                    RegisterState::Unset => e.create(id, reg, value, None),
                    RegisterState::Value(_) => e.update(id, reg, value),
                    RegisterState::Conflict(_) => e.resolve(id, reg, value),
                })
                .map(|_| ())
            }
            Action::Give {
                pick,
                slot,
                outcome,
            } => {
                let known = known_orders(&self.replicas[r][MEDS]);
                if known.is_empty() {
                    return;
                }
                let reg = known[pick as usize % known.len()].clone();
                let Register::Order(order) = reg.clone() else {
                    return;
                };
                let revision = match self.replicas[r][MEDS].register(&reg) {
                    RegisterState::Unset => return,
                    RegisterState::Value(v) => v.id,
                    RegisterState::Conflict(mut c) => c.remove(0).id,
                };
                let outcome = match outcome {
                    0 | 1 => AdministrationOutcome::Given,
                    2 => AdministrationOutcome::NotGiven,
                    _ => AdministrationOutcome::SelfAdministered,
                };
                let reason =
                    (outcome == AdministrationOutcome::NotGiven).then(|| "asleep".to_string());
                let body = EventBody::Administration {
                    order,
                    order_revision: revision,
                    slot: ["2026-11-24T08:00", "2026-11-24T13:00", "2026-11-24T20:00"]
                        [slot as usize]
                        .into(),
                    outcome,
                    reason,
                    occurred_at: now,
                };
                self.replicas[r][LOG]
                    .change(&carer_of(r), now, |e| e.record(id, body))
                    .map(|_| ())
            }
            Action::AcknowledgeFlags => {
                let open: Vec<(String, Vec<sync_core::RecordId>)> = {
                    let docs = &self.replicas[r];
                    Chart::new(docs[MEDS].id().patient(), docs.iter())
                        .flags()
                        .into_iter()
                        .filter(|f| f.open)
                        .map(|f| (f.id, f.evidence))
                        .collect()
                };
                let base = id.to_string();
                self.replicas[r][LOG]
                    .change(&nurse_of(r), now, |e| {
                        for (n, (flag, covers)) in open.into_iter().enumerate() {
                            e.record(
                                rid(&format!("{base}-{n}")),
                                EventBody::FlagAcknowledgement {
                                    flag,
                                    covers,
                                    comment: None,
                                },
                            )?;
                        }
                        Ok(())
                    })
                    .map(|_| ())
            }
            Action::MarkError { nth } => {
                let log = &mut self.replicas[r][LOG];
                let admins: Vec<_> = log
                    .events()
                    .iter()
                    .filter(|(id, ev)| {
                        matches!(ev.body, EventBody::Administration { .. })
                            && log.entered_in_error(id).is_empty()
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                if admins.is_empty() {
                    return;
                }
                let target = admins[nth as usize % admins.len()].clone();
                log.change(&nurse_of(r), now, |e| {
                    e.record(
                        id,
                        EventBody::EnteredInError {
                            target,
                            reason: "wrong slot".into(),
                        },
                    )
                })
                .map(|_| ())
            }
            Action::EditText { at, insert, delete } => {
                let key = TextKey::GoalDescription(rid("g1"));
                let plan = &mut self.replicas[r][PLAN];
                let current: Vec<char> = plan.text(&key).unwrap().chars().collect();
                let pos = at as usize % (current.len() + 1);
                let end = (pos + delete as usize).min(current.len());
                let mut next: String = current[..pos].iter().collect();
                next.push_str(&insert);
                next.extend(&current[end..]);
                plan.change(&carer_of(r), now, |e| e.set_text(&key, &next))
                    .map(|_| ())
            }
            Action::Responsibility { org } => {
                let reg = Register::Responsibility;
                let value = RegisterValue::Responsibility {
                    organisation: format!("org-{org}"),
                    person: None,
                };
                let plan = &mut self.replicas[r][PLAN];
                let conflicted = matches!(plan.register(&reg), RegisterState::Conflict(_));
                plan.change(&nurse_of(r), now, |e| {
                    if conflicted {
                        e.resolve(id, reg, value)
                    } else {
                        e.update(id, reg, value)
                    }
                })
                .map(|_| ())
            }
        };
        if let Err(e) = result {
            panic!("a valid local edit was refused: {e}");
        }
    }

    /// Exchanges everything until all replicas hold the same changes, pairs in `order`.
    fn heal(&mut self, order: &[(usize, usize)]) {
        for _round in 0..REPLICAS {
            for &(a, b) in order {
                for doc in 0..3 {
                    self.sync(a, b, doc);
                    self.sync(b, a, doc);
                }
            }
        }
    }
}

fn known_orders(meds: &CareDocument) -> Vec<Register> {
    meds.registers()
        .into_iter()
        .filter(|r| matches!(r, Register::Order(_)))
        .collect()
}

fn order_value(dose: u8, valid_from: sync_core::Timestamp) -> RegisterValue {
    order(
        ["1 tablet", "2 tablets", "half a tablet", "3 tablets"][dose as usize],
        valid_from,
    )
}

/// Everything a user could see, in a comparable form.
#[derive(Debug, PartialEq)]
struct Seen {
    heads: Vec<Vec<automerge::ChangeHash>>,
    text: Option<String>,
    conflicts: Vec<sync_core::model::Conflict>,
    flags: Vec<sync_core::model::Flag>,
    registers: Vec<(Register, RegisterState)>,
    events: Vec<Vec<sync_core::RecordId>>,
}

fn seen(docs: &[CareDocument]) -> Seen {
    let chart = Chart::new(docs[0].id().patient(), docs.iter());
    let mut heads: Vec<_> = docs
        .iter()
        .map(|d| {
            let mut h = d.heads();
            h.sort();
            h
        })
        .collect();
    heads.shrink_to_fit();
    Seen {
        heads,
        text: docs[PLAN].text(&TextKey::GoalDescription(rid("g1"))),
        conflicts: chart.conflicts(),
        flags: chart.flags(),
        registers: docs
            .iter()
            .flat_map(|d| {
                d.registers()
                    .into_iter()
                    .map(move |r| (r.clone(), d.register(&r)))
            })
            .collect(),
        events: docs
            .iter()
            .map(|d| d.events().keys().cloned().collect())
            .collect(),
    }
}

/// A deterministic shuffle driven by proptest's seed.
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn concurrent_edits_on_three_replicas_converge(ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        let mut world = World::new();
        for op in ops {
            match op {
                Op::Edit { replica, action } => world.apply(replica, action),
                Op::Sync { from, to, doc } => world.sync(from, to, doc),
            }
        }
        // Every replica's changes, replayed into fresh replicas in two random orders.
        for doc in 0..3 {
            let all: Vec<_> = (0..REPLICAS).flat_map(|r| world.replicas[r][doc].changes_since(&[])).collect();
            let mut a = CareDocument::new(world.ids[doc].clone()).unwrap();
            let mut b = CareDocument::new(world.ids[doc].clone()).unwrap();
            for (fresh, s) in [(&mut a, seed), (&mut b, seed.rotate_left(17))] {
                for chunk in shuffled(all.clone(), s).chunks(7) {
                    let out = fresh.apply_changes(chunk.to_vec()).unwrap();
                    let only_waiting = out.refused.iter().all(|(_, e)| matches!(e, ModelError::MissingDependencies { .. }));
                    prop_assert!(only_waiting, "refused: {:?}", out.refused);
                }
                // Missing dependencies arrive in later chunks; a final pass applies the rest.
                let out = fresh.apply_changes(all.clone()).unwrap();
                prop_assert!(out.refused.is_empty(), "{:?}", out.refused);
            }
            prop_assert_eq!(a.heads().len(), b.heads().len());
            prop_assert_eq!(seen_one(&a), seen_one(&b));
        }

        let pairs = shuffled(vec![(0, 1), (1, 2), (0, 2)], seed);
        world.heal(&pairs);
        let first = seen(&world.replicas[0]);
        for r in 1..REPLICAS {
            prop_assert_eq!(&seen(&world.replicas[r]), &first);
        }
        // Flags are well-formed: double doses name two or more administrations.
        for f in &first.flags {
            if let FlagKind::PossibleDoubleDose { .. } = f.kind {
                prop_assert!(f.evidence.len() >= 2);
            }
        }
    }
}

fn seen_one(
    d: &CareDocument,
) -> (
    Vec<automerge::ChangeHash>,
    Vec<sync_core::model::Conflict>,
    Vec<sync_core::RecordId>,
    Option<String>,
) {
    let mut h = d.heads();
    h.sort();
    (
        h,
        d.conflicts(),
        d.events().keys().cloned().collect(),
        d.text(&TextKey::GoalDescription(rid("g1"))),
    )
}
