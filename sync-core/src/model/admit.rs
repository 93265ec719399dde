//! Admission of foreign Automerge bytes: the one place where bytes from another replica are
//! checked, with bounded work and memory, before Automerge's decoders see them.
//!
//! Automerge 0.12 trusts its input in ways a hostile peer can use:
//!
//! - a sync message's Bloom filter carries `num_probes` as any `u32`, and generating the reply
//!   allocates that many entries for every hash it checks (one message, gigabytes, an abort
//!   that `catch_unwind` cannot catch);
//! - a "compressed change" chunk (type 2) and the DEFLATE-compressed columns of a document
//!   chunk (type 0) are inflated with `read_to_end`, without bound (about 1,000:1);
//! - `Change::from_bytes` parses (and inflates) any chunk type before it finds that the chunk
//!   is not a change.
//!
//! So every foreign sync message goes through [`sync_message`], every foreign change through
//! [`change`] and every foreign whole document through [`document`]. They read the chunk and
//! message framing themselves (LEB128, as Automerge's `storage/parse.rs`), refuse parameters
//! out of range, inflate compressed data through a reader that stops at [`MAX_INFLATED_BYTES`],
//! and only then hand the bytes to Automerge, under the same panic guard as every other
//! Automerge call on foreign bytes. Used by the server session, the device session and the
//! `Repo` (through [`crate::model::CareDocument::sync_receive`]).
//!
//! What is *not* bounded here: Automerge's run-length encoded columns can describe many
//! operations in few bytes; the work of reading them is bounded by the bytes admitted here
//! only up to that ratio.

use std::io::Read;

use automerge::{Automerge, Change};

/// The most bytes one admitted input may inflate to (a compressed change, or all compressed
/// columns of one document). A honest document of a month's records inflates to far less.
pub const MAX_INFLATED_BYTES: usize = 32 * 1024 * 1024;
/// The most `have` entries in one sync message (Automerge sends one).
pub const MAX_SYNC_HAVES: usize = 8;
/// The most probes of a sync message's Bloom filter (Automerge uses 7).
pub const MAX_BLOOM_PROBES: u32 = 32;
/// The most bits per entry of a sync message's Bloom filter (Automerge uses 10).
pub const MAX_BLOOM_BITS_PER_ENTRY: u32 = 64;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const SYNC_V1: u8 = 0x42;
const SYNC_V2: u8 = 0x43;
const HASH_LEN: usize = 32;
/// The deflate bit of a column specification.
const COLUMN_DEFLATE: u32 = 0b1000;

/// Why foreign Automerge bytes were not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inadmissible {
    #[error("truncated or malformed {0}")]
    Malformed(&'static str),
    #[error("sync message Bloom filter out of range: {0}")]
    Bloom(String),
    #[error("sync message carries {0} `have` entries (at most {MAX_SYNC_HAVES})")]
    TooManyHaves(u64),
    #[error("compressed data inflates beyond {MAX_INFLATED_BYTES} bytes")]
    InflatesTooFar,
    #[error("chunk of type {0} where {1} was expected")]
    WrongChunk(u8, &'static str),
    #[error("Automerge refused it: {0}")]
    Automerge(String),
    #[error("Automerge failed on it")]
    Panicked,
}

/// Decodes a foreign sync message after checking its framing, its `have` entries and their
/// Bloom filters, and every chunk it carries (each a change or a whole document).
pub fn sync_message(bytes: &[u8]) -> Result<automerge::sync::Message, Inadmissible> {
    let mut r = Cursor::new(bytes);
    let version = r.byte("sync message")?;
    if version != SYNC_V1 && version != SYNC_V2 {
        return Err(Inadmissible::Malformed("sync message type"));
    }
    r.hashes()?; // heads
    r.hashes()?; // need
    let haves = r.leb("sync message")?;
    if haves > MAX_SYNC_HAVES as u64 {
        return Err(Inadmissible::TooManyHaves(haves));
    }
    for _ in 0..haves {
        r.hashes()?; // last_sync
        let bloom = r.prefixed("sync message")?;
        check_bloom(bloom)?;
    }
    let chunks = r.leb("sync message")?;
    let mut budget = Budget::default();
    for _ in 0..chunks {
        let chunk = r.prefixed("sync message")?;
        walk_chunks(chunk, &mut budget)?;
    }
    guarded(|| automerge::sync::Message::decode(bytes))?
        .map_err(|e| Inadmissible::Automerge(e.to_string()))
}

/// Parses one foreign change: an uncompressed or (bounded) compressed change chunk, nothing
/// else, and nothing after it.
pub fn change(bytes: &[u8]) -> Result<Change, Inadmissible> {
    let mut r = Cursor::new(bytes);
    let (kind, data) = chunk_header(&mut r)?;
    if !r.rest().is_empty() {
        return Err(Inadmissible::Malformed("change: bytes after the chunk"));
    }
    match kind {
        ChunkKind::Change => {}
        ChunkKind::Compressed => {
            inflate_bounded(data, &mut Budget::default())?;
        }
        ChunkKind::Document | ChunkKind::Bundle => {
            return Err(Inadmissible::WrongChunk(kind.code(), "a change"));
        }
    }
    guarded(|| Change::from_bytes(bytes.to_vec()))?
        .map_err(|e| Inadmissible::Automerge(e.to_string()))
}

/// The changes of one entry of a sync message's change list, each admitted: a whole document
/// (a document chunk, with any changes after it, as Automerge saves one), or one or more
/// change chunks one after another. Automerge 0.12 puts every change of a version-2 message
/// in one entry, concatenated; loading those as a document fails as soon as the first one's
/// dependencies are not among them ("change's deps should already be in the document"), so
/// they are split here and each is parsed on its own, all inflated through one budget.
pub fn sync_chunk(bytes: &[u8]) -> Result<Vec<Change>, Inadmissible> {
    let mut r = Cursor::new(bytes);
    if let (ChunkKind::Document, _) = chunk_header(&mut r)? {
        return document(bytes);
    }
    let mut r = Cursor::new(bytes);
    let mut budget = Budget::default();
    let mut changes = Vec::new();
    while !r.rest().is_empty() {
        let start = r.rest();
        let (kind, data) = chunk_header(&mut r)?;
        let whole = &start[..start.len() - r.rest().len()];
        match kind {
            ChunkKind::Change => {}
            ChunkKind::Compressed => inflate_bounded(data, &mut budget)?,
            ChunkKind::Document | ChunkKind::Bundle => {
                return Err(Inadmissible::WrongChunk(kind.code(), "a change"));
            }
        }
        changes.push(
            guarded(|| Change::from_bytes(whole.to_vec()))?
                .map_err(|e| Inadmissible::Automerge(e.to_string()))?,
        );
    }
    Ok(changes)
}

/// Loads a foreign whole document (Automerge sends one in a sync message when much is
/// missing) and returns its changes: a document chunk and changes, each compressed part
/// inflated through the same budget; no bundles.
pub fn document(bytes: &[u8]) -> Result<Vec<Change>, Inadmissible> {
    walk_chunks(bytes, &mut Budget::default())?;
    guarded(|| Automerge::load(bytes).map(|d| d.get_changes(&[])))?
        .map_err(|e| Inadmissible::Automerge(e.to_string()))
}

/// Runs Automerge on admitted bytes; a panic (Automerge asserts on some malformed input)
/// becomes [`Inadmissible::Panicked`].
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Inadmissible> {
    super::panic_guard::catch(f).map_err(|_| Inadmissible::Panicked)
}

fn check_bloom(bytes: &[u8]) -> Result<(), Inadmissible> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut r = Cursor::new(bytes);
    let entries = r.leb_u32("Bloom filter")?;
    let bits_per_entry = r.leb_u32("Bloom filter")?;
    let probes = r.leb_u32("Bloom filter")?;
    if !(1..=MAX_BLOOM_PROBES).contains(&probes) {
        return Err(Inadmissible::Bloom(format!(
            "{probes} probes (1 to {MAX_BLOOM_PROBES})"
        )));
    }
    if !(1..=MAX_BLOOM_BITS_PER_ENTRY).contains(&bits_per_entry) {
        return Err(Inadmissible::Bloom(format!(
            "{bits_per_entry} bits per entry (1 to {MAX_BLOOM_BITS_PER_ENTRY})"
        )));
    }
    // As Automerge computes it: ceil(entries * bits / 8) bytes must follow.
    let bits = (u64::from(entries) * u64::from(bits_per_entry)).div_ceil(8);
    if entries == 0 || bits == 0 || bits > r.rest().len() as u64 {
        return Err(Inadmissible::Bloom(format!(
            "{entries} entries do not match {} bytes of bits",
            r.rest().len()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkKind {
    Document,
    Change,
    Compressed,
    Bundle,
}

impl ChunkKind {
    fn code(self) -> u8 {
        match self {
            ChunkKind::Document => 0,
            ChunkKind::Change => 1,
            ChunkKind::Compressed => 2,
            ChunkKind::Bundle => 3,
        }
    }
}

/// Inflated bytes still allowed for one admitted input.
#[derive(Debug)]
struct Budget(usize);

impl Default for Budget {
    fn default() -> Self {
        Budget(MAX_INFLATED_BYTES)
    }
}

/// Whether an uncompressed change chunk carries a mark operation (action 7), read from its
/// action column alone; `None` if the bytes are not such a chunk or do not read to the end
/// (the caller then decodes the change to tell). Written here because Automerge 0.12 offers no
/// way to see a change's actions short of [`Change::decode`], which builds every operation and
/// cost a device about a tenth of its catch-up (`CareDocument`'s `carries_marks`).
///
/// A change chunk's data: its dependencies, actor, sequence number, first operation counter,
/// time, message, other actors, then the operation columns' metadata and data. The action
/// column (id 4, integers) is run-length encoded: a signed count, then one value for a run
/// (count > 0), `-count` values (count < 0), or the length of a run of nulls (0).
pub fn marks_in_change(raw: &[u8]) -> Option<bool> {
    const ACTION_COLUMN: u32 = (4 << 4) | 2;
    const MARK: u64 = 7;
    let mut r = Cursor::new(raw);
    let (kind, data) = chunk_header(&mut r).ok()?;
    if kind != ChunkKind::Change || !r.rest().is_empty() {
        return None;
    }
    let mut r = Cursor::new(data);
    r.hashes().ok()?; // dependencies
    r.prefixed("actor").ok()?;
    r.leb("seq").ok()?;
    r.leb("start op").ok()?;
    r.sleb("time").ok()?;
    r.prefixed("message").ok()?;
    let others = r.leb("actors").ok()?;
    for _ in 0..others {
        r.prefixed("actor").ok()?;
    }
    let mut found = None;
    for (spec, len) in r.columns().ok()? {
        let column = r.take_u64(len, "column").ok()?;
        // A change's columns are never deflated (Automerge refuses such a change): if one is,
        // this is not a change as Automerge reads it.
        if spec & COLUMN_DEFLATE != 0 {
            return None;
        }
        if spec == ACTION_COLUMN {
            found = Some(rle_holds(column, MARK)?);
        }
    }
    // No action column: no operations.
    Some(found.unwrap_or(false))
}

/// Whether a run-length encoded column of unsigned integers holds `value`; `None` if it does
/// not read to its end.
fn rle_holds(column: &[u8], value: u64) -> Option<bool> {
    let mut r = Cursor::new(column);
    while !r.rest().is_empty() {
        let count = r.sleb("run").ok()?;
        if count > 0 {
            if r.leb("run value").ok()? == value {
                return Some(true);
            }
        } else if count < 0 {
            for _ in 0..count.unsigned_abs() {
                if r.leb("literal").ok()? == value {
                    return Some(true);
                }
            }
        } else {
            r.leb("null run").ok()?;
        }
    }
    Some(false)
}

/// Reads a chunk header (magic, checksum, type, LEB128 length) and returns the chunk's data.
fn chunk_header<'a>(r: &mut Cursor<'a>) -> Result<(ChunkKind, &'a [u8]), Inadmissible> {
    let magic = r.take(4, "chunk header")?;
    if magic != MAGIC {
        return Err(Inadmissible::Malformed("chunk magic bytes"));
    }
    r.take(4, "chunk header")?; // checksum
    let kind = match r.byte("chunk header")? {
        0 => ChunkKind::Document,
        1 => ChunkKind::Change,
        2 => ChunkKind::Compressed,
        3 => ChunkKind::Bundle,
        _ => return Err(Inadmissible::Malformed("chunk type")),
    };
    let len = r.leb("chunk header")?;
    let data = r.take_u64(len, "chunk")?;
    Ok((kind, data))
}

/// Walks a sequence of chunks (what `Automerge::load` reads), inflating every compressed part
/// through `budget`.
fn walk_chunks(bytes: &[u8], budget: &mut Budget) -> Result<(), Inadmissible> {
    let mut r = Cursor::new(bytes);
    if r.rest().is_empty() {
        return Err(Inadmissible::Malformed("empty chunk"));
    }
    while !r.rest().is_empty() {
        let (kind, data) = chunk_header(&mut r)?;
        match kind {
            ChunkKind::Change => {}
            ChunkKind::Compressed => inflate_bounded(data, budget)?,
            ChunkKind::Document => document_columns(data, budget)?,
            ChunkKind::Bundle => {
                return Err(Inadmissible::WrongChunk(
                    kind.code(),
                    "a change or a document",
                ));
            }
        }
    }
    Ok(())
}

/// Checks the compressed columns of a document chunk's data: actors, heads, change column
/// metadata, op column metadata, then the columns' data in that order.
fn document_columns(data: &[u8], budget: &mut Budget) -> Result<(), Inadmissible> {
    let mut r = Cursor::new(data);
    let actors = r.leb("document actors")?;
    for _ in 0..actors {
        r.prefixed("document actors")?;
    }
    r.hashes()?;
    let change_cols = r.columns()?;
    let op_cols = r.columns()?;
    for (spec, len) in change_cols.into_iter().chain(op_cols) {
        let col = r.take_u64(len, "document column")?;
        if spec & COLUMN_DEFLATE != 0 {
            inflate_bounded(col, budget)?;
        }
    }
    Ok(())
}

/// Inflates raw DEFLATE data into nothing, counting, and refuses it once it passes the budget.
fn inflate_bounded(data: &[u8], budget: &mut Budget) -> Result<(), Inadmissible> {
    let limit = budget.0 as u64;
    let mut reader = flate2::bufread::DeflateDecoder::new(data).take(limit + 1);
    let inflated = std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|_| Inadmissible::Malformed("compressed data"))?;
    if inflated > limit {
        return Err(Inadmissible::InflatesTooFar);
    }
    budget.0 -= inflated as usize;
    Ok(())
}

/// A read position in foreign bytes; every read is checked against what is left.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Inadmissible> {
        if n > self.rest.len() {
            return Err(Inadmissible::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn take_u64(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], Inadmissible> {
        let n = usize::try_from(n).map_err(|_| Inadmissible::Malformed(what))?;
        self.take(n, what)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, Inadmissible> {
        Ok(self.take(1, what)?[0])
    }

    /// Unsigned LEB128 of at most 64 bits, as Automerge reads it (overlong forms refused).
    fn leb(&mut self, what: &'static str) -> Result<u64, Inadmissible> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.byte(what)?;
            if shift == 63 && byte > 1 {
                return Err(Inadmissible::Malformed(what));
            }
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift > 7 && byte == 0 {
                    return Err(Inadmissible::Malformed(what));
                }
                return Ok(value);
            }
            if shift > 63 {
                return Err(Inadmissible::Malformed(what));
            }
        }
    }

    /// Signed LEB128 of at most 64 bits.
    fn sleb(&mut self, what: &'static str) -> Result<i64, Inadmissible> {
        let mut value: i64 = 0;
        let mut shift = 0u32;
        loop {
            if shift >= 64 {
                return Err(Inadmissible::Malformed(what));
            }
            let byte = self.byte(what)?;
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
        }
    }

    fn leb_u32(&mut self, what: &'static str) -> Result<u32, Inadmissible> {
        u32::try_from(self.leb(what)?).map_err(|_| Inadmissible::Malformed(what))
    }

    fn prefixed(&mut self, what: &'static str) -> Result<&'a [u8], Inadmissible> {
        let len = self.leb(what)?;
        self.take_u64(len, what)
    }

    /// A LEB128 count of change hashes, then the hashes.
    fn hashes(&mut self) -> Result<(), Inadmissible> {
        let n = self.leb("change hashes")?;
        let len = n
            .checked_mul(HASH_LEN as u64)
            .ok_or(Inadmissible::Malformed("change hashes"))?;
        self.take_u64(len, "change hashes")?;
        Ok(())
    }

    /// Column metadata: a count, then (specification, length) pairs.
    fn columns(&mut self) -> Result<Vec<(u32, u64)>, Inadmissible> {
        let n = self.leb("column metadata")?;
        // Each pair takes at least two bytes: a count beyond that is a lie.
        if n > self.rest.len() as u64 / 2 {
            return Err(Inadmissible::Malformed("column metadata"));
        }
        let mut cols = Vec::new();
        for _ in 0..n {
            let spec = self.leb_u32("column metadata")?;
            let len = self.leb("column metadata")?;
            cols.push((spec, len));
        }
        Ok(cols)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The action column read alone says what a full decode says, for changes of every kind
    /// of operation, with marks and without, in runs and literals.
    #[test]
    fn marks_in_change_agrees_with_a_full_decode() {
        use automerge::marks::{ExpandMark, Mark};
        use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue};

        let decoded = |c: &Change| {
            c.decode().operations.iter().any(|op| {
                matches!(
                    op.action,
                    automerge::legacy::OpType::MarkBegin(_) | automerge::legacy::OpType::MarkEnd(_)
                )
            })
        };
        let mut doc = AutoCommit::new();
        let mut changes = Vec::new();
        let text = doc.put_object(ROOT, "t", ObjType::Text).unwrap();
        let list = doc.put_object(ROOT, "l", ObjType::List).unwrap();
        changes.push(doc.commit().unwrap());
        for round in 0..40usize {
            for i in 0..(round % 7) {
                doc.put(ROOT, format!("k{i}"), round as i64).unwrap();
            }
            doc.splice_text(&text, 0, 0, &"ab".repeat(round % 5 + 1))
                .unwrap();
            if round % 3 == 0 {
                doc.insert(&list, 0, ScalarValue::Counter(0.into()))
                    .unwrap();
                doc.increment(&list, 0, 2).unwrap();
            }
            if round % 4 == 1 {
                doc.delete(ROOT, "k0").unwrap();
            }
            if round % 5 == 2 {
                let len = doc.length(&text);
                doc.mark(
                    &text,
                    Mark::new("bold".into(), true, 0, len.min(3)),
                    ExpandMark::None,
                )
                .unwrap();
            }
            if round % 6 == 3 {
                doc.unmark(&text, "bold", 0, 1, ExpandMark::Both).unwrap();
            }
            if let Some(h) = doc.commit() {
                changes.push(h);
            }
        }
        let mut with_marks = 0;
        for h in changes {
            let c = doc.get_change_by_hash(&h).unwrap().clone();
            let expected = decoded(&c);
            with_marks += usize::from(expected);
            assert_eq!(marks_in_change(c.raw_bytes()), Some(expected), "change {h}");
        }
        assert!(with_marks >= 10, "{with_marks} changes with marks");
        // Not a change chunk: the caller decodes.
        assert_eq!(marks_in_change(&doc.save()), None);
        assert_eq!(marks_in_change(b"not a chunk"), None);
    }
    use automerge::transaction::Transactable;
    use automerge::{ROOT, sync::SyncDoc};
    use std::io::Write;

    fn doc_with(n: usize) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        for i in 0..n {
            tx.put(
                ROOT,
                format!("k{i}"),
                "a value that repeats a value that repeats",
            )
            .unwrap();
        }
        tx.commit();
        doc
    }

    /// Bytes of an honest sync message, with Bloom parameters replaced.
    fn bloom_message(probes: u32) -> Vec<u8> {
        let mut out = vec![SYNC_V1, 0, 0, 1, 0];
        let mut bloom = Vec::new();
        for v in [1u64, 10, u64::from(probes)] {
            leb128_write(&mut bloom, v);
        }
        bloom.extend([0u8; 2]);
        leb128_write(&mut out, bloom.len() as u64);
        out.extend(bloom);
        out.push(0); // no changes
        out
    }

    fn leb128_write(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn honest_sync_messages_are_admitted() {
        let a = doc_with(50);
        let mut b = doc_with(3);
        let mut sa = automerge::sync::State::new();
        let mut sb = automerge::sync::State::new();
        for _ in 0..6 {
            if let Some(m) = a.generate_sync_message(&mut sa) {
                let m = sync_message(&m.encode()).unwrap();
                b.receive_sync_message(&mut sb, m).unwrap();
            }
            if let Some(m) = b.generate_sync_message(&mut sb) {
                let bytes = m.encode();
                assert_eq!(sync_message(&bytes).unwrap().encode(), bytes);
            }
        }
    }

    #[test]
    fn bloom_bombs_are_refused() {
        assert!(sync_message(&bloom_message(7)).is_ok());
        assert!(matches!(
            sync_message(&bloom_message(u32::MAX)),
            Err(Inadmissible::Bloom(_))
        ));
        assert!(matches!(
            sync_message(&bloom_message(0)),
            Err(Inadmissible::Bloom(_))
        ));
    }

    #[test]
    fn honest_changes_and_documents_are_admitted() {
        let doc = doc_with(400);
        for c in doc.get_changes(&[]) {
            let raw = c.raw_bytes().to_vec();
            assert_eq!(change(&raw).unwrap().hash(), c.hash());
            let mut c = c.clone();
            let compressed = c.bytes().to_vec();
            assert_eq!(change(&compressed).unwrap().hash(), c.hash());
        }
        assert_eq!(document(&doc.save()).unwrap().len(), 1);
        assert!(matches!(
            change(&doc.save()),
            Err(Inadmissible::WrongChunk(0, _))
        ));
    }

    /// Automerge 0.12's version-2 sync message puts every change it sends in one entry,
    /// concatenated; the first one's dependencies are the receiver's, not in the entry.
    #[test]
    fn changes_concatenated_in_one_entry_are_admitted_each() {
        let mut doc = doc_with(1);
        let base = doc.get_heads();
        for i in 0..3 {
            let mut tx = doc.transaction();
            tx.put(ROOT, format!("later{i}"), i).unwrap();
            tx.commit();
        }
        let later: Vec<Change> = doc.get_changes(&base);
        assert_eq!(later.len(), 3);
        let mut entry: Vec<u8> = Vec::new();
        for c in &later {
            entry.extend(c.raw_bytes());
        }
        // Read as a document, they fail: the first one's dependency is not among them.
        assert!(document(&entry).is_err());
        let hashes: Vec<_> = sync_chunk(&entry)
            .unwrap()
            .iter()
            .map(Change::hash)
            .collect();
        assert_eq!(hashes, later.iter().map(Change::hash).collect::<Vec<_>>());
        // A compressed one among them, a whole document, a single change: as before.
        let mut compressed = later[0].clone();
        let mut mixed = compressed.bytes().to_vec();
        mixed.extend(later[1].raw_bytes());
        assert_eq!(sync_chunk(&mixed).unwrap().len(), 2);
        assert_eq!(sync_chunk(&doc.save()).unwrap().len(), 4);
        assert_eq!(sync_chunk(later[2].raw_bytes()).unwrap().len(), 1);
        // A document after changes, trailing bytes, an empty entry: refused.
        let mut doc_after = later[0].raw_bytes().to_vec();
        doc_after.extend(doc.save());
        assert!(matches!(
            sync_chunk(&doc_after),
            Err(Inadmissible::WrongChunk(0, _))
        ));
        let mut trailing = later[0].raw_bytes().to_vec();
        trailing.push(0);
        assert!(sync_chunk(&trailing).is_err());
        assert!(sync_chunk(&[]).is_err());
    }

    #[test]
    fn inflation_bombs_are_refused() {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 1 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let mut chunk = MAGIC.to_vec();
        chunk.extend([0; 4]);
        chunk.push(2);
        leb128_write(&mut chunk, bomb.len() as u64);
        chunk.extend(&bomb);
        assert_eq!(change(&chunk).unwrap_err(), Inadmissible::InflatesTooFar);
        assert_eq!(document(&chunk).unwrap_err(), Inadmissible::InflatesTooFar);
        assert_eq!(
            sync_chunk(&chunk).unwrap_err(),
            Inadmissible::InflatesTooFar
        );
    }
}
