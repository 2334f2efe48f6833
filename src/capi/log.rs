//! The library's log records, handed to a C function (as the ZooKeeper C
//! client's `zoo_set_log_stream` hands them to a stream).

use std::ffi::{c_char, c_int, c_void, CString};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use super::errors::{guard, zkm_result, Failure};

/// The level of a log record, from the most to the least severe.
///
/// ```c
/// zkm_set_logger(print_record, NULL, ZKM_LOG_INFO);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zkm_log_level {
    /// Logging off (only as `zkm_set_logger`'s `max_level`).
    ZKM_LOG_OFF = 0,
    /// Something failed.
    ZKM_LOG_ERROR = 1,
    /// Something unexpected that the library handled.
    ZKM_LOG_WARN = 2,
    /// Joins, role changes, resigns.
    ZKM_LOG_INFO = 3,
    /// Every session, read and lease renewal.
    ZKM_LOG_DEBUG = 4,
    /// Everything.
    ZKM_LOG_TRACE = 5,
}

/// A log function: the record's level, its target (the module that logged
/// it, such as `zk_master::driver`), its message, and the `user_data` given
/// to `zkm_set_logger`. Both strings are NUL-terminated and valid only during
/// the call. It is called from any thread of the library, possibly from
/// several at once.
///
/// ```c
/// static void print_record(zkm_log_level level, const char *target, const char *message, void *user_data) {
///     fprintf(stderr, "[%d %s] %s\n", level, target, message);
/// }
/// ```
pub type zkm_log_cb = Option<
    unsafe extern "C" fn(
        level: zkm_log_level,
        target: *const c_char,
        message: *const c_char,
        user_data: *mut c_void,
    ),
>;

/// The C function records go to, with its user data.
#[derive(Clone, Copy)]
struct Sink {
    log: unsafe extern "C" fn(zkm_log_level, *const c_char, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the caller of zkm_set_logger promises the function may be called
// with its user data from any thread.
unsafe impl Send for Sink {}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// The `log` facade's logger while a C function is set.
struct CLogger;

static LOGGER: CLogger = CLogger;

impl Log for CLogger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        // Copied out: the C function runs with no lock held.
        let Some(sink) = *SINK.lock() else { return };
        let level = match record.level() {
            Level::Error => zkm_log_level::ZKM_LOG_ERROR,
            Level::Warn => zkm_log_level::ZKM_LOG_WARN,
            Level::Info => zkm_log_level::ZKM_LOG_INFO,
            Level::Debug => zkm_log_level::ZKM_LOG_DEBUG,
            Level::Trace => zkm_log_level::ZKM_LOG_TRACE,
        };
        let c = |s: String| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let target = c(record.target().to_owned());
        let message = c(record.args().to_string());
        // SAFETY: the caller set a function of this type; the strings live
        // until it returns.
        unsafe { (sink.log)(level, target.as_ptr(), message.as_ptr(), sink.user_data) };
    }

    fn flush(&self) {}
}

/// Sends the library's log records up to `max_level` (a `zkm_log_level`;
/// `ZKM_LOG_OFF` or a NULL `log` turns logging off) to `log`, with
/// `user_data`, from now on. Without it the library logs nothing. Records of
/// the `zookeeper` crate the library uses come too (target `zookeeper...`).
///
/// It installs the process's logger of Rust's `log` facade on its first
/// call; later calls replace the function and the level. A record being
/// logged while it is replaced may still reach the old function.
///
/// # Errors
/// `ZKM_ERR_INVALID_ARGUMENT` for a level outside 0..=5;
/// `ZKM_ERR_LOGGER_TAKEN` when Rust code in the same process installed
/// another logger first.
///
/// ```c
/// zkm_set_logger(print_record, NULL, ZKM_LOG_INFO);
/// ```
///
/// # Safety
/// `log` is NULL or a function safe to call with `user_data` from any
/// thread, at any time until logging is turned off or replaced.
#[no_mangle]
pub unsafe extern "C" fn zkm_set_logger(
    log: zkm_log_cb,
    user_data: *mut c_void,
    max_level: c_int,
) -> zkm_result {
    guard("zkm_set_logger", || {
        let filter = match max_level {
            0 => LevelFilter::Off,
            1 => LevelFilter::Error,
            2 => LevelFilter::Warn,
            3 => LevelFilter::Info,
            4 => LevelFilter::Debug,
            5 => LevelFilter::Trace,
            _ => {
                return Err(Failure::new(
                    zkm_result::ZKM_ERR_INVALID_ARGUMENT,
                    format!("max_level {max_level} is not a zkm_log_level (0 to 5)"),
                ))
            }
        };
        static INSTALLED: Mutex<bool> = Mutex::new(false);
        let mut installed = INSTALLED.lock();
        if !*installed {
            log::set_logger(&LOGGER).map_err(|_| {
                Failure::new(
                    zkm_result::ZKM_ERR_LOGGER_TAKEN,
                    "another logger is installed in this process",
                )
            })?;
            *installed = true;
        }
        let sink = log.map(|log| Sink { log, user_data });
        *SINK.lock() = sink;
        log::set_max_level(if sink.is_some() {
            filter
        } else {
            LevelFilter::Off
        });
        Ok(())
    })
}
