//! The election thread: the only caller of the ZooKeeper clients.
//!
//! It keeps two sessions. The *member* session holds this member's node and
//! sends nothing but what the node needs and a periodic `exists` of it, whose
//! replies renew the master lease; spaced so that the crate's own pings still
//! run, which lets the crate keep the session across a reconnect. The
//! *watcher* session reads the group and carries the watches; it is replaced
//! whenever it fails. A reply renews the lease only if it came on the member
//! session's connection that the request left on.
//!
//! A member may be master only while it also holds a *claim*: an ephemeral
//! node named after its member node in a sibling of the group
//! (`/Roles/workers.claims/worker0000000003`). It deletes the claim only
//! after it has stepped down, and its session's end deletes it too. So a
//! claim whose member node is gone means: that member may still believe it
//! is master (its node was deleted by hand, and it has not noticed yet, or
//! it is frozen). A member about to become master waits while any such claim
//! exists; a resign, a requeue or an expiry leaves none, so they hand over at
//! once.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::callbacks::Dispatch;
use crate::client::{Access, CallError, Client, Notice, NoticeSink};
use crate::config::{Config, Ensemble};
use crate::error::{Error, Result};
use crate::member::{in_election_order, sequence_of, Member};
use crate::role::{Connection, Role, RoleChange};
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

/// This member's node in the current member session.
struct Own {
    path: String,
    name: String,
    /// The session that owns it.
    owner: i64,
    czxid: i64,
    /// Whether the claim for this node exists.
    claimed: bool,
}

pub(crate) struct Worker {
    config: Config,
    ensemble: Ensemble,
    shared: Arc<Shared>,
    inputs: Receiver<Input>,
    sink: NoticeSink,
    dispatch: Sender<Dispatch>,
    access: Arc<Access>,
    /// The session that holds our node.
    member: Option<Client>,
    /// The session that reads and watches the group.
    watcher: Option<Client>,
    generations: u64,
    /// The host each new client tries first: random, so members spread out.
    first_host: usize,
    /// The session timeout the lease is counted against.
    timeout: Duration,
    margin: Duration,
    own: Option<Own>,
    /// The watcher generation and path of the deletion watch on our node
    /// (generations only grow, so a new watcher never matches an old entry).
    own_watched: Option<(u64, String)>,
    /// Nodes of ours that must go: paths, and sessions whose nodes (other
    /// than the current one) are strays.
    stray_paths: Vec<String>,
    stray_owners: Vec<i64>,
    /// Member names in election order, and each child's data (`None`: a
    /// persistent node, which is never a member).
    order: Vec<String>,
    data: HashMap<String, Option<Vec<u8>>>,
    /// The children must be read again (a watch fired or we changed them).
    stale: bool,
    /// Something callers see changed since the last publish.
    dirty: bool,
    /// A claim names a member node that is gone: no promotion until it goes.
    blocked: bool,
    lease_until: Option<Instant>,
    /// Revocations of the lease taken into account so far.
    revocations_seen: u64,
    next_renewal: Instant,
    next_attempt: Instant,
    next_watcher: Instant,
    backoff: Duration,
    connection: Connection,
    connection_since: Instant,
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
        let mut worker = Worker {
            access,
            timeout: config.session_timeout,
            margin: config.session_timeout / 5,
            config,
            ensemble,
            shared,
            inputs,
            sink,
            dispatch,
            member: None,
            watcher: None,
            generations: 0,
            first_host: 0,
            own: None,
            own_watched: None,
            stray_paths: Vec::new(),
            stray_owners: Vec::new(),
            order: Vec::new(),
            data: HashMap::new(),
            stale: false,
            dirty: false,
            blocked: false,
            lease_until: None,
            revocations_seen: 0,
            next_renewal: now,
            next_attempt: now,
            next_watcher: now,
            backoff: FIRST_BACKOFF,
            connection: Connection::Lost,
            connection_since: now,
            role: Role::Offline,
            resigned: false,
            rng: seed | 1,
        };
        worker.first_host = (worker.random() % worker.ensemble.hosts.len().max(1) as u64) as usize;
        worker
    }

    /// Joins within the connect timeout, reports the outcome on `joined`, then
    /// runs the election until resigned.
    pub(crate) fn run(mut self, joined: SyncSender<Result<()>>) {
        if let Err(e) = self.establish(Instant::now() + self.config.connect_timeout) {
            self.stop();
            let _ = joined.send(Err(e));
            return;
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
                    Input::Notice(notice) => self.on_notice(notice),
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

    fn on_notice(&mut self, notice: Notice) {
        let is =
            |client: &Option<Client>, g: u64| client.as_ref().is_some_and(|c| c.generation() == g);
        match notice {
            Notice::Changed(g) if is(&self.watcher, g) => self.stale = true,
            Notice::Deleted(_, path) => {
                // The sink has revoked the lease already; restore it only after
                // a fresh look, and only if the node is still ours.
                self.revocations_seen = self.shared.revocations();
                self.dirty = true;
                self.stale = true;
                // Node names are never reused: whichever watcher saw it, it is gone.
                if self.own.as_ref().is_some_and(|o| o.path == path) {
                    self.step_down_from_deleted_node();
                }
            }
            Notice::Disconnected(g) if is(&self.member, g) => {
                self.set_connection(Connection::Suspended);
            }
            Notice::Reconnected(g) if is(&self.member, g) => self.on_member_reconnected(),
            Notice::Reconnected(g) if is(&self.watcher, g) => {
                // The crate does not restore watches or credentials.
                self.drop_watcher(Instant::now());
            }
            Notice::Dead(g) if is(&self.member, g) => self.lose_session("the session ended"),
            Notice::Dead(g) | Notice::Disconnected(g) if is(&self.watcher, g) => {
                self.drop_watcher(Instant::now());
            }
            _ => {}
        }
    }

    /// Back in the same session: authenticate again (the crate forgets), and
    /// confirm our node before counting on it.
    fn on_member_reconnected(&mut self) {
        let Some(member) = self.member.clone() else {
            return;
        };
        if let Err(e) = member.authenticate(self.call_deadline()) {
            return self.on_member_error(self.error("add_auth", "/", e));
        }
        log::info!("reconnected in the same session");
        self.set_connection(Connection::Connected);
        self.next_renewal = Instant::now();
        self.stale = true;
    }

    /// When the loop must next act without an input.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        if self.member.is_none() {
            return self.next_attempt;
        }
        // The end of a master's lease, to tell the callbacks it lapsed.
        let lease_end = match (self.lease_until, self.role) {
            (Some(end), Role::Master) => end,
            _ => now + self.timeout * 2,
        };
        if self.connection == Connection::Suspended {
            // The crate gives up on its own; this is a bound in case it does not.
            return lease_end.min(self.connection_since + self.timeout * 2);
        }
        let watcher_ready = self.watcher.is_some();
        let unclaimed = self.own.as_ref().is_none_or(|o| !o.claimed);
        if (self.stale && watcher_ready) || unclaimed || !self.stray_paths.is_empty() {
            return now.max(self.next_attempt);
        }
        let mut wake = self.next_renewal.min(lease_end);
        if !watcher_ready {
            wake = wake.min(self.next_watcher);
        }
        wake
    }

    /// Does what is due: a new session, our node, a watcher, a fresh read of
    /// the group, a lease renewal.
    fn step(&mut self) {
        let now = Instant::now();
        let Some(member) = self.member.clone() else {
            if now >= self.next_attempt {
                match self.establish(now + self.config.connect_timeout) {
                    Ok(()) => log::info!(
                        "joined again as {}",
                        self.own.as_ref().map_or("?", |o| &o.name)
                    ),
                    Err(e) => {
                        let wait = self.next_backoff();
                        log::warn!("joining again failed: {e}; next try in {wait:?}");
                        self.next_attempt = Instant::now() + wait;
                    }
                }
            }
            return;
        };
        if !member.is_alive() {
            return self.lose_session("the session ended");
        }
        if self.connection == Connection::Suspended {
            if now >= self.connection_since + self.timeout * 2 {
                self.lose_session("disconnected for two session timeouts");
            }
            return;
        }
        if self.own.is_none() && now >= self.next_attempt {
            if let Err(e) = self.register(self.call_deadline()) {
                return self.on_member_error(e);
            }
        }
        if self.own.as_ref().is_some_and(|o| !o.claimed) && now >= self.next_attempt {
            if let Err(e) = self.claim(&member, self.call_deadline()) {
                return self.on_member_error(e);
            }
        }
        if !self.stray_paths.is_empty() && now >= self.next_attempt {
            self.delete_strays(&member, self.call_deadline());
            if !self.stray_paths.is_empty() {
                self.next_attempt = Instant::now() + self.next_backoff();
            }
        }
        if self.watcher.is_none() && now >= self.next_watcher {
            if let Err(e) = self.start_watcher(self.call_deadline()) {
                let wait = self.next_backoff();
                log::warn!("cannot watch the group: {e}; next try in {wait:?}");
                self.next_watcher = Instant::now() + wait;
            }
        }
        if self.stale && self.watcher.is_some() {
            self.refresh();
        }
        if self.member.is_some() && Instant::now() >= self.next_renewal {
            self.renew();
        }
    }

    /// A new member session: connect, make sure the group exists, delete what
    /// earlier sessions left, register, and start watching.
    fn establish(&mut self, deadline: Instant) -> Result<()> {
        let member = self.start_client(self.config.session_timeout)?;
        self.member = Some(member.clone());
        let joined = member
            .authenticate(deadline)
            .map_err(|e| self.error("add_auth", "/", e))
            .and_then(|()| self.ensure_group(&member, deadline))
            .and_then(|()| {
                let granted = member.granted_timeout().unwrap_or_default();
                self.set_timeout(granted);
                self.register(deadline)
            })
            .and_then(|()| self.start_watcher(deadline));
        if let Err(e) = joined {
            self.lose_session(&e);
            return Err(e);
        }
        self.set_connection(Connection::Connected);
        self.refresh();
        self.backoff = FIRST_BACKOFF;
        self.next_attempt = Instant::now();
        Ok(())
    }

    fn start_client(&mut self, timeout: Duration) -> Result<Client> {
        self.generations += 1;
        Client::start(
            &self.ensemble.hosts,
            self.first_host,
            &self.ensemble.chroot,
            timeout,
            self.generations,
            self.sink.clone(),
            self.access.clone(),
        )
        .map_err(|e| self.error("connect", &self.config.connect, e))
    }

    fn start_watcher(&mut self, deadline: Instant) -> Result<()> {
        let watcher = self.start_client(self.config.session_timeout)?;
        watcher
            .authenticate(deadline)
            .map_err(|e| self.error("add_auth", "/", e))?;
        self.watcher = Some(watcher);
        self.stale = true;
        Ok(())
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

    /// Creates the group path and the claims path, with any missing parent.
    fn ensure_group(&self, client: &Client, deadline: Instant) -> Result<()> {
        for target in [&self.config.group, &self.claims_dir()] {
            match client.stat(target, deadline) {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(self.error("exists", target, e)),
            }
            let mut path = String::new();
            for segment in target.split('/').skip(1) {
                path.push('/');
                path.push_str(segment);
                client
                    .ensure_persistent(&path, deadline)
                    .map_err(|e| self.error("create", &path, e))?;
            }
        }
        Ok(())
    }

    /// Where the claims live: a sibling of the group, so that deleting the
    /// group by hand leaves them.
    fn claims_dir(&self) -> String {
        format!("{}.claims", self.config.group)
    }

    fn claim_path(&self, name: &str) -> String {
        format!("{}/{name}", self.claims_dir())
    }

    /// Creates the claim for our node, which lets it become master.
    fn claim(&mut self, member: &Client, deadline: Instant) -> Result<()> {
        let Some(name) = self.own.as_ref().map(|o| o.name.clone()) else {
            return Ok(());
        };
        let path = self.claim_path(&name);
        let mut claimed = member.ensure_ephemeral(&path, deadline);
        if claimed == Err(CallError::NoNode) {
            self.ensure_group(member, deadline)?;
            claimed = member.ensure_ephemeral(&path, deadline);
        }
        claimed.map_err(|e| self.error("create", &path, e))?;
        if let Some(own) = self.own.as_mut() {
            own.claimed = true;
        }
        self.dirty = true;
        Ok(())
    }

    /// Our node was deleted by someone else: step down at once, then let the
    /// claim go (so successors may take over) and register again.
    fn step_down_from_deleted_node(&mut self) {
        let Some(own) = self.own.take() else { return };
        log::warn!("member node {} was deleted: joining again", own.path);
        self.lease_until = None;
        self.dirty = true;
        self.sync_role();
        self.stray_paths.push(self.claim_path(&own.name));
    }

    /// Creates this member's node in the member session, then deletes our
    /// strays: nodes of abandoned sessions, and any node of this session that
    /// a create whose reply was lost left behind.
    fn register(&mut self, deadline: Instant) -> Result<()> {
        let member = self.live_member()?;
        let session = member.session_id().ok_or_else(|| {
            self.error(
                "create",
                &self.config.group,
                CallError::Interrupted("no session yet".into()),
            )
        })?;
        let prefix_path = format!("{}/{}", self.config.group, self.config.prefix);
        let mut created = member.create_member(&prefix_path, self.config.data.clone(), deadline);
        if created == Err(CallError::NoNode) {
            log::warn!("group {} is gone: creating it again", self.config.group);
            self.ensure_group(&member, deadline)?;
            created = member.create_member(&prefix_path, self.config.data.clone(), deadline);
        }
        let path = match created {
            Ok(path) => path,
            Err(e) => {
                if matches!(e, CallError::Interrupted(_)) {
                    // The node may exist: find it by its owner once we can.
                    self.stray_owners.push(session);
                }
                return Err(self.error("create", &prefix_path, e));
            }
        };
        let epoch = member.epoch();
        let sent = Instant::now();
        let stat = match member.stat(&path, deadline) {
            Ok(Some(stat)) if stat.owner == session => stat,
            Ok(_) => return Err(self.error("exists", &path, CallError::NoNode)),
            Err(e) => {
                self.stray_paths.push(path.clone());
                return Err(self.error("exists", &path, e));
            }
        };
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        log::debug!("registered {path} (session {session:#x})");
        self.own = Some(Own {
            path,
            name,
            owner: stat.owner,
            czxid: stat.czxid,
            claimed: false,
        });
        if member.same_connection(epoch, session) {
            self.extend_lease(sent);
        }
        self.next_renewal = sent + self.renewal_interval();
        self.stale = true;
        self.dirty = true;
        self.delete_strays(&member, deadline);
        self.claim(&member, deadline)
    }

    /// Deletes the stray nodes of ours that are known, best effort.
    fn delete_strays(&mut self, member: &Client, deadline: Instant) {
        let own_path = self.own.as_ref().map(|o| o.path.clone());
        let own_claim = self.own.as_ref().map(|o| self.claim_path(&o.name));
        if !self.stray_owners.is_empty() {
            let mut found = Vec::new();
            for dir in [self.config.group.clone(), self.claims_dir()] {
                let children = match member.children(&dir, deadline) {
                    Ok(children) => children,
                    Err(CallError::NoNode) => continue,
                    Err(e) => return log::debug!("cannot look for stray nodes yet: {e:?}"),
                };
                for name in children
                    .iter()
                    .filter(|n| n.starts_with(&self.config.prefix))
                {
                    let path = format!("{dir}/{name}");
                    if sequence_of(name).is_none()
                        || Some(&path) == own_path.as_ref()
                        || Some(&path) == own_claim.as_ref()
                    {
                        continue;
                    }
                    if let Ok(Some(stat)) = member.stat(&path, deadline) {
                        if self.stray_owners.contains(&stat.owner) {
                            found.push(path);
                        }
                    }
                }
            }
            self.stray_owners.clear();
            self.stray_paths.extend(found);
        }
        self.stray_paths
            .retain(|path| match member.delete(path, deadline) {
                Ok(()) => {
                    log::info!("deleted {path}, left by an earlier attempt");
                    false
                }
                Err(CallError::NoNode) => false,
                Err(_) => true,
            });
    }

    /// Reads the group (re-arming the watch), the data of new members, and
    /// puts a deletion watch on our node.
    fn refresh(&mut self) {
        let Some(watcher) = self.watcher.clone() else {
            return;
        };
        let deadline = self.call_deadline();
        let revocations = self.shared.revocations();
        let children = match watcher.children_watched(&self.config.group, deadline) {
            Ok(children) => children,
            Err(CallError::NoNode) => {
                log::warn!("group {} was deleted", self.config.group);
                self.stale = false;
                self.order.clear();
                self.step_down_from_deleted_node();
                return;
            }
            Err(e) => return self.on_watcher_error(e),
        };
        self.stale = false;
        let mut order = in_election_order(children);
        if let Some(own) = &self.own {
            if !order.contains(&own.name) && !self.confirm_own() {
                return;
            }
        }
        let present: HashSet<&String> = order.iter().collect();
        self.data.retain(|name, _| present.contains(name));
        for name in &order {
            if self.data.contains_key(name) {
                continue;
            }
            let path = format!("{}/{}", self.config.group, name);
            match watcher.data(&path, deadline) {
                Ok((data, owner)) => {
                    if owner == 0 {
                        log::warn!("{path} is a persistent node: not counted as a member");
                    }
                    self.data.insert(name.clone(), (owner != 0).then_some(data));
                }
                Err(CallError::NoNode) => {} // left meanwhile: not in `data`, so dropped below
                Err(e) => return self.on_watcher_error(e),
            }
        }
        // Members are the children whose data we hold and that are ephemeral.
        order.retain(|name| self.data.get(name).is_some_and(Option::is_some));
        self.blocked = false;
        let rank = self
            .own
            .as_ref()
            .and_then(|o| order.iter().position(|n| *n == o.name));
        if rank.is_some_and(|r| r < self.config.masters) && self.role != Role::Master {
            // About to become master: not while a claim names a node that is gone.
            let members: HashSet<&String> = order.iter().collect();
            match watcher.children_watched(&self.claims_dir(), deadline) {
                Ok(claims) => {
                    let orphaned: Vec<&String> = claims
                        .iter()
                        .filter(|c| sequence_of(c).is_some() && !members.contains(c))
                        .collect();
                    if !orphaned.is_empty() {
                        log::info!("waiting for {orphaned:?} to step down: their nodes are gone");
                        self.blocked = true;
                    }
                }
                Err(CallError::NoNode) => {}
                Err(e) => return self.on_watcher_error(e),
            }
        }
        if let Some(own) = &self.own {
            let watched = Some((watcher.generation(), own.path.clone()));
            if self.own_watched != watched {
                match watcher.watch_deletion(&own.path, deadline) {
                    Ok(true) => self.own_watched = watched,
                    Ok(false) => self.stale = true,
                    Err(e) => return self.on_watcher_error(e),
                }
            }
        }
        self.order = order;
        self.revocations_seen = revocations;
        self.dirty = true;
    }

    /// The watcher's list lacks our node: ask the member session. Returns
    /// whether the node is still there (the watcher's server is behind; the
    /// watch it just set fires when it catches up).
    fn confirm_own(&mut self) -> bool {
        let (Some(member), Some(own)) = (self.member.clone(), self.own.as_ref()) else {
            return false;
        };
        match member.stat(&own.path, self.call_deadline()) {
            Ok(Some(stat)) if stat.owner == own.owner => true,
            Ok(_) => {
                self.step_down_from_deleted_node();
                false
            }
            Err(e) => {
                let e = self.error("exists", &own.path.clone(), e);
                self.on_member_error(e);
                false
            }
        }
    }

    /// Confirms in the member session that our node is still ours, which
    /// renews the lease.
    fn renew(&mut self) {
        let sent = Instant::now();
        self.next_renewal = sent + self.renewal_interval();
        let (Some(member), Some((path, owner))) = (
            self.member.clone(),
            self.own.as_ref().map(|o| (o.path.clone(), o.owner)),
        ) else {
            return;
        };
        let epoch = member.epoch();
        match member.stat(&path, self.call_deadline()) {
            Ok(Some(stat)) if stat.owner == owner => {
                if member.same_connection(epoch, owner) {
                    self.extend_lease(sent);
                }
            }
            Ok(_) => self.step_down_from_deleted_node(),
            Err(e) => {
                let e = self.error("exists", &path, e);
                self.on_member_error(e);
            }
        }
    }

    /// The spacing of renewals: just over the 2/3 of the timeout after which
    /// the crate pings an idle connection, so its pings are not starved (it
    /// only reconnects within one timeout of its last ping).
    fn renewal_interval(&self) -> Duration {
        self.timeout * 2 / 3 + (self.timeout / 40).max(Duration::from_millis(50))
    }

    /// A read sent at `sent` showed our node alive in our session: the server
    /// cannot expire the session before `sent + timeout`.
    fn extend_lease(&mut self, sent: Instant) {
        let end = sent + self.timeout.saturating_sub(self.margin);
        if self.lease_until.is_none_or(|current| end > current) {
            self.lease_until = Some(end);
            if self.role == Role::Master {
                self.shared
                    .set_lease(self.lease_until, self.revocations_seen);
            }
        }
    }

    fn on_member_error(&mut self, e: Error) {
        match e {
            // Interrupted calls: the connection is cut or dropping; the
            // crate's notices say what comes next.
            Error::Unreachable { .. } if self.member.as_ref().is_some_and(Client::is_alive) => {
                log::debug!("{e}");
                self.next_attempt = Instant::now() + self.next_backoff();
            }
            e => self.lose_session(e),
        }
    }

    fn on_watcher_error(&mut self, e: CallError) {
        log::debug!("the watcher session failed ({e:?}); starting another");
        let retry_at = Instant::now() + self.next_backoff();
        self.drop_watcher(retry_at);
    }

    /// Gives up the watcher session; another starts at `retry_at`. Its
    /// watches go with it (the deletion watch is tagged with its generation).
    fn drop_watcher(&mut self, retry_at: Instant) {
        self.watcher = None;
        self.next_watcher = retry_at;
    }

    /// Steps down and drops both sessions; a new one starts after a pause.
    fn lose_session(&mut self, why: impl Display) {
        if let Some(member) = self.member.take() {
            log::warn!("{why}: stepping down and joining again with a new session");
            // Its nodes go when the crate closes it, or from the next session.
            self.stray_owners.extend(member.session_id());
        }
        if let Some(own) = self.own.take() {
            self.stray_paths.push(self.claim_path(&own.name));
            self.stray_paths.push(own.path);
        }
        self.watcher = None;
        self.lease_until = None;
        self.order.clear();
        self.data.clear();
        self.stale = false;
        self.dirty = true;
        self.set_connection(Connection::Lost);
        self.next_attempt = Instant::now() + self.next_backoff();
    }

    /// Deletes our node and joins again at the back, in the same session.
    fn requeue(&mut self) -> Result<()> {
        if self.resigned {
            return Err(Error::Resigned);
        }
        let (Some(member), Some(own)) = (self.member.clone(), self.own.take()) else {
            return Ok(()); // no node: the next one goes to the back anyway
        };
        self.lease_until = None;
        self.dirty = true;
        self.sync_role();
        let deadline = self.call_deadline();
        let deleted = member
            .delete(&self.claim_path(&own.name), deadline)
            .or_else(|e| {
                if e == CallError::NoNode {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|()| member.delete(&own.path, deadline));
        match deleted {
            Ok(()) | Err(CallError::NoNode) => {}
            Err(e) => {
                self.stray_paths.push(self.claim_path(&own.name));
                self.stray_paths.push(own.path.clone());
                let e = self.error("delete", &own.path, e);
                self.on_member_error(e.clone());
                return Err(e);
            }
        }
        if let Err(e) = self.register(deadline) {
            self.on_member_error(e.clone());
            return Err(e);
        }
        self.refresh();
        Ok(())
    }

    /// Steps down, deletes our node so a successor takes over at once, and
    /// closes the sessions.
    fn stop(&mut self) {
        self.resigned = true;
        self.lease_until = None;
        let own = self.own.take();
        self.dirty = true;
        self.sync_role();
        self.watcher = None;
        if let Some(member) = self.member.take() {
            let deadline = Instant::now() + (self.timeout / 2).min(Duration::from_secs(2));
            let claim = own.as_ref().map(|o| self.claim_path(&o.name));
            let nodes = own.iter().map(|o| &o.path);
            for path in claim.iter().chain(nodes).chain(&self.stray_paths) {
                match member.delete(path, deadline) {
                    Ok(()) | Err(CallError::NoNode) => {}
                    Err(e) => {
                        log::warn!("could not delete {path} ({e:?}); it goes when the session ends")
                    }
                }
            }
            member.close(deadline);
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
        let leased = self.lease_until.is_some_and(|end| Instant::now() < end);
        if rank >= self.config.masters || (self.blocked && self.role != Role::Master) {
            Role::Slave
        } else if leased && own.claimed {
            Role::Master
        } else {
            Role::Offline
        }
    }

    fn set_connection(&mut self, connection: Connection) {
        if self.connection != connection {
            log::debug!("connection {} -> {connection}", self.connection);
            self.connection = connection;
            self.connection_since = Instant::now();
            self.dirty = true;
        }
    }

    /// Publishes the role, the group and the connection if any changed, and
    /// queues the change for the callbacks.
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
            let data = self.data.get(name).cloned().flatten().unwrap_or_default();
            Member::parse(name, data)
        };
        let members: Vec<Member> = self.order.iter().filter_map(member).collect();
        let masters: Vec<Member> = members.iter().take(self.config.masters).cloned().collect();
        let own_name = self.own.as_ref().map(|o| o.name.clone());
        let (old_connection, session_timeout) = {
            let status = self.shared.status.lock();
            (status.connection, status.session_timeout)
        };
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
            session_timeout,
            connection: self.connection,
            connection_since: self.connection_since,
        };
        let old = self
            .shared
            .publish(status, self.lease_until, self.revocations_seen);
        self.role = role;
        self.dirty = false;
        if old != role || old_connection != self.connection {
            log::debug!("role {old} -> {role}, connection {}", self.connection);
            let _ = self.dispatch.send(Dispatch::Change(RoleChange {
                old,
                new: role,
                member: own_name,
                masters,
                members: self.shared.status.lock().members.clone(),
                connection: self.connection,
                at: Instant::now(),
            }));
        }
    }

    fn live_member(&self) -> Result<Client> {
        self.member
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
        let path = path.to_owned();
        match e {
            CallError::Lost(reason) | CallError::Interrupted(reason) => Error::Unreachable {
                connect: self.config.connect.clone(),
                waited: self.config.connect_timeout,
                last: format!("{op} {path}: {reason}"),
            },
            CallError::NoNode => Error::Server {
                op,
                path,
                reason: "no such node".into(),
            },
            CallError::NodeExists => Error::Server {
                op,
                path,
                reason: "node exists".into(),
            },
            CallError::Denied(reason) => Error::AccessDenied { op, path, reason },
            CallError::Refused(reason) => Error::Server { op, path, reason },
        }
    }
}
