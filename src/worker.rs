//! The election thread: the only caller of the ZooKeeper client.
//!
//! It keeps one session with one member node and one child watch, renews the
//! master lease, and publishes every change of role. When the session is in
//! doubt (a lost connection, a missed deadline) it does not wait to learn
//! whether the session survived: it steps down at once, deletes its old node
//! from a new session and joins again at the back of the queue, as Curator's
//! LeaderLatch does on reconnect.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::callbacks::Dispatch;
use crate::client::{Access, CallError, Client, Notice, NoticeSink};
use crate::config::{Config, Ensemble};
use crate::error::{Error, Result};
use crate::handshake;
use crate::member::{in_election_order, Member};
use crate::role::{Role, RoleChange};
use crate::state::{Shared, Status};

/// What reaches the election thread.
pub(crate) enum Input {
    Notice(Notice),
    Requeue(SyncSender<Result<()>>),
    Resign(SyncSender<()>),
}

/// First wait before trying a new session again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a single host's handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(2);

/// This member's node in the current session.
struct Own {
    path: String,
    name: String,
    /// The session that owns it.
    owner: i64,
    czxid: i64,
}

pub(crate) struct Worker {
    config: Config,
    ensemble: Ensemble,
    shared: Arc<Shared>,
    inputs: Receiver<Input>,
    sink: NoticeSink,
    dispatch: Sender<Dispatch>,
    client: Option<Client>,
    generation: u64,
    /// The session timeout the lease is counted against.
    timeout: Duration,
    margin: Duration,
    own: Option<Own>,
    /// Member nodes of sessions we abandoned, to delete from the next one.
    orphans: Vec<String>,
    /// Member names in election order, and each child's data (`None`: a
    /// persistent node, which is never a member).
    order: Vec<String>,
    data: HashMap<String, Option<Vec<u8>>>,
    access: Arc<Access>,
    /// The children must be read again (a watch fired or we changed them).
    stale: bool,
    /// `order` or `own` changed since the last publish.
    dirty: bool,
    lease_until: Option<Instant>,
    next_renewal: Instant,
    next_attempt: Instant,
    backoff: Duration,
    role: Role,
    resigned: bool,
    rng: u64,
}

impl Worker {
    pub(crate) fn new(
        config: Config,
        ensemble: Ensemble,
        shared: Arc<Shared>,
        inputs: Receiver<Input>,
        sink: NoticeSink,
        dispatch: Sender<Dispatch>,
    ) -> Worker {
        let now = Instant::now();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let access = Arc::new(Access {
            credentials: config.credentials.as_ref().map(|c| c.0.clone()),
            readable_by_anyone: config.readable_by_anyone,
        });
        Worker {
            access,
            timeout: config.session_timeout,
            margin: config.session_timeout / 5,
            config,
            ensemble,
            shared,
            inputs,
            sink,
            dispatch,
            client: None,
            generation: 0,
            own: None,
            orphans: Vec::new(),
            order: Vec::new(),
            data: HashMap::new(),
            stale: false,
            dirty: false,
            lease_until: None,
            next_renewal: now,
            next_attempt: now,
            backoff: FIRST_BACKOFF,
            role: Role::Offline,
            resigned: false,
            rng: seed | 1,
        }
    }

    /// Joins within the connect timeout, reports the outcome on `joined`, then
    /// runs the election until resigned.
    pub(crate) fn run(mut self, joined: SyncSender<Result<()>>) {
        let deadline = Instant::now() + self.config.connect_timeout;
        loop {
            match self.establish(deadline) {
                Ok(()) => break,
                Err(e @ Error::Unreachable { .. }) if Instant::now() + self.backoff < deadline => {
                    log::debug!("join: {e}; trying again in {:?}", self.backoff);
                    thread::sleep(self.next_backoff());
                }
                Err(e) => {
                    self.stop();
                    let _ = joined.send(Err(e));
                    return;
                }
            }
        }
        self.sync_role();
        let _ = joined.send(Ok(()));
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(wait) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            };
            // Take everything already queued, so a burst of watch events costs one read.
            let queued: Vec<Input> = self.inputs.try_iter().collect();
            for input in first.into_iter().chain(queued) {
                match input {
                    Input::Notice(Notice::Changed(g)) if g == self.generation => self.stale = true,
                    Input::Notice(Notice::Disconnected(g))
                        if g == self.generation && self.client.is_some() =>
                    {
                        self.lose_client("the connection to ZooKeeper was lost")
                    }
                    Input::Notice(_) => {}
                    Input::Requeue(reply) => {
                        let _ = reply.send(self.requeue());
                    }
                    Input::Resign(reply) => {
                        self.stop();
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            self.step();
            self.sync_role();
        }
    }

    /// When the loop must next act without an input.
    fn next_wake(&self) -> Instant {
        if self.client.is_none() {
            return self.next_attempt;
        }
        if self.stale {
            return Instant::now();
        }
        match self.lease_until {
            Some(end) if self.role == Role::Master => end.min(self.next_renewal),
            _ => self.next_renewal,
        }
    }

    /// Does what is due: a new session, a fresh read of the children, a lease renewal.
    fn step(&mut self) {
        let now = Instant::now();
        if self.client.is_none() {
            if now >= self.next_attempt {
                match self.establish(now + self.config.connect_timeout) {
                    Ok(()) => {
                        log::info!("rejoined as {}", self.own.as_ref().map_or("?", |o| &o.name))
                    }
                    Err(e) => {
                        let wait = self.next_backoff();
                        log::warn!("rejoin failed: {e}; next try in {wait:?}");
                        self.next_attempt = Instant::now() + wait;
                    }
                }
            }
            return;
        }
        if self.own.is_none() {
            if let Err(e) = self.register(self.call_deadline()) {
                self.lose_client(e);
                return;
            }
        }
        if self.stale {
            self.refresh();
        }
        if self.client.is_some() && Instant::now() >= self.next_renewal {
            self.renew();
        }
    }

    /// A new session: find a server that answers, connect, make sure the group
    /// exists, delete what abandoned sessions left, register, read the group.
    fn establish(&mut self, deadline: Instant) -> Result<()> {
        let (hosts, granted) = self.find_server(deadline)?;
        self.set_timeout(granted);
        self.generation += 1;
        let connect = format!("{}{}", hosts.join(","), self.ensemble.chroot);
        let client = Client::start(
            &connect,
            self.config.session_timeout,
            self.generation,
            self.sink.clone(),
            self.access.clone(),
            deadline,
        )
        .map_err(|e| self.error("connect", &connect, e))?;
        let authenticated = client.authenticate(deadline);
        self.client = Some(client);
        let joined = authenticated
            .map_err(|e| self.error("add_auth", "/", e))
            .and_then(|()| self.ensure_group(deadline))
            .and_then(|()| self.delete_orphans(deadline))
            .and_then(|()| self.register(deadline));
        if let Err(e) = joined {
            self.lose_client(&e);
            return Err(e);
        }
        self.refresh();
        if self.client.is_none() {
            return Err(self.error(
                "get_children",
                &self.config.group,
                CallError::Lost("lost while reading the group".into()),
            ));
        }
        self.backoff = FIRST_BACKOFF;
        self.next_renewal = Instant::now() + self.timeout / 4;
        Ok(())
    }

    /// The first host, in random order, whose handshake succeeds, listed first
    /// (the crate tries hosts in order), and the session timeout it grants.
    fn find_server(&mut self, deadline: Instant) -> Result<(Vec<String>, Duration)> {
        let mut hosts = self.ensemble.hosts.clone();
        for i in (1..hosts.len()).rev() {
            let j = (self.random() % (i as u64 + 1)) as usize;
            hosts.swap(i, j);
        }
        let mut last = String::from("no host tried");
        for i in 0..hosts.len() {
            let host_deadline = deadline.min(Instant::now() + HANDSHAKE_LIMIT);
            match handshake::granted_timeout(&hosts[i], self.config.session_timeout, host_deadline)
            {
                Ok(granted) => {
                    hosts.swap(0, i);
                    return Ok((hosts, granted));
                }
                Err(e) => last = format!("{}: {e}", hosts[i]),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(Error::Unreachable {
            connect: self.config.connect.clone(),
            waited: self.config.connect_timeout,
            last,
        })
    }

    /// Counts the lease against the smaller of the asked and the granted
    /// timeout, and warns when the server changed it.
    fn set_timeout(&mut self, granted: Duration) {
        let asked = self.config.session_timeout;
        if granted != asked {
            log::warn!("asked for a {asked:?} session, the server granted {granted:?}");
        }
        self.timeout = granted.min(asked);
        self.margin = match self.config.lease_margin {
            Some(m) if m < self.timeout => m,
            Some(m) => {
                log::warn!("lease margin {m:?} is not below the granted timeout {granted:?}: using a fifth of it");
                self.timeout / 5
            }
            None => self.timeout / 5,
        };
        self.shared.status.lock().session_timeout = Some(granted);
    }

    fn ensure_group(&self, deadline: Instant) -> Result<()> {
        let client = self.live_client()?;
        let group = self.config.group.clone();
        match client.stat(&group, deadline) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(self.error("exists", &group, e)),
        }
        let mut path = String::new();
        for segment in group.split('/').skip(1) {
            path.push('/');
            path.push_str(segment);
            client
                .ensure_persistent(&path, deadline)
                .map_err(|e| self.error("create", &path, e))?;
        }
        Ok(())
    }

    fn delete_orphans(&mut self, deadline: Instant) -> Result<()> {
        let client = self.live_client()?;
        while let Some(path) = self.orphans.last().cloned() {
            match client.delete(&path, deadline) {
                Ok(()) => log::info!("deleted {path}, left by an earlier session"),
                Err(CallError::NoNode) => {}
                Err(e) => return Err(self.error("delete", &path, e)),
            }
            self.orphans.pop();
        }
        Ok(())
    }

    /// Creates this member's node and learns its owner (our session id).
    fn register(&mut self, deadline: Instant) -> Result<()> {
        let client = self.live_client()?;
        let prefix_path = format!("{}/{}", self.config.group, self.config.prefix);
        let mut created = client.create_member(&prefix_path, self.config.data.clone(), deadline);
        if created == Err(CallError::NoNode) {
            log::warn!("group {} is gone: creating it again", self.config.group);
            self.ensure_group(deadline)?;
            created = client.create_member(&prefix_path, self.config.data.clone(), deadline);
        }
        let path = created.map_err(|e| self.error("create", &prefix_path, e))?;
        let sent = Instant::now();
        let stat = match client.stat(&path, deadline) {
            Ok(Some(stat)) => stat,
            Ok(None) => return Err(self.error("exists", &path, CallError::NoNode)),
            Err(e) => {
                self.orphans.push(path.clone());
                return Err(self.error("exists", &path, e));
            }
        };
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        log::debug!("registered {path} (session {:#x})", stat.owner);
        self.own = Some(Own {
            path,
            name,
            owner: stat.owner,
            czxid: stat.czxid,
        });
        self.extend_lease(sent);
        self.stale = true;
        self.dirty = true;
        Ok(())
    }

    /// Reads the children (re-arming the watch), the data of new members, and
    /// rejoins if our node is gone.
    fn refresh(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let deadline = self.call_deadline();
        let sent = Instant::now();
        let children = match client.children_watched(&self.config.group, deadline) {
            Ok(children) => children,
            Err(CallError::NoNode) => {
                log::warn!("group {} was deleted: joining again", self.config.group);
                self.own = None;
                self.rejoin(deadline);
                return;
            }
            Err(e) => return self.lose_client(self.error("get_children", &self.config.group, e)),
        };
        self.stale = false;
        let mut order = in_election_order(children);
        if let Some(own) = &self.own {
            if !order.contains(&own.name) {
                log::warn!(
                    "member node {} was deleted by someone else: joining again",
                    own.path
                );
                self.own = None;
                self.rejoin(deadline);
                return;
            }
            if client.is_healthy() {
                self.extend_lease(sent);
            }
        }
        let present: HashSet<&String> = order.iter().collect();
        self.data.retain(|name, _| present.contains(name));
        let mut gone = HashSet::new();
        for name in &order {
            if self.data.contains_key(name) {
                continue;
            }
            let path = format!("{}/{}", self.config.group, name);
            match client.data(&path, deadline) {
                Ok((data, owner)) => {
                    if owner == 0 {
                        log::warn!("{path} is a persistent node: not counted as a member");
                    }
                    self.data.insert(name.clone(), (owner != 0).then_some(data));
                }
                Err(CallError::NoNode) => {
                    gone.insert(name.clone());
                }
                Err(e) => return self.lose_client(self.error("get_data", &path, e)),
            }
        }
        order.retain(|name| {
            !gone.contains(name) && self.data.get(name).is_some_and(Option::is_some)
        });
        self.order = order;
        self.dirty = true;
    }

    fn rejoin(&mut self, deadline: Instant) {
        if let Err(e) = self.register(deadline) {
            self.lose_client(e);
        }
    }

    /// Confirms that our node still exists in our session, which renews the lease.
    fn renew(&mut self) {
        let sent = Instant::now();
        self.next_renewal = sent + self.timeout / 4;
        let (Some(client), Some((path, owner))) = (
            self.client.clone(),
            self.own.as_ref().map(|o| (o.path.clone(), o.owner)),
        ) else {
            return;
        };
        match client.stat(&path, self.call_deadline()) {
            Ok(Some(stat)) if stat.owner == owner && client.is_healthy() => self.extend_lease(sent),
            Ok(_) => {
                log::warn!("member node {path} was deleted by someone else: joining again");
                self.own = None;
                self.rejoin(self.call_deadline());
            }
            Err(e) => self.lose_client(self.error("exists", &path, e)),
        }
    }

    /// A read sent at `sent` showed our node alive in our session: the server
    /// cannot expire the session before `sent + timeout`.
    fn extend_lease(&mut self, sent: Instant) {
        let end = sent + self.timeout - self.margin;
        if self.lease_until.is_none_or(|current| end > current) {
            self.lease_until = Some(end);
            if self.role == Role::Master {
                self.shared.set_lease(self.lease_until);
            }
        }
    }

    /// Steps down and drops the session; the next step opens a new one.
    fn lose_client(&mut self, why: impl Display) {
        if self.client.take().is_some() {
            log::warn!("{why}: stepping down and joining again with a new session");
        }
        if let Some(own) = self.own.take() {
            self.orphans.push(own.path);
        }
        self.lease_until = None;
        self.order.clear();
        self.data.clear();
        self.stale = false;
        self.dirty = true;
        self.next_attempt = Instant::now() + self.next_backoff();
    }

    /// Deletes our node and joins again at the back, in the same session.
    fn requeue(&mut self) -> Result<()> {
        let deadline = self.call_deadline();
        if let (Some(client), Some(own)) = (self.client.clone(), self.own.take()) {
            self.lease_until = None;
            self.dirty = true;
            self.sync_role();
            match client.delete(&own.path, deadline) {
                Ok(()) | Err(CallError::NoNode) => {}
                Err(e) => {
                    let e = self.error("delete", &own.path, e);
                    self.lose_client(&e);
                    return Err(e);
                }
            }
        }
        if self.client.is_some() {
            if let Err(e) = self.register(deadline) {
                self.lose_client(&e);
                return Err(e);
            }
            self.refresh();
        }
        Ok(())
    }

    /// Steps down, deletes our node so a successor takes over at once, and
    /// closes the session.
    fn stop(&mut self) {
        self.resigned = true;
        self.lease_until = None;
        let own = self.own.take();
        self.dirty = true;
        self.sync_role();
        if let Some(client) = self.client.take() {
            let deadline = Instant::now() + (self.timeout / 2).min(Duration::from_secs(2));
            for path in own.iter().map(|o| &o.path).chain(&self.orphans) {
                match client.delete(path, deadline) {
                    Ok(()) | Err(CallError::NoNode) => {}
                    Err(e) => {
                        log::warn!("could not delete {path} ({e:?}); it goes when the session ends")
                    }
                }
            }
            client.close(deadline);
        }
    }

    /// The role our node and lease give us now.
    fn desired_role(&self) -> Role {
        let Some(own) = &self.own else {
            return Role::Offline;
        };
        let Some(rank) = self.order.iter().position(|n| *n == own.name) else {
            return Role::Offline;
        };
        if rank >= self.config.masters {
            Role::Slave
        } else if self.lease_until.is_some_and(|end| Instant::now() < end) {
            Role::Master
        } else {
            Role::Offline
        }
    }

    /// Publishes the role and the group if either changed, and queues the
    /// change for the callbacks.
    fn sync_role(&mut self) {
        let role = if self.resigned {
            Role::Offline
        } else {
            self.desired_role()
        };
        if role == self.role && !self.dirty {
            return;
        }
        let member = |name: &String| {
            Member::parse(
                name,
                self.data.get(name).cloned().flatten().unwrap_or_default(),
            )
        };
        let members: Vec<Member> = self.order.iter().filter_map(member).collect();
        let masters: Vec<Member> = members.iter().take(self.config.masters).cloned().collect();
        let own_name = self.own.as_ref().map(|o| o.name.clone());
        let status = Status {
            role,
            member: own_name.clone(),
            members,
            masters: masters.clone(),
            token: self
                .own
                .as_ref()
                .filter(|_| role == Role::Master)
                .map(|o| o.czxid as u64),
            resigned: self.resigned,
            session_timeout: self.shared.status.lock().session_timeout,
        };
        let old = self.shared.publish(status, self.lease_until);
        self.role = role;
        self.dirty = false;
        if old != role {
            log::debug!("role {old} -> {role}");
            let _ = self.dispatch.send(Dispatch::Change(RoleChange {
                old,
                new: role,
                member: own_name,
                masters,
            }));
        }
    }

    fn live_client(&self) -> Result<Client> {
        self.client
            .clone()
            .ok_or_else(|| self.error("call", "", CallError::Lost("no session".into())))
    }

    fn call_deadline(&self) -> Instant {
        Instant::now() + self.timeout / 2
    }

    fn next_backoff(&mut self) -> Duration {
        let base = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        // Up to a quarter more, so members that lost the same server spread out.
        base + base.mul_f64((self.random() % 1000) as f64 / 4000.0)
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn error(&self, op: &'static str, path: &str, e: CallError) -> Error {
        match e {
            CallError::Lost(reason) => Error::Unreachable {
                connect: self.config.connect.clone(),
                waited: self.config.connect_timeout,
                last: format!("{op} {path}: {reason}"),
            },
            CallError::NoNode => Error::Server {
                op,
                path: path.to_owned(),
                reason: "no such node".into(),
            },
            CallError::NodeExists => Error::Server {
                op,
                path: path.to_owned(),
                reason: "node exists".into(),
            },
            CallError::Denied(reason) => Error::AccessDenied {
                op,
                path: path.to_owned(),
                reason,
            },
            CallError::Refused(reason) => Error::Server {
                op,
                path: path.to_owned(),
                reason,
            },
        }
    }
}
