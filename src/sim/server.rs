//! The server side: sessions' expiry as the leader counts it, closing
//! sessions, deletions by hand, and the stale follower.

use std::collections::BTreeSet;
use std::time::Duration;

use super::backend::{ClientKey, ClientState, ServerSession, Stale};
use super::faults::Fault;
use super::world::{key_text, Event, World, TICK};

impl World {
    /// The session ends at the server (closed or expired): its ephemeral
    /// nodes go, and the watches that fires are sent.
    pub(super) fn end_server_session(&mut self, server_session: i64) {
        if !self.server_up {
            let later = Duration::from_millis(100);
            return self.schedule(later, Event::CloseArrive { server_session });
        }
        if self.sessions.remove(&server_session).is_none() {
            return;
        }
        let mut fired = Vec::new();
        self.tree.end_session(server_session, &mut fired);
        self.dispatch(fired);
    }

    pub(super) fn server_session_alive(&self, key: ClientKey) -> bool {
        let server = self.clients.get(&key).and_then(|c| c.server);
        server.is_some_and(|s| self.sessions.contains_key(&s))
    }

    /// Whether the leader hears from the session now (requests or pings).
    fn heard_now(&self, session: &ServerSession) -> bool {
        self.clients
            .get(&session.client)
            .is_some_and(|c| c.state == ClientState::Connected)
            && self.reachable(session.client.0)
    }

    /// Sessions the leader hears from are refreshed.
    pub(super) fn touch_sessions(&mut self) {
        let now = self.now;
        let heard: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| self.heard_now(s))
            .map(|(id, _)| *id)
            .collect();
        for id in heard {
            self.sessions.get_mut(&id).expect("listed").heard = now;
        }
    }

    /// When the next silent session expires (none while the server is down).
    pub(super) fn next_expiry(&self) -> Option<Duration> {
        if !self.server_up {
            return None;
        }
        self.sessions
            .values()
            .filter(|s| !self.heard_now(s))
            .map(|s| s.heard + s.timeout)
            .min()
    }

    pub(super) fn expire_due(&mut self) {
        let now = self.now;
        let due: Vec<(i64, ClientKey)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.heard + s.timeout <= now && !self.heard_now(s))
            .map(|(id, s)| (*id, s.client))
            .collect();
        for (id, key) in due {
            self.note(|| format!("EXPIRE session {id:#x} of {}", key_text(key)));
            self.stats.expiries += 1;
            self.end_server_session(id);
            // The server closes the connection; a partitioned or stale
            // client only learns of it later.
            if !self.members[key.0].partitioned && !self.is_stale(key.0) {
                self.drop_connection(key);
            }
        }
    }

    /// An administrator deletes `path` and all below it, at the leader.
    pub(super) fn delete_by_hand(&mut self, path: &str) {
        if !self.server_up {
            return;
        }
        let mut fired = Vec::new();
        self.tree.delete_all(path, &mut fired);
        self.dispatch(fired);
    }

    pub(super) fn stale_follower(&mut self, member: usize, length: Duration) {
        if self.stale.is_some() || !self.server_up || self.members[member].partitioned {
            return;
        }
        self.stale = Some(Stale {
            member,
            snapshot: self.tree.clone(),
            waiting: BTreeSet::new(),
        });
        // The leader learns of a follower's touches from its ping replies,
        // every half tick: those of the last half tick before the cut are
        // lost. It last heard of the member's sessions at their last request
        // older than that (pings of an idle client are not modelled), or at
        // their last reconnect.
        let seen_by = self.now.saturating_sub(TICK / 2);
        for s in self.sessions.values_mut().filter(|s| s.client.0 == member) {
            let last = s.requests.iter().rev().find(|&&t| t <= seen_by);
            let heard = last.copied().unwrap_or(seen_by).max(s.revalidated);
            s.heard = heard.min(s.heard);
        }
        let serving = self.stale_length.min(length);
        let rest = length - serving;
        self.schedule(serving, Event::Fault(Fault::StaleEnd { rest }));
    }

    /// The follower gives up and drops its clients; they reach no server
    /// for `rest`, then reconnect to the leader, which may have expired
    /// their sessions.
    pub(super) fn stale_end(&mut self, rest: Duration) {
        let Some(stale) = self.stale.take() else {
            return;
        };
        let member = stale.member;
        if !rest.is_zero() && !self.members[member].partitioned {
            self.members[member].partitioned = true;
            self.schedule(rest, Event::Fault(Fault::Heal { member }));
        }
        for key in self.connected_clients(member) {
            self.drop_connection(key);
        }
    }
}
