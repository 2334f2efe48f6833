//! The one error type of the library.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a call to this library.
///
/// Each variant names the value or the operation that caused it, so the
/// message alone tells what to fix.
///
/// ```
/// use zk_master::{Config, Error};
///
/// let err = Config::new("127.0.0.1:2181").masters(0).validate().unwrap_err();
/// assert!(matches!(err, Error::InvalidConfig { field: "masters", .. }));
/// assert!(err.to_string().contains("masters"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A [`Config`](crate::Config) field holds a value the library cannot use.
    InvalidConfig {
        /// The name of the builder method that set the field.
        field: &'static str,
        /// The rejected value, as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No server of the connect string completed a session handshake in time.
    Unreachable {
        /// The connect string that was tried.
        connect: String,
        /// How long the library tried.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
    /// A server answered, but refused or failed an operation.
    Server {
        /// The operation, such as `create` or `get_children`.
        op: &'static str,
        /// The node the operation was about.
        path: String,
        /// What the server or the client said.
        reason: String,
    },
    /// The server refused an operation for lack of permission: the node's
    /// ACL does not admit these credentials, or none were given, or they are
    /// wrong (digest authentication itself never fails: wrong credentials
    /// only show up as missing permissions).
    AccessDenied {
        /// The operation, such as `create`.
        op: &'static str,
        /// The node whose ACL refused it.
        path: String,
        /// What the server said.
        reason: String,
    },
    /// The election was resigned: the handle no longer takes part.
    Resigned,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig {
                field,
                value,
                reason,
            } => {
                write!(f, "invalid {field} {value:?}: {reason}")
            }
            Error::Unreachable {
                connect,
                waited,
                last,
            } => write!(
                f,
                "no ZooKeeper server of {connect:?} answered within {waited:?} (last: {last})"
            ),
            Error::Server { op, path, reason } => write!(f, "{op} {path:?} failed: {reason}"),
            Error::AccessDenied { op, path, reason } => write!(
                f,
                "{op} {path:?} was refused ({reason}): credentials missing, wrong, or not in the node's ACL"
            ),
            Error::Resigned => write!(f, "the election was resigned"),
        }
    }
}

impl std::error::Error for Error {}

/// The library's result type.
///
/// ```
/// fn masters_wanted() -> zk_master::Result<usize> {
///     Ok(1)
/// }
/// assert_eq!(masters_wanted(), Ok(1));
/// ```
pub type Result<T> = std::result::Result<T, Error>;
