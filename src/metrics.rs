//! A snapshot of what happened to an election, for monitoring.

use std::time::{Duration, Instant};

use crate::core::Counters;

/// What [`Election::metrics`](crate::Election::metrics) returns: a copy of the
/// election's counters and timers, taken under the library's status lock for
/// the time of a copy. Counters only grow; feed them to a monitoring system
/// as counters (rates of change), the rest as gauges.
///
/// ```no_run
/// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
/// let m = election.metrics();
/// println!("master={} transitions={} lapses={}", m.is_master, m.role_transitions, m.lease_lapses);
/// if let Some(age) = m.since_last_renewal() {
///     println!("last renewal {age:?} ago");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// What [`Election::is_master`](crate::Election::is_master) said when the
    /// snapshot was taken.
    pub is_master: bool,
    /// Changes of role, from any role to another (offline, slave, master).
    pub role_transitions: u64,
    /// Reconnects of the member session that kept the session (its node and
    /// claim stayed).
    pub reconnects: u64,
    /// Member sessions lost (expired at the server, found so on reconnecting,
    /// or closed); each costs the member its place in the queue.
    pub session_losses: u64,
    /// Times this member was master and its lease ran out before a renewal
    /// extended it (a frozen server, a slow or cut-off link). A lease that
    /// runs out while the member is cut off is counted here; the session
    /// loss that may follow is counted in `session_losses` too. Stepping down
    /// for another reason (resign, a node deleted by hand) is no lapse.
    pub lease_lapses: u64,
    /// When a renewal last extended the lease; `None` before the first.
    pub last_renewal: Option<Instant>,
    /// The session timeout the server granted, once known.
    pub session_timeout: Option<Duration>,
    /// When the snapshot was taken.
    pub taken: Instant,
}

impl Metrics {
    pub(crate) fn new(
        is_master: bool,
        counters: Counters,
        session_timeout: Option<Duration>,
    ) -> Metrics {
        Metrics {
            is_master,
            role_transitions: counters.role_transitions,
            reconnects: counters.reconnects,
            session_losses: counters.session_losses,
            lease_lapses: counters.lease_lapses,
            last_renewal: counters.last_renewal,
            session_timeout,
            taken: Instant::now(),
        }
    }

    /// How long before the snapshot the last renewal was; `None` before the
    /// first. Alert when it nears the session timeout.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let m = election.metrics();
    /// if let (Some(age), Some(timeout)) = (m.since_last_renewal(), m.session_timeout) {
    ///     assert!(age < timeout, "renewals stalled");
    /// }
    /// ```
    pub fn since_last_renewal(&self) -> Option<Duration> {
        self.last_renewal
            .map(|at| self.taken.saturating_duration_since(at))
    }
}
