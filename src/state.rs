//! What the election thread publishes and callers read: behind one mutex,
//! except the master lease, an atomic that `is_master` reads without locking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::core::View;
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

/// Shared between the handle, the election thread and the callback thread.
pub(crate) struct Shared {
    /// End of the master lease in nanoseconds since [`epoch`]; 0 when not master.
    master_until: AtomicU64,
    pub(crate) status: Mutex<View>,
    pub(crate) changed: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        epoch();
        Shared {
            master_until: AtomicU64::new(0),
            status: Mutex::new(View {
                role: Role::Offline,
                lease_until: None,
                member: None,
                members: Vec::new(),
                masters: Vec::new(),
                token: None,
                connection: Connection::Lost,
                connection_since: Instant::now(),
                session_timeout: None,
                resigned: false,
                counters: Default::default(),
                claims: Vec::new(),
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
    pub(crate) fn role(&self, view: &View) -> Role {
        match view.role {
            Role::Master if !self.is_master() => Role::Offline,
            role => role,
        }
    }

    /// Replaces what callers see, lease included, and wakes waiters.
    pub(crate) fn publish(&self, view: View) {
        let until = match view.lease_until {
            Some(at) if view.role == Role::Master => instant_ns(at).max(1),
            _ => 0,
        };
        let mut current = self.status.lock();
        // Step down first, extend last: never a moment with the old role and a new lease.
        self.master_until.store(until, Ordering::Release);
        *current = view;
        drop(current);
        self.changed.notify_all();
    }
}
