//! Herd-free mode (`Config::herd_free`): instead of watching the whole group,
//! a member watches only the members just ahead of it and their claims, and,
//! while a claim without its node holds it back, the node that claim names.

use std::time::Instant;

use super::member::node_claim_name;
use super::{Answer, Core, Failure, Op, SessionId, WatchKind, Why};

/// A member just ahead of ours, watched in the watcher session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ahead {
    pub(super) session: SessionId,
    pub(super) name: String,
    /// Its node's path.
    pub(super) path: String,
    /// Its node's czxid as read: a node of the same name in a group deleted
    /// and created again is another member. `None` if not read.
    czxid: Option<i64>,
    /// Its claim's path, and what the watch on it says; `None` if its czxid
    /// was not read.
    claim: Option<(String, ClaimSeen)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimSeen {
    /// The watch is asked for.
    Asked,
    Present,
    /// Missing when the watch was set, or deleted since. A member makes its
    /// claim once per node (an admin deleting it by hand is the documented
    /// limit of the claims), so a claim deleted stays so.
    Gone,
}

impl Ahead {
    pub(super) fn claim_gone(&self) -> bool {
        matches!(self.claim, Some((_, ClaimSeen::Gone)))
    }
}

impl Core {
    /// Herd-free mode: watches the deletion of the `masters` members just
    /// ahead of ours. Only a member leaving can bring ours closer to the
    /// front (new ones join at the back), and while more than `masters` are
    /// ahead, one leaving from further ahead leaves `masters` ahead: so our
    /// role can change only when one of these goes, and then we read the
    /// group again. A master has none ahead to watch.
    pub(super) fn watch_ahead(&mut self, now: Instant) {
        let Some((session, conn)) = self.watcher.connected() else {
            return;
        };
        let masters = self.settings.masters;
        let ahead = match self.node.own() {
            Some(own) => self.group.just_ahead(&own.name, masters),
            None => &[],
        };
        let wanted: Vec<String> = ahead
            .iter()
            .map(|name| format!("{}/{name}", self.settings.group))
            .collect();
        self.group
            .ahead
            .retain(|a| a.session == session && wanted.contains(&a.path));
        for path in wanted {
            if self.group.ahead.iter().any(|a| a.path == path) {
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            let czxid = self.group.czxid_of(&name);
            let claim = czxid.map(|czxid| {
                (
                    self.claim_path(&node_claim_name(czxid, &name)),
                    ClaimSeen::Asked,
                )
            });
            let op = Op::Exists {
                path: path.clone(),
                watch: true,
            };
            self.send(
                session,
                conn,
                op,
                Why::WatchAhead { path: path.clone() },
                now,
            );
            if let Some((claim_path, _)) = &claim {
                self.watch_ahead_claim(session, conn, claim_path.clone(), now);
            }
            self.group.ahead.push(Ahead {
                session,
                name,
                path,
                czxid,
                claim,
            });
        }
    }

    fn watch_ahead_claim(
        &mut self,
        session: SessionId,
        conn: super::Conn,
        path: String,
        now: Instant,
    ) {
        let op = Op::Exists {
            path: path.clone(),
            watch: true,
        };
        self.send(session, conn, op, Why::WatchAheadClaim { path }, now);
    }

    /// The watch on the claim of a member ahead is set.
    pub(super) fn on_ahead_claim_watched(
        &mut self,
        session: SessionId,
        path: &str,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        let seen = match result {
            Ok(Answer::Stat(Some(_))) => ClaimSeen::Present,
            Ok(Answer::Stat(None)) => ClaimSeen::Gone,
            Err(e) => return self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => return log::error!("unexpected answer to exists: {other:?}"),
        };
        for ahead in &mut self.group.ahead {
            if let Some((claim, state)) = &mut ahead.claim {
                if ahead.session == session && claim == path && *state == ClaimSeen::Asked {
                    *state = seen;
                }
            }
        }
    }

    /// A watch on the claim of a member ahead fired: deleted, it stays so;
    /// created, it is watched again (for its deletion). False if `path` is
    /// no such claim.
    pub(super) fn on_ahead_claim_changed(
        &mut self,
        path: &str,
        kind: WatchKind,
        now: Instant,
    ) -> bool {
        let mut rearm = None;
        let mut found = false;
        for ahead in &mut self.group.ahead {
            if let Some((claim, state)) = &mut ahead.claim {
                if claim == path {
                    found = true;
                    *state = match kind {
                        WatchKind::Deleted => ClaimSeen::Gone,
                        WatchKind::Changed => {
                            rearm = Some(ahead.session);
                            ClaimSeen::Asked
                        }
                    };
                }
            }
        }
        if let (Some(session), Some((current, conn))) = (rearm, self.watcher.connected()) {
            if session == current {
                self.watch_ahead_claim(session, conn, path.to_owned(), now);
            }
        }
        found
    }

    /// Herd-free mode: a watch on the member node each orphaned claim names.
    /// If that node is there (made after our read), the group is read again;
    /// if not, its creation will fire the watch.
    pub(super) fn watch_claimed(&mut self, claims: &[String], now: Instant) {
        let Some((session, conn)) = self.watcher.connected() else {
            return;
        };
        for claim in claims {
            let Some((czxid, name)) = claim.split_once('-') else {
                continue;
            };
            let Ok(czxid) = i64::from_str_radix(czxid, 16) else {
                continue;
            };
            let path = format!("{}/{name}", self.settings.group);
            let op = Op::Exists {
                path: path.clone(),
                watch: true,
            };
            self.send(session, conn, op, Why::WatchClaimed { path, czxid }, now);
        }
    }

    /// The node an orphaned claim names: if it is the very node the claim
    /// was made for, the claim is not orphaned after all: read again.
    pub(super) fn on_claimed_watched(
        &mut self,
        czxid: i64,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        match result {
            Ok(Answer::Stat(Some(stat))) if stat.czxid == czxid => self.group.stale = true,
            Ok(Answer::Stat(_)) => {}
            Err(e) => self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to exists: {other:?}"),
        }
    }

    /// Watch-only mode: the watch for the group's creation is set; if the
    /// group was created meanwhile, it is read again.
    pub(super) fn on_group_watched(&mut self, result: Result<Answer, Failure>, now: Instant) {
        match result {
            Ok(Answer::Stat(Some(_))) => self.group.stale = true,
            Ok(Answer::Stat(None)) => {}
            Err(e) => self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to exists: {other:?}"),
        }
    }

    /// The watch on a member ahead is set; if that member is already gone
    /// (its node missing, or another of the same name there), the group is
    /// read again.
    pub(super) fn on_ahead_watched(
        &mut self,
        session: SessionId,
        path: String,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        let Some(read) = self
            .group
            .ahead
            .iter()
            .find(|a| a.session == session && a.path == path)
            .map(|a| a.czxid)
        else {
            return;
        };
        match result {
            Ok(Answer::Stat(Some(stat))) if read.is_none_or(|czxid| czxid == stat.czxid) => {}
            Ok(Answer::Stat(_)) => {
                self.group.ahead.retain(|a| a.path != path);
                self.group.stale = true;
            }
            Err(e) => self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to exists: {other:?}"),
        }
    }
}
