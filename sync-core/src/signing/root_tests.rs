//! Root signatures: one per upload, checked once, and binding each document to exactly what
//! was signed.
#![allow(clippy::unwrap_used)]

use super::super::{DeviceKey, MAX_SIGNATURES, verify};
use super::*;

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_seed([n; 32])
}

fn device() -> DeviceId {
    DeviceId::new("anna-phone").unwrap()
}

fn docs(n: usize) -> Vec<(DocumentId, Vec<ChangeHash>)> {
    (0..n)
        .map(|i| {
            let doc: DocumentId = format!("p-{i}/journal/2026-11").parse().unwrap();
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (doc, vec![ChangeHash(h), ChangeHash([0xee; 32])])
        })
        .collect()
}

/// What the server keeps of an upload of `n` documents.
fn expanded(k: &DeviceKey, n: usize) -> Vec<HeadsSignature> {
    let mut sigs = k.sign_upload(&device(), &docs(n));
    expand_upload(&mut sigs, &device());
    sigs
}

#[test]
fn every_document_of_an_upload_verifies_with_its_path_whatever_the_trees_shape() {
    let k = key(1);
    for n in [1, 2, 3, 5, 8, 13, 64] {
        let sigs = expanded(&k, n);
        assert_eq!(sigs.len(), n);
        let depth = usize::BITS - (n - 1).leading_zeros();
        for s in &sigs {
            assert_eq!(s.signature[0], PATH_FORM);
            assert!(
                (s.signature.len() - 65) / 33 <= depth as usize,
                "{n} leaves"
            );
            verify(s, &k.public()).unwrap();
        }
    }
}

#[test]
fn an_upload_is_checked_once_for_all_of_its_documents() {
    let k = key(1);
    let mut v = Verifier::new();
    for s in expanded(&k, 27) {
        v.verify(&s, &k.public()).unwrap();
    }
    assert_eq!(v.checks, 1);
    // Another upload is another check; a per-document signature is checked each time.
    for s in expanded(&k, 3) {
        v.verify(&s, &k.public()).unwrap();
    }
    let single = k.sign_heads(&device(), &docs(1)[0].0, &docs(1)[0].1);
    v.verify(&single, &k.public()).unwrap();
    v.verify(&single, &k.public()).unwrap();
    assert_eq!(v.checks, 4);
}

#[test]
fn a_path_vouches_only_for_what_was_signed() {
    let k = key(1);
    let sigs = expanded(&k, 5);
    let good = &sigs[2];
    let mut v = Verifier::new();
    v.verify(good, &k.public()).unwrap();
    // Remembering the root must not let anything else through.
    let mut other = good.clone();
    other.heads[0][0] ^= 1;
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = good.clone();
    other.doc = "p-9/journal/2026-11".parse().unwrap();
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    // Another document's path, a flipped side, a flipped sibling bit, a dropped step.
    let mut other = good.clone();
    other.signature = sigs[3].signature.clone();
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = good.clone();
    other.signature[65] ^= 1;
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = good.clone();
    other.signature[70] ^= 1;
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = good.clone();
    other.signature.truncate(other.signature.len() - 33);
    assert_eq!(v.verify(&other, &k.public()), Err(SignatureError::Invalid));
    // Another key.
    assert_eq!(
        v.verify(good, &key(2).public()),
        Err(SignatureError::Invalid)
    );
    v.verify(good, &k.public()).unwrap();
    assert_eq!(v.checks, 8, "each refusal was checked, the good one once");
}

#[test]
fn malformed_signatures_are_refused_before_any_check() {
    let k = key(1);
    let good = expanded(&k, 4).remove(1);
    let mut v = Verifier::new();
    for bytes in [
        vec![],
        vec![PATH_FORM; 64 + 1 + 32],
        {
            let mut b = good.signature.clone();
            b[65] = 2; // a side byte other than 0 or 1
            b
        },
        {
            let mut b = good.signature[..65].to_vec();
            b.extend(std::iter::repeat_n(0, 33 * (MAX_PATH + 1)));
            b
        },
        vec![0x03; 65],
    ] {
        let mut s = good.clone();
        s.signature = bytes;
        assert_eq!(v.verify(&s, &k.public()), Err(SignatureError::BadLength));
    }
    // An upload's form is not a kept signature: it has no path.
    let raw = k.sign_upload(&device(), &docs(2)).remove(0);
    assert_eq!(verify(&raw, &k.public()), Err(SignatureError::NoPath));
    assert_eq!(v.checks, 0);
}

#[test]
fn an_upload_whose_documents_carry_different_signatures_is_not_rebuilt() {
    let k = key(1);
    let mut sigs = k.sign_upload(&device(), &docs(3));
    let other = k.sign_upload(&device(), &docs(4));
    sigs[1].signature = other[1].signature.clone();
    expand_upload(&mut sigs, &device());
    for s in &sigs {
        assert_eq!(verify(s, &k.public()), Err(SignatureError::NoPath));
    }
    // Another device's signatures in the upload (a recovery's vouchers) are left alone, and
    // the device's own are rebuilt without them.
    let mut sigs = k.sign_upload(&device(), &docs(3));
    let voucher = key(2).sign_heads(
        &DeviceId::new("bo-phone").unwrap(),
        &docs(1)[0].0,
        &docs(1)[0].1,
    );
    sigs.insert(1, voucher.clone());
    expand_upload(&mut sigs, &device());
    assert_eq!(sigs[1], voucher);
    for s in sigs.iter().filter(|s| s.device == device()) {
        verify(s, &k.public()).unwrap();
    }
}

#[test]
fn the_largest_upload_fits_the_path_bound() {
    let k = key(1);
    let sigs = expanded(&k, MAX_SIGNATURES);
    let longest = sigs
        .iter()
        .map(|s| (s.signature.len() - 65) / 33)
        .max()
        .unwrap();
    assert!(longest <= MAX_PATH);
    verify(&sigs[MAX_SIGNATURES - 1], &k.public()).unwrap();
}

/// The signed root message is pinned: a change here breaks every kept signature.
#[test]
fn the_root_message_is_domain_separated_and_pinned() {
    let m = root_message(&[7; 32]);
    assert!(m.starts_with(b"nara-root\0\x04"));
    assert_eq!(m.len(), 10 + 1 + 32);
    assert_ne!(
        leaf(&docs(1)[0].0, &[[1; 32]]),
        fold(leaf(&docs(1)[0].0, &[[1; 32]]), &[(false, [0; 32])])
    );
}
