//! What C reads about an election: roles, members with their data, and the
//! two views that hold them (a snapshot the caller frees, and the change a
//! callback is passed), built from Rust values with their strings kept alive
//! beside them.

use std::ffi::{c_char, CString};
use std::ptr;

use crate::member::Member;
use crate::role::{Connection, Role, RoleChange};

/// A member's role, as `zkm_role_of` and the views report it.
///
/// ```c
/// if (zkm_role_of(election) == ZKM_ROLE_MASTER)
///     puts("I've become master!");
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zkm_role {
    /// Among the first N members, with a lease that still holds.
    ZKM_ROLE_MASTER = 0,
    /// A member behind the first N.
    ZKM_ROLE_SLAVE = 1,
    /// Not a confirmed member right now: joining, reconnecting, a master whose
    /// lease lapsed, or resigned.
    ZKM_ROLE_OFFLINE = 2,
}

impl From<Role> for zkm_role {
    fn from(role: Role) -> zkm_role {
        match role {
            Role::Master => zkm_role::ZKM_ROLE_MASTER,
            Role::Slave => zkm_role::ZKM_ROLE_SLAVE,
            Role::Offline => zkm_role::ZKM_ROLE_OFFLINE,
        }
    }
}

/// The member's link to ZooKeeper.
///
/// ```c
/// if (change->connection == ZKM_CONNECTION_SUSPENDED)
///     puts("disconnected; a master stays master until its lease ends");
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zkm_connection {
    /// Connected, in the session that holds this member's node.
    ZKM_CONNECTION_CONNECTED = 0,
    /// Disconnected: the session may still be alive.
    ZKM_CONNECTION_SUSPENDED = 1,
    /// The session is gone or not yet made.
    ZKM_CONNECTION_LOST = 2,
}

impl From<Connection> for zkm_connection {
    fn from(connection: Connection) -> zkm_connection {
        match connection {
            Connection::Connected => zkm_connection::ZKM_CONNECTION_CONNECTED,
            Connection::Suspended => zkm_connection::ZKM_CONNECTION_SUSPENDED,
            Connection::Lost => zkm_connection::ZKM_CONNECTION_LOST,
        }
    }
}

/// One member of the group. Its pointers belong to the view that holds it
/// (a [`zkm_snapshot`] or a [`zkm_role_change`]) and live as long as it.
///
/// ```c
/// const zkm_member *m = &snapshot->members[0];
/// printf("%s (%d): %.*s\n", m->name, m->sequence, (int)m->data_len, (const char *)m->data);
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct zkm_member {
    /// The node's name, such as `worker0000000003`; NUL-terminated.
    pub name: *const c_char,
    /// The sequence number ZooKeeper gave the node.
    pub sequence: i32,
    /// The member's data: `data_len` bytes, followed by a NUL that
    /// `data_len` does not count (so text data can be printed as is). The
    /// data itself may contain NULs.
    pub data: *const u8,
    /// How many bytes of data there are.
    pub data_len: usize,
}

/// Everything a snapshot or a change needs kept alive: the strings and the
/// member arrays its pointers point into. Moving it moves no heap memory, so
/// the pointers stay valid as long as it lives.
#[derive(Default)]
pub(crate) struct Tables {
    strings: Vec<CString>,
    data: Vec<Vec<u8>>,
    pub(crate) masters: Vec<zkm_member>,
    pub(crate) members: Vec<zkm_member>,
}

impl Tables {
    /// The tables for these members, and the member's own name.
    pub(crate) fn new(masters: &[Member], members: &[Member]) -> Tables {
        let mut tables = Tables::default();
        tables.masters = masters.iter().map(|m| tables.member(m)).collect();
        tables.members = members.iter().map(|m| tables.member(m)).collect();
        tables
    }

    fn member(&mut self, member: &Member) -> zkm_member {
        let mut data = Vec::with_capacity(member.data().len() + 1);
        data.extend_from_slice(member.data());
        data.push(0);
        let entry = zkm_member {
            name: self.string(member.name()),
            sequence: member.sequence(),
            data: data.as_ptr(),
            data_len: member.data().len(),
        };
        self.data.push(data);
        entry
    }

    /// A C copy of `s` (cut at an inner NUL, which node names cannot hold).
    pub(crate) fn string(&mut self, s: &str) -> *const c_char {
        let bytes: Vec<u8> = s.bytes().take_while(|&b| b != 0).collect();
        let c = CString::new(bytes).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    /// A C copy of `s`, or NULL.
    pub(crate) fn optional(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.string(s))
    }
}

/// A change of role or of connection, as a callback registered with
/// `zkm_on_change` is passed it. It describes the election at that change.
///
/// Owned by the library: every pointer in it (and in its members) is valid
/// only until the callback returns. Copy what you need to keep.
///
/// ```c
/// static void on_change(const zkm_role_change *change, void *user_data) {
///     if (change->new_role == ZKM_ROLE_MASTER)
///         puts("I've become master!");
///     else if (change->masters_len > 0)
///         printf("[%s] is masters\n", change->masters[0].name);
/// }
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct zkm_role_change {
    /// The role before the change.
    pub old_role: zkm_role,
    /// The role after it.
    pub new_role: zkm_role,
    /// The connection at the time of the change.
    pub connection: zkm_connection,
    /// This member's node name, or NULL while it has none.
    pub member: *const c_char,
    /// The masters at the time of the change, in election order.
    pub masters: *const zkm_member,
    /// How many masters.
    pub masters_len: usize,
    /// Every member, in election order, with their data.
    pub members: *const zkm_member,
    /// How many members.
    pub members_len: usize,
}

/// A change and the tables its pointers point into.
pub(crate) struct OwnedChange {
    pub(crate) change: zkm_role_change,
    _tables: Tables,
}

impl OwnedChange {
    pub(crate) fn new(change: &RoleChange) -> OwnedChange {
        let mut tables = Tables::new(&change.masters, &change.members);
        let member = tables.optional(change.member.as_deref());
        OwnedChange {
            change: zkm_role_change {
                old_role: change.old.into(),
                new_role: change.new.into(),
                connection: change.connection.into(),
                member,
                masters: tables.masters.as_ptr(),
                masters_len: tables.masters.len(),
                members: tables.members.as_ptr(),
                members_len: tables.members.len(),
            },
            _tables: tables,
        }
    }
}

/// The state of an election at one moment, as `zkm_snapshot_take` copies it:
/// role, connection, this member's name, the masters and every member with
/// their data, the fencing token and the granted session timeout.
///
/// Owned by the caller: free it with `zkm_snapshot_free`. Its pointers (and
/// its members' pointers) stay valid until then, whatever the election does
/// meanwhile, even after the election is freed.
///
/// ```c
/// zkm_snapshot *s = NULL;
/// if (zkm_snapshot_take(election, &s) == ZKM_OK) {
///     for (size_t i = 0; i < s->members_len; i++)
///         printf("%s%s\n", s->members[i].name, i < s->masters_len ? " (master)" : "");
///     zkm_snapshot_free(s);
/// }
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct zkm_snapshot {
    /// The role.
    pub role: zkm_role,
    /// The connection.
    pub connection: zkm_connection,
    /// This member's node name, or NULL while it has none.
    pub member: *const c_char,
    /// The masters, in election order.
    pub masters: *const zkm_member,
    /// How many masters.
    pub masters_len: usize,
    /// Every member, in election order, with their data.
    pub members: *const zkm_member,
    /// How many members.
    pub members_len: usize,
    /// Whether `fencing_token` holds a token (only while master).
    pub has_fencing_token: bool,
    /// While master: the creation zxid of this member's node.
    pub fencing_token: u64,
    /// The session timeout the server granted, in milliseconds; 0 while
    /// unknown.
    pub session_timeout_ms: u64,
}

/// A snapshot and the tables its pointers point into. `repr(C)` with the
/// snapshot first, so a pointer to it is a pointer to the snapshot.
#[repr(C)]
pub(crate) struct OwnedSnapshot {
    pub(crate) snapshot: zkm_snapshot,
    pub(crate) tables: Tables,
}
