//! Staff names in the views: every [`FfiAuthor`](super::FfiAuthor) (and a delegation's `to`, a
//! phone's user) carries the directory's name of its member of staff beside the id, from what
//! the server last said (`refresh_round`, kept in the store). The names a view is converted
//! with are set for the conversion's duration on the calling thread ([`named`]): FFI calls are
//! synchronous, so a conversion runs on the thread that set them.

use std::cell::RefCell;

use nara_client::{Device, StaffMember, StaffNames};

use sync_core::UserId;

thread_local! {
    static STAFF: RefCell<Option<StaffNames>> = const { RefCell::new(None) };
}

/// Puts the previous names back when the conversion ends, even by a panic.
struct Restore(Option<StaffNames>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        STAFF.with(|s| *s.borrow_mut() = previous);
    }
}

/// Runs `f` (a view's conversion) with the staff names `device` holds.
pub(crate) fn named<T>(device: &Device, f: impl FnOnce() -> T) -> T {
    // Names the store cannot give are left out: the view shows the ids, as before any answer.
    with_names(device.staff().unwrap_or_default(), f)
}

/// Runs `f` with `staff` as the names of this thread's conversions.
pub(crate) fn with_names<T>(staff: StaffNames, f: impl FnOnce() -> T) -> T {
    let _restore = Restore(STAFF.with(|s| s.borrow_mut().replace(staff)));
    f()
}

/// The directory's name of `user`, if the conversion running on this thread knows one.
pub(crate) fn name_of(user: &UserId) -> Option<String> {
    STAFF.with(|s| {
        s.borrow()
            .as_ref()
            .and_then(|staff| staff.name(user).map(str::to_owned))
    })
}

/// A member of staff as the server's directory names them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiStaffMember {
    pub user: String,
    pub name: String,
    pub role: String,
    pub organisation: String,
}

impl From<StaffMember> for FfiStaffMember {
    fn from(m: StaffMember) -> Self {
        Self {
            user: m.user.into(),
            name: m.name,
            role: m.role,
            organisation: m.organisation,
        }
    }
}
