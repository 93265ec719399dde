//! The `ingest` entry point: bytes as foreign Automerge changes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use automerge::legacy;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::model::ChangeMessage;
use crate::protocol::wire::{
    self, DeviceMessage, DocChanges, Hello, RefusalCode, Refused, ServerMessage,
};
use crate::protocol::{Peer, ServerConfig, ServerEvent, ServerSession};
use crate::repo::Repo;
use crate::store::{MemoryStore, Store};

use super::fixtures::{Everyone, at, contents, fixture};
use super::prepared::prepared;
use super::reader::Reader;

/// Interprets `bytes` as foreign changes to one document of the fixture record and runs them
/// through the server's upload path (as a given device), through [`Repo::apply_changes`] (read
/// back as the server reads back an upload) and through [`Repo::apply_relayed_changes`] (as a
/// device takes them from its server) followed by a compaction.
///
/// Layout: a mode byte, then
/// - mode 0: document, peer, then the rest is one change's bytes;
/// - mode 1: document, peer, then changes as (u16 length, bytes)...;
/// - mode 2: template, peer offset, then mutations of the template's decoded change;
/// - mode 3: document, author, flags, then operations of a change forged through Automerge.
pub fn ingest(bytes: &[u8]) {
    let fx = fixture();
    let mut r = Reader::new(bytes);
    let mode = r.byte() % 4;
    let (doc, peer, changes) = match mode {
        0 => {
            let doc = r.index(fx.docs.len());
            let peer = r.index(fx.authors.len());
            (doc, peer, vec![r.rest().to_vec()])
        }
        1 => {
            let doc = r.index(fx.docs.len());
            let peer = r.index(fx.authors.len());
            let mut changes = Vec::new();
            while !r.is_empty() && changes.len() < 16 {
                let n = (r.u16() as usize).min(r.data.len());
                let (head, rest) = r.data.split_at(n);
                r.data = rest;
                changes.push(head.to_vec());
            }
            (doc, peer, changes)
        }
        2 => {
            let t = r.pick(&fx.templates);
            let peer = (t.author + r.index(fx.authors.len())) % fx.authors.len();
            let mut changes = vec![mutate_change(&t.change, &mut r).raw_bytes().to_vec()];
            // Any bytes left: another template or its mutation, to combine changes.
            if !r.is_empty() {
                let t2 = r.pick(&fx.templates);
                changes.push(mutate_change(&t2.change, &mut r).raw_bytes().to_vec());
            }
            (t.doc, peer, changes)
        }
        _ => {
            let doc = r.index(fx.docs.len());
            let who = r.index(fx.authors.len());
            let change = forge(doc, who, &mut r);
            (doc, who, vec![change.raw_bytes().to_vec()])
        }
    };
    // Most uploads go to a session already serving (as after a hello, prepared once per
    // author): the hello's batches of every document cost half an execution otherwise. One in
    // eight (a first byte from 224) comes in the hello itself (upload 0), the other path into
    // the same checks.
    let in_hello = bytes.first().copied().unwrap_or(0) >= 224;
    check_upload(doc, peer, &changes, in_hello);
    check_apply(doc, &changes);
    check_apply_relayed(doc, &changes);
}

/// Decodes a valid change, changes it as the bytes say, and encodes it again (with a valid
/// checksum, so the mutation reaches the model rather than the checksum test).
fn mutate_change(template: &Change, r: &mut Reader<'_>) -> Change {
    let fx = fixture();
    let mut c: legacy::Change = template.decode();
    let steps = r.byte() % 6;
    for _ in 0..steps {
        match r.byte() % 12 {
            0 => c.message = Some(r.string()),
            1 => {
                // Another author in an otherwise honest message.
                if let Some(mut m) = c
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                {
                    m.author = r.pick(&fx.authors).clone();
                    c.message = serde_json::to_string(&m).ok();
                }
            }
            2 => {
                // Writes listed differently.
                if let Some(mut m) = c
                    .message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                {
                    match r.byte() % 3 {
                        0 => m.writes.clear(),
                        1 => m.writes.push(format!("events/{}", r.pick(&fx.keys))),
                        _ => {
                            m.writes.pop();
                        }
                    }
                    c.message = serde_json::to_string(&m).ok();
                }
            }
            3 => c.actor_id = r.pick(&fx.authors).actor_id(),
            4 => c.seq = u64::from(r.u16()),
            5 => {
                let v = u64::from(r.u16()).max(1);
                c.start_op = std::num::NonZeroU64::new(v).unwrap_or(std::num::NonZeroU64::MIN);
            }
            6 => match r.byte() % 4 {
                0 => c.deps.clear(),
                1 => {
                    let d = r.pick(&fx.docs);
                    let h = d
                        .changes
                        .get(r.index(d.changes.len()))
                        .map(Change::hash)
                        .unwrap_or(ChangeHash([7; 32]));
                    c.deps.push(h);
                }
                3 => {
                    // Dependencies replaced by an earlier state: the change then names
                    // operations outside its causal past (a splice into a later text).
                    let d = r.pick(&fx.docs);
                    let i = r.index(d.changes.len() + 1);
                    c.deps = vec![match d.changes.get(i) {
                        Some(earlier) => earlier.hash(),
                        None => crate::model::genesis_hash(&d.id).unwrap_or(ChangeHash([7; 32])),
                    }];
                }
                _ => c.deps.push(ChangeHash([r.byte(); 32])),
            },
            7 => c.time = i64::from(r.u16() as i16) * 1_000_000,
            8 => c.extra_bytes = r.bytes().to_vec(),
            9 => {
                if !c.operations.is_empty() {
                    let i = r.index(c.operations.len());
                    if r.byte() % 2 == 0 {
                        c.operations.remove(i);
                    } else {
                        let op = c.operations[i].clone();
                        c.operations.push(op);
                    }
                }
            }
            _ => {
                if !c.operations.is_empty() {
                    let i = r.index(c.operations.len());
                    mutate_op(&mut c.operations[i], r);
                }
            }
        }
    }
    Change::from(c)
}

fn mutate_op(op: &mut legacy::Op, r: &mut Reader<'_>) {
    let fx = fixture();
    match r.byte() % 8 {
        0 => op.key = legacy::Key::Map(r.pick(&fx.keys).as_str().into()),
        1 => op.key = legacy::Key::Map(r.string().into()),
        2 => op.action = legacy::OpType::Put(ScalarValue::Str(r.pick(&fx.values).as_str().into())),
        3 => {
            // A record's JSON with some bytes spliced in.
            let mut v = r.pick(&fx.values).clone().into_bytes();
            let at = r.index(v.len() + 1);
            let cut = r.index(8);
            let end = (at + cut).min(v.len());
            v.splice(at..end, r.bytes().iter().copied());
            op.action = legacy::OpType::Put(ScalarValue::Str(
                String::from_utf8_lossy(&v).into_owned().into(),
            ));
        }
        4 => {
            op.action = match r.byte() % 5 {
                0 => legacy::OpType::Delete,
                1 => legacy::OpType::Make(ObjType::Map),
                2 => legacy::OpType::Make(ObjType::Text),
                3 => legacy::OpType::Put(ScalarValue::Int(i64::from(r.byte()))),
                _ => legacy::OpType::Increment(1),
            }
        }
        5 => op.insert = !op.insert,
        6 => op.obj = legacy::ObjectId::Root,
        _ => op.pred = legacy::SortedVec::new(),
    }
}

/// A change made through Automerge's API on the base state, as a hostile or buggy peer could:
/// the operations, author, actor and listed writes come from the bytes.
fn forge(doc: usize, who: usize, r: &mut Reader<'_>) -> Change {
    let fx = fixture();
    let flags = r.byte();
    let actor = if flags & 1 == 0 {
        fx.authors[who].actor_id()
    } else {
        r.pick(&fx.authors).actor_id()
    };
    let mut am = prepared().docs[doc].automerge.clone().with_actor(actor);
    let obj = |am: &Automerge, name: &str| -> ObjId {
        match am.get(ROOT, name) {
            Ok(Some((_, id))) => id,
            _ => ROOT,
        }
    };
    let (revisions, events, texts, meta) = (
        obj(&am, "revisions"),
        obj(&am, "events"),
        obj(&am, "texts"),
        obj(&am, "meta"),
    );
    let mut writes = Vec::new();
    let mut tx = am.transaction();
    let ops = 1 + r.byte() % 4;
    for _ in 0..ops {
        // Errors from Automerge (e.g. a splice out of range) just leave the op out.
        match r.byte() % 9 {
            0 | 1 => {
                let (map, name) = if r.byte() % 2 == 0 {
                    (&revisions, "revisions")
                } else {
                    (&events, "events")
                };
                let key = r.pick(&fx.keys).clone();
                let value = r.pick(&fx.values).clone();
                if tx.put(map, key.as_str(), value).is_ok() {
                    writes.push(format!("{name}/{key}"));
                }
            }
            2 => {
                let key = r.pick(&fx.text_keys).clone();
                let text = r.string();
                if let Ok(t) = tx.put_object(&texts, key.as_str(), ObjType::Text) {
                    let _ = tx.splice_text(&t, 0, 0, &text);
                    writes.push(format!("texts/{key}"));
                }
            }
            3 => {
                let key = r.pick(&fx.text_keys).clone();
                let pos = r.index(16);
                let del = (r.byte() % 4) as isize;
                let text = r.string();
                if let Ok(Some((_, t))) = tx.get(&texts, key.as_str()) {
                    let len = tx.length(&t);
                    let pos = pos.min(len);
                    if tx
                        .splice_text(&t, pos, del.min((len - pos) as isize), &text)
                        .is_ok()
                    {
                        writes.push(format!("texts/{key}"));
                    }
                }
            }
            4 => {
                let map = if r.byte() % 2 == 0 {
                    &revisions
                } else {
                    &events
                };
                let key = r.pick(&fx.keys).clone();
                let _ = tx.put(map, key.as_str(), i64::from(r.byte()));
            }
            5 => {
                let map = if r.byte() % 2 == 0 {
                    &revisions
                } else {
                    &events
                };
                let key = r.pick(&fx.keys).clone();
                let _ = tx.delete(map, key.as_str());
            }
            6 => {
                let target = if r.byte() % 2 == 0 { &meta } else { &ROOT };
                let key = r
                    .pick(&["kind", "patient", "schema", "events", "x"])
                    .to_string();
                let _ = tx.put(target, key.as_str(), r.string());
            }
            7 => {
                let key = r.pick(&fx.keys).clone();
                if let Ok(m) = tx.put_object(&events, key.as_str(), ObjType::Map) {
                    let _ = tx.put(&m, "body", r.string());
                    writes.push(format!("events/{key}"));
                }
            }
            _ => {
                // A text object where a record belongs.
                let key = r.pick(&fx.keys).clone();
                let _ = tx.put_object(&revisions, key.as_str(), ObjType::Text);
                writes.push(format!("revisions/{key}"));
            }
        }
    }
    if flags & 2 != 0 {
        writes.push(format!("events/{}", r.pick(&fx.keys)));
    }
    if flags & 4 != 0 {
        writes.reverse();
        writes.pop();
    }
    let message = ChangeMessage {
        author: if flags & 8 == 0 {
            fx.authors[who].clone()
        } else {
            r.pick(&fx.authors).clone()
        },
        writes,
    };
    let message = serde_json::to_string(&message).expect("message json");
    let (hash, _) = tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(at(12, 0).0),
    );
    match hash.and_then(|h| am.get_change_by_hash(&h)) {
        Some(c) => c,
        // Nothing written: an empty change still goes through the pipeline.
        None => {
            let mut c = fx.templates[0].change.decode();
            c.operations.clear();
            Change::from(c)
        }
    }
}

/// The change in `bytes`, as the harness reads it to know what to expect: as the server reads
/// it (`admit::change`, under the panic guard: Automerge 0.12 unwraps a key's counter that does
/// not fit, `regressions/ingest/crash-198315a7…`), so that bytes the server refuses are
/// unparsable here too.
fn parse(bytes: &[u8]) -> Option<Change> {
    crate::model::admit::change(bytes).ok()
}

/// Uploads `changes` to `doc` as device `peer`, through the server session: in its hello
/// (upload 0) if `in_hello`, else as upload 1 to a session that is already serving.
fn check_upload(doc: usize, peer: usize, changes: &[Vec<u8>], in_hello: bool) {
    let fx = fixture();
    let id = &fx.docs[doc].id;
    let base = &prepared().docs[doc];
    let before = base.heads.clone();
    let docs = vec![DocChanges {
        doc: id.clone(),
        changes: changes.to_vec(),
        positions: vec![],
    }];
    let (mut session, mut repo, upload, message) = if in_hello {
        let session = ServerSession::new(
            Peer {
                author: fx.authors[peer].clone(),
            },
            ServerConfig::default(),
        );
        let repo = prepared().repo.deep_copy().expect("memory store");
        let hello = DeviceMessage::Hello(Hello {
            cursor: None,
            received: vec![],
            priority: vec![],
            backfill: vec![],
            upload: docs,
        });
        (session, repo, 0, hello)
    } else {
        let (session, repo) = &prepared().serving_as[peer];
        let repo = repo.deep_copy().expect("memory store");
        (
            session.clone(),
            repo,
            1,
            DeviceMessage::Upload { upload: 1, docs },
        )
    };
    let Ok(bytes) = wire::encode(&message) else {
        return;
    };
    session.handle_bytes(&mut repo, &Everyone, &bytes, at(12, 0));
    while let Some(ev) = session.poll_event() {
        if let ServerEvent::Closed { reason, detail } = ev {
            panic!("upload closed the session: {reason:?}: {detail}");
        }
    }
    let mut refused: Option<Vec<Refused>> = None;
    while let Some(out) = session.poll_transmit() {
        if let Ok(ServerMessage::UploadAck {
            upload: acked,
            refused: r,
        }) = wire::decode(&out)
            && acked == upload
        {
            refused = Some(r);
        }
    }
    let refused = refused.expect("the upload is acknowledged");
    let refused_at: BTreeMap<u32, RefusalCode> =
        refused.iter().map(|r| (r.index, r.code)).collect();
    let now = repo.get(id).expect("document after upload");
    let heads_after = now.heads();
    let base_holds = |h: &ChangeHash| fx.docs[doc].changes.iter().any(|c| c.hash() == *h);
    let mut any_accepted = false;
    for (i, bytes) in (0u32..).zip(changes) {
        let parsed = parse(bytes);
        match (refused_at.get(&i), &parsed) {
            (Some(_), Some(c)) => {
                // Refused: not in the document, unless it was there before or another copy of
                // it in the same upload was accepted.
                let accepted_copy = changes
                    .iter()
                    .zip(0u32..)
                    .any(|(b, j)| j != i && b == bytes && !refused_at.contains_key(&j));
                if !base_holds(&c.hash()) && !accepted_copy {
                    assert!(
                        !now.has_change(&c.hash()),
                        "a refused change is in the document"
                    );
                }
            }
            (Some(_), None) => {}
            (None, Some(c)) => {
                assert!(
                    now.has_change(&c.hash()),
                    "an accepted change is not in the document"
                );
                any_accepted |= !base_holds(&c.hash());
            }
            (None, None) => panic!("unparsable change {i} was not refused"),
        }
    }
    if !any_accepted {
        assert_eq!(heads_after, before, "refused changes moved the document");
    }
    let contents_now = contents(now);
    // Accepted changes are durable and validate when the document is loaded again.
    reloads_as(&repo, doc, &heads_after, &contents_now);
}

/// The document `doc` of `repo`'s store loads (validating) with `heads` and `contents`. A store
/// still holding the base document exactly gives the base (loaded once, in [`prepared`]), so
/// only a document the execution changed is loaded again.
fn reloads_as(repo: &Repo<MemoryStore>, doc: usize, heads: &[ChangeHash], contents_now: &str) {
    let id = &fixture().docs[doc].id;
    let base = &prepared().docs[doc];
    let stored = repo.store().load(id).expect("memory store");
    if stored.as_ref() == Some(&base.stored) {
        assert_eq!(heads, base.heads, "the store lost a change");
        assert_eq!(contents_now, base.contents, "reloaded contents differ");
        return;
    }
    let mut reloaded = Repo::new(repo.store().clone());
    let again = reloaded
        .get(id)
        .unwrap_or_else(|e| panic!("stored changes do not reload: {e}"));
    assert_eq!(again.heads(), heads, "the store lost a change");
    assert_eq!(contents(again), contents_now, "reloaded contents differ");
}

/// The changes among `changes` that parse, each once, and how many there are.
fn parse_unique(changes: &[Vec<u8>]) -> (Vec<Change>, usize) {
    let mut unique: BTreeSet<ChangeHash> = BTreeSet::new();
    let parsed: Vec<Change> = changes
        .iter()
        .filter_map(|b| parse(b))
        .filter(|c| unique.insert(c.hash()))
        .collect();
    (parsed, unique.len())
}

/// Every one of the `unique` changes is applied, refused or a duplicate.
fn accounted(outcome: &crate::model::ApplyOutcome, unique: usize) {
    assert_eq!(
        outcome.applied.len() + outcome.refused.len() + outcome.duplicates,
        unique,
        "every change is applied, refused or a duplicate"
    );
}

/// Applies `changes` to `doc` as a device takes what its server relayed
/// ([`Repo::apply_relayed_changes`]: a batch is not read back), then compacts it: whatever
/// Automerge took that way, neither step panics, and every change is applied, refused or a
/// duplicate. (Not that the store reloads: a change Automerge cannot read back is refused by
/// the server that relays, which `check_apply` holds.)
fn check_apply_relayed(doc: usize, changes: &[Vec<u8>]) {
    let fx = fixture();
    let id = &fx.docs[doc].id;
    let mut repo = prepared().repo.deep_copy().expect("memory store");
    let (parsed, unique) = parse_unique(changes);
    let outcome = match repo.apply_relayed_changes(id, parsed) {
        Ok(o) => o,
        Err(e) => panic!("apply_relayed_changes failed as a whole: {e}"),
    };
    accounted(&outcome, unique);
    match repo.compact(id) {
        Ok(()) | Err(crate::error::RepoError::Model(_)) => {}
        Err(e) => panic!("compacting after a relayed apply failed: {e}"),
    }
}

/// Applies `changes` to `doc` as a device receiving them (any author), with [`Repo::apply_changes`].
fn check_apply(doc: usize, changes: &[Vec<u8>]) {
    let fx = fixture();
    let id = &fx.docs[doc].id;
    let base = &prepared().docs[doc];
    let mut repo = prepared().repo.deep_copy().expect("memory store");
    let before = base.heads.clone();
    let contents_before = &base.contents;
    let (parsed, unique) = parse_unique(changes);
    let outcome = match repo.apply_changes(id, parsed) {
        Ok(o) => o,
        Err(e) => panic!("apply_changes failed as a whole: {e}"),
    };
    accounted(&outcome, unique);
    let now = repo.get(id).expect("document after apply");
    for (h, e) in &outcome.refused {
        assert_eq!(e.document(), id, "a refusal names the document");
        assert!(!now.has_change(h), "a refused change is in the document");
    }
    for c in &outcome.applied {
        assert!(now.has_change(&c.hash()), "an applied change is missing");
    }
    let heads = now.heads();
    let contents_now = contents(now);
    if outcome.applied.is_empty() {
        assert_eq!(heads, before, "refused changes moved the document");
        assert_eq!(
            contents_now, *contents_before,
            "refused changes changed the contents"
        );
    }
    reloads_as(&repo, doc, &heads, &contents_now);
}
