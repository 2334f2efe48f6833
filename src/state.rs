//! The state the election thread publishes and callers read: behind one
//! mutex, except the master lease, an atomic that `is_master` reads without
//! locking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::member::Member;
use crate::role::{Connection, Role};

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
    pub(crate) session_timeout: Option<Duration>,
    pub(crate) connection: Connection,
    pub(crate) connection_since: Instant,
}

/// Shared between the handle, the election thread, the callback thread and
/// the crate's event thread (which may only [`revoke`](Shared::revoke)).
pub(crate) struct Shared {
    /// End of the master lease in nanoseconds since [`epoch`]; 0 when not master.
    master_until: AtomicU64,
    /// Counts revocations: a lease computed before the latest one is not applied.
    revocations: AtomicU64,
    pub(crate) status: Mutex<Status>,
    pub(crate) changed: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        epoch();
        Shared {
            master_until: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
            status: Mutex::new(Status {
                role: Role::Offline,
                member: None,
                members: Vec::new(),
                masters: Vec::new(),
                token: None,
                resigned: false,
                session_timeout: None,
                connection: Connection::Lost,
                connection_since: Instant::now(),
            }),
            changed: Condvar::new(),
        }
    }

    /// True while this member is master and its lease holds. Lock-free.
    pub(crate) fn is_master(&self) -> bool {
        let until = self.master_until.load(Ordering::Acquire);
        until != 0 && instant_ns(Instant::now()) < until
    }

    /// Ends mastership at once, without a lock: the crate's event thread calls
    /// this when this member's node is deleted.
    pub(crate) fn revoke(&self) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.master_until.store(0, Ordering::SeqCst);
    }

    /// The revocation count, to pass to [`publish`](Self::publish) later.
    pub(crate) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// The role as callers should see it: a master whose lease lapsed is offline.
    pub(crate) fn role(&self, status: &Status) -> Role {
        match status.role {
            Role::Master if !self.is_master() => Role::Offline,
            role => role,
        }
    }

    /// Replaces the status and the lease at once, and wakes waiters. The lease
    /// applies only if no revocation came after `seen`. Returns the role
    /// callers saw before.
    pub(crate) fn publish(&self, status: Status, lease_until: Option<Instant>, seen: u64) -> Role {
        let mut current = self.status.lock();
        let old = self.role(&current);
        let master = status.role == Role::Master;
        *current = status;
        self.store_lease(master, lease_until, seen);
        drop(current);
        self.changed.notify_all();
        old
    }

    /// Moves the end of the lease of a member already published as master.
    pub(crate) fn set_lease(&self, lease_until: Option<Instant>, seen: u64) {
        let status = self.status.lock();
        self.store_lease(status.role == Role::Master, lease_until, seen);
        drop(status);
        self.changed.notify_all();
    }

    fn store_lease(&self, master: bool, lease_until: Option<Instant>, seen: u64) {
        let until = match lease_until {
            Some(at) if master => instant_ns(at).max(1),
            _ => 0,
        };
        self.master_until.store(until, Ordering::SeqCst);
        // A revocation that raced with this store wins.
        if self.revocations() != seen {
            self.master_until.store(0, Ordering::SeqCst);
        }
    }
}
