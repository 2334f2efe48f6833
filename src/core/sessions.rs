//! The two session slots, member and watcher: opening them, and what their
//! connections report.

use std::time::{Duration, Instant};

use super::lease::{default_margin, Base};
use super::{later, Command, Conn, Core, Purpose, SessionId, MAX_BACKOFF};
use crate::role::Connection;

/// A session slot: the member's or the watcher's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Slot {
    /// No session; open one at `retry_at`.
    Idle {
        retry_at: Instant,
    },
    /// Asked for; no answer yet.
    Opening {
        id: SessionId,
        since: Instant,
    },
    Open(Session),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) id: SessionId,
    pub(super) server_session: i64,
    /// The current connection; `None` while disconnected.
    pub(super) conn: Option<Conn>,
    /// When `conn` last changed.
    pub(super) since: Instant,
}

impl Slot {
    pub(super) fn open(&self) -> Option<&Session> {
        match self {
            Slot::Open(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn id(&self) -> Option<SessionId> {
        match self {
            Slot::Idle { .. } => None,
            Slot::Opening { id, .. } => Some(*id),
            Slot::Open(s) => Some(s.id),
        }
    }

    /// The session, while connected.
    pub(super) fn connected(&self) -> Option<(SessionId, Conn)> {
        self.open().and_then(|s| Some((s.id, s.conn?)))
    }
}

/// What a slot's timers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotDue {
    /// Idle, and its pause is over: open a session.
    Open,
    /// Asked for a session that never came.
    OpenTimedOut,
}

impl Core {
    /// When `slot`'s timers next ask for something, and what.
    pub(super) fn slot_timer(&self, slot: &Slot) -> Option<(Instant, SlotDue)> {
        match slot {
            Slot::Idle { retry_at } => Some((*retry_at, SlotDue::Open)),
            Slot::Opening { since, .. } => {
                Some((self.open_deadline(*since), SlotDue::OpenTimedOut))
            }
            // A disconnected session is never given up here: the backend
            // reports it lost when a server refuses it (expired), and
            // resumes it whenever one still has it, however long it took.
            Slot::Open(_) => None,
        }
    }

    /// What `slot`'s timers ask for at `now`, if anything.
    pub(super) fn slot_due(&self, slot: &Slot, now: Instant) -> Option<SlotDue> {
        self.slot_timer(slot)
            .filter(|(at, _)| now >= *at)
            .map(|(_, due)| due)
    }

    pub(super) fn open(&mut self, purpose: Purpose, now: Instant) -> Slot {
        let id = SessionId(self.next_id());
        self.commands.push_back(Command::Open {
            session: id,
            purpose,
            timeout: self.settings.session_timeout,
        });
        Slot::Opening { id, since: now }
    }

    /// How long a session may take to connect before it is given up.
    pub(super) fn open_deadline(&self, since: Instant) -> Instant {
        later(since, self.settings.session_timeout * 2)
    }

    pub(super) fn next_backoff(&mut self, now: Instant) -> Instant {
        let base = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        // Up to a quarter more, so members that lost the same server spread out.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        later(now, base + base.mul_f64((self.rng % 1000) as f64 / 4000.0))
    }

    pub(super) fn on_connected(
        &mut self,
        session: SessionId,
        conn: Conn,
        server_session: i64,
        granted: Duration,
        now: Instant,
    ) {
        let fresh = Session {
            id: session,
            server_session,
            conn: Some(conn),
            since: now,
        };
        if self.member.id() == Some(session) {
            self.base = match (&self.member, self.base) {
                (Slot::Open(s), _) if s.server_session != server_session => {
                    return self.lose_member("the session was replaced", now);
                }
                (Slot::Open(_), base) => {
                    log::info!("reconnected in the same session");
                    self.counters.reconnects += 1;
                    let at = match base {
                        Some(Base::Leader { at, .. }) => Some(at),
                        Some(Base::Renewal { sent, .. }) => Some(sent),
                        None => None,
                    };
                    at.map(|at| Base::Leader { conn, at })
                }
                _ => {
                    self.set_timeout(granted);
                    Some(Base::Leader {
                        conn,
                        at: self.opened_at,
                    })
                }
            };
            self.member = Slot::Open(fresh);
            self.renew_at = now;
            self.set_connection(Connection::Connected, now);
        } else if self.watcher.id() == Some(session) {
            self.watcher = Slot::Open(fresh);
            self.group.watcher_connected();
            if self.settings.observe {
                self.set_connection(Connection::Connected, now);
            }
        }
    }

    pub(super) fn on_disconnected(&mut self, session: SessionId, now: Instant) {
        for slot in [&mut self.member, &mut self.watcher] {
            if let Slot::Open(s) = slot {
                if s.id == session && s.conn.is_some() {
                    s.conn = None;
                    s.since = now;
                }
            }
        }
        let followed = if self.settings.observe {
            &self.watcher
        } else {
            &self.member
        };
        if followed.id() == Some(session) {
            self.set_connection(Connection::Suspended, now);
        }
    }

    pub(super) fn on_lost(&mut self, session: SessionId, why: &str, now: Instant) {
        if self.member.id() == Some(session) {
            self.lose_member(why, now);
        } else if self.watcher.id() == Some(session) {
            self.lose_watcher(why, now);
        }
    }

    /// Counts the lease against the smaller of the asked and granted timeout.
    pub(super) fn set_timeout(&mut self, granted: Duration) {
        let asked = self.settings.session_timeout;
        if granted != asked {
            log::warn!("asked for a {asked:?} session, the server granted {granted:?}");
        }
        self.granted = Some(granted);
        self.timeout = granted.min(asked);
        self.margin = match self.settings.lease_margin {
            Some(m) if m < self.timeout => m,
            Some(m) => {
                log::warn!(
                    "lease margin {m:?} is not below the granted timeout {granted:?}: using the default"
                );
                default_margin(self.timeout)
            }
            None => default_margin(self.timeout),
        };
    }

    pub(super) fn set_connection(&mut self, connection: Connection, now: Instant) {
        if self.connection != connection {
            log::debug!("connection {} -> {connection}", self.connection);
            self.connection = connection;
            self.connection_since = now;
        }
    }
}
