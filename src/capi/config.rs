//! `zkm_config`: a [`Config`] behind an opaque pointer, with one setter per
//! field. Each setter checks its own value at once; checks that involve two
//! fields (the lease margin against the session timeout) happen in
//! [`zkm_config_validate`] and `zkm_join`.

use std::ffi::c_char;
use std::time::Duration;

use super::errors::{guard, text, zkm_result, Failure};
use crate::config::Config;
use crate::error::Error;

/// How to join an election: an opaque handle made by [`zkm_config_new`] and
/// freed by [`zkm_config_free`]. Defaults as in Rust's `Config`: group
/// `/Roles/workers`, prefix `worker`, one master, a 10 s session and connect
/// timeout, data `"1"`, no credentials.
///
/// Not thread-safe: set it from one thread at a time. `zkm_join` copies it,
/// so it may be changed or freed right after.
///
/// ```c
/// zkm_config *config = NULL;
/// if (zkm_config_new("127.0.0.1:2181", &config) == ZKM_OK) {
///     zkm_config_set_masters(config, 2);
///     zkm_config_free(config);
/// }
/// ```
pub struct zkm_config {
    pub(crate) config: Config,
}

/// The configuration behind `config`, or `ZKM_ERR_NULL`.
///
/// # Safety
/// `config` is NULL or a live pointer from [`zkm_config_new`] not used by
/// another thread meanwhile.
pub(crate) unsafe fn config_mut<'a>(
    config: *mut zkm_config,
) -> Result<&'a mut zkm_config, Failure> {
    // SAFETY: by the caller's contract.
    unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))
}

/// Applies `set` to the configuration if a default configuration with only
/// this value set is valid for `field`. That default has the longest session
/// timeout, so that a lease margin is checked against the timeout only once
/// both are set.
///
/// # Safety
/// As [`config_mut`].
unsafe fn set(
    config: *mut zkm_config,
    field: &'static str,
    set: impl Fn(Config) -> Config,
) -> Result<(), Failure> {
    // SAFETY: by the caller's contract.
    let handle = unsafe { config_mut(config) }?;
    let longest = Duration::from_millis(i32::MAX as u64);
    match set(Config::new("127.0.0.1:2181").session_timeout(longest)).validate() {
        Err(e @ Error::InvalidConfig { field: f, .. }) if f == field => Err(e.into()),
        _ => {
            let old = std::mem::replace(&mut handle.config, Config::new(""));
            handle.config = set(old);
            Ok(())
        }
    }
}

/// Makes a configuration for the ensemble `connect`: one or more `host:port`
/// separated by commas, optionally followed by a chroot such as `/app`.
///
/// `connect` is read during the call only (the library keeps a copy). On
/// success `*out` is a new configuration that the caller owns and frees with
/// [`zkm_config_free`]; on failure `*out` is left unchanged.
///
/// # Errors
/// `ZKM_ERR_NULL` when `connect` or `out` is NULL, `ZKM_ERR_INVALID_ARGUMENT`
/// when `connect` is not UTF-8, `ZKM_ERR_INVALID_CONFIG` when it is not a
/// usable connect string (the message says why).
///
/// ```c
/// zkm_config *config = NULL;
/// zkm_result rc = zkm_config_new("10.0.0.1:2181,10.0.0.2:2181/app", &config);
/// ```
///
/// # Safety
/// `connect` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_new(
    connect: *const c_char,
    out: *mut *mut zkm_config,
) -> zkm_result {
    guard("zkm_config_new", || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: by the caller's contract.
        let connect = unsafe { text(connect, "connect") }?;
        let config = Config::new(connect);
        config.ensemble()?;
        let handle = Box::into_raw(Box::new(zkm_config { config }));
        // SAFETY: not NULL, writable by the caller's contract.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees a configuration made by [`zkm_config_new`]. NULL does nothing.
/// Elections joined with it are not affected (they hold a copy).
///
/// ```c
/// zkm_config_free(config);
/// config = NULL;
/// ```
///
/// # Safety
/// `config` is NULL or a pointer from [`zkm_config_new`] not freed before.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_free(config: *mut zkm_config) {
    if !config.is_null() {
        // SAFETY: made by Box::into_raw in zkm_config_new, freed once.
        drop(unsafe { Box::from_raw(config) });
    }
}

/// Sets the group path whose children are the members; parents are created
/// when missing. Default `/Roles/workers`. `path` is copied.
///
/// # Errors
/// `ZKM_ERR_NULL`, `ZKM_ERR_INVALID_ARGUMENT` (not UTF-8), or
/// `ZKM_ERR_INVALID_CONFIG` for a path ZooKeeper or the library cannot use
/// (relative, trailing or doubled slashes, `/zookeeper`...); the
/// configuration is then unchanged.
///
/// ```c
/// zkm_config_set_group(config, "/services/billing");
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration; `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_group(
    config: *mut zkm_config,
    path: *const c_char,
) -> zkm_result {
    guard("zkm_config_set_group", || {
        // SAFETY: by the caller's contract.
        let path = unsafe { text(path, "path") }?;
        // SAFETY: by the caller's contract.
        unsafe { set(config, "group", |c| c.group(path)) }
    })
}

/// Sets the name prefix of this member's node; ZooKeeper appends the
/// sequence number. Default `worker`. `prefix` is copied.
///
/// # Errors
/// `ZKM_ERR_NULL`, `ZKM_ERR_INVALID_ARGUMENT`, or `ZKM_ERR_INVALID_CONFIG`
/// for an empty prefix or one with `/` or a control character.
///
/// ```c
/// zkm_config_set_prefix(config, "node-");
/// ```
///
/// # Safety
/// As [`zkm_config_set_group`].
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_prefix(
    config: *mut zkm_config,
    prefix: *const c_char,
) -> zkm_result {
    guard("zkm_config_set_prefix", || {
        // SAFETY: by the caller's contract.
        let prefix = unsafe { text(prefix, "prefix") }?;
        // SAFETY: by the caller's contract.
        unsafe { set(config, "prefix", |c| c.prefix(prefix)) }
    })
}

/// Sets how many members are masters at once. Default 1.
///
/// # Errors
/// `ZKM_ERR_NULL`, or `ZKM_ERR_INVALID_CONFIG` for 0.
///
/// ```c
/// zkm_config_set_masters(config, 2);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_masters(
    config: *mut zkm_config,
    masters: usize,
) -> zkm_result {
    guard("zkm_config_set_masters", || {
        // SAFETY: by the caller's contract.
        unsafe { set(config, "masters", |c| c.masters(masters)) }
    })
}

/// Sets the session timeout asked of the server, in milliseconds; the server
/// may grant less or more. Default 10000.
///
/// # Errors
/// `ZKM_ERR_NULL`, or `ZKM_ERR_INVALID_CONFIG` for 0 or more than 2^31 - 1.
///
/// ```c
/// zkm_config_set_session_timeout_ms(config, 4000);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_session_timeout_ms(
    config: *mut zkm_config,
    ms: u64,
) -> zkm_result {
    guard("zkm_config_set_session_timeout_ms", || {
        let timeout = Duration::from_millis(ms);
        // SAFETY: by the caller's contract.
        unsafe { set(config, "session_timeout", |c| c.session_timeout(timeout)) }
    })
}

/// Sets how long `zkm_join` tries before it gives up with
/// `ZKM_ERR_UNREACHABLE`, in milliseconds. Default 10000; `UINT64_MAX`
/// means "keep trying".
///
/// # Errors
/// `ZKM_ERR_NULL`, or `ZKM_ERR_INVALID_CONFIG` for 0.
///
/// ```c
/// zkm_config_set_connect_timeout_ms(config, 3000);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_connect_timeout_ms(
    config: *mut zkm_config,
    ms: u64,
) -> zkm_result {
    guard("zkm_config_set_connect_timeout_ms", || {
        let timeout = Duration::from_millis(ms);
        // SAFETY: by the caller's contract.
        unsafe { set(config, "connect_timeout", |c| c.connect_timeout(timeout)) }
    })
}

/// Sets how long before the server could expire the session `zkm_is_master`
/// already turns false, in milliseconds. Default: a tenth of the granted
/// session timeout. It must be shorter than the session timeout; that is
/// checked by [`zkm_config_validate`] and `zkm_join`, whatever order the two
/// are set in.
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_config_set_lease_margin_ms(config, 500);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_lease_margin_ms(
    config: *mut zkm_config,
    ms: u64,
) -> zkm_result {
    guard("zkm_config_set_lease_margin_ms", || {
        let margin = Duration::from_millis(ms);
        // SAFETY: by the caller's contract.
        unsafe { set(config, "lease_margin", |c| c.lease_margin(margin)) }
    })
}

/// Sets the data stored in this member's node, which every member sees.
/// Default `"1"`. The `len` bytes at `data` are copied; `data` may be NULL
/// when `len` is 0.
///
/// # Errors
/// `ZKM_ERR_NULL` (`config`, or `data` with a non-zero `len`), or
/// `ZKM_ERR_INVALID_CONFIG` for more than `ZKM_MAX_DATA_LEN` bytes.
///
/// ```c
/// const char *address = "10.0.0.7:8080";
/// zkm_config_set_data(config, (const uint8_t *)address, strlen(address));
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration; `data` is NULL or points to
/// `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_data(
    config: *mut zkm_config,
    data: *const u8,
    len: usize,
) -> zkm_result {
    guard("zkm_config_set_data", || {
        let bytes = match (data.is_null(), len) {
            (_, 0) => Vec::new(),
            (true, _) => return Err(Failure::null("data")),
            // SAFETY: len readable bytes by the caller's contract.
            (false, _) => unsafe { std::slice::from_raw_parts(data, len) }.to_vec(),
        };
        // SAFETY: by the caller's contract.
        unsafe { set(config, "data", |c| c.data(bytes.clone())) }
    })
}

/// Sets ZooKeeper digest credentials, `user:password`: only sessions with
/// them may then create or delete members. `user_password` is copied.
///
/// # Errors
/// `ZKM_ERR_NULL`, `ZKM_ERR_INVALID_ARGUMENT`, or `ZKM_ERR_INVALID_CONFIG`
/// when it is not `user:password` with both parts non-empty.
///
/// ```c
/// zkm_config_set_auth(config, "workers:s3cret");
/// ```
///
/// # Safety
/// As [`zkm_config_set_group`].
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_auth(
    config: *mut zkm_config,
    user_password: *const c_char,
) -> zkm_result {
    guard("zkm_config_set_auth", || {
        // SAFETY: by the caller's contract.
        let secret = unsafe { text(user_password, "user_password") }?;
        // SAFETY: by the caller's contract.
        unsafe { set(config, "auth", |c| c.auth(secret)) }
    })
}

/// With credentials: whether clients without them may read the group (and
/// so see who is master). Default true.
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_config_set_readable_by_anyone(config, false);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_set_readable_by_anyone(
    config: *mut zkm_config,
    readable: bool,
) -> zkm_result {
    guard("zkm_config_set_readable_by_anyone", || {
        // SAFETY: by the caller's contract.
        unsafe {
            set(config, "readable_by_anyone", |c| {
                c.readable_by_anyone(readable)
            })
        }
    })
}

/// Checks every field, and the fields against each other, without sending
/// anything to a server.
///
/// # Errors
/// `ZKM_ERR_NULL`, or `ZKM_ERR_INVALID_CONFIG` naming the first bad field.
///
/// ```c
/// zkm_config_set_session_timeout_ms(config, 1000);
/// zkm_config_set_lease_margin_ms(config, 2000);
/// assert(zkm_config_validate(config) == ZKM_ERR_INVALID_CONFIG);
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn zkm_config_validate(config: *const zkm_config) -> zkm_result {
    guard("zkm_config_validate", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        Ok(handle.config.validate()?)
    })
}

/// The largest member data [`zkm_config_set_data`] takes, in bytes (a
/// literal, so that cbindgen can write it; a test keeps it equal to Rust's).
///
/// ```c
/// if (len > ZKM_MAX_DATA_LEN)
///     return -1; /* zkm_config_set_data would refuse it */
/// ```
pub const ZKM_MAX_DATA_LEN: usize = 1024 * 1024 - 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capi::errors::zkm_result::*;
    use std::ffi::CStr;

    fn new(connect: &CStr) -> *mut zkm_config {
        let mut config = std::ptr::null_mut();
        // SAFETY: a valid string and out pointer.
        assert_eq!(
            unsafe { zkm_config_new(connect.as_ptr(), &mut config) },
            ZKM_OK
        );
        config
    }

    #[test]
    fn a_bad_value_is_refused_at_its_setter_and_leaves_the_config_unchanged() {
        let config = new(c"127.0.0.1:2181");
        // SAFETY: a live config and valid strings throughout.
        unsafe {
            assert_eq!(
                zkm_config_set_group(config, c"relative".as_ptr()),
                ZKM_ERR_INVALID_CONFIG
            );
            assert_eq!((*config).config.get_group(), "/Roles/workers");
            assert_eq!(zkm_config_set_group(config, c"/ok".as_ptr()), ZKM_OK);
            assert_eq!((*config).config.get_group(), "/ok");
            assert_eq!(zkm_config_set_masters(config, 0), ZKM_ERR_INVALID_CONFIG);
            assert_eq!(
                zkm_config_set_auth(config, c"nopassword".as_ptr()),
                ZKM_ERR_INVALID_CONFIG
            );
            assert_eq!(
                zkm_config_set_data(config, std::ptr::null(), 3),
                ZKM_ERR_NULL
            );
            assert_eq!(zkm_config_set_data(config, std::ptr::null(), 0), ZKM_OK);
            assert_eq!(
                zkm_config_set_lease_margin_ms(config, 20_000),
                ZKM_OK,
                "checked at validate"
            );
            assert_eq!(
                zkm_config_validate(config),
                ZKM_ERR_INVALID_CONFIG,
                "10 s timeout"
            );
            assert_eq!(zkm_config_set_session_timeout_ms(config, 30_000), ZKM_OK);
            assert_eq!(zkm_config_validate(config), ZKM_OK);
            assert_eq!(
                zkm_config_set_session_timeout_ms(config, 0),
                ZKM_ERR_INVALID_CONFIG
            );
            assert_eq!(zkm_config_set_session_timeout_ms(config, 1000), ZKM_OK);
            assert_eq!(zkm_config_set_lease_margin_ms(config, 2000), ZKM_OK);
            assert_eq!(zkm_config_validate(config), ZKM_ERR_INVALID_CONFIG);
            zkm_config_free(config);
        }
    }

    #[test]
    fn the_data_limit_is_the_rust_one() {
        assert_eq!(ZKM_MAX_DATA_LEN, crate::config::MAX_DATA_LEN);
    }

    #[test]
    fn null_and_bad_connect_strings_are_errors() {
        let mut config = std::ptr::null_mut();
        // SAFETY: NULL or valid arguments.
        unsafe {
            assert_eq!(zkm_config_new(std::ptr::null(), &mut config), ZKM_ERR_NULL);
            assert_eq!(
                zkm_config_new(c"h:1".as_ptr(), std::ptr::null_mut()),
                ZKM_ERR_NULL
            );
            assert_eq!(
                zkm_config_new(c"nohost".as_ptr(), &mut config),
                ZKM_ERR_INVALID_CONFIG
            );
            assert_eq!(
                zkm_config_new(c"h:1\xff".as_ptr(), &mut config),
                ZKM_ERR_INVALID_ARGUMENT
            );
            assert!(config.is_null());
            assert_eq!(
                zkm_config_set_masters(std::ptr::null_mut(), 1),
                ZKM_ERR_NULL
            );
            assert_eq!(zkm_config_validate(std::ptr::null()), ZKM_ERR_NULL);
            zkm_config_free(std::ptr::null_mut());
        }
    }
}
