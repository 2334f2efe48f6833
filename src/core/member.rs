//! The member session: this member's node, its claim, the lease, strays,
//! resigning and requeueing.

use std::time::Instant;

use super::{
    AfterEnsure, Answer, Command, Core, Failure, Mode, Op, Phase, Purpose, Slot, SlotDue, Why,
};
use crate::error::Error;

/// This member's node in the current member session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Node {
    /// None: one is created once the member session is connected.
    Absent,
    /// The group's path is being created, then the node.
    EnsuringGroup,
    Creating,
    Held(Own),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Own {
    pub(super) path: String,
    pub(super) name: String,
    /// The session that owns it.
    pub(super) owner: i64,
    pub(super) czxid: i64,
    pub(super) claim: Claim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    Absent,
    /// Being created (with the claims' path first, if that was missing).
    Creating,
    /// Created; an `exists` of our node sent right behind it must still
    /// find the node. A claim protects only a node that outlived it: a
    /// successor that saw the node gone after that finds the claim.
    Created,
    Held,
}

impl Node {
    pub(super) fn own(&self) -> Option<&Own> {
        match self {
            Node::Held(own) => Some(own),
            _ => None,
        }
    }

    pub(super) fn path(&self) -> Option<&str> {
        self.own().map(|o| o.path.as_str())
    }

    pub(super) fn name(&self) -> Option<&str> {
        self.own().map(|o| o.name.as_str())
    }

    pub(super) fn czxid(&self) -> Option<u64> {
        self.own().map(|o| o.czxid as u64)
    }
}

impl Core {
    /// Where claims live: a sibling of the group, so that deleting the group
    /// by hand leaves them.
    pub(super) fn claims_dir(&self) -> String {
        format!("{}.claims", self.settings.group)
    }

    /// `claim` is a claim's name, from [`claim_name`].
    pub(super) fn claim_path(&self, claim: &str) -> String {
        format!("{}/{claim}", self.claims_dir())
    }

    /// Opens the member session when due, and sends what the node needs.
    pub(super) fn step_member(&mut self, now: Instant) {
        match self.slot_due(&self.member, now) {
            Some(SlotDue::Open) => {
                self.member = self.open(Purpose::Member, now);
                self.opened_at = now;
                return;
            }
            Some(SlotDue::OpenTimedOut) => {
                if let Some(session) = self.member.id() {
                    self.commands.push_back(Command::Close { session });
                }
                self.member = Slot::Idle { retry_at: now };
                return self.note_failure("no session was established in time");
            }
            None => {}
        }
        let Some((session, conn)) = self.member.connected() else {
            return;
        };
        if self.node == Node::Absent {
            self.node = Node::Creating;
            self.send_create_member(session, conn, now);
        }
        let claim_missing = self
            .node
            .own()
            .filter(|own| own.claim == Claim::Absent)
            .map(claim_name);
        if let Some(name) = claim_missing {
            self.set_claim(Claim::Creating);
            let path = self.claim_path(&name);
            self.send(
                session,
                conn,
                create(path, Mode::Ephemeral),
                Why::CreateClaim { name: name.clone() },
                now,
            );
            if let Some(path) = self.node.path().map(str::to_owned) {
                let op = Op::Exists { path, watch: false };
                self.send(session, conn, op, Why::ConfirmClaim { name }, now);
            }
        }
        if !self.strays.is_empty() && !self.deleting_strays() && now >= self.strays_retry_at {
            let paths = self.strays.clone();
            self.send_deletes(session, conn, paths, |path| Why::DeleteStray { path }, now);
        }
        if self.renewal_due_soon() && now >= self.renew_at {
            if let Some(path) = self.node.path().map(str::to_owned) {
                // In one go: a session's requests are answered in order, so
                // the exists is answered after the sync, by a server that had
                // just heard from the leader.
                let sync = if self.skips_leader_proof() {
                    super::RequestId(0)
                } else {
                    let op = Op::Sync { path: "/".into() };
                    self.send(session, conn, op, Why::RenewSync, now)
                };
                let op = Op::Exists {
                    path: path.clone(),
                    watch: false,
                };
                self.send(session, conn, op, Why::Renew { path, sync }, now);
            }
        }
    }

    pub(super) fn deleting_strays(&self) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p.why, Why::DeleteStray { .. }))
    }

    pub(super) fn send_create_member(
        &mut self,
        session: super::SessionId,
        conn: super::Conn,
        now: Instant,
    ) {
        let prefix = format!("{}/{}", self.settings.group, self.settings.prefix);
        let op = Op::Create {
            path: prefix,
            data: self.settings.data.clone(),
            mode: Mode::EphemeralSequential,
        };
        self.send(session, conn, op, Why::CreateMember, now);
    }

    /// Creates every segment of `target` as a persistent node (an existing
    /// one is fine), in one go: a session's requests are applied in order.
    fn ensure_path(&mut self, target: &str, then: AfterEnsure, now: Instant) {
        let Some((session, conn)) = self.member.connected() else {
            return;
        };
        let segments: Vec<String> = target
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| target[..i].to_owned())
            .chain([target.to_owned()])
            .collect();
        let count = segments.len();
        for (i, path) in segments.into_iter().enumerate() {
            let last = (i + 1 == count).then_some(then);
            self.send(
                session,
                conn,
                create(path, Mode::Persistent),
                Why::EnsurePath { last },
                now,
            );
        }
    }

    pub(super) fn on_ensured(
        &mut self,
        last: Option<AfterEnsure>,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        match result {
            Ok(_) | Err(Failure::NodeExists) => {}
            Err(e) => {
                // What waited for this path is tried again from the start.
                match last {
                    Some(AfterEnsure::CreateMember) if self.node == Node::EnsuringGroup => {
                        self.node = Node::Absent;
                    }
                    Some(AfterEnsure::CreateClaim) => self.set_claim(Claim::Absent),
                    _ => {}
                }
                return self.member_failed("create", &self.settings.group.clone(), e, now);
            }
        }
        let Some((session, conn)) = self.member.connected() else {
            return;
        };
        match last {
            Some(AfterEnsure::CreateMember) if self.node == Node::EnsuringGroup => {
                self.node = Node::Creating;
                self.send_create_member(session, conn, now);
            }
            Some(AfterEnsure::CreateClaim) => self.set_claim(Claim::Absent),
            _ => {}
        }
    }

    pub(super) fn on_member_created(&mut self, result: Result<Answer, Failure>, now: Instant) {
        if self.node != Node::Creating {
            // The answer to a create we no longer wait for: a node it made is a stray.
            if let Ok(Answer::Created(path, _)) = result {
                self.strays.push(path);
            }
            return;
        }
        match result {
            // The answer carries the node's stat: its owner and czxid.
            Ok(Answer::Created(path, stat)) => self.hold_member(path, stat, now),
            Err(Failure::NoNode) => {
                log::info!("group {} is missing: creating it", self.settings.group);
                self.node = Node::EnsuringGroup;
                let group = self.settings.group.clone();
                self.ensure_path(&group, AfterEnsure::CreateMember, now);
            }
            Err(e) => {
                // An interrupted create may have created the node: any other
                // node of this session found in the group is a stray.
                self.node = Node::Absent;
                let prefix = format!("{}/{}", self.settings.group, self.settings.prefix);
                self.member_failed("create", &prefix, e, now);
            }
            Ok(other) => log::error!("unexpected answer to a create: {other:?}"),
        }
    }

    /// Our node is created, with `stat`: it is held.
    fn hold_member(&mut self, path: String, stat: super::Stat, now: Instant) {
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        log::debug!("registered {path} (session {:#x})", stat.owner);
        self.node = Node::Held(Own {
            path,
            name,
            owner: stat.owner,
            czxid: stat.czxid,
            claim: Claim::Absent,
        });
        // The lease comes from a renewal, sent at once: the create's reply
        // proves no contact with the leader.
        self.renew_at = now;
        self.group.stale = true;
        self.group.epoch += 1;
        if self.requeue_waiting {
            self.requeue_waiting = false;
            self.commands.push_back(Command::Requeued(Ok(())));
        }
    }

    pub(super) fn on_claim_created(
        &mut self,
        name: &str,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        if self.node.own().map(claim_name).as_deref() != Some(name) {
            // A claim for a node we no longer hold.
            if result.is_ok() {
                self.strays.push(self.claim_path(name));
            }
            return;
        }
        match result {
            Ok(_) | Err(Failure::NodeExists) => self.set_claim(Claim::Created),
            Err(Failure::NoNode) => {
                let dir = self.claims_dir();
                self.ensure_path(&dir, AfterEnsure::CreateClaim, now);
            }
            Err(e) => {
                self.set_claim(Claim::Absent);
                let path = self.claim_path(name);
                self.member_failed("create", &path, e, now);
            }
        }
    }

    /// The `exists` sent behind our claim's create: the claim counts once our
    /// node is still there after it.
    pub(super) fn on_claim_confirmed(
        &mut self,
        name: &str,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        let Some(own) = self.node.own() else { return };
        if claim_name(own) != name || own.claim != Claim::Created {
            return; // the create failed, and is tried again
        }
        match result {
            Ok(Answer::Stat(Some(stat))) if stat.owner == own.owner => self.set_claim(Claim::Held),
            Ok(_) => self.step_down_from_deleted_node(now),
            Err(e) => {
                let path = own.path.clone();
                self.set_claim(Claim::Absent);
                self.member_failed("exists", &path, e, now);
            }
        }
    }

    fn set_claim(&mut self, claim: Claim) {
        if let Node::Held(own) = &mut self.node {
            own.claim = claim;
        }
    }

    pub(super) fn on_stray_deleted(
        &mut self,
        path: String,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        match result {
            Ok(_) | Err(Failure::NoNode) => {
                log::info!("deleted {path}, left by an earlier attempt");
                self.strays.retain(|p| *p != path);
            }
            Err(e) => {
                log::debug!("cannot delete {path} yet: {e:?}");
                self.strays_retry_at = self.next_backoff(now);
            }
        }
    }

    /// Our node was deleted by someone else: step down at once, let the claim
    /// go (so successors may take over) and register again.
    pub(super) fn step_down_from_deleted_node(&mut self, now: Instant) {
        if !matches!(self.node, Node::Held(_)) {
            return; // nothing held; a create in flight goes on
        }
        let Node::Held(own) = std::mem::replace(&mut self.node, Node::Absent) else {
            return;
        };
        log::warn!("member node {} was deleted: joining again", own.path);
        self.lease_until = None;
        self.strays.push(self.claim_path(&claim_name(&own)));
        self.strays_retry_at = now;
        self.group.stale = true;
    }

    /// A request of the member session failed.
    pub(super) fn member_failed(&mut self, op: &'static str, path: &str, e: Failure, now: Instant) {
        match e {
            Failure::Interrupted(why) => {
                // The connection is dropping; the backend says what comes next.
                log::debug!("{op} {path} interrupted: {why}");
                self.note_failure(&format!("{op} {path}: {why}"));
            }
            Failure::Denied(reason) => {
                let error = Error::AccessDenied {
                    op,
                    path: path.to_owned(),
                    reason,
                };
                if matches!(self.phase, Phase::Joining { .. }) {
                    return self.finish_join(Err(error), now);
                }
                self.fail_requeue(error.clone());
                self.lose_member(&error.to_string(), now);
            }
            Failure::NoNode | Failure::NodeExists | Failure::Refused(_) => {
                let error = Error::Server {
                    op,
                    path: path.to_owned(),
                    reason: format!("{e:?}"),
                };
                self.fail_requeue(error.clone());
                self.lose_member(&error.to_string(), now);
            }
        }
    }

    /// Remembers why joining has not worked yet, for the join's error.
    /// Whether renewals leave their `sync` out: only the simulator's
    /// NoLeaderProof mutant does.
    fn skips_leader_proof(&self) -> bool {
        #[cfg(test)]
        return self.settings.mutant == super::Mutant::NoLeaderProof;
        #[cfg(not(test))]
        false
    }

    pub(super) fn note_failure(&mut self, why: &str) {
        if let Phase::Joining { last, .. } = &mut self.phase {
            *last = why.to_owned();
        }
    }

    /// Steps down and gives up the member session; a new one starts after a
    /// pause. Its nodes go when the session ends, or from the next session.
    pub(super) fn lose_member(&mut self, why: &str, now: Instant) {
        log::warn!("{why}: stepping down and joining again with a new session");
        self.note_failure(why);
        if let Some(session) = self.member.id() {
            self.commands.push_back(Command::Close { session });
            self.pending.retain(|_, p| p.session != session);
        }
        if let Some(s) = self.member.open() {
            self.old_sessions.push(s.server_session);
            self.counters.session_losses += 1;
        }
        if let Node::Held(own) = std::mem::replace(&mut self.node, Node::Absent) {
            self.strays.push(self.claim_path(&claim_name(&own)));
            self.strays.push(own.path);
        }
        self.fail_requeue(Error::Unreachable {
            connect: self.settings.connect.clone(),
            waited: self.settings.connect_timeout,
            last: why.to_owned(),
        });
        self.lease_until = None;
        self.member = Slot::Idle {
            retry_at: self.next_backoff(now),
        };
        self.set_connection(crate::role::Connection::Lost, now);
    }
}

/// The name of the claim of `own`: the member node's name after its czxid.
/// A node's name alone can come back, even in the same session: once the
/// group is deleted by hand its sequence counter starts again. A successor
/// given a frozen master's name would take its claim for its own, and a
/// retried delete of an old claim would delete the new one. A czxid is never
/// given twice.
pub(super) fn claim_name(own: &Own) -> String {
    node_claim_name(own.czxid, &own.name)
}

/// The claim name of the member node `name` created by transaction `czxid`.
pub(super) fn node_claim_name(czxid: i64, name: &str) -> String {
    format!("{czxid:x}-{name}")
}

fn create(path: String, mode: Mode) -> Op {
    Op::Create {
        path,
        data: Vec::new(),
        mode,
    }
}
