//! Result codes, the thread's last error message, and the guard that keeps
//! panics and bad pointers from crossing the boundary.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{self, AssertUnwindSafe};

use crate::error::Error;

/// What every fallible `zkm_` function returns. `ZKM_OK` is 0; every other
/// code comes with a message that [`zkm_last_error`] returns on the same
/// thread, and [`zkm_result_name`] names the code.
///
/// ```c
/// zkm_election *election = NULL;
/// zkm_result rc = zkm_join(config, &election);
/// if (rc != ZKM_OK)
///     fprintf(stderr, "%s: %s\n", zkm_result_name(rc), zkm_last_error());
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zkm_result {
    /// Success.
    ZKM_OK = 0,
    /// A pointer argument that must not be NULL was NULL.
    ZKM_ERR_NULL = 1,
    /// An argument is unusable as such: a string that is not UTF-8, a number
    /// out of range, an unknown log level.
    ZKM_ERR_INVALID_ARGUMENT = 2,
    /// A configuration value the library cannot use; the message names the
    /// field and the value (`Error::InvalidConfig`).
    ZKM_ERR_INVALID_CONFIG = 3,
    /// No server completed a session handshake within the connect timeout.
    ZKM_ERR_UNREACHABLE = 4,
    /// A server refused or failed an operation.
    ZKM_ERR_SERVER = 5,
    /// The server refused an operation for lack of permission.
    ZKM_ERR_ACCESS_DENIED = 6,
    /// The election was resigned: the handle no longer takes part.
    ZKM_ERR_RESIGNED = 7,
    /// The operating system refused to start one of the library's threads.
    ZKM_ERR_SPAWN = 8,
    /// The call is not allowed from inside a callback of the same election
    /// (freeing the election that is running the callback).
    ZKM_ERR_IN_CALLBACK = 9,
    /// No callback with this id is registered on this election.
    ZKM_ERR_UNKNOWN_CALLBACK = 10,
    /// The member is not master, so it has no fencing token.
    ZKM_ERR_NOT_MASTER = 11,
    /// Another logger was installed in this process before `zkm_set_logger`.
    ZKM_ERR_LOGGER_TAKEN = 12,
    /// The library panicked; the message says where. The handle may be left
    /// in any state but memory stays valid: free it.
    ZKM_ERR_PANIC = 13,
}

use zkm_result::*;

/// A failed call: its code and the message [`zkm_last_error`] will return.
pub(crate) struct Failure {
    pub(crate) code: zkm_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: zkm_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// The NULL-pointer failure for the argument named `what`.
    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(ZKM_ERR_NULL, format!("{what} is NULL"))
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let code = match &error {
            Error::InvalidConfig { .. } => ZKM_ERR_INVALID_CONFIG,
            Error::Unreachable { .. } => ZKM_ERR_UNREACHABLE,
            Error::Server { .. } => ZKM_ERR_SERVER,
            Error::AccessDenied { .. } => ZKM_ERR_ACCESS_DENIED,
            Error::Resigned => ZKM_ERR_RESIGNED,
            Error::Spawn { .. } => ZKM_ERR_SPAWN,
        };
        Failure::new(code, error.to_string())
    }
}

thread_local! {
    /// The message of the last call on this thread that failed.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Remembers `failure`'s message for [`zkm_last_error`] and returns its code.
fn record(failure: Failure) -> zkm_result {
    // An inner NUL cannot be returned as a C string: cut the message there.
    let bytes: Vec<u8> = failure.message.bytes().take_while(|&b| b != 0).collect();
    let message = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
    failure.code
}

/// Runs the body of an exported function: a panic becomes `ZKM_ERR_PANIC`
/// and a failure is recorded for [`zkm_last_error`].
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> zkm_result {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ZKM_OK,
        Ok(Err(failure)) => record(failure),
        Err(payload) => record(panic_failure(function, payload.as_ref())),
    }
}

/// Runs the body of an exported function that returns a plain value: a panic
/// returns `fallback`.
pub(crate) fn guard_value<T>(function: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            record(panic_failure(function, payload.as_ref()));
            fallback
        }
    }
}

fn panic_failure(function: &str, payload: &(dyn std::any::Any + Send)) -> Failure {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Failure::new(ZKM_ERR_PANIC, format!("{function} panicked: {what}"))
}

/// The string at `ptr`, named `what` in the errors: NULL gives
/// `ZKM_ERR_NULL`, bytes that are not UTF-8 `ZKM_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: not NULL, and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|e| {
        Failure::new(
            ZKM_ERR_INVALID_ARGUMENT,
            format!("{what} is not UTF-8: {e}"),
        )
    })
}

/// The message of the most recent call on this thread that returned an error
/// (a code other than `ZKM_OK`, or a panic caught in a function that returns
/// a plain value). The empty string before any error.
///
/// Never NULL. The string is owned by the library: do not free it. It stays
/// valid until the next `zkm_` call on the same thread that fails; copy it to
/// keep it longer. Each thread has its own: a callback's failures do not
/// overwrite the main thread's message.
///
/// ```c
/// if (zkm_config_set_group(config, "no-slash") != ZKM_OK)
///     fprintf(stderr, "group: %s\n", zkm_last_error());
/// ```
#[no_mangle]
pub extern "C" fn zkm_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// The name of a result code, such as `"ZKM_ERR_NULL"`, or
/// `"ZKM_ERR_UNKNOWN_CODE"` for a number that is not one.
///
/// Never NULL; a static string: do not free it, it stays valid for the life
/// of the process.
///
/// ```c
/// printf("%s\n", zkm_result_name(ZKM_ERR_NULL));   /* ZKM_ERR_NULL */
/// ```
#[no_mangle]
pub extern "C" fn zkm_result_name(code: c_int) -> *const c_char {
    let name: &'static CStr = match code {
        0 => c"ZKM_OK",
        1 => c"ZKM_ERR_NULL",
        2 => c"ZKM_ERR_INVALID_ARGUMENT",
        3 => c"ZKM_ERR_INVALID_CONFIG",
        4 => c"ZKM_ERR_UNREACHABLE",
        5 => c"ZKM_ERR_SERVER",
        6 => c"ZKM_ERR_ACCESS_DENIED",
        7 => c"ZKM_ERR_RESIGNED",
        8 => c"ZKM_ERR_SPAWN",
        9 => c"ZKM_ERR_IN_CALLBACK",
        10 => c"ZKM_ERR_UNKNOWN_CALLBACK",
        11 => c"ZKM_ERR_NOT_MASTER",
        12 => c"ZKM_ERR_LOGGER_TAKEN",
        13 => c"ZKM_ERR_PANIC",
        _ => c"ZKM_ERR_UNKNOWN_CODE",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: zkm_last_error never returns NULL, and the string lives until the next failure.
        unsafe { CStr::from_ptr(zkm_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let rc = guard("zkm_test", || panic!("boom"));
        assert_eq!(rc, ZKM_ERR_PANIC);
        assert_eq!(last(), "zkm_test panicked: boom");
        assert!(!guard_value("zkm_test", false, || panic!("again")));
        assert_eq!(last(), "zkm_test panicked: again");
    }

    #[test]
    fn failures_keep_their_message_until_the_next_failure() {
        let rc = guard("zkm_test", || Err(Failure::null("config")));
        assert_eq!(rc, ZKM_ERR_NULL);
        assert_eq!(guard("zkm_test", || Ok(())), ZKM_OK);
        assert_eq!(last(), "config is NULL");
        guard("zkm_test", || Err(Failure::new(ZKM_ERR_SERVER, "a\0b")));
        assert_eq!(last(), "a", "cut at an inner NUL");
    }

    #[test]
    fn every_code_has_its_name() {
        for (code, name) in [(ZKM_OK, "ZKM_OK"), (ZKM_ERR_PANIC, "ZKM_ERR_PANIC")] {
            // SAFETY: static strings.
            let got = unsafe { CStr::from_ptr(zkm_result_name(code as c_int)) };
            assert_eq!(got.to_str(), Ok(name));
        }
        // SAFETY: static string.
        let unknown = unsafe { CStr::from_ptr(zkm_result_name(99)) };
        assert_eq!(unknown.to_str(), Ok("ZKM_ERR_UNKNOWN_CODE"));
    }
}
