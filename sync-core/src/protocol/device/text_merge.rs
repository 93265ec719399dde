//! A taken-back change's own edit of a text, made again in the text as it is once caught up
//! (docs/protocol.md, "Incarnations", "Not covered"): a three-way merge of the text's value
//! just before the change, just after it, and now.

/// `now` with the edit that turned `before` into `after` made in it too: a three-way merge of
/// the text, by Automerge's own text merge in a scratch document (both edits as concurrent
/// splices of `before`; insertions on both sides are kept, a deletion on either side stays
/// deleted). `None` if Automerge fails, which it does not for plain strings.
///
/// A single insertion or deletion (the usual edit of one change) is made as one splice at the
/// word boundary where it fits best ([`single_edit`]), not as Automerge's character diff of
/// the two values: an insertion of " [b]" before " [a]" diffs as "b] [a" inserted after
/// " [a", and where `now` no longer holds " [a" those characters land inside others' words
/// (the text of simulation seed 90). Other edits go in as Automerge's diff.
pub(super) fn merge_edit(before: &str, after: &str, now: &str) -> Option<String> {
    use automerge::transaction::Transactable;
    use automerge::{
        ActorId, AutoCommit, ObjType, ROOT, ReadDoc, TextEncoding, transaction::CommitOptions,
    };
    // Fixed actors and time: the merge is deterministic and reads no clock. Indexes count
    // characters, as `single_edit` does.
    let commit = |doc: &mut AutoCommit| {
        doc.commit_with(CommitOptions::default().with_time(0));
    };
    let mut base = AutoCommit::new_with_encoding(TextEncoding::UnicodeCodePoint)
        .with_actor(ActorId::from([1u8; 16]));
    let obj = base.put_object(ROOT, "t", ObjType::Text).ok()?;
    base.update_text(&obj, before).ok()?;
    commit(&mut base);
    let mut mine = base.fork().with_actor(ActorId::from([2u8; 16]));
    match single_edit(before, after) {
        Some(edit) => {
            let deleted = isize::try_from(edit.delete).ok()?;
            mine.splice_text(&obj, edit.at, deleted, &edit.insert)
                .ok()?;
        }
        None => mine.update_text(&obj, after).ok()?,
    }
    commit(&mut mine);
    let mut theirs = base.fork().with_actor(ActorId::from([3u8; 16]));
    theirs.update_text(&obj, now).ok()?;
    commit(&mut theirs);
    theirs.merge(&mut mine).ok()?;
    theirs.text(&obj).ok()
}

/// One splice of a text: at character `at`, `delete` characters out, `insert` in.
#[derive(Debug, PartialEq)]
struct Splice {
    at: usize,
    delete: usize,
    insert: String,
}

/// The edit from `before` to `after` as one splice, if it is a single insertion or a single
/// deletion (or nothing), slid to the position where its ends sit best on word boundaries
/// (the semantic shift of diff-match-patch: an insertion of "x" into "aa" may be made at any
/// of three places; the one scored best is taken, the rightmost of equals). `None` for any
/// other edit.
///
/// Written here rather than taken from a diff crate: `dissimilar` (the Rust port of
/// diff-match-patch) scores boundaries as diff-match-patch does, with ASCII letters only, so
/// "å", "ä" and "ö" count as punctuation and an insertion into Swedish text ("gå ut" to
/// "gå gärna ut") is slid to the wrong side of a space. This scoring uses Unicode's letters.
fn single_edit(before: &str, after: &str) -> Option<Splice> {
    let b: Vec<char> = before.chars().collect();
    let a: Vec<char> = after.chars().collect();
    let prefix = b.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let room = b.len().min(a.len()) - prefix;
    let suffix = b
        .iter()
        .rev()
        .zip(a.iter().rev())
        .take(room)
        .take_while(|(x, y)| x == y)
        .count();
    let removed = &b[prefix..b.len() - suffix];
    let added = &a[prefix..a.len() - suffix];
    let (edit, inserting) = match (removed.is_empty(), added.is_empty()) {
        (true, true) => {
            return Some(Splice {
                at: prefix,
                delete: 0,
                insert: String::new(),
            });
        }
        (true, false) => (added.to_vec(), true),
        (false, true) => (removed.to_vec(), false),
        (false, false) => return None,
    };
    // `b` (the text without the insertion, or with the deletion) is `left + edit + right`
    // for a deletion; for an insertion `left + right`. Slide the edit fully left, then try
    // every position rightwards.
    let text = if inserting { &a } else { &b };
    let n = edit.len();
    let mut start = prefix;
    while start > 0 && text[start - 1] == text[start + n - 1] {
        start -= 1;
    }
    let mut best = start;
    let mut best_score = boundary_score(&text[..start], &text[start..start + n])
        + boundary_score(&text[start..start + n], &text[start + n..]);
    let mut at = start;
    while at + n < text.len() && text[at] == text[at + n] {
        at += 1;
        let score = boundary_score(&text[..at], &text[at..at + n])
            + boundary_score(&text[at..at + n], &text[at + n..]);
        if score >= best_score {
            best = at;
            best_score = score;
        }
    }
    let edit: String = text[best..best + n].iter().collect();
    Some(if inserting {
        Splice {
            at: best,
            delete: 0,
            insert: edit,
        }
    } else {
        Splice {
            at: best,
            delete: n,
            insert: String::new(),
        }
    })
}

/// How well a cut between `one` and `two` sits on a boundary (diff-match-patch's semantic
/// score): 6 at an end of the text, 5 a blank line, 4 a line break, 3 the end of a sentence,
/// 2 whitespace, 1 other punctuation, 0 inside a word.
fn boundary_score(one: &[char], two: &[char]) -> u8 {
    let (Some(&c1), Some(&c2)) = (one.last(), two.first()) else {
        return 6;
    };
    let punct1 = !c1.is_alphanumeric();
    let punct2 = !c2.is_alphanumeric();
    let space1 = punct1 && c1.is_whitespace();
    let space2 = punct2 && c2.is_whitespace();
    let line1 = space1 && (c1 == '\n' || c1 == '\r');
    let line2 = space2 && (c2 == '\n' || c2 == '\r');
    let blank1 = line1 && one.ends_with(&['\n', '\n']);
    let blank2 =
        line2 && (two.starts_with(&['\n', '\n']) || two.starts_with(&['\r', '\n', '\r', '\n']));
    if blank1 || blank2 {
        5
    } else if line1 || line2 {
        4
    } else if punct1 && !space1 && space2 {
        3
    } else if space1 || space2 {
        2
    } else if punct1 || punct2 {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Splice, merge_edit, single_edit};

    #[test]
    fn a_text_edit_taken_back_is_merged_into_others_edits_made_meanwhile() {
        // Taken back: " [mine]" inserted at the end. Meanwhile another phone inserted at the
        // start and the end; a rewrite of the whole value would delete both.
        let merged =
            merge_edit("Walk daily.", "Walk daily. [mine]", "[a] Walk daily. [b]").unwrap();
        assert!(
            merged.contains("[mine]") && merged.contains("[a]") && merged.contains("[b]"),
            "{merged}"
        );
        assert!(merged.contains("Walk daily."), "{merged}");
        assert_eq!(merged.matches("[mine]").count(), 1, "{merged}");
        // A deletion taken back is made again, and what others wrote stays.
        let merged = merge_edit(
            "Walk daily, slowly.",
            "Walk daily.",
            "Walk daily, slowly. [b]",
        )
        .unwrap();
        assert_eq!(merged, "Walk daily. [b]");
        // Nothing changed meanwhile: the edit as it was.
        assert_eq!(merge_edit("x", "x y", "x").unwrap(), "x y");
    }

    /// Simulation seed 90 (copies, a server put back): a copy's insertion of " [d3-14]"
    /// before " [d3-1]" was taken back, and by the time it was made again the text held none
    /// of the copy's earlier tokens. Merged as Automerge's character diff ("4] [d3-1"
    /// inserted after " [d3-1") it landed inside another phone's token: " [d04] [d3-1-6]".
    #[test]
    fn a_text_edit_taken_back_is_made_again_whole_where_its_neighbours_are_gone() {
        let before = " [d3-1] [d3-6] [d3-11] [d3-10] [d3-5]Walk daily. [d3-4]";
        let after = " [d3-14] [d3-1] [d3-6] [d3-11] [d3-10] [d3-5]Walk daily. [d3-4]";
        let now = " [d0-6] [d0-7]Walk daily.";
        let merged = merge_edit(before, after, now).unwrap();
        assert!(merged.contains(" [d3-14]"), "{merged}");
        assert!(
            merged.contains(" [d0-6]") && merged.contains(" [d0-7]"),
            "{merged}"
        );
        assert_eq!(merged.len(), now.len() + " [d3-14]".len(), "{merged}");
        // The same with another phone's tokens on the other side (seed 90's second person).
        let merged = merge_edit(
            " [d3-7]Walk daily. [d3-8]",
            " [d3-15] [d3-7]Walk daily. [d3-8]",
            " [d0-8]Walk daily. [d0-3] [d0-5] [d0-4]",
        )
        .unwrap();
        for token in [" [d3-15]", " [d0-8]", " [d0-3]", " [d0-5]", " [d0-4]"] {
            assert!(merged.contains(token), "{token} in {merged}");
        }
    }

    #[test]
    fn a_single_insertion_or_deletion_sits_on_word_boundaries() {
        let insert = |at, s: &str| Splice {
            at,
            delete: 0,
            insert: s.into(),
        };
        assert_eq!(
            single_edit(" [a] [b]", " [c] [a] [b]"),
            Some(insert(0, " [c]"))
        );
        // Between words: of the equal places, the rightmost.
        assert_eq!(
            single_edit("walk daily", "walk far daily"),
            Some(insert(5, "far "))
        );
        assert_eq!(
            single_edit("walk far daily", "walk daily"),
            Some(Splice {
                at: 5,
                delete: 4,
                insert: String::new()
            })
        );
        assert_eq!(single_edit("abc", "xbz"), None);
        assert_eq!(single_edit("same", "same"), Some(insert(4, "")));
        // Characters beyond one byte count as one each.
        assert_eq!(
            single_edit("gå ut", "gå gärna ut"),
            Some(insert(3, "gärna "))
        );
        assert_eq!(single_edit("ab", "ab, c"), Some(insert(2, ", c")));
    }
}
