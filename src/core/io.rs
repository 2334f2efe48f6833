//! What the election core exchanges with the outside world: the inputs it
//! is fed, the commands it returns, and the ZooKeeper operations it asks a
//! backend to run. Plain data: no crate types, no clocks, no I/O.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::member::Member;
use crate::role::{Connection, Role, RoleChange};

/// A session the core asked a backend to open, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u64);

/// A request the core sent, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(pub(crate) u64);

/// What a session is for. A backend may treat the two differently: the
/// `zookeeper` 0.8 backend carries a watcher session on the member's
/// ZooKeeper session, and reports it lost when the member's is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Holds this member's node and claim; its replies renew the lease.
    Member,
    /// Reads and watches the group.
    Watcher,
}

/// How a node is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Persistent,
    Ephemeral,
    EphemeralSequential,
}

/// A ZooKeeper operation, as the core needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create `path` (for sequential nodes: the prefix) with `data`.
    /// Answered with [`Answer::Created`].
    Create {
        path: String,
        data: Vec<u8>,
        mode: Mode,
    },
    /// Delete `path` whatever its version. Answered with [`Answer::Done`].
    Delete { path: String },
    /// The stat of `path`, with a one-shot deletion/creation watch if
    /// `watch`. Answered with [`Answer::Stat`].
    Exists { path: String, watch: bool },
    /// The children of `path`, with a one-shot child watch if `watch`.
    /// Answered with [`Answer::Children`], which also names the node.
    Children { path: String, watch: bool },
    /// The data and stat of `path`. Answered with [`Answer::Data`].
    Data { path: String },
    /// Proves contact with the leader: answered with [`Answer::Done`] once
    /// the server the session is connected to has caught up with the leader
    /// (in an ensemble, only through the leader).
    Sync { path: String },
}

/// What the core needs of a node's stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The session that owns the node; 0 for a persistent node.
    pub(crate) owner: i64,
    /// The transaction that created the node.
    pub(crate) czxid: i64,
    /// When the node was created: milliseconds since the Unix epoch, by the
    /// clock of the server that created it.
    pub(crate) ctime: i64,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The full path of the created node, and its stat.
    Created(String, Stat),
    /// A delete succeeded.
    Done,
    Stat(Option<Stat>),
    /// The children's names, and the czxid of their parent: a parent deleted
    /// and created again (whose children's names then come back) has
    /// another.
    Children(Vec<String>, i64),
    Data(Vec<u8>, Stat),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    NoNode,
    NodeExists,
    /// The server refused for lack of permission.
    Denied(String),
    /// Any other refusal by the server.
    Refused(String),
    /// The connection dropped before the reply: the request may or may not
    /// have been applied, and the session may survive.
    Interrupted(String),
}

/// One connection of a session: a backend numbers each connection of a
/// session anew, so a reply can be tied to the connection it came on.
pub(crate) type Conn = u64;

/// What the core is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The session is connected: for the first time, or again in the same
    /// server session (then watches and credentials are already restored,
    /// or the backend reported the session lost instead).
    Connected {
        session: SessionId,
        conn: Conn,
        /// The server's id for the session.
        server_session: i64,
        /// The session timeout the server granted.
        granted: Duration,
    },
    /// The connection dropped; the session may still be alive.
    Disconnected { session: SessionId },
    /// The session is gone for good (expired, closed, never opened, or
    /// given up by the backend). Every request still pending on it fails.
    Lost { session: SessionId, why: String },
    /// The reply to a request. `via` is the connection the request left on
    /// when the reply came back on that same connection, else `None`.
    Reply {
        session: SessionId,
        request: RequestId,
        via: Option<Conn>,
        result: Result<Answer, Failure>,
    },
    /// A watch fired on `path`.
    Watch {
        session: SessionId,
        path: String,
        kind: WatchKind,
    },
    /// The user asked to leave the election.
    Resign,
    /// The user asked to step down and join again at the back.
    Requeue,
}

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchKind {
    /// The node's children changed, or the node was created or changed.
    Changed,
    /// The node was deleted.
    Deleted,
}

/// What the core asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Open a new session asking for `timeout`; report it with
    /// [`Input::Connected`] or [`Input::Lost`].
    Open {
        session: SessionId,
        purpose: Purpose,
        timeout: Duration,
    },
    /// Send `op` on `session`; answer with [`Input::Reply`].
    Send {
        session: SessionId,
        request: RequestId,
        op: Op,
    },
    /// A request on `session` missed its deadline: drop the connection (the
    /// session may go on through another one).
    Cut { session: SessionId },
    /// Close `session` and forget it; its ephemeral nodes go with it. Must
    /// not block; no input about it is expected afterwards.
    Close { session: SessionId },
    /// What callers see changed: publish it.
    Publish(View),
    /// Tell the callbacks.
    Notify(RoleChange),
    /// The first join finished.
    Joined(Result<(), Error>),
    /// A [`Input::Requeue`] finished.
    Requeued(Result<(), Error>),
    /// A [`Input::Resign`] finished: the core does nothing more. The
    /// sessions' closes may be waited for until `close_by`.
    Resigned { close_by: Instant },
}

/// What callers see of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// The role as computed; `Master` counts only until `lease_until`.
    pub(crate) role: Role,
    /// The end of the master lease, while master.
    pub(crate) lease_until: Option<Instant>,
    pub(crate) member: Option<String>,
    pub(crate) members: Vec<Member>,
    pub(crate) masters: Vec<Member>,
    /// The czxid of this member's node, while master.
    pub(crate) token: Option<u64>,
    pub(crate) connection: Connection,
    pub(crate) connection_since: Instant,
    /// The session timeout the server granted.
    pub(crate) session_timeout: Option<Duration>,
    pub(crate) resigned: bool,
    /// What happened so far, for [`crate::Metrics`].
    pub(crate) counters: Counters,
    /// Watch-only mode: the claims as last read, and whether the first read
    /// of the group is done.
    pub(crate) claims: Vec<String>,
}

/// Counts of what happened to an election, published with each view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    /// Changes of role (any old role to any other).
    pub(crate) role_transitions: u64,
    /// Reconnects of the member session that kept the session.
    pub(crate) reconnects: u64,
    /// Member sessions lost (expired, closed, or abandoned).
    pub(crate) session_losses: u64,
    /// Times the master lease ran out before a renewal extended it.
    pub(crate) lease_lapses: u64,
    /// When a renewal last extended the lease.
    pub(crate) last_renewal: Option<Instant>,
}
