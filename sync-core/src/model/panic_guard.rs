//! The one place Automerge runs under a panic guard. Automerge 0.12 asserts (panics) on some
//! malformed changes and documents instead of returning an error, and some of its panics are
//! raised inside the standard library it calls (a sort told that its order is not total, an
//! index out of range): `sync-core` catches them all here, around each call on foreign bytes.
//!
//! With the `fuzzing` feature the guard also counts, per thread, how deep inside it the
//! current code runs, so that the fuzz targets' panic hook (`fuzzing::install_panic_hook`) can
//! let exactly these panics unwind to the guard, wherever in the call they were raised, and
//! abort on every other one.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, catching a panic.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    #[cfg(feature = "fuzzing")]
    let _inside = Inside::enter();
    catch_unwind(AssertUnwindSafe(f))
}

#[cfg(feature = "fuzzing")]
thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread runs inside [`catch`] now.
#[cfg(feature = "fuzzing")]
pub(crate) fn inside() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

#[cfg(feature = "fuzzing")]
struct Inside;

#[cfg(feature = "fuzzing")]
impl Inside {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Inside
    }
}

#[cfg(feature = "fuzzing")]
impl Drop for Inside {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

#[cfg(all(test, feature = "fuzzing"))]
mod tests {
    use super::*;

    /// The depth the fuzz targets' hook reads: inside the guard (nested too) and only there,
    /// also after a panic unwound out of it.
    #[test]
    fn the_guard_says_when_it_runs() {
        assert!(!inside());
        let nested = catch(|| {
            assert!(inside());
            catch(inside).unwrap_or(false) && inside()
        });
        assert_eq!(nested.ok(), Some(true));
        assert!(!inside());
        let caught = catch(|| -> () { panic!("an assert of Automerge's (expected here)") });
        assert!(caught.is_err());
        assert!(!inside(), "the depth went back after the panic");
    }
}
