//! The one error type of the library.

use std::fmt;
use std::io;
use std::sync::Arc;
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
    /// The operating system refused to start one of the library's threads.
    /// [`source`](std::error::Error::source) returns the [`io::Error`].
    Spawn {
        /// The thread's role, such as `callbacks` or `election`.
        thread: &'static str,
        /// What the operating system said.
        source: IoError,
    },
}

/// An [`io::Error`] that can be cloned and compared, as [`Error`] needs: two
/// are equal when their [kind](io::ErrorKind) and message are.
///
/// ```
/// use std::io::{self, ErrorKind};
/// use zk_master::IoError;
///
/// let a = IoError::from(io::Error::new(ErrorKind::WouldBlock, "no threads left"));
/// assert_eq!(a.clone(), a);
/// assert_eq!(a.kind(), ErrorKind::WouldBlock);
/// assert_ne!(a, IoError::from(io::Error::new(ErrorKind::WouldBlock, "other")));
/// ```
#[derive(Debug, Clone)]
pub struct IoError(Arc<io::Error>);

impl IoError {
    /// The error's kind.
    ///
    /// ```
    /// let e = zk_master::IoError::from(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
    /// assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }

    /// The [`io::Error`] itself.
    ///
    /// ```
    /// let e = zk_master::IoError::from(std::io::Error::other("boom"));
    /// assert_eq!(e.get_ref().to_string(), "boom");
    /// ```
    pub fn get_ref(&self) -> &io::Error {
        &self.0
    }
}

impl From<io::Error> for IoError {
    fn from(error: io::Error) -> IoError {
        IoError(Arc::new(error))
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &IoError) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string())
    }
}

impl Eq for IoError {}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
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
            Error::Spawn { thread, source } => {
                write!(f, "cannot start the {thread} thread: {source}")
            }
        }
    }
}

/// [`source`](std::error::Error::source) is the [`io::Error`] behind
/// [`Error::Spawn`]; the other variants carry the server's or the client's
/// words in their message and have no source.
///
/// ```
/// use std::error::Error as _;
///
/// let err = zk_master::Config::new("h:1").masters(0).validate().unwrap_err();
/// assert!(err.source().is_none());
/// ```
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } => Some(source.get_ref()),
            _ => None,
        }
    }
}

/// The library's result type.
///
/// ```
/// fn masters_wanted() -> zk_master::Result<usize> {
///     Ok(1)
/// }
/// assert_eq!(masters_wanted(), Ok(1));
/// ```
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn spawn_errors_chain_to_the_io_error_and_compare_by_kind_and_message() {
        let io = io::Error::new(
            io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable",
        );
        let err = Error::Spawn {
            thread: "callbacks",
            source: io.into(),
        };
        let source = err.source().expect("a source");
        let io_source = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io_source.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            err.to_string(),
            "cannot start the callbacks thread: Resource temporarily unavailable"
        );
        let same = Error::Spawn {
            thread: "callbacks",
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                "Resource temporarily unavailable",
            )
            .into(),
        };
        assert_eq!(err.clone(), err);
        assert_eq!(err, same);
        let other_kind = Error::Spawn {
            thread: "callbacks",
            source: io::Error::new(
                io::ErrorKind::OutOfMemory,
                "Resource temporarily unavailable",
            )
            .into(),
        };
        assert_ne!(err, other_kind);
        assert!(Error::Resigned.source().is_none());
    }
}
