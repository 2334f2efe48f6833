//! What a member is, and what callbacks are told when that changes.

use crate::member::Member;

/// The part this process plays in the group right now.
///
/// Later versions may add roles, so a `match` needs a `_` arm.
///
/// ```
/// use zk_master::Role;
///
/// assert_ne!(Role::Master, Role::Slave);
/// assert_eq!(format!("{}", Role::Offline), "offline");
/// let working = match Role::Slave {
///     Role::Master => true,
///     _ => false,
/// };
/// assert!(!working);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Among the first N members, with a lease that still holds.
    Master,
    /// A member behind the first N.
    Slave,
    /// Not a confirmed member right now: joining, reconnecting after a lost
    /// connection, a master whose lease lapsed, or resigned.
    Offline,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::Offline => "offline",
        })
    }
}

/// The member's link to ZooKeeper, as Curator and kazoo name its states.
///
/// Later versions may add states, so a `match` needs a `_` arm.
///
/// ```
/// use zk_master::Connection;
///
/// assert_eq!(format!("{}", Connection::Suspended), "suspended");
/// let healthy = match Connection::Connected {
///     Connection::Connected => true,
///     _ => false,
/// };
/// assert!(healthy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Connection {
    /// Connected, in the session that holds this member's node.
    Connected,
    /// Disconnected: the session may still be alive, and a master stays
    /// master until its lease ends.
    Suspended,
    /// The session is gone (expired, or abandoned by the library) or not yet
    /// made: the member has no node until a new session registers one.
    Lost,
}

impl std::fmt::Display for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Connected => "connected",
            Connection::Suspended => "suspended",
            Connection::Lost => "lost",
        })
    }
}

/// One change of role or of connection, as passed to
/// [`Election::on_change`](crate::Election::on_change) callbacks and sent to
/// [`Subscription`](crate::Subscription)s. It describes the election as it was
/// at the change, so a callback needs no access to the handle.
///
/// ```no_run
/// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
/// election.on_change(|change: &zk_master::RoleChange| {
///     println!("{} -> {} ({}), masters: {:?}", change.old, change.new, change.connection, change.masters);
///     println!("{} members", change.members.len());
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleChange {
    /// The role before the change.
    pub old: Role,
    /// The role after it.
    pub new: Role,
    /// This member's node name, while it has one.
    pub member: Option<String>,
    /// The masters at the time of the change, in election order.
    pub masters: Vec<Member>,
    /// Every member at the time of the change, in election order, with their
    /// data; the masters are the first of them.
    pub members: Vec<Member>,
    /// The connection at the time of the change.
    pub connection: Connection,
    /// When the change happened.
    pub at: std::time::Instant,
}
