//! The backend for the `zookeeper` 0.8 crate, and everything that crate gets
//! wrong, contained: see `DEFECTS.md` beside this file for what was measured.
//!
//! - Its calls wait for their reply with no timeout: each session's calls
//!   run on a thread of ours ([`client`]) and answer as inputs; the core cuts
//!   a connection whose call misses its deadline.
//! - It spins on refused connections, tries hosts in order, hides the
//!   session id and granted timeout, and silently opens a new session after
//!   an expiry: it talks to the servers through a [`relay`] of ours.
//! - It restores neither credentials nor watches after a reconnect: the
//!   client resends credentials before it reports the connection, and the
//!   core reads the group again after every connection.
//! - It pings only after 2/3 of the timeout idle and gives up a reconnect
//!   when its last ping is older than the timeout, and it has no `sync`: the
//!   relay sends the renewals (`sync` and `exists`) itself and keeps their
//!   replies from the crate, whose own pings so go on.
//! - It gives up a session on a reconnect once its last ping is older than
//!   the timeout: the relay presents the session's id and password on every
//!   connection, and the client replaces a crate client that gave up with a
//!   fresh one, which so resumes the same session; only a server's refusal
//!   (expired) loses it.
//! - Its calls block one at a time behind two of its threads, and every
//!   reply it sees restarts its ping timer (so traffic of ours on its
//!   connection starved its pings): no request of ours goes through it. The
//!   relay sends them all, takes their replies and the notifications out of
//!   the stream, and the crate keeps the connection and its pings. So one
//!   ZooKeeper session carries both of an election's core sessions, the
//!   member's and the watcher's ([`Shared`]).
//! - It logs a WARN for every connection that ends and an ERROR for every
//!   refused one and for every drop it cannot close: the relay holds the
//!   crate's connection while no server answers (the crate then logs at INFO
//!   only), and a crate client that is not connected is never dropped. The
//!   crate's records go to the application's logger under the target
//!   `zookeeper` (README, "Logging").

mod client;
mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Backend, InputSink};
use crate::config::{Config, Ensemble};
use crate::core::{Input, Op, Purpose, RequestId, SessionId};
use client::{Access, Client, Target};

/// Sessions of the `zookeeper` 0.8 crate.
pub(crate) struct Zk08 {
    ensemble: Ensemble,
    access: Arc<Access>,
    /// The host each new client tries first: random, so members spread out.
    first_host: usize,
    sink: InputSink,
    clients: Vec<Shared>,
    /// Closed, and waiting for the server to confirm.
    closing: Vec<Client>,
}

/// One ZooKeeper session, and the core's sessions it carries.
///
/// A member session always gets a ZooKeeper session of its own: its lease
/// counts from when it was asked for, which an older session would not
/// prove. A watcher session rides on the member's, if there is one: closing
/// the member's closes it (and the watcher is told it is lost), closing the
/// watcher's only detaches it.
struct Shared {
    /// It knows the core's sessions it carries ([`Client::carries`]).
    client: Client,
    member: Option<SessionId>,
    /// Paths the watcher set watches on: removed when it detaches, so that
    /// a resigning member's own deletes wake nobody in its own session.
    watched: Vec<String>,
}

impl Zk08 {
    pub(crate) fn new(config: &Config, ensemble: Ensemble, sink: InputSink) -> Zk08 {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let first_host = (seed % ensemble.hosts.len().max(1) as u64) as usize;
        Zk08 {
            access: Arc::new(Access {
                credentials: config.credentials.as_ref().map(|c| c.0.clone()),
                readable_by_anyone: config.readable_by_anyone,
            }),
            ensemble,
            first_host,
            sink,
            clients: Vec::new(),
            closing: Vec::new(),
        }
    }
}

impl Zk08 {
    /// Where in `clients` the ZooKeeper session that carries `session` is.
    fn carrying(&self, session: SessionId) -> Option<usize> {
        self.clients.iter().position(|s| s.client.carries(session))
    }
}

impl Backend for Zk08 {
    fn open(&mut self, session: SessionId, purpose: Purpose, timeout: Duration) {
        if purpose == Purpose::Watcher {
            if let Some(shared) = self.clients.iter().find(|s| s.member.is_some()) {
                return shared.client.attach(session);
            }
        }
        let target = Target {
            hosts: &self.ensemble.hosts,
            first: self.first_host,
            chroot: &self.ensemble.chroot,
            access: self.access.clone(),
        };
        match Client::start(&target, session, timeout, self.sink.clone()) {
            Ok(client) => self.clients.push(Shared {
                client,
                member: (purpose == Purpose::Member).then_some(session),
                watched: Vec::new(),
            }),
            Err(e) => (self.sink)(Input::Lost {
                session,
                why: format!("cannot start a client: {e}"),
            }),
        }
    }

    fn send(&mut self, session: SessionId, request: RequestId, op: Op) {
        let Some(at) = self.carrying(session) else {
            return;
        };
        let shared = &mut self.clients[at];
        if let Op::Exists { path, watch: true } | Op::Children { path, watch: true } = &op {
            if !shared.watched.contains(path) {
                shared.watched.push(path.clone());
            }
        }
        shared.client.send(session, request, op);
    }

    fn cut(&mut self, session: SessionId) {
        if let Some(at) = self.carrying(session) {
            self.clients[at].client.cut();
        }
    }

    fn close(&mut self, session: SessionId) {
        self.closing.retain_mut(Client::closing);
        let Some(at) = self.carrying(session) else {
            return;
        };
        let shared = &mut self.clients[at];
        let last = shared.client.detach(session);
        if shared.member != Some(session) && !last {
            for path in shared.watched.drain(..) {
                shared.client.unwatch(path);
            }
            return;
        }
        let shared = self.clients.remove(at);
        for other in shared.client.detach_all() {
            (self.sink)(Input::Lost {
                session: other,
                why: "the member session it shared was closed".into(),
            });
        }
        let mut client = shared.client;
        client.close();
        self.closing.push(client);
    }

    fn wait_closed(&mut self, deadline: Instant) {
        for mut client in self.closing.drain(..) {
            client.wait_closed(deadline);
        }
    }
}
