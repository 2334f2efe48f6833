//! The backend glue: the core's commands become operations on the model,
//! and the model's answers, watches and connection changes become inputs.
//! Also the server side of sessions: connections, expiry and closing.

use std::collections::BTreeSet;
use std::time::Duration;

use super::faults::Fault;
use super::model::{Fired, Tree};
use super::world::{key_text, Event, World, TICK};
use crate::core::{Conn, Failure, Input, Op, Purpose, RequestId, SessionId, WatchKind};

/// A member's session, as the member numbered it.
pub(super) type ClientKey = (usize, SessionId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientState {
    Opening,
    Connected,
    Disconnected,
    Closed,
}

/// The client side of one session: what the member's backend knows.
#[derive(Debug)]
pub(super) struct Client {
    purpose: Purpose,
    asked: Duration,
    pub(super) state: ClientState,
    pub(super) server: Option<i64>,
    granted: Duration,
    conn: Conn,
    /// Requests sent on the current connection and not yet answered.
    inflight: BTreeSet<RequestId>,
    /// Requests of a dropped connection that were neither failed nor
    /// answered: a reply already on its way may still arrive, via `None`.
    dropped: BTreeSet<RequestId>,
    /// Watches that fired while disconnected: told after the reconnect.
    missed_watches: Vec<(String, WatchKind)>,
    /// Messages of a session travel in order.
    last_delivery: Duration,
    last_arrival: Duration,
}

/// The server side of a session.
#[derive(Debug)]
pub(super) struct ServerSession {
    pub(super) timeout: Duration,
    /// When the server last heard from it; it expires `timeout` later.
    pub(super) heard: Duration,
    /// When its latest requests reached the server, newest last (a few).
    pub(super) requests: Vec<Duration>,
    /// When it last (re)connected: a follower revalidates the session with
    /// the leader then, which the leader hears of at once.
    pub(super) revalidated: Duration,
    pub(super) client: ClientKey,
}

impl ServerSession {
    pub(super) fn client(&self) -> ClientKey {
        self.client
    }
}

/// A follower cut off from the leader that still serves `member`.
#[derive(Debug)]
pub(super) struct Stale {
    pub(super) member: usize,
    pub(super) snapshot: Tree,
    /// Clients that sent a `sync`: it waits for the leader, and the
    /// follower answers a session's requests in order, so nothing after it
    /// is answered either.
    pub(super) waiting: BTreeSet<ClientKey>,
}

impl World {
    pub(super) fn open(
        &mut self,
        member: usize,
        session: SessionId,
        purpose: Purpose,
        asked: Duration,
    ) {
        let client = Client {
            purpose,
            asked,
            state: ClientState::Opening,
            server: None,
            granted: asked,
            conn: 0,
            inflight: BTreeSet::new(),
            dropped: BTreeSet::new(),
            missed_watches: Vec::new(),
            last_delivery: self.now,
            last_arrival: self.now,
        };
        self.clients.insert((member, session), client);
        let delay = self.delay();
        self.schedule(
            delay,
            Event::OpenArrive {
                key: (member, session),
            },
        );
    }

    /// Whether the member's backend can reach the server now.
    pub(super) fn reachable(&self, member: usize) -> bool {
        let m = &self.members[member];
        self.server_up && !m.partitioned && !m.frozen && !self.is_stale(member)
    }

    pub(super) fn is_stale(&self, member: usize) -> bool {
        self.stale.as_ref().is_some_and(|s| s.member == member)
    }

    pub(super) fn open_arrive(&mut self, key: (usize, SessionId)) {
        let Some(client) = self.clients.get(&key) else {
            return;
        };
        if client.state != ClientState::Opening {
            return;
        }
        if !self.reachable(key.0) {
            let retry = self
                .rng
                .between(Duration::from_millis(100), Duration::from_millis(400));
            return self.schedule(retry, Event::OpenArrive { key });
        }
        let granted = client.asked.clamp(TICK * 2, TICK * 20);
        let id = self.next_server_session;
        self.next_server_session += 1;
        self.sessions.insert(
            id,
            ServerSession {
                timeout: granted,
                heard: self.now,
                requests: Vec::new(),
                revalidated: self.now,
                client: key,
            },
        );
        let client = self.clients.get_mut(&key).expect("checked");
        client.server = Some(id);
        client.granted = granted;
        self.connect(key);
    }

    /// A new connection of the session: the backend says Connected, then
    /// the watches it missed fire.
    fn connect(&mut self, key: ClientKey) {
        let now = self.now;
        let client = self.clients.get_mut(&key).expect("known client");
        client.conn += 1;
        client.state = ClientState::Connected;
        if let Some(session) = client.server.and_then(|s| self.sessions.get_mut(&s)) {
            session.revalidated = now;
        }
        let client = self.clients.get_mut(&key).expect("known client");
        let input = Input::Connected {
            session: key.1,
            conn: client.conn,
            server_session: client.server.expect("a server session"),
            granted: client.granted,
        };
        self.deliver_later(key, input);
        self.flush_missed_watches(key);
    }

    /// Tells the watches that fired while the member could not hear.
    pub(super) fn flush_missed_watches(&mut self, key: ClientKey) {
        let client = self.clients.get_mut(&key).expect("known client");
        let missed = std::mem::take(&mut client.missed_watches);
        for (path, kind) in missed {
            let input = Input::Watch {
                session: key.1,
                path,
                kind,
            };
            self.deliver_later(key, input);
        }
    }

    /// Schedules `input` for the member after a travel time, in order with
    /// everything else of that session.
    fn deliver_later(&mut self, key: ClientKey, input: Input) {
        let delay = self.delay();
        let now = self.now;
        let client = self.clients.get_mut(&key).expect("known client");
        let at = (now + delay).max(client.last_delivery);
        client.last_delivery = at;
        self.schedule_at(
            at,
            Event::Deliver {
                member: key.0,
                input,
            },
        );
    }

    pub(super) fn deliver(&mut self, member: usize, mut input: Input) {
        if let Input::Reply {
            session,
            request,
            via,
            ..
        } = &mut input
        {
            let late = self.rng.chance(self.mix.late_reply);
            let Some(client) = self.clients.get_mut(&(member, *session)) else {
                return;
            };
            if !client.inflight.remove(request) {
                // Its connection dropped meanwhile: it was failed then, or
                // is lost, or arrives late on no connection.
                if !(client.dropped.remove(request) && late) {
                    return;
                }
                *via = None;
            }
        }
        self.feed(member, input);
    }

    pub(super) fn send(&mut self, member: usize, session: SessionId, request: RequestId, op: Op) {
        let key = (member, session);
        let (connected, conn) = match self.clients.get(&key) {
            Some(c) => (c.state == ClientState::Connected, c.conn),
            None => (false, 0),
        };
        if !connected {
            // Fails at once, but after what the backend already told.
            let input = Input::Reply {
                session,
                request,
                via: None,
                result: Err(Failure::Interrupted("not connected".into())),
            };
            if let Some(client) = self.clients.get_mut(&key) {
                client.inflight.insert(request);
                return self.deliver_later(key, input);
            }
            let delay = Duration::from_micros(100);
            return self.schedule(delay, Event::Deliver { member, input });
        }
        let delay = if self.mix.slow_replies_only {
            self.fast_delay()
        } else {
            self.delay()
        };
        let now = self.now;
        let partitioned = self.members[member].partitioned;
        let client = self.clients.get_mut(&key).expect("checked");
        client.inflight.insert(request);
        if partitioned {
            return; // lost on the way; the connection fails it when it drops
        }
        let at = (now + delay).max(client.last_arrival);
        client.last_arrival = at;
        let event = Event::Arrive {
            key,
            conn,
            request,
            op,
        };
        self.schedule_at(at, event);
    }

    pub(super) fn arrive(&mut self, key: ClientKey, conn: Conn, request: RequestId, op: Op) {
        let Some(client) = self.clients.get(&key) else {
            return;
        };
        if client.state != ClientState::Connected || client.conn != conn || !self.server_up {
            return; // the connection died with the request in it
        }
        let server = client.server.expect("connected");
        if self.members[key.0].partitioned {
            return;
        }
        let result = if let Some(stale) = self.stale.as_mut().filter(|s| s.member == key.0) {
            if !Tree::is_read(&op) || stale.waiting.contains(&key) {
                // A write or a sync waits for a leader that never answers,
                // and so does everything after it on the same session.
                stale.waiting.insert(key);
                return;
            }
            stale.snapshot.read(&op)
        } else {
            let now = self.now;
            if let Some(session) = self.sessions.get_mut(&server) {
                session.requests.push(now);
                let excess = session.requests.len().saturating_sub(32);
                session.requests.drain(..excess);
            }
            if !self.sessions.contains_key(&server) {
                return self.drop_connection(key);
            }
            let mut fired = Vec::new();
            let result = self.tree.apply(server, &op, &mut fired);
            self.dispatch(fired);
            result
        };
        if !self.calm && self.rng.chance(self.mix.lost_reply) {
            self.note(|| format!("  reply to {request:?} of {} lost", key_text(key)));
            return;
        }
        let renewal = matches!(op, Op::Exists { watch: false, .. });
        let input = Input::Reply {
            session: key.1,
            request,
            via: Some(conn),
            result,
        };
        self.deliver_later(key, input);
        if renewal
            && !self.calm
            && self.is_master(key.0)
            && self.rng.chance(self.mix.cut_after_renewal)
        {
            // The link dies just behind the answer to a master's renewal.
            let t = self.session_timeout;
            let length = self.rng.between(t, t * 2);
            self.apply_fault(Fault::Partition {
                member: key.0,
                length,
            });
        }
    }

    /// Tells the watching sessions, or keeps the news for their reconnect.
    pub(super) fn dispatch(&mut self, fired: Vec<Fired>) {
        for f in fired {
            let Some(key) = self.sessions.get(&f.session).map(|s| s.client) else {
                continue;
            };
            // A frozen member's connection still carries it (into its backlog).
            let heard = !self.members[key.0].partitioned && !self.is_stale(key.0);
            let Some(client) = self.clients.get_mut(&key) else {
                continue;
            };
            match client.state {
                ClientState::Connected if heard => {
                    let input = Input::Watch {
                        session: key.1,
                        path: f.path,
                        kind: f.kind,
                    };
                    self.deliver_later(key, input);
                }
                ClientState::Closed => {}
                _ => client.missed_watches.push((f.path, f.kind)),
            }
        }
    }

    /// The connection drops: in-flight requests fail or are lost, the
    /// backend says Disconnected and tries to reconnect (or gives a watcher
    /// session up).
    pub(super) fn drop_connection(&mut self, key: ClientKey) {
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        if client.state != ClientState::Connected {
            return;
        }
        client.state = ClientState::Disconnected;
        let inflight = std::mem::take(&mut client.inflight);
        let purpose = client.purpose;
        for request in inflight {
            if self.rng.chance(self.mix.interrupt) {
                let input = Input::Reply {
                    session: key.1,
                    request,
                    via: None,
                    result: Err(Failure::Interrupted("connection loss".into())),
                };
                self.deliver_later(key, input);
            } else if let Some(client) = self.clients.get_mut(&key) {
                client.dropped.insert(request);
            }
        }
        if purpose == Purpose::Watcher && self.rng.chance(self.mix.watcher_gives_up) {
            return self.give_up(key, "the backend gave the watcher up");
        }
        self.deliver_later(key, Input::Disconnected { session: key.1 });
        let retry = self
            .rng
            .between(Duration::from_millis(50), Duration::from_millis(600));
        self.schedule(retry, Event::Reconnect { key });
    }

    /// The backend reports the session lost and closes it.
    fn give_up(&mut self, key: ClientKey, why: &str) {
        let client = self.clients.get_mut(&key).expect("known client");
        client.state = ClientState::Closed;
        let server = client.server;
        let input = Input::Lost {
            session: key.1,
            why: why.into(),
        };
        self.deliver_later(key, input);
        if let Some(server_session) = server {
            self.send_close(key.0, server_session);
        }
    }

    pub(super) fn reconnect(&mut self, key: ClientKey) {
        let Some(client) = self.clients.get(&key) else {
            return;
        };
        if client.state != ClientState::Disconnected {
            return;
        }
        if !self.reachable(key.0) {
            let retry = self
                .rng
                .between(Duration::from_millis(100), Duration::from_millis(400));
            return self.schedule(retry, Event::Reconnect { key });
        }
        if self.server_session_alive(key) {
            self.connect(key);
        } else {
            self.give_up(key, "session expired");
        }
    }

    pub(super) fn close(&mut self, key: ClientKey) {
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        let was_closed = client.state == ClientState::Closed;
        client.state = ClientState::Closed;
        client.inflight.clear();
        if let (false, Some(server_session)) = (was_closed, client.server) {
            self.send_close(key.0, server_session);
        }
    }

    pub(super) fn send_close(&mut self, member: usize, server_session: i64) {
        if self.members[member].partitioned || self.is_stale(member) {
            return; // never arrives: the session expires instead
        }
        let delay = self.delay();
        self.schedule(delay, Event::CloseArrive { server_session });
    }

    pub(super) fn connected_clients(&self, member: usize) -> Vec<ClientKey> {
        self.clients
            .iter()
            .filter(|(k, c)| k.0 == member && c.state == ClientState::Connected)
            .map(|(k, _)| *k)
            .collect()
    }

    pub(super) fn all_connected_clients(&self) -> Vec<ClientKey> {
        (0..self.members.len())
            .flat_map(|m| self.connected_clients(m))
            .collect()
    }
}
