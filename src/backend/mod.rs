//! The seam between the election core and a ZooKeeper client library.
//!
//! The core asks for sessions and requests by number ([`Command`]s); a
//! backend carries them out and answers with [`Input`]s through an
//! [`InputSink`], from its own threads, without ever blocking the driver. All
//! that a client library gets wrong is the backend's to contain: the core
//! never learns which one it runs on. Today there is one backend, for the
//! `zookeeper` 0.8 crate ([`zk08`]).
//!
//! [`Command`]: crate::core::Command

pub(crate) mod zk08;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::{Input, Op, Purpose, RequestId, SessionId};

/// Where a backend's answers go: a function that never blocks.
pub(crate) type InputSink = Arc<dyn Fn(Input) + Send + Sync>;

/// ZooKeeper sessions as the election core needs them.
pub(crate) trait Backend {
    /// Opens a session; answers [`Input::Connected`] (again after every
    /// reconnect within the same session, with credentials restored) or
    /// [`Input::Lost`].
    fn open(&mut self, session: SessionId, purpose: Purpose, timeout: Duration);
    /// Sends `op`; answers [`Input::Reply`], and [`Input::Watch`] when a watch
    /// it set fires.
    fn send(&mut self, session: SessionId, request: RequestId, op: Op);
    /// Drops the session's connection: the session may go on through another.
    fn cut(&mut self, session: SessionId);
    /// Closes the session and forgets it. Never blocks.
    fn close(&mut self, session: SessionId);
    /// Waits until `deadline` at most for the sessions closed so far to be
    /// closed at the server.
    fn wait_closed(&mut self, deadline: Instant);
}
