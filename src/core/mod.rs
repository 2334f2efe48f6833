//! The election as a deterministic state machine: no threads, no clock
//! reads, no network, no `zookeeper` crate types.
//!
//! It is fed [`Input`]s with the current time ([`Core::handle`]) and woken
//! at [`Core::poll_timeout`] ([`Core::handle_timeout`]); it answers with
//! [`Command`]s ([`Core::poll_command`]) that a driver carries out. The same
//! core runs in the library (driven by `driver.rs` over a real backend) and
//! in the simulator (`sim/`, tests only) over a model of ZooKeeper.
//!
//! It keeps two sessions. The *member* session holds this member's node and
//! claim and does nothing else but renew the lease with an `exists` of the
//! node; the *watcher* session reads and watches the group. (A backend may
//! carry both on one ZooKeeper session: the `zookeeper` 0.8 one does.) A member may be
//! master only while it also holds a *claim*: an ephemeral node named after
//! its member node in a sibling of the group (`/Roles/workers.claims/...`),
//! which it deletes only after stepping down. A member about to become master
//! waits while a claim names a member node that is gone: that member may not
//! have noticed yet that its node was deleted by hand.
//!
//! # The lease
//! A reply to a request sent at `t` that shows our node alive, owned by our
//! session, on the connection the request left on, proves the server had not
//! expired the session at `t`: it cannot expire it before `t + timeout`. The
//! lease ends at `t + timeout − margin`, where timeout is the smaller of the
//! asked and the granted one. `t` is when the core emitted the request, which
//! is no later than when it was really sent.

mod group;
mod herd;
mod io;
mod lease;
mod leave;
mod member;
mod publish;
mod sessions;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) use io::{
    Answer, Command, Conn, Counters, Failure, Input, Mode, Op, Purpose, RequestId, SessionId, Stat,
    View, WatchKind,
};

pub(crate) use crate::config::deadline_after as later;
use crate::error::Error;
use crate::member::Member;
use crate::role::{Connection, Role};
use group::Group;
use lease::{default_margin, Base};
use member::Node;
use sessions::{Slot, SlotDue};

/// First wait before opening a session again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the core needs to know of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The connect string, for error messages.
    pub(crate) connect: String,
    pub(crate) group: String,
    pub(crate) prefix: String,
    pub(crate) masters: usize,
    pub(crate) data: Vec<u8>,
    /// The session timeout asked for.
    pub(crate) session_timeout: Duration,
    /// How long the first join may take.
    pub(crate) connect_timeout: Duration,
    pub(crate) lease_margin: Option<Duration>,
    /// Watch only the members just ahead instead of the whole group.
    pub(crate) herd_free: bool,
    /// Watch-only mode (an observer): no member session, no node, no claim;
    /// the group and the claims are read and watched, and the masters are
    /// told as the members compute them.
    pub(crate) observe: bool,
    /// A deliberate defect, for the simulator to prove it can fail.
    #[cfg(test)]
    pub(crate) mutant: Mutant,
}

impl Settings {
    /// The settings for `config`, with the backend's renewal spacing.
    pub(crate) fn new(config: &crate::config::Config) -> Settings {
        Settings {
            connect: config.connect.clone(),
            group: config.group.clone(),
            prefix: config.prefix.clone(),
            masters: config.masters,
            data: config.data.clone(),
            session_timeout: config.session_timeout,
            connect_timeout: config.connect_timeout,
            lease_margin: config.lease_margin,
            herd_free: config.herd_free,
            observe: false,
            #[cfg(test)]
            mutant: Mutant::None,
        }
    }

    /// The settings of an observer of `config`'s group: it watches the
    /// whole group (herd-free mode is for members) and creates nothing.
    pub(crate) fn observer(config: &crate::config::Config) -> Settings {
        Settings {
            herd_free: false,
            observe: true,
            ..Settings::new(config)
        }
    }
}

/// Deliberate defects the simulator must catch.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mutant {
    #[default]
    None,
    /// The lease counted from when the reply came, not when the request left.
    LeaseFromReceive,
    /// Promotion without the claims check.
    NoClaimsCheck,
    /// A reply renews the lease whatever connection it came on.
    AnyConnectionRenews,
    /// A renewal counts without its `sync`: a follower cut off from the
    /// leader can renew the lease from its stale copy.
    NoLeaderProof,
    /// A renewal accepts the node whoever owns it.
    NoOwnerCheck,
    /// Herd-free, a member takes the place of one ahead that left without
    /// knowing its claim went first.
    FastPathIgnoresClaim,
}

/// Where the core is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Until the first role is known, or `deadline`.
    Joining {
        deadline: Instant,
        last: String,
    },
    Running,
    /// Deleting its nodes before it closes the member session.
    Resigning {
        deadline: Instant,
    },
    /// Nothing more to do.
    Done,
}

/// Why a request was sent: what to do with its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    /// A persistent node of the group's or the claims' path; `last` says
    /// what to retry once the last segment is answered.
    EnsurePath {
        last: Option<AfterEnsure>,
    },
    CreateMember,
    CreateClaim {
        name: String,
    },
    /// The `exists` of our node sent right behind its claim's create.
    ConfirmClaim {
        name: String,
    },
    /// The `sync` sent just ahead of a renewal: it proves the server is in
    /// touch with the leader.
    RenewSync,
    /// The renewal's `exists`; it counts only if `sync` succeeded on the same
    /// connection.
    Renew {
        path: String,
        sync: RequestId,
    },
    /// The watcher's list lacks our node: is it still there?
    ConfirmOwn {
        path: String,
    },
    DeleteStray {
        path: String,
    },
    /// Deleting our claim and node to resign or requeue.
    Leave {
        path: String,
    },
    ListGroup,
    ReadMember {
        name: String,
    },
    /// Listing the claims for read number `refresh` of the group, with a
    /// watch on them if `watched`.
    ListClaims {
        refresh: u64,
        watched: bool,
    },
    WatchOwn {
        path: String,
    },
    /// Herd-free mode: a deletion watch on a member just ahead of ours.
    WatchAhead {
        path: String,
    },
    /// Herd-free mode: a watch on the claim of a member just ahead.
    WatchAheadClaim {
        path: String,
    },
    /// Herd-free mode: a watch on the member node an orphaned claim names
    /// (created by transaction `czxid`), which may just be newer than our read.
    WatchClaimed {
        path: String,
        czxid: i64,
    },
    /// Watch-only mode: the group does not exist; watch for its creation.
    WatchGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterEnsure {
    CreateMember,
    CreateClaim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    session: SessionId,
    /// When the core sent it, and on which connection.
    sent: Instant,
    conn: Conn,
    deadline: Instant,
    why: Why,
}

/// The election state machine of one member.
#[derive(Debug)]
pub(crate) struct Core {
    settings: Settings,
    commands: VecDeque<Command>,
    phase: Phase,
    next_id: u64,
    rng: u64,
    backoff: Duration,
    pending: BTreeMap<RequestId, Pending>,
    member: Slot,
    watcher: Slot,
    node: Node,
    group: Group,
    /// Paths of ours that must go: claims and nodes of earlier attempts.
    strays: Vec<String>,
    /// Sessions of ours given up: their member nodes are strays.
    old_sessions: Vec<i64>,
    strays_retry_at: Instant,
    /// Lease timing, from the granted timeout.
    timeout: Duration,
    margin: Duration,
    granted: Option<Duration>,
    lease_until: Option<Instant>,
    renew_at: Instant,
    /// The renewal `sync` last answered on the current connection.
    synced: Option<RequestId>,
    /// What the next renewal's lease is counted from.
    base: Option<Base>,
    /// When the member session was asked for.
    opened_at: Instant,
    /// A requeue waits for the new node.
    requeue_waiting: bool,
    connection: Connection,
    connection_since: Instant,
    published: Option<View>,
    /// The role, connection and masters the callbacks were last told of,
    /// and the members in watch-only mode (where every change is told).
    notified: (Role, Connection, Vec<Member>, Vec<Member>),
    counters: Counters,
}

impl Core {
    /// A core that starts joining at `now`; `seed` spreads its retries.
    pub(crate) fn new(settings: Settings, now: Instant, seed: u64) -> Core {
        let timeout = settings.session_timeout;
        let mut core = Core {
            phase: Phase::Joining {
                deadline: later(now, settings.connect_timeout),
                last: "no answer yet".into(),
            },
            commands: VecDeque::new(),
            next_id: 0,
            rng: seed | 1,
            backoff: FIRST_BACKOFF,
            pending: BTreeMap::new(),
            member: Slot::Idle { retry_at: now },
            watcher: Slot::Idle { retry_at: now },
            node: Node::Absent,
            group: Group::default(),
            strays: Vec::new(),
            old_sessions: Vec::new(),
            strays_retry_at: now,
            // Set again from the granted timeout before any lease counts.
            margin: default_margin(timeout),
            timeout,
            granted: None,
            lease_until: None,
            renew_at: now,
            synced: None,
            base: None,
            opened_at: now,
            requeue_waiting: false,
            connection: Connection::Lost,
            connection_since: now,
            published: None,
            notified: (Role::Offline, Connection::Lost, Vec::new(), Vec::new()),
            counters: Counters::default(),
            settings,
        };
        core.step(now);
        core
    }

    /// Takes one input.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        match input {
            Input::Connected {
                session,
                conn,
                server_session,
                granted,
            } => self.on_connected(session, conn, server_session, granted, now),
            Input::Disconnected { session } => self.on_disconnected(session, now),
            Input::Lost { session, why } => self.on_lost(session, &why, now),
            Input::Reply {
                session,
                request,
                via,
                result,
            } => self.on_reply(session, request, via, result, now),
            Input::Watch {
                session,
                path,
                kind,
            } => self.on_watch(session, &path, kind, now),
            Input::Resign => self.resign(now),
            Input::Requeue => self.requeue(now),
        }
        self.step(now);
    }

    /// Does what is due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request in expired {
            if let Some(p) = self.pending.get(&request) {
                log::debug!("request {:?} missed its deadline: cutting", p.why);
                self.commands.push_back(Command::Cut { session: p.session });
                let session = p.session;
                self.on_reply(
                    session,
                    request,
                    None,
                    Err(Failure::Interrupted("no reply in time".into())),
                    now,
                );
            }
        }
        self.step(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut wake: Vec<Instant> = self.pending.values().map(|p| p.deadline).collect();
        match &self.phase {
            Phase::Done => return None,
            Phase::Joining { deadline, .. } | Phase::Resigning { deadline } => wake.push(*deadline),
            Phase::Running => {}
        }
        if !matches!(self.phase, Phase::Resigning { .. }) {
            for slot in [&self.member, &self.watcher] {
                if self.settings.observe && std::ptr::eq(slot, &self.member) {
                    continue; // never opened
                }
                wake.extend(self.slot_timer(slot).map(|(at, _)| at));
            }
            if self.member.connected().is_some() {
                if self.renewal_due_soon() {
                    wake.push(self.renew_at);
                }
                if !self.strays.is_empty() && !self.deleting_strays() {
                    wake.push(self.strays_retry_at);
                }
            }
        }
        if self.notified.0 == Role::Master {
            wake.extend(self.lease_until);
        }
        wake.into_iter().min()
    }

    /// The next command to carry out, in order.
    pub(crate) fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Whether `is_master()` would be true at `now`: what was published,
    /// read against the clock, as the handle reads it.
    #[cfg(test)]
    pub(crate) fn is_master_at(&self, now: Instant) -> bool {
        self.published
            .as_ref()
            .is_some_and(|v| v.role == Role::Master && v.lease_until.is_some_and(|end| now < end))
    }

    /// True once the core has nothing more to do.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Everything that follows an input or a timeout: open what is missing,
    /// send what is due, and publish what changed.
    fn step(&mut self, now: Instant) {
        if let Phase::Joining { deadline, last } = &self.phase {
            if now >= *deadline {
                let error = Error::Unreachable {
                    connect: self.settings.connect.clone(),
                    waited: self.settings.connect_timeout,
                    last: last.clone(),
                };
                return self.finish_join(Err(error), now);
            }
        }
        if let Phase::Resigning { deadline } = self.phase {
            if now >= deadline
                || !self
                    .pending
                    .values()
                    .any(|p| matches!(p.why, Why::Leave { .. }))
            {
                self.close_all();
                self.phase = Phase::Done;
                self.commands
                    .push_back(Command::Resigned { close_by: deadline });
            }
            return self.publish(now);
        }
        if !self.settings.observe {
            self.step_member(now);
        }
        self.step_watcher(now);
        let joined = matches!(self.phase, Phase::Joining { .. }) && self.joined(now);
        if joined {
            self.backoff = FIRST_BACKOFF;
            self.phase = Phase::Running;
        }
        // Published and told before the join returns: a callback registered
        // right after it is told the role held at join.
        self.publish(now);
        if joined {
            self.commands.push_back(Command::Joined(Ok(())));
        }
    }

    pub(super) fn finish_join(&mut self, result: Result<(), Error>, now: Instant) {
        log::debug!("join failed: {result:?}");
        self.close_all();
        self.lease_until = None;
        self.phase = Phase::Done;
        self.commands.push_back(Command::Joined(result));
        self.publish(now);
    }

    fn close_all(&mut self) {
        for slot in [&mut self.member, &mut self.watcher] {
            if let Some(session) = slot.id() {
                self.commands.push_back(Command::Close { session });
            }
            *slot = Slot::Idle {
                retry_at: self.connection_since,
            };
        }
        self.pending.clear();
    }

    /// Sends a delete of each of `paths` on a connected session, each
    /// answered as `why(path)`.
    fn send_deletes(
        &mut self,
        session: SessionId,
        conn: Conn,
        paths: Vec<String>,
        why: fn(String) -> Why,
        now: Instant,
    ) {
        for path in paths {
            let op = Op::Delete { path: path.clone() };
            self.send(session, conn, op, why(path), now);
        }
    }

    /// Sends `op` on a connected session.
    fn send(
        &mut self,
        session: SessionId,
        conn: Conn,
        op: Op,
        why: Why,
        now: Instant,
    ) -> RequestId {
        let request = RequestId(self.next_id());
        self.pending.insert(
            request,
            Pending {
                session,
                sent: now,
                conn,
                deadline: later(now, self.timeout / 2),
                why,
            },
        );
        self.commands.push_back(Command::Send {
            session,
            request,
            op,
        });
        request
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn on_reply(
        &mut self,
        session: SessionId,
        request: RequestId,
        via: Option<Conn>,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        let Some(pending) = self.pending.remove(&request) else {
            return; // answered already (it missed its deadline), or its session is gone
        };
        if pending.session != session {
            return;
        }
        // Proof for the lease: same connection out and back, and still current.
        let current = self.member.connected().map(|(_, c)| c);
        let proof = (via == Some(pending.conn) && current == via).then_some(pending.sent);
        #[cfg(test)]
        let proof = match self.settings.mutant {
            Mutant::LeaseFromReceive => proof.map(|_| now),
            Mutant::AnyConnectionRenews => Some(pending.sent),
            _ => proof,
        };
        match pending.why {
            Why::EnsurePath { last } => self.on_ensured(last, result, now),
            Why::CreateMember => self.on_member_created(result, now),
            Why::CreateClaim { name } => self.on_claim_created(&name, result, now),
            Why::ConfirmClaim { name } => self.on_claim_confirmed(&name, result, now),
            Why::RenewSync => self.on_renew_synced(request, result, proof.and(via), now),
            Why::Renew { path, sync } => {
                let synced = self.synced == Some(sync);
                #[cfg(test)]
                let synced = synced || self.settings.mutant == Mutant::NoLeaderProof;
                let proof = proof.zip(via).filter(|_| synced);
                self.on_renewed(&path, result, proof, now)
            }
            // Says the node is there, but proves no contact with the leader.
            Why::ConfirmOwn { path } => self.on_renewed(&path, result, None, now),
            Why::DeleteStray { path } => self.on_stray_deleted(path, result, now),
            Why::Leave { path } => self.on_left(&path, result, now),
            Why::ListGroup => self.on_group_listed(result, now),
            Why::ReadMember { name } => self.on_member_read(name, result, now),
            Why::ListClaims { refresh, watched } => {
                self.on_claims_listed(refresh, watched, result, now)
            }
            Why::WatchOwn { path } => self.on_own_watched(session, path, result, now),
            Why::WatchAhead { path } => self.on_ahead_watched(session, path, result, now),
            Why::WatchAheadClaim { path } => {
                self.on_ahead_claim_watched(session, &path, result, now)
            }
            Why::WatchClaimed { czxid, .. } => self.on_claimed_watched(czxid, result, now),
            Why::WatchGroup => self.on_group_watched(result, now),
        }
    }
}
