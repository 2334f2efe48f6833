//! Herd-free mode (`Config::herd_free`): instead of watching the whole group,
//! a member watches only the members just ahead of it, and, while a claim
//! without its node holds it back, the node that claim names.

use std::time::Instant;

use super::{Answer, Core, Failure, Op, SessionId, Why};

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
            .retain(|(s, path)| *s == session && wanted.contains(path));
        for path in wanted {
            if self.group.ahead.iter().any(|(_, p)| *p == path) {
                continue;
            }
            self.group.ahead.push((session, path.clone()));
            let op = Op::Exists {
                path: path.clone(),
                watch: true,
            };
            self.send(session, conn, op, Why::WatchAhead { path }, now);
        }
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

    /// The watch on a member ahead is set; if that member is already gone,
    /// the group is read again.
    pub(super) fn on_ahead_watched(
        &mut self,
        session: SessionId,
        path: String,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        if !self.group.ahead.contains(&(session, path.clone())) {
            return;
        }
        match result {
            Ok(Answer::Stat(Some(_))) => {}
            Ok(Answer::Stat(None)) => {
                self.group.ahead.retain(|(_, p)| *p != path);
                self.group.stale = true;
            }
            Err(e) => self.lose_watcher(&format!("exists failed: {e:?}"), now),
            Ok(other) => log::error!("unexpected answer to exists: {other:?}"),
        }
    }
}
