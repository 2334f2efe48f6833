//! Leaving: resigning (for good) and requeueing (to the back of the group).

use std::time::Instant;

use super::member::{claim_name, Node};
use super::{later, Answer, Command, Core, Failure, Phase, Slot, Why};
use crate::error::Error;

/// Longest a resign waits for its deletions before it closes the session.
const MAX_RESIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Core {
    /// Steps down at once, deletes the claim and then the node (in one go:
    /// a session's requests are applied in order), and closes the sessions.
    pub(super) fn resign(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Resigning { .. } | Phase::Done) {
            return;
        }
        let wait = (self.timeout / 2).min(MAX_RESIGN_WAIT);
        self.phase = Phase::Resigning {
            deadline: later(now, wait),
        };
        self.lease_until = None;
        self.fail_requeue(Error::Resigned);
        if let Some(session) = self.watcher.id() {
            self.commands.push_back(Command::Close { session });
            self.pending.retain(|_, p| p.session != session);
            self.watcher = Slot::Idle { retry_at: now };
        }
        self.pending
            .retain(|_, p| !matches!(p.why, Why::Renew { .. } | Why::RenewSync));
        self.leave(now);
        self.strays.clear();
    }

    /// Deletes our claim, our node and known strays on the member session.
    pub(super) fn leave(&mut self, now: Instant) {
        let Some((session, conn)) = self.member.connected() else {
            return;
        };
        let mut paths = Vec::new();
        if let Node::Held(own) = std::mem::replace(&mut self.node, Node::Absent) {
            paths.push(self.claim_path(&claim_name(&own)));
            paths.push(own.path);
        }
        paths.extend(self.strays.iter().cloned());
        self.send_deletes(session, conn, paths, |path| Why::Leave { path }, now);
    }

    pub(super) fn on_left(&mut self, path: &str, result: Result<Answer, Failure>, _now: Instant) {
        match result {
            Ok(_) | Err(Failure::NoNode) => {}
            Err(e) => {
                log::warn!("could not delete {path} ({e:?}); it goes when the session ends");
                if !matches!(self.phase, Phase::Resigning { .. }) {
                    self.strays.push(path.to_owned());
                }
            }
        }
    }

    /// Deletes our node and joins again at the back, in the same session.
    pub(super) fn requeue(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Resigning { .. } | Phase::Done) {
            self.commands
                .push_back(Command::Requeued(Err(Error::Resigned)));
            return;
        }
        if self.requeue_waiting {
            return;
        }
        let Some((session, conn)) = self.member.connected() else {
            // No node, or none we can delete now: the next one goes to the back anyway.
            self.commands.push_back(Command::Requeued(Ok(())));
            return;
        };
        if self.node.own().is_none() {
            self.commands.push_back(Command::Requeued(Ok(())));
            return;
        }
        self.lease_until = None;
        self.requeue_waiting = true;
        self.leave(now);
        self.node = Node::Creating;
        self.send_create_member(session, conn, now);
    }

    pub(super) fn fail_requeue(&mut self, error: Error) {
        if self.requeue_waiting {
            self.requeue_waiting = false;
            self.commands.push_back(Command::Requeued(Err(error)));
        }
    }
}
