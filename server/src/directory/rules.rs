//! The directory's rules, free of SQL and shared by every backend: what an id or a name may
//! be, how enrollment codes are made, read back and hashed, how device credentials are made
//! and hashed, and how stored rows are read back into the directory's types.

use sha2::{Digest, Sha256};
use sync_core::{DeviceId, PatientId, Role, UserId};

use super::{CODE_LEN, DirectoryError, MAX_NAME_LEN};

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or typed is unambiguous.
pub(super) const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A display name (of an organisation, user, patient or relative): not blank, at most
/// [`MAX_NAME_LEN`] characters, no control characters.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), DirectoryError> {
    if name.trim().is_empty() {
        return Err(DirectoryError::Invalid(format!("{what} name is empty")));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(DirectoryError::Invalid(format!(
            "{what} name is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DirectoryError::Invalid(format!(
            "{what} name contains control characters"
        )));
    }
    Ok(())
}

/// Organisation ids follow the rules of the other ids.
pub(super) fn check_org_id(id: &str) -> Result<(), DirectoryError> {
    let ok = !id.is_empty()
        && id.len() <= sync_core::ids::MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!(
            "invalid org id {:?}: 1 to {} characters of A-Z a-z 0-9 - _ .",
            id.chars().take(80).collect::<String>(),
            sync_core::ids::MAX_ID_LEN
        )))
    }
}

/// What is stored of an enrollment code (in its canonical form): its SHA-256 hash under a
/// prefix of its own.
pub(super) fn hash_code(code: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"nara-enrollment-code\0")
        .chain_update(code.as_bytes())
        .finalize()
        .into()
}

/// What is stored of a device secret: its SHA-256 hash under a prefix of its own.
pub(super) fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"nara-device-secret\0")
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

/// A new enrollment code: [`CODE_LEN`] characters of Crockford base32 (60 random bits).
pub(super) fn new_code() -> String {
    let bytes: [u8; CODE_LEN] = rand::random();
    // 256 is a multiple of 32, so the low five bits of a uniform byte are uniform.
    bytes
        .iter()
        .map(|b| char::from(CROCKFORD[usize::from(b & 31)]))
        .collect()
}

/// The canonical form of a typed code, or `None` if it cannot be one: case, spaces and dashes
/// do not matter, O reads as 0 and I or L as 1.
pub(super) fn normalize_code(code: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in code.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !CROCKFORD.contains(&(c as u8)) || out.len() >= CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

/// A new device's id ("dev-" and 16 random hex digits) and secret (32 random bytes, hex).
pub(super) fn new_device() -> Result<(DeviceId, String), DirectoryError> {
    let device_bytes: [u8; 8] = rand::random();
    let device = DeviceId::new(format!("dev-{}", hex::encode(device_bytes)))
        .map_err(|e| DirectoryError::Invalid(e.to_string()))?;
    Ok((device, hex::encode(rand::random::<[u8; 32]>())))
}

/// A relative's name as kept: trimmed, then held to the rules of names.
pub(super) fn relative_name(relative: &str) -> Result<&str, DirectoryError> {
    let relative = relative.trim();
    check_name("relative", relative)?;
    Ok(relative)
}

/// "0-1,0-2" as pairs; anything unreadable is skipped.
pub(super) fn parse_copies(s: &str) -> Vec<(u32, u32)> {
    s.split(',')
        .filter_map(|p| {
            let (a, b) = p.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// Pairs as "0-1,0-2".
pub(super) fn format_copies(pairs: &[(u32, u32)]) -> String {
    let text: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    text.join(",")
}

pub(super) fn parse_role(s: &str) -> Result<Role, DirectoryError> {
    s.parse()
        .map_err(|e| DirectoryError::BadRow(format!("role: {e}")))
}

pub(super) fn parse_user(s: String) -> Result<UserId, DirectoryError> {
    UserId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

pub(super) fn parse_patient(s: String) -> Result<PatientId, DirectoryError> {
    PatientId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

pub(super) fn parse_device(s: String) -> Result<DeviceId, DirectoryError> {
    DeviceId::new(s).map_err(|e| DirectoryError::BadRow(e.to_string()))
}

/// A stored integer that must not be negative.
pub(super) fn stored_u64(v: i64, what: &str) -> Result<u64, DirectoryError> {
    crate::db::to_u64(v, what).map_err(DirectoryError::BadRow)
}

/// A number to store (as a signed 64-bit integer, which both backends keep).
pub(super) fn to_stored(v: u64, what: &str) -> Result<i64, DirectoryError> {
    crate::db::to_i64(v, what).map_err(DirectoryError::Invalid)
}

/// A stored 32-byte value (a key or a seed).
pub(super) fn bytes32(v: Vec<u8>, what: &str) -> Result<[u8; 32], DirectoryError> {
    v.try_into()
        .map_err(|_| DirectoryError::BadRow(format!("{what}: not 32 bytes")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn typed_codes_are_read_back_to_their_canonical_form() {
        assert_eq!(
            normalize_code("abcd-efgh ijkl").as_deref(),
            Some("ABCDEFGH1JK1")
        );
        assert_eq!(
            normalize_code("o0o0o0o0o0o0").as_deref(),
            Some("000000000000")
        );
        for bad in ["", "ABC", "0000000000000", "UUUUUUUUUUUU", "ÅÅÅÅÅÅÅÅÅÅÅÅ"] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
        let code = new_code();
        assert_eq!(normalize_code(&code).unwrap(), code);
        assert_ne!(hash_code(&code), hash_secret(&code), "distinct domains");
    }

    #[test]
    fn copies_round_trip_and_unreadable_pairs_are_skipped() {
        assert_eq!(
            parse_copies(&format_copies(&[(0, 1), (1, 2)])),
            [(0, 1), (1, 2)]
        );
        assert_eq!(parse_copies(""), []);
        assert_eq!(parse_copies("x-1,2-3,4"), [(2, 3)]);
    }
}
