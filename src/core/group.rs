//! The watcher session: the group as last read, the claims check before a
//! promotion, the deletion watch on our node, and the role they give.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{
    Answer, Command, Core, Failure, Op, Phase, Purpose, SessionId, Slot, SlotDue, Stat, WatchKind,
    Why,
};
use crate::member::{in_election_order, Member};

mod claims;

use crate::role::Role;
use claims::EarlyClaims;

/// What the watcher knows of the group.
#[derive(Debug, Default)]
pub(super) struct Group {
    /// The group must be read again (a watch fired, or we changed it).
    pub(super) stale: bool,
    /// Member names in election order, as of the last completed read.
    order: Vec<String>,
    /// `order` with each member's data: what callers see. Kept apart from
    /// `data`, which a read in progress empties and fills again.
    members: Vec<Member>,
    /// Each child's data and stat, as of the last read; `None` for a
    /// persistent node, which is never a member. A node's data never
    /// changes, and its name is given once in the life of the group node
    /// (sequence numbers only grow): so what was read of a name stays true
    /// while the group's czxid is the same, and only new names are read.
    /// Within one session, that is: a server never shows a session an
    /// older state than it has seen, but another session's server may be
    /// behind, and show a group node that was deleted since.
    data: HashMap<String, Option<(Vec<u8>, Stat)>>,
    /// The watcher session `data` was read in, and the czxid of the group
    /// node it was read from.
    data_of: Option<(SessionId, i64)>,
    /// Counts the reads of the group: a claims list belongs to one.
    reads: u64,
    /// A claims list sent right behind the current read's list of the
    /// group, for a member likely to be promoted by it (and an observer):
    /// it saves a round trip, and proves as much, since the server answers
    /// a session's requests in order. A member's sets no watch: the claims
    /// matter to it only while one is orphaned, and only then are they
    /// watched. An observer's does: it shows them.
    early_claims: EarlyClaims,
    /// A claim names a member node that is gone: no promotion until it goes.
    blocked: bool,
    /// The claims were checked with the last read (else `blocked` is false
    /// for want of a check).
    claims_checked: bool,
    /// The claims as last listed (watch-only mode lists them on every read).
    pub(super) claims: Vec<String>,
    /// A read of the group has completed (or found no group).
    read_once: bool,
    refresh: Refresh,
    own_watch: OwnWatch,
    /// Herd-free mode: the members just ahead of ours whose deletion is
    /// watched (or asked to be) in the watcher session, with their claims.
    pub(super) ahead: Vec<super::herd::Ahead>,
    /// Bumped when this member registers a node: a read sent before then
    /// may show another node of the same name (names come back once the
    /// group is deleted by hand), so it must not give the new node a rank.
    pub(super) epoch: u64,
    /// The epoch when the read in progress was sent, and of `order`.
    read_epoch: u64,
    order_epoch: u64,
}

/// Where a read of the group is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Refresh {
    #[default]
    Idle,
    Listing,
    /// Reading the data of new children.
    Reading {
        children: Vec<String>,
        left: usize,
    },
    /// About to become master: checking the claims before applying `order`.
    Claims {
        order: Vec<String>,
    },
}

/// The deletion watch on our node, in the watcher session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum OwnWatch {
    #[default]
    None,
    Asked(SessionId, String),
    Set(SessionId, String),
    /// The watcher's server does not have the node yet: a creation watch is
    /// set, and firing asks again.
    Awaiting(SessionId, String),
}

impl Group {
    /// Every member in election order, with its data.
    /// The members as of the last completed read, in election order.
    pub(super) fn members(&self) -> Vec<Member> {
        self.members.clone()
    }

    /// The members of `order` with the data read for them.
    fn members_read(&self) -> Vec<Member> {
        self.order
            .iter()
            .filter_map(|name| {
                let (data, stat) = self.data.get(name)?.as_ref()?;
                Member::parse(name, data.clone()).map(|m| m.with_stat(stat.owner, stat.ctime))
            })
            .collect()
    }

    /// The czxid of member `name`, as read.
    pub(super) fn czxid_of(&self, name: &str) -> Option<i64> {
        let (_, stat) = self.data.get(name)?.as_ref()?;
        Some(stat.czxid)
    }

    /// Whether a claim names a member node that is gone.
    pub(super) fn blocked(&self) -> bool {
        self.blocked
    }

    pub(super) fn watcher_connected(&mut self) {
        self.stale = true;
        self.own_watch = OwnWatch::None;
        self.ahead.clear();
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.order.iter().position(|n| n == name)
    }

    /// The `n` members just ahead of `name` in the last read, none when
    /// `name` is among the first `n` (a master) or not in it.
    pub(super) fn just_ahead(&self, name: &str, n: usize) -> &[String] {
        match self.position(name) {
            Some(rank) if rank >= n => &self.order[rank - n..rank],
            _ => &[],
        }
    }
}

impl Core {
    /// Opens the watcher session when due, reads the group when stale, and
    /// keeps a deletion watch on our node.
    pub(super) fn step_watcher(&mut self, now: Instant) {
        match self.slot_due(&self.watcher, now) {
            Some(SlotDue::Open) => {
                self.watcher = self.open(Purpose::Watcher, now);
                return;
            }
            Some(SlotDue::OpenTimedOut) => {
                return self.lose_watcher("no session was established in time", now);
            }
            None => {}
        }
        let Some((session, conn)) = self.watcher.connected() else {
            return;
        };
        if self.group.stale && self.group.refresh == Refresh::Idle {
            self.group.stale = false;
            self.group.refresh = Refresh::Listing;
            self.group.read_epoch = self.group.epoch;
            self.group.reads += 1;
            // Herd-free, the group is read but not watched: the members
            // just ahead are (see `watch_ahead`).
            let op = Op::Children {
                path: self.settings.group.clone(),
                watch: !self.settings.herd_free,
            };
            self.send(session, conn, op, Why::ListGroup, now);
            self.group.early_claims = EarlyClaims::None;
            if self.may_be_promoted() {
                // An observer shows the claims: it follows them too.
                let watched = self.settings.observe;
                self.send_list_claims(session, conn, watched, now);
                self.group.early_claims = EarlyClaims::Asked;
            }
        }
        if let Some(path) = self.node.path().map(str::to_owned) {
            let current = match &self.group.own_watch {
                OwnWatch::None => false,
                OwnWatch::Asked(s, p) | OwnWatch::Set(s, p) | OwnWatch::Awaiting(s, p) => {
                    *s == session && *p == path
                }
            };
            if !current {
                self.group.own_watch = OwnWatch::Asked(session, path.clone());
                let op = Op::Exists {
                    path: path.clone(),
                    watch: true,
                };
                self.send(session, conn, op, Why::WatchOwn { path }, now);
            }
        }
    }

    /// Gives up the watcher session; another starts after a pause.
    pub(super) fn lose_watcher(&mut self, why: &str, now: Instant) {
        log::debug!("the watcher session failed ({why}); starting another");
        if let Some(session) = self.watcher.id() {
            self.commands.push_back(Command::Close { session });
            self.pending.retain(|_, p| p.session != session);
        }
        self.watcher = Slot::Idle {
            retry_at: self.next_backoff(now),
        };
        self.group.refresh = Refresh::Idle;
        self.group.stale = true;
        self.group.own_watch = OwnWatch::None;
        self.group.ahead.clear();
        self.note_failure(why);
        if self.settings.observe {
            self.set_connection(crate::role::Connection::Lost, now);
        }
    }

    /// A watch fired on `path` in `session`.
    pub(super) fn on_watch(
        &mut self,
        session: SessionId,
        path: &str,
        kind: WatchKind,
        now: Instant,
    ) {
        if kind == WatchKind::Deleted && self.node.path() == Some(path) {
            // Whichever session saw it: node names are never reused.
            return self.step_down_from_deleted_node(now);
        }
        if self.watcher.id() == Some(session) {
            self.on_watched_change(path, kind, now);
        }
    }

    /// A watch fired on `path` in the watcher session.
    fn on_watched_change(&mut self, path: &str, kind: WatchKind, now: Instant) {
        if let OwnWatch::Awaiting(_, p) = &self.group.own_watch {
            if p == path {
                self.group.own_watch = OwnWatch::None;
            }
        }
        if self.on_ahead_claim_changed(path, kind, now) {
            return; // a claim ahead: the group itself is unchanged
        }
        if kind == WatchKind::Deleted {
            self.promote_past(path);
        }
        // A watch fires once: one on a member ahead must be set again.
        self.group.ahead.retain(|a| a.path != path);
        self.group.stale = true;
    }

    /// Herd-free mode: the member of `path`, just ahead of ours, is gone.
    /// When its claim is known gone too, no read of the group is needed to
    /// know our new place: only members ahead of ours can bring it closer,
    /// they are all watched, and new members join at the back. Nor to check
    /// the claims: the last read found none orphaned, and the one claim that
    /// could have become so since is this member's, whose deletion was
    /// heard first (a session hears of changes in their order). So it is
    /// dropped from the order at once, which may make us master; the group
    /// is read again all the same.
    fn promote_past(&mut self, path: &str) {
        let Some(gone) = self.group.ahead.iter().find(|a| a.path == path) else {
            return;
        };
        let claim_gone = gone.claim_gone();
        let name = gone.name.clone();
        let Some(own) = self.node.own() else { return };
        let Some(rank) = self.group.position(&own.name) else {
            return;
        };
        let all_ahead_watched = self.group.order[..rank]
            .iter()
            .all(|n| self.group.ahead.iter().any(|a| a.name == *n));
        #[cfg(test)]
        let claim_gone = claim_gone || self.settings.mutant == super::Mutant::FastPathIgnoresClaim;
        if !claim_gone
            || !all_ahead_watched
            || !self.group.claims_checked
            || self.group.blocked
            || self.group.refresh != Refresh::Idle
            || self.group.order_epoch != self.group.epoch
        {
            return;
        }
        log::debug!("{name} left with its claim: taking its place before reading the group");
        self.group.order.retain(|n| *n != name);
        self.group.members = self.group.members_read();
    }

    pub(super) fn on_group_listed(&mut self, result: Result<Answer, Failure>, now: Instant) {
        if self.group.refresh != Refresh::Listing {
            return;
        }
        match result {
            Ok(Answer::Children(children, czxid)) => {
                // A name seen before is of another node now if the group
                // was deleted and created again (between two reads, without
                // a watch saying so), and may be if the read is of another
                // session: then every child is read again.
                let of = self.watcher.id().map(|session| (session, czxid));
                if self.group.data_of != of {
                    self.group.data.clear();
                    self.group.data_of = of;
                }
                let listed: HashSet<&String> = children.iter().collect();
                self.group.data.retain(|name, _| listed.contains(name));
                // Only children named like members can be members.
                let missing: Vec<String> = in_election_order(children.clone())
                    .into_iter()
                    .filter(|name| !self.group.data.contains_key(name))
                    .collect();
                self.group.refresh = Refresh::Reading {
                    left: missing.len(),
                    children,
                };
                let Some((session, conn)) = self.watcher.connected() else {
                    return;
                };
                for name in missing {
                    let path = format!("{}/{name}", self.settings.group);
                    self.send(
                        session,
                        conn,
                        Op::Data { path },
                        Why::ReadMember { name },
                        now,
                    );
                }
                self.finish_reading(now);
            }
            Err(Failure::NoNode) if !self.read_is_fresh() => {} // our node is newer
            Err(Failure::NoNode) => {
                if self.node.own().is_some() {
                    log::warn!("group {} was deleted", self.settings.group);
                } else {
                    // Before our first node: the group is created with it.
                    log::debug!("group {} does not exist yet", self.settings.group);
                }
                self.group.refresh = Refresh::Idle;
                self.group.data.clear();
                self.group.data_of = None;
                self.group.claims.clear();
                self.apply_order(Vec::new(), false, now);
                if self.settings.observe {
                    // Nothing to list yet: a watch for the group's creation.
                    if let Some((session, conn)) = self.watcher.connected() {
                        let path = self.settings.group.clone();
                        let op = Op::Exists { path, watch: true };
                        self.send(session, conn, op, Why::WatchGroup, now);
                    }
                }
                // Our node went with it; registering again recreates the group.
                self.step_down_from_deleted_node(now);
                self.group.stale = false;
            }
            Err(Failure::Denied(reason))
                if self.settings.observe && matches!(self.phase, Phase::Joining { .. }) =>
            {
                // An observer has no other credentials to retry with: its
                // start fails at once, as a member's join does.
                let error = crate::error::Error::AccessDenied {
                    op: "get_children",
                    path: self.settings.group.clone(),
                    reason,
                };
                self.finish_join(Err(error), now);
            }
            Err(e) => self.lose_watcher(&format!("get_children failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to get_children: {other:?}"),
        }
    }

    pub(super) fn on_member_read(
        &mut self,
        name: String,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        let Refresh::Reading { left, .. } = &mut self.group.refresh else {
            return;
        };
        *left = left.saturating_sub(1);
        match result {
            Ok(Answer::Data(data, stat)) => {
                if stat.owner == 0 {
                    log::warn!("{name} is a persistent node: not counted as a member");
                }
                let member = (stat.owner != 0).then_some((data, stat));
                self.group.data.insert(name, member);
            }
            Err(Failure::NoNode) => {} // left meanwhile: not in `data`, so dropped
            Err(e) => return self.lose_watcher(&format!("get_data failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to get_data: {other:?}"),
        }
        self.finish_reading(now);
    }

    /// Once every new child's data is in: the new order, strays of ours, and
    /// the claims check when this member is about to become master.
    fn finish_reading(&mut self, now: Instant) {
        let Refresh::Reading { left: 0, .. } = &self.group.refresh else {
            return;
        };
        if !self.read_is_fresh() {
            return;
        }
        let Refresh::Reading { children, .. } = &self.group.refresh else {
            return;
        };
        let listed = in_election_order(children.clone());
        // A member whose node was gone by the time its data was read was
        // seen gone after the early claims list: that list may predate its
        // claim, and proves nothing about it.
        let gone_since_listed = listed
            .iter()
            .any(|name| !self.group.data.contains_key(name));
        let mut order = listed;
        order.retain(|name| self.group.data.get(name).is_some_and(Option::is_some));
        self.find_strays(&order);
        let own = self.node.own().map(|o| (o.name.clone(), o.path.clone()));
        if let Some((name, path)) = &own {
            if !order.contains(name) {
                self.confirm_own(path.clone(), now);
            }
        }
        let rank = own.and_then(|(name, _)| order.iter().position(|n| *n == name));
        // An observer checks the claims on every read: it tells the masters.
        // So does a herd-free member next in line: its promotion may come
        // without a read (see `promote_past`).
        let next_in_line = if self.settings.herd_free { 2 } else { 1 };
        let promoting = self.settings.observe
            || rank.is_some_and(|r| r < next_in_line * self.settings.masters)
                && self.notified.0 != Role::Master;
        #[cfg(test)]
        let promoting = promoting && self.settings.mutant != super::Mutant::NoClaimsCheck;
        if !promoting {
            return self.apply_order(order, false, now);
        }
        self.check_claims_then_apply(order, gone_since_listed, now);
    }

    /// Whether the read in progress was sent after our node was registered;
    /// if not, it is dropped and the group read again.
    fn read_is_fresh(&mut self) -> bool {
        if self.group.read_epoch == self.group.epoch {
            return true;
        }
        self.group.refresh = Refresh::Idle;
        self.group.stale = true;
        false
    }

    fn apply_order(&mut self, order: Vec<String>, blocked: bool, now: Instant) {
        self.group.order_epoch = self.group.read_epoch;
        self.group.order = order;
        self.group.members = self.group.members_read();
        self.group.blocked = blocked;
        self.group.claims_checked = false;
        self.group.refresh = Refresh::Idle;
        self.group.read_once = true;
        if self.settings.herd_free {
            self.watch_ahead(now);
        }
    }

    /// Member nodes of sessions we gave up, and any other node of the current
    /// session (left by a create whose reply was lost), must go.
    fn find_strays(&mut self, order: &[String]) {
        let current = self.node.own().map(|o| (o.owner, o.name.clone()));
        for name in order {
            let Some(Some((_, Stat { owner, .. }))) = self.group.data.get(name) else {
                continue;
            };
            let ours_elsewhere = current
                .as_ref()
                .is_some_and(|(session, own)| session == owner && own != name);
            if ours_elsewhere || self.old_sessions.contains(owner) {
                let path = format!("{}/{name}", self.settings.group);
                if !self.strays.contains(&path) {
                    log::info!("{path} is a stray of ours: deleting it");
                    self.strays.push(path);
                }
            }
        }
    }

    /// The watcher's list lacks our node: ask the member session, whose
    /// answer also renews the lease. The watcher's server may just be behind.
    fn confirm_own(&mut self, path: String, now: Instant) {
        let asked = self
            .pending
            .values()
            .any(|p| matches!(p.why, Why::ConfirmOwn { .. }));
        if let (false, Some((session, conn))) = (asked, self.member.connected()) {
            let op = Op::Exists {
                path: path.clone(),
                watch: false,
            };
            self.send(session, conn, op, Why::ConfirmOwn { path }, now);
        }
    }

    pub(super) fn on_own_watched(
        &mut self,
        session: SessionId,
        path: String,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        if self.group.own_watch != OwnWatch::Asked(session, path.clone()) {
            return;
        }
        self.group.own_watch = match result {
            Ok(Answer::Stat(Some(_))) => OwnWatch::Set(session, path),
            Ok(Answer::Stat(None)) => OwnWatch::Awaiting(session, path),
            Err(e) => return self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => {
                log::error!("unexpected answer to exists: {other:?}");
                OwnWatch::None
            }
        };
    }

    /// Joined once our node and claim are held, a read of the group shows
    /// it, and the role it gives is known: a member among the first N also
    /// waits for its first lease, so that `join` never returns `Offline`
    /// one round trip before `Master`.
    /// An observer has joined once it has read the group.
    pub(super) fn joined(&self, now: Instant) -> bool {
        if self.settings.observe {
            return self.group.read_once;
        }
        self.node.own().is_some_and(|own| {
            own.claim == super::member::Claim::Held && self.group.position(&own.name).is_some()
        }) && self.role_at(now) != Role::Offline
    }

    /// The role our node, the group and the lease give at `now`.
    pub(super) fn role_at(&self, now: Instant) -> Role {
        if !matches!(self.phase, Phase::Running | Phase::Joining { .. }) {
            return Role::Offline;
        }
        let Some(own) = self.node.own() else {
            return Role::Offline;
        };
        let Some(rank) = self
            .group
            .position(&own.name)
            .filter(|_| self.group.order_epoch == self.group.epoch)
        else {
            return Role::Offline;
        };
        let leased = self.lease_until.is_some_and(|end| now < end);
        if rank >= self.settings.masters || (self.group.blocked && self.notified.0 != Role::Master)
        {
            Role::Slave
        } else if leased && own.claim == super::member::Claim::Held {
            Role::Master
        } else {
            Role::Offline
        }
    }
}
