//! What a member is, and what callbacks are told when that changes.

use crate::member::Member;

/// The part this process plays in the group right now.
///
/// ```
/// use zk_master::Role;
///
/// assert_ne!(Role::Master, Role::Slave);
/// assert_eq!(format!("{}", Role::Offline), "offline");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// One change of role, as passed to [`Election::on_change`](crate::Election::on_change) callbacks.
///
/// ```no_run
/// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
/// election.on_change(|change: &zk_master::RoleChange| {
///     println!("{} -> {}, masters: {:?}", change.old, change.new, change.masters);
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
}
