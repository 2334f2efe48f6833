//! The state the election thread publishes and callers read: behind one
//! mutex, except the master lease, an atomic that `is_master` reads without
//! locking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::member::Member;
use crate::role::Role;

/// The start of this process's lease clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` as nanoseconds since [`epoch`] (0 for anything before it).
fn instant_ns(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// What callers see of the election.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// The role as last computed; `Master` counts only while the lease holds.
    pub(crate) role: Role,
    pub(crate) member: Option<String>,
    pub(crate) members: Vec<Member>,
    pub(crate) masters: Vec<Member>,
    /// The czxid of this member's node.
    pub(crate) token: Option<u64>,
    pub(crate) resigned: bool,
    /// The session timeout the server granted.
    pub(crate) session_timeout: Option<std::time::Duration>,
}

/// Shared between the handle, the election thread and the callback thread.
pub(crate) struct Shared {
    /// End of the master lease in nanoseconds since [`epoch`]; 0 when not master.
    master_until: AtomicU64,
    pub(crate) status: Mutex<Status>,
    pub(crate) changed: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        epoch();
        Shared {
            master_until: AtomicU64::new(0),
            status: Mutex::new(Status {
                role: Role::Offline,
                member: None,
                members: Vec::new(),
                masters: Vec::new(),
                token: None,
                resigned: false,
                session_timeout: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// True while this member is master and its lease holds. Lock-free.
    pub(crate) fn is_master(&self) -> bool {
        let until = self.master_until.load(Ordering::Acquire);
        until != 0 && instant_ns(Instant::now()) < until
    }

    /// The role as callers should see it: a master whose lease lapsed is offline.
    pub(crate) fn role(&self, status: &Status) -> Role {
        match status.role {
            Role::Master if !self.is_master() => Role::Offline,
            role => role,
        }
    }

    /// Moves the end of the lease of a member already published as master.
    pub(crate) fn set_lease(&self, lease_until: Option<Instant>) {
        let status = self.status.lock();
        if status.role == Role::Master {
            let until = lease_until.map_or(0, |at| instant_ns(at).max(1));
            self.master_until.store(until, Ordering::Release);
        }
        drop(status);
        self.changed.notify_all();
    }

    /// Replaces the status and the lease at once, and wakes waiters. Returns
    /// the role callers saw before.
    pub(crate) fn publish(&self, status: Status, lease_until: Option<Instant>) -> Role {
        let mut current = self.status.lock();
        let old = self.role(&current);
        let until = match (status.role, lease_until) {
            (Role::Master, Some(at)) => instant_ns(at).max(1),
            _ => 0,
        };
        *current = status;
        self.master_until.store(until, Ordering::Release);
        drop(current);
        self.changed.notify_all();
        old
    }
}
