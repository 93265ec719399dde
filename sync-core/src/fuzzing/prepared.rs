//! What every execution starts from, prepared once per process: the fixture's documents loaded
//! (validated) in a repo, a server session already serving them after a valid hello, and what
//! the fixture's documents look like stored and loaded. An execution clones or deep-copies
//! these instead of loading the documents again: the same state, without the cost. A check
//! that compares against them is the check that loading again would make, since loading the
//! same bytes gives the same document.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::OnceLock;

use automerge::{Automerge, ChangeHash};

use crate::model::CareDocument;
use crate::protocol::wire::{self, DeviceMessage, Hello};
use crate::protocol::{Peer, ServerConfig, ServerEvent, ServerSession};
use crate::repo::Repo;
use crate::store::{MemoryStore, SqliteStore, Store, StoredDocument};

use super::fixtures::{ANNA, Everyone, at, base_store, contents, fixture, temp_dir};

/// A base document of the fixture, loaded once.
#[derive(Debug)]
pub(super) struct LoadedBase {
    pub(super) heads: Vec<ChangeHash>,
    /// [`contents`] of the document.
    pub(super) contents: String,
    /// The document as [`base_store`] holds it.
    pub(super) stored: StoredDocument,
    /// Its snapshot loaded by Automerge itself (what a forged change starts from).
    pub(super) automerge: Automerge,
}

#[derive(Debug)]
pub(super) struct Prepared {
    /// Per fixture document, in order.
    pub(super) docs: Vec<LoadedBase>,
    /// [`base_store`] in a repo with every document loaded.
    pub(super) repo: Repo<MemoryStore>,
    /// A session as device Anna that has accepted a valid hello over `serving_repo` (its
    /// output drained), and that repo.
    pub(super) serving: ServerSession,
    pub(super) serving_repo: Repo<MemoryStore>,
    /// Per fixture author, in order: a session as that device that has accepted a valid hello
    /// (its output drained), and its repo, for `ingest`'s uploads after the hello.
    pub(super) serving_as: Vec<(ServerSession, Repo<MemoryStore>)>,
    /// Per fixture document: how each other document is stored in `store_files` (indexed by
    /// document; `None` for the one left out), as read back by [`SqliteStore`].
    pub(super) store_files: Vec<Vec<Option<StoredDocument>>>,
}

pub(super) fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(prepare)
}

fn prepare() -> Prepared {
    let fx = fixture();
    let mut repo = Repo::new(base_store());
    let mut docs = Vec::new();
    for d in &fx.docs {
        let doc = repo.get(&d.id).expect("a base document loads");
        let heads = doc.heads();
        let contents = contents(doc);
        let stored = repo
            .store()
            .load(&d.id)
            .expect("memory store")
            .expect("a base document is stored");
        let automerge = Automerge::load(&d.snapshot).expect("fixture snapshot");
        let snapshot = CareDocument::load(d.id.clone(), Some(&d.snapshot), &[])
            .expect("fixture snapshot loads");
        assert_eq!(
            snapshot.heads(),
            heads,
            "the snapshot holds the base changes"
        );
        docs.push(LoadedBase {
            heads,
            contents,
            stored,
            automerge,
        });
    }

    let (serving, serving_repo) = serve_as(&repo, ANNA);
    let serving_as = (0..fx.authors.len())
        .map(|who| serve_as(&repo, who))
        .collect();

    let store_files = fx
        .store_files
        .iter()
        .enumerate()
        .map(|(skip, file)| {
            let dir = temp_dir();
            let path = dir.path().join("store.db");
            std::fs::write(&path, file).expect("write the fixture store");
            let store = SqliteStore::open(&path).expect("open the fixture store");
            let mut check = Repo::new(store);
            fx.docs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let stored = check.store().load(&d.id).expect("fixture store");
                    if i == skip {
                        assert!(stored.is_none(), "the fixture store leaves one out");
                    } else {
                        let heads = check.get(&d.id).expect("fixture store loads").heads();
                        assert_eq!(heads, docs[i].heads, "the fixture store holds the base");
                    }
                    stored
                })
                .collect()
        })
        .collect();

    Prepared {
        docs,
        repo,
        serving,
        serving_repo,
        serving_as,
        store_files,
    }
}

/// A session as the fixture's author `who` that has accepted a valid hello over a deep copy of
/// `repo` (its output drained), and that copy.
fn serve_as(repo: &Repo<MemoryStore>, who: usize) -> (ServerSession, Repo<MemoryStore>) {
    let mut serving_repo = repo.deep_copy().expect("memory store");
    let mut serving = ServerSession::new(
        Peer {
            author: fixture().authors[who].clone(),
        },
        ServerConfig::default(),
    );
    let hello = wire::encode(&DeviceMessage::Hello(Hello {
        cursor: None,
        received: Vec::new(),
        priority: Vec::new(),
        backfill: Vec::new(),
        upload: Vec::new(),
    }))
    .expect("hello encodes");
    serving.handle_bytes(&mut serving_repo, &Everyone, &hello, at(12, 0));
    while let Some(ev) = serving.poll_event() {
        if let ServerEvent::Closed { reason, detail } = ev {
            panic!("a valid hello must be served: {reason:?}: {detail}");
        }
    }
    while serving.poll_transmit().is_some() {}
    (serving, serving_repo)
}
