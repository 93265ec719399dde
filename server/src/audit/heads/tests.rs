//! Tests of the audit key and the heads file's own rules (the chain against signed heads is
//! in the conformance suite, `audit/conformance.rs`, run on SQLite and PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn head() -> AuditHead {
    AuditHead {
        seq: 7,
        hash: "ab".repeat(32),
    }
}

#[test]
fn the_key_is_made_once_owner_only_and_read_back_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    let (key, made) = AuditKey::load_or_create(&path).unwrap();
    assert!(made);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (again, made) = AuditKey::load_or_create(&path).unwrap();
    assert!(!made);
    assert_eq!(key.public_hex(), again.public_hex());
    // Nothing but the key file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let signed = key.sign(&head(), 5);
    signed.check(&[again.public()]).unwrap();
    assert_eq!(parse_public_key(&key.public_hex()).unwrap(), again.public());
}

#[test]
fn a_key_file_that_holds_no_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    std::fs::write(&path, "not a key\n").unwrap();
    assert!(matches!(
        AuditKey::load_or_create(&path),
        Err(HeadError::BadKeyFile { .. })
    ));
    assert!(matches!(
        parse_public_key("12"),
        Err(HeadError::BadPublicKey(_))
    ));
}

#[test]
fn every_signed_field_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = AuditKey::load_or_create(&dir.path().join(KEY_FILE)).unwrap();
    let trusted = [key.public()];
    let signed = key.sign(&head(), 5);
    signed.check(&trusted).unwrap();
    let changed = [
        SignedHead {
            seq: 8,
            ..signed.clone()
        },
        SignedHead {
            hash: "cd".repeat(32),
            ..signed.clone()
        },
        SignedHead {
            at_ms: 6,
            ..signed.clone()
        },
    ];
    for c in changed {
        let why = c.check(&trusted).unwrap_err();
        assert!(why.contains("does not verify"), "{why}");
    }
}

#[test]
fn heads_files_are_read_with_bounded_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = AuditKey::load_or_create(&dir.path().join(KEY_FILE)).unwrap();
    let file = dir.path().join(HEADS_FILE);
    append(&file, &key.sign(&head(), 1)).unwrap();
    let mut text = std::fs::read(&file).unwrap();
    text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
    text.push(b'\n');
    text.push(b'\n');
    std::fs::write(&file, &text).unwrap();
    append(&file, &key.sign(&head(), 2)).unwrap();
    let c = Checkpoints::load(std::slice::from_ref(&file), &[key.public()]).unwrap();
    assert_eq!(c.verified(), 2);
    let problems = c.finish(u64::MAX - 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("line 2: longer than"), "{problems:?}");
    assert!(c.check_record(7, &"ab".repeat(32)).is_empty());
    assert_eq!(c.check_record(7, &"00".repeat(32)).len(), 1);
}

#[test]
fn a_line_torn_by_a_crash_is_skipped_and_the_next_append_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = AuditKey::load_or_create(&dir.path().join(KEY_FILE)).unwrap();
    let file = dir.path().join(HEADS_FILE);
    append(&file, &key.sign(&head(), 1)).unwrap();
    // A crash cut the second write short.
    let whole = serde_json::to_string(&key.sign(&head(), 2)).unwrap();
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&whole[..whole.len() / 2]);
    std::fs::write(&file, &text).unwrap();
    append(&file, &key.sign(&head(), 3)).unwrap();
    let c = Checkpoints::load(std::slice::from_ref(&file), &[key.public()]).unwrap();
    assert_eq!((c.verified(), c.torn()), (2, 1));
    assert!(c.finish(7).is_empty(), "{:?}", c.finish(7));
}
