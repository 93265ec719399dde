//! [`Store`] for [`PgStore`].
//!
//! Feed order across connections. A reader (the server's scan, on any node) moves a device's
//! cursor to the highest position it has seen, so positions must become visible in position
//! order: whoever sees position p must see every position below it. A sequence or identity
//! column does not give that (positions are taken at insert and become visible at commit, in
//! any order; measured here, a reader missed 1,310 of 5,867 rows with 16 writers). So positions
//! come from ONE counter row, `feed_head`: a writing transaction first inserts its feed rows
//! without positions, its changes and its pending marks, then locks the counter (`SELECT .. FOR
//! UPDATE`), numbers its rows from it and updates it as its last statement. The row lock is held
//! until commit, and PostgreSQL makes a transaction visible before it releases its locks, so the
//! next writer numbers its rows only after this one is visible: commits happen in position
//! order, and a rollback takes its positions back with it (no gap). The counter also keeps the
//! feed's running hash, so the next proof needs no scan. Its update also sends `NOTIFY
//! nara_feed` with the new head, delivered to every node's listener (`listen.rs`) only once the
//! transaction committed: the cross-node wake-up hint. (The other correct way, reading only
//! below `pg_snapshot_xmin(pg_current_snapshot())` with transaction ids stamped on rows, lets
//! writers run in parallel but makes every reader lag behind the oldest open transaction.)
//!
//! In a group (several appends in one transaction), the first append takes the counter and the
//! group holds it to its commit: groups that write serialise there. Later appends number from
//! the transaction's copy of the counter, and the row is written once, at commit
//! (`counter.rs` says why). A group opened inside a
//! group is a savepoint: rolled back, it undoes only its own writes (a `Raced` append of one
//! sync step in the server's group commit), and the outer group still commits the rest. Two groups that append the
//! same change in different orders can deadlock; PostgreSQL breaks that by failing one of them,
//! which then rolls back like any failed group.

use sync_core::store::{
    EMPTY_FEED_PROOF, Epoch, FeedEntry, FeedProof, Lease, Origin, Store, StoredDocument,
    next_feed_proof,
};
use sync_core::{ChangeHash, DeviceId, DocumentId, StoreError};

use super::counter::Counter;
use super::{Conn, PgStore, pg};

/// The savepoint of a group opened inside another one (PostgreSQL's `ROLLBACK TO` and `RELEASE`
/// name the innermost savepoint of a name, so nested groups share it).
const INNER_GROUP: &str = "nara_group";

fn hash_of(bytes: &[u8]) -> Result<ChangeHash, StoreError> {
    ChangeHash::try_from(bytes).map_err(|e| StoreError::BadRow(format!("change hash: {e}")))
}

fn doc_of(text: &str) -> Result<DocumentId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::BadRow(format!("document id: {e}")))
}

fn proof_of(bytes: &[u8]) -> Result<FeedProof, StoreError> {
    FeedProof::try_from(bytes).map_err(|_| StoreError::BadRow("feed proof is not 32 bytes".into()))
}

fn position_of(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::BadRow(format!("feed position {seq}")))
}

/// A position as PostgreSQL's bigint (positions beyond it are beyond every row).
fn to_sql(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// Numbers this transaction's new feed rows of `doc` (in `new`'s order) from the counter: the
/// last thing an append does. The transaction's first append locks the counter row and reads
/// it; the row itself is written once, at commit ([`write_counter`], `counter.rs`).
fn number(
    conn: &mut Conn,
    doc: &DocumentId,
    key: &str,
    new: &[ChangeHash],
) -> Result<(), StoreError> {
    let counter = match conn.feed.current() {
        Some(counter) => counter,
        None => {
            let lock = conn.prep("SELECT seq, proof FROM feed_head FOR UPDATE")?;
            let row = conn.client.query_one(&lock, &[]).map_err(pg)?;
            let read = Counter {
                seq: row.get(0),
                proof: proof_of(row.get(1))?,
            };
            conn.feed.took(read);
            read
        }
    };
    let Counter { mut seq, mut proof } = counter;
    let (mut hashes, mut seqs, mut proofs) = (Vec::new(), Vec::new(), Vec::new());
    for hash in new {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| StoreError::BadRow("the feed is full".into()))?;
        proof = next_feed_proof(&proof, doc, hash);
        hashes.push(hash.0.to_vec());
        seqs.push(seq);
        proofs.push(proof.to_vec());
    }
    let set = conn.prep(
        "UPDATE feed SET seq = t.seq, proof = t.proof
         FROM unnest($2::bytea[], $3::bigint[], $4::bytea[]) AS t (hash, seq, proof)
         WHERE feed.doc_id = $1 AND feed.hash = t.hash",
    )?;
    conn.client
        .execute(&set, &[&key, &hashes, &seqs, &proofs])
        .map_err(pg)?;
    conn.feed.moved(Counter { seq, proof });
    Ok(())
}

/// Writes the counter row as the open transaction moved it, if it numbered any row: call it
/// right before the transaction commits, with no savepoint open. Also sends the wake-up hint
/// for every node's listener (`listen.rs`): PostgreSQL delivers a notification only once its
/// transaction committed (never for one rolled back), in commit order, which is position order
/// here.
pub(super) fn write_counter(conn: &mut Conn) -> Result<(), StoreError> {
    let Some(Counter { seq, proof }) = conn.feed.to_write() else {
        return Ok(());
    };
    let head = conn.prep(
        "WITH moved AS (UPDATE feed_head SET seq = $1, proof = $2 RETURNING seq)
         SELECT pg_notify('nara_feed', seq::text) FROM moved",
    )?;
    conn.client
        .execute(&head, &[&seq, &&proof[..]])
        .map_err(pg)?;
    Ok(())
}

impl PgStore {
    /// The store's connection, only while a group is open (between [`Store::begin_group`] and
    /// its commit or rollback), so that a caller's own tables in the same database are written
    /// in the group's transaction: they commit, or roll back, with it (the audit log's
    /// [`super::audit::append_on`]). `f` must not end the transaction itself (no `COMMIT`,
    /// `ROLLBACK` or `BEGIN`). `None` if no group is open, or if one inside it could not be rolled back to
    /// its savepoint (the whole transaction went).
    pub fn with_group_connection<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> T,
    ) -> Option<T> {
        if self.group_depth == 0 || self.group_failed {
            return None;
        }
        let mut conn = self.conn().ok()?;
        Some(f(&mut conn.client))
    }
}

impl Store for PgStore {
    fn documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        let mut conn = self.conn()?;
        let q = conn.prep("SELECT doc_id FROM documents ORDER BY doc_id")?;
        let rows = conn.client.query(&q, &[]).map_err(pg)?;
        rows.iter().map(|r| doc_of(r.get(0))).collect()
    }

    fn load(&self, doc: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        let key = doc.to_string();
        let mut conn = self.conn()?;
        // The snapshot and the change rows in ONE statement, so from one snapshot of the
        // database, also inside a group (READ COMMITTED takes a snapshot per statement): with
        // two reads, another node's compaction committing between them gave the old snapshot
        // without the change rows the new one replaced: a copy lacking changes the feed lists
        // below where this node had looked, kept until another change of the document came,
        // and its sessions skipped those changes when sending (`pg/compaction_tests.rs`).
        let q = conn.prep(
            "SELECT 0 AS part, NULL::bigint AS seq, NULL::bytea AS hash, snapshot AS bytes
               FROM documents WHERE doc_id = $1
             UNION ALL
             SELECT 1, f.seq, c.hash, c.bytes FROM changes c
               JOIN feed f ON f.doc_id = c.doc_id AND f.hash = c.hash
              WHERE c.doc_id = $1
             ORDER BY part, seq",
        )?;
        let rows = conn.client.query(&q, &[&key]).map_err(pg)?;
        #[cfg(test)]
        self.ran_first_read();
        let mut rows = rows.into_iter();
        let Some(first) = rows.next().filter(|r| r.get::<_, i32>(0) == 0) else {
            return Ok(None);
        };
        let snapshot: Option<Vec<u8>> = first.get(3);
        let changes = rows
            .map(|r| Ok((hash_of(r.get(2))?, r.get::<_, Vec<u8>>(3))))
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(StoredDocument { snapshot, changes }))
    }

    fn append(
        &mut self,
        doc: &DocumentId,
        changes: &[(ChangeHash, &[u8])],
        origin: Origin,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let key = doc.to_string();
        self.write(|conn| {
            let q =
                conn.prep("INSERT INTO documents (doc_id) VALUES ($1) ON CONFLICT DO NOTHING")?;
            conn.client.execute(&q, &[&key]).map_err(pg)?;
            // The feed remembers every change stored (compacted ones too): a row there means
            // the change is known. A concurrent writer of the same change waits here for this
            // transaction, then finds it.
            let claim = conn
                .prep("INSERT INTO feed (doc_id, hash) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
            let store =
                conn.prep("INSERT INTO changes (doc_id, hash, bytes) VALUES ($1, $2, $3)")?;
            let mark = conn.prep(
                "INSERT INTO pending (doc_id, hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )?;
            let mut new = Vec::new();
            for (hash, bytes) in changes {
                let h = &hash.0[..];
                if conn.client.execute(&claim, &[&key, &h]).map_err(pg)? == 0 {
                    continue;
                }
                conn.client
                    .execute(&store, &[&key, &h, bytes])
                    .map_err(pg)?;
                if origin == Origin::Local {
                    conn.client.execute(&mark, &[&key, &h]).map_err(pg)?;
                }
                new.push(*hash);
            }
            if new.is_empty() {
                return Ok(());
            }
            number(conn, doc, &key, &new)
        })
    }

    fn compact(
        &mut self,
        doc: &DocumentId,
        snapshot: &[u8],
        covered: &[ChangeHash],
    ) -> Result<(), StoreError> {
        let key = doc.to_string();
        let hashes: Vec<Vec<u8>> = covered.iter().map(|h| h.0.to_vec()).collect();
        self.write(|conn| {
            let q = conn.prep(
                "INSERT INTO documents (doc_id, snapshot) VALUES ($1, $2)
                 ON CONFLICT (doc_id) DO UPDATE SET snapshot = excluded.snapshot",
            )?;
            conn.client.execute(&q, &[&key, &snapshot]).map_err(pg)?;
            let q = conn.prep("DELETE FROM changes WHERE doc_id = $1 AND hash = ANY($2)")?;
            conn.client.execute(&q, &[&key, &hashes]).map_err(pg)?;
            Ok(())
        })
    }

    fn pending(&self) -> Result<Vec<(DocumentId, ChangeHash)>, StoreError> {
        let mut conn = self.conn()?;
        let q = conn.prep("SELECT doc_id, hash FROM pending ORDER BY id")?;
        let rows = conn.client.query(&q, &[]).map_err(pg)?;
        rows.iter()
            .map(|r| Ok((doc_of(r.get(0))?, hash_of(r.get(1))?)))
            .collect()
    }

    fn mark_uploaded(&mut self, doc: &DocumentId, hashes: &[ChangeHash]) -> Result<(), StoreError> {
        let key = doc.to_string();
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        self.write(|conn| {
            let q = conn.prep("DELETE FROM pending WHERE doc_id = $1 AND hash = ANY($2)")?;
            conn.client.execute(&q, &[&key, &hashes]).map_err(pg)?;
            Ok(())
        })
    }

    fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.conn()?;
        let q =
            conn.prep("SELECT seq, doc_id, hash FROM feed WHERE seq > $1 ORDER BY seq LIMIT $2")?;
        let rows = conn
            .client
            .query(&q, &[&to_sql(after), &limit])
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(FeedEntry {
                    seq: position_of(r.get(0))?,
                    doc: doc_of(r.get(1))?,
                    hash: hash_of(r.get(2))?,
                })
            })
            .collect()
    }

    fn feed_head(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        // Inside a transaction that numbered rows, the head as it will commit (the row is
        // written only at commit, `counter.rs`), as the transaction would see its own update.
        if let Some(counter) = conn.feed.current() {
            return position_of(counter.seq);
        }
        let q = conn.prep("SELECT seq FROM feed_head")?;
        let row = conn.client.query_one(&q, &[]).map_err(pg)?;
        position_of(row.get(0))
    }

    fn stored_changes(
        &self,
        doc: &DocumentId,
        hashes: &[ChangeHash],
    ) -> Result<Vec<(ChangeHash, Vec<u8>)>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let key = doc.to_string();
        let wanted: Vec<&[u8]> = hashes.iter().map(|h| &h.0[..]).collect();
        let mut conn = self.conn()?;
        let q =
            conn.prep("SELECT hash, bytes FROM changes WHERE doc_id = $1 AND hash = ANY($2)")?;
        let rows = conn.client.query(&q, &[&key, &wanted]).map_err(pg)?;
        let mut found = std::collections::BTreeMap::new();
        for r in rows {
            found.insert(hash_of(r.get(0))?, r.get::<_, Vec<u8>>(1));
        }
        Ok(hashes
            .iter()
            .filter_map(|h| found.remove(h).map(|b| (*h, b)))
            .collect())
    }

    fn feed_position(
        &self,
        doc: &DocumentId,
        hash: &ChangeHash,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn()?;
        let q = conn.prep("SELECT seq FROM feed WHERE doc_id = $1 AND hash = $2")?;
        let row = conn
            .client
            .query_opt(&q, &[&doc.to_string(), &&hash.0[..]])
            .map_err(pg)?;
        row.and_then(|r| r.get::<_, Option<i64>>(0))
            .map(position_of)
            .transpose()
    }

    fn epoch(&self) -> Result<Epoch, StoreError> {
        let bytes = self
            .meta("epoch")?
            .ok_or_else(|| StoreError::BadRow("the store has no epoch".into()))?;
        Epoch::try_from(bytes.as_slice())
            .map_err(|_| StoreError::BadRow("epoch is not 16 bytes".into()))
    }

    fn set_epoch(&mut self, epoch: Epoch) -> Result<(), StoreError> {
        self.set_meta("epoch", &epoch)
    }

    fn feed_proof(&self, position: u64) -> Result<FeedProof, StoreError> {
        let mut conn = self.conn()?;
        let q = conn.prep("SELECT proof FROM feed WHERE seq <= $1 ORDER BY seq DESC LIMIT 1")?;
        match conn
            .client
            .query_opt(&q, &[&to_sql(position)])
            .map_err(pg)?
        {
            None => Ok(EMPTY_FEED_PROOF),
            Some(row) => proof_of(row.get::<_, Option<&[u8]>>(0).unwrap_or_default()),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn()?;
        let q = conn.prep("SELECT value FROM meta WHERE key = $1")?;
        let row = conn.client.query_opt(&q, &[&key]).map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|conn| {
            let q = conn.prep(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?;
            conn.client.execute(&q, &[&key, &value]).map_err(pg)?;
            Ok(())
        })
    }

    fn remove_document(&mut self, doc: &DocumentId) -> Result<(), StoreError> {
        let key = doc.to_string();
        self.write(|conn| {
            for sql in [
                "DELETE FROM pending WHERE doc_id = $1",
                "DELETE FROM changes WHERE doc_id = $1",
                "DELETE FROM feed WHERE doc_id = $1",
                "DELETE FROM documents WHERE doc_id = $1",
            ] {
                let q = conn.prep(sql)?;
                conn.client.execute(&q, &[&key]).map_err(pg)?;
            }
            Ok(())
        })
    }

    fn claim_device(
        &mut self,
        device: &DeviceId,
        holder: &str,
        now_ms: i64,
    ) -> Result<Lease, StoreError> {
        let token: i64 = self.write(|conn| {
            // The update locks the row: it waits for every group that read it FOR SHARE.
            let q = conn.prep(
                "INSERT INTO device_leases (device_id, token, holder, claimed_ms)
                 VALUES ($1, 1, $2, $3)
                 ON CONFLICT (device_id) DO UPDATE SET token = device_leases.token + 1,
                     holder = excluded.holder, claimed_ms = excluded.claimed_ms
                 RETURNING token",
            )?;
            let row = conn
                .client
                .query_one(&q, &[&device.as_str(), &holder, &now_ms])
                .map_err(pg)?;
            Ok(row.get(0))
        })?;
        let token =
            u64::try_from(token).map_err(|_| StoreError::BadRow(format!("lease token {token}")))?;
        Ok(Lease { token })
    }

    fn check_lease(&self, device: &DeviceId, token: u64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        // FOR SHARE: held to the end of the open group's transaction, so that a claim (an
        // UPDATE of the row) waits for it; groups of one device's steps do not block each other.
        let q = conn.prep("SELECT token FROM device_leases WHERE device_id = $1 FOR SHARE")?;
        let current: Option<i64> = conn
            .client
            .query_opt(&q, &[&device.as_str()])
            .map_err(pg)?
            .map(|r| r.get(0));
        match current {
            Some(current) if u64::try_from(current) == Ok(token) => Ok(()),
            _ => Err(StoreError::Fenced {
                device: device.clone(),
                token,
            }),
        }
    }

    fn begin_group(&mut self) -> Result<(), StoreError> {
        if self.group_depth == 0 {
            self.group_failed = false;
            let conn = self.conn_mut()?;
            conn.feed.reset();
            conn.client.batch_execute("BEGIN").map_err(pg)?;
        } else {
            // A group inside another one is a savepoint: its rollback undoes it alone (a raced
            // append of one sync step), and the outer group goes on to commit the rest.
            let conn = self.conn_mut()?;
            conn.client
                .batch_execute(&format!("SAVEPOINT {INNER_GROUP}"))
                .map_err(pg)?;
            conn.feed.savepoint();
        }
        self.group_depth += 1;
        Ok(())
    }

    fn commit_group(&mut self) -> Result<(), StoreError> {
        match self.group_depth {
            0 => {}
            1 => {
                self.group_depth = 0;
                if self.group_failed {
                    // What was written after the inner rollback is dropped too.
                    self.rollback_open();
                    return Err(StoreError::BadRow(
                        "a group inside this one could not be rolled back alone".into(),
                    ));
                }
                let conn = self.conn_mut()?;
                let written = write_counter(conn);
                conn.feed.reset();
                if let Err(e) = written {
                    self.rollback_open();
                    return Err(e);
                }
                // A failed COMMIT ends the transaction too (rolled back).
                conn.client.batch_execute("COMMIT").map_err(pg)?;
            }
            _ => {
                self.group_depth -= 1;
                let conn = self.conn_mut()?;
                let released = conn
                    .client
                    .batch_execute(&format!("RELEASE SAVEPOINT {INNER_GROUP}"))
                    .map_err(pg);
                conn.feed.release();
                if released.is_err() {
                    // The transaction is broken: the outer group can only fail.
                    self.group_failed = true;
                }
                released?;
            }
        }
        Ok(())
    }

    fn rollback_group(&mut self) {
        if self.group_depth > 1 {
            self.group_depth -= 1;
            let undone = self.conn_mut().and_then(|c| {
                c.feed.rollback_to();
                c.client
                    .batch_execute(&format!(
                        "ROLLBACK TO SAVEPOINT {INNER_GROUP}; RELEASE SAVEPOINT {INNER_GROUP}"
                    ))
                    .map_err(pg)
            });
            if let Err(e) = undone {
                // The savepoint is gone with the transaction (the connection was lost, or the
                // group was never opened): the whole transaction goes, and the outer group
                // learns it when it commits. Writes made meanwhile go into a new transaction
                // that the outer commit rolls back.
                tracing::error!(error = %e, "rolling back a group inside another one failed");
                self.group_failed = true;
                self.rollback_open();
                let reopened = self
                    .conn_mut()
                    .and_then(|c| c.client.batch_execute("BEGIN").map_err(pg));
                if let Err(e) = reopened {
                    tracing::error!(error = %e, "reopening a rolled-back group failed");
                }
            }
        } else {
            self.rollback_open();
            self.group_depth = 0;
        }
    }
}
