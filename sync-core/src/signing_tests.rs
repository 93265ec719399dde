//! Signatures over heads: what they verify, what they cover, and what a restored server may
//! take from a relay with them.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::RecordId;
use crate::ids::{Author, Role, Timestamp, UserId};
use crate::model::EventBody;

fn author(user: &str) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        Role::Carer,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

fn doc_id() -> DocumentId {
    "p-1/journal/2026-11".parse().unwrap()
}

fn note(doc: &mut CareDocument, who: &Author, id: &str) -> Change {
    doc.change(who, Timestamp(1_795_478_400_000), |e| {
        e.record(
            RecordId::new(id).unwrap(),
            EventBody::Note {
                body: format!("note {id}"),
                corrects: None,
            },
        )
    })
    .unwrap()
    .change
    .unwrap()
}

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_seed([n; 32])
}

#[test]
fn a_signature_verifies_only_as_signed() {
    let k = key(1);
    let dev = DeviceId::new("anna-phone").unwrap();
    let h = [ChangeHash([3; 32]), ChangeHash([1; 32])];
    let sig = k.sign_heads(&dev, &doc_id(), &h);
    assert_eq!(sig.heads, vec![[1; 32], [3; 32]], "heads are sorted");
    assert_eq!(sig.signature.len(), 64);
    verify(&sig, &k.public()).unwrap();
    // Another key, another document, other heads, a flipped bit, a cut signature: refused.
    assert_eq!(verify(&sig, &key(2).public()), Err(SignatureError::Invalid));
    let mut other = sig.clone();
    other.doc = "p-2/journal/2026-11".parse().unwrap();
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = sig.clone();
    other.heads[0][0] ^= 1;
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = sig.clone();
    other.signature[10] ^= 1;
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::Invalid));
    let mut other = sig.clone();
    other.signature.pop();
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::BadLength));
    let mut other = sig.clone();
    other.heads.reverse();
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::BadHeads));
    let mut other = sig;
    other.heads.clear();
    assert_eq!(verify(&other, &k.public()), Err(SignatureError::BadHeads));
    // Keys round-trip through their text form; junk is refused.
    let public = k.public();
    assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);
    assert!(PublicKey::from_hex("abcd").is_err());
    assert_eq!(DeviceKey::from_seed(k.seed()).public(), public);
    // The seed never shows in Debug.
    assert!(!format!("{k:?}").contains(&hex::encode(k.seed())));
}

#[test]
fn the_message_is_domain_separated_and_pinned() {
    let m = message(&doc_id(), &[[0xab; 32]]);
    assert!(m.starts_with(b"nara-heads\0\x03\x00\x00\x00\x13p-1/journal/2026-11"));
    assert_eq!(m.len(), 11 + 1 + 4 + 19 + 32);
}

#[test]
fn one_signature_over_the_heads_covers_their_history() {
    let anna = author("anna");
    let mut doc = CareDocument::new(doc_id()).unwrap();
    let c1 = note(&mut doc, &anna, "n-1");
    let c2 = note(&mut doc, &anna, "n-2");
    let c3 = note(&mut doc, &anna, "n-3");
    assert_eq!(
        upload_heads(&[c1.clone(), c2.clone(), c3.clone()]),
        vec![c3.hash()]
    );
    let targets: BTreeSet<ChangeHash> = [c1.hash(), c2.hash(), c3.hash()].into();
    assert_eq!(covered(&doc, &[], &[c3.hash().0], &targets), targets);
    // Heads at c2 do not cover c3.
    assert_eq!(
        covered(&doc, &[], &[c2.hash().0], &targets),
        [c1.hash(), c2.hash()].into()
    );
    // Changes not applied yet count, through `extra`.
    let mut base = CareDocument::new(doc_id()).unwrap();
    let extra = vec![c1.clone(), c2.clone()];
    assert_eq!(
        covered(&base, &extra, &[c2.hash().0], &targets),
        [c1.hash(), c2.hash()].into()
    );
    base.apply_changes(extra).unwrap();
    // An unknown head covers nothing.
    assert!(covered(&base, &[], &[[9; 32]], &targets).is_empty());
}

#[test]
fn vouched_takes_exactly_what_its_authors_signed() {
    let anna = author("anna");
    let bert = author("bert");
    let (ka, kb) = (key(1), key(2));
    let mut phone = CareDocument::new(doc_id()).unwrap();
    let a1 = note(&mut phone, &anna, "n-1");
    let a2 = note(&mut phone, &anna, "n-2");
    let b1 = note(&mut phone, &bert, "n-3");
    let a3 = note(&mut phone, &anna, "n-4");
    // Anna signed up to a2 (her upload), Bert up to b1; a3 is signed by no one.
    let sig_a = ka.sign_heads(&anna.device, &doc_id(), &[a2.hash()]);
    let sig_b = kb.sign_heads(&bert.device, &doc_id(), &[b1.hash()]);
    let keys = |d: &DeviceId| {
        if *d == anna.device {
            Some(ka.public())
        } else if *d == bert.device {
            Some(kb.public())
        } else {
            None
        }
    };
    let restored = CareDocument::new(doc_id()).unwrap();
    let incoming = vec![a1.clone(), a2.clone(), b1.clone(), a3.clone()];
    let v = vouched(&restored, &incoming, &[sig_a.clone(), sig_b.clone()], keys);
    assert_eq!(v.accepted, vec![a1.hash(), a2.hash(), b1.hash()]);
    assert_eq!(v.refused, vec![(a3.hash(), SignatureError::NotCovered)]);

    // Bert's signature vouches for Anna's a1 and a2 as his history, but only its author's
    // signature counts: without Anna's, her changes are refused.
    let v = vouched(&restored, &incoming, std::slice::from_ref(&sig_b), keys);
    assert_eq!(v.accepted, vec![b1.hash()]);

    // A signature claimed for Anna but made with Bert's key, or tampered, vouches for nothing.
    let mut forged = kb.sign_heads(&anna.device, &doc_id(), &[a2.hash()]);
    let v = vouched(&restored, &incoming, &[forged.clone(), sig_b.clone()], keys);
    assert_eq!(v.accepted, vec![b1.hash()]);
    assert_eq!(v.refused[0], (a1.hash(), SignatureError::Invalid));
    forged = sig_a.clone();
    forged.heads = vec![a3.hash().0];
    let v = vouched(&restored, &incoming, &[forged], keys);
    assert!(v.accepted.is_empty());

    // An unregistered key (a legacy device): its changes cannot be vouched for.
    let v = vouched(&restored, &incoming, std::slice::from_ref(&sig_a), |_| None);
    assert!(v.accepted.is_empty());
    assert_eq!(
        v.refused[0],
        (a1.hash(), SignatureError::NoKey(anna.device.clone()))
    );

    // A signature of another document is ignored.
    let mut elsewhere = ka.sign_heads(
        &anna.device,
        &"p-2/journal/2026-11".parse().unwrap(),
        &[a2.hash()],
    );
    elsewhere.doc = "p-2/journal/2026-11".parse().unwrap();
    let v = vouched(&restored, &incoming, &[elsewhere], keys);
    assert!(v.accepted.is_empty());
}

/// A root signature with its path (what a device keeps of a colleague's upload signed once)
/// vouches before a restored server exactly as a signature over the document's heads does; its
/// path moved onto other heads vouches for nothing.
#[test]
fn vouched_takes_what_a_root_signature_covers() {
    let anna = author("anna");
    let ka = key(1);
    let mut phone = CareDocument::new(doc_id()).unwrap();
    let a1 = note(&mut phone, &anna, "n-1");
    let a2 = note(&mut phone, &anna, "n-2");
    let other: DocumentId = "p-2/journal/2026-11".parse().unwrap();
    let mut sigs = ka.sign_upload(
        &anna.device,
        &[
            (other, vec![ChangeHash([9; 32])]),
            (doc_id(), vec![a1.hash()]),
        ],
    );
    expand_upload(&mut sigs, &anna.device);
    let kept = sigs.remove(1);
    assert_eq!(kept.signature[0], PATH_FORM);
    let keys = |d: &DeviceId| (*d == anna.device).then(|| ka.public());
    let restored = CareDocument::new(doc_id()).unwrap();
    let incoming = vec![a1.clone(), a2.clone()];
    let v = vouched(&restored, &incoming, std::slice::from_ref(&kept), keys);
    assert_eq!(v.accepted, vec![a1.hash()]);
    assert_eq!(v.refused, vec![(a2.hash(), SignatureError::NotCovered)]);
    let mut moved = kept.clone();
    moved.heads = vec![a2.hash().0];
    let v = vouched(&restored, &incoming, &[moved], keys);
    assert!(v.accepted.is_empty());
}
