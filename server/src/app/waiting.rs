//! What a device says it has waiting for upload when it connects (issue 15): the optional
//! [`WAITING_HEADER`] of the sync WebSocket's upgrade, kept per device in the directory and shown
//! on the coordinator's dashboard. Optional both ways: a device of an older build does not send
//! it (the dashboard says "not reported"), a server of an older build ignores it.

use axum::http::HeaderMap;

/// The header: how many local changes the device has waiting for upload, in decimal digits.
pub const WAITING_HEADER: &str = "x-nara-waiting";

/// Longest value taken (`u64::MAX` has 20 digits; 19 always fit).
const MAX_DIGITS: usize = 19;

/// The count a device reports in [`WAITING_HEADER`], if it is one; anything else is ignored.
pub fn waiting_header(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(WAITING_HEADER)?.to_str().ok()?;
    if v.is_empty() || v.len() > MAX_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(value: &str) -> Option<u64> {
        let mut h = HeaderMap::new();
        h.insert(WAITING_HEADER, value.parse().unwrap());
        waiting_header(&h)
    }

    #[test]
    fn a_count_of_digits_is_taken_and_anything_else_ignored() {
        assert_eq!(waiting_header(&HeaderMap::new()), None, "an older device");
        assert_eq!(with("0"), Some(0));
        assert_eq!(with("12"), Some(12));
        assert_eq!(with("9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in ["", "-1", "+3", "3 ", "0x10", "1e3", "12345678901234567890"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
    }
}
