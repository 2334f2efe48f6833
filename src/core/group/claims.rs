//! The claims check before a promotion: the claims list sent with a read of
//! the group, and the check that no claim names a member node that is gone.

use std::collections::HashSet;
use std::time::Instant;

use super::{Refresh, SessionId};
use crate::core::{Answer, Core, Failure, Op, Why};
use crate::member::sequence_of;
use crate::role::Role;

/// The claims list sent with the current read of the group.
#[derive(Debug, Default)]
pub(super) enum EarlyClaims {
    #[default]
    None,
    Asked,
    Got(Result<Answer, Failure>, bool),
}

impl Core {
    /// Whether the next read of the group may well make this member master
    /// (or, for an observer, name the masters): it is among the first 2N,
    /// or it is herd-free, where a slave reads the group only when a member
    /// just ahead left (its place as last read may be long out of date).
    pub(super) fn may_be_promoted(&self) -> bool {
        if self.settings.observe {
            return true;
        }
        if self.notified.0 == Role::Master {
            return false;
        }
        self.node.own().is_some_and(|own| {
            self.settings.herd_free
                || self
                    .group
                    .position(&own.name)
                    .is_none_or(|rank| rank < 2 * self.settings.masters)
        })
    }

    pub(super) fn send_list_claims(
        &mut self,
        session: SessionId,
        conn: crate::core::Conn,
        watched: bool,
        now: Instant,
    ) {
        let op = Op::Children {
            path: self.claims_dir(),
            watch: watched,
        };
        let refresh = self.group.reads;
        self.send(session, conn, op, Why::ListClaims { refresh, watched }, now);
    }

    /// Checks the claims before applying `order` (the early list, unless a
    /// member was found gone after it), then applies it.
    pub(super) fn check_claims_then_apply(
        &mut self,
        order: Vec<String>,
        gone_since_listed: bool,
        now: Instant,
    ) {
        self.group.refresh = Refresh::Claims { order };
        let early = std::mem::take(&mut self.group.early_claims);
        if gone_since_listed {
            self.group.reads += 1; // an early list still on its way is of no use
        }
        match early {
            EarlyClaims::Got(result, watched) if !gone_since_listed => {
                self.check_claims(result, watched, now)
            }
            EarlyClaims::Asked if !gone_since_listed => {} // its answer is on its way
            _ => match self.watcher.connected() {
                Some((session, conn)) => self.send_list_claims(session, conn, true, now),
                // Disconnected: read again once connected.
                None => {
                    self.group.refresh = Refresh::Idle;
                    self.group.stale = true;
                }
            },
        }
    }

    pub(in crate::core) fn on_claims_listed(
        &mut self,
        refresh: u64,
        watched: bool,
        result: Result<Answer, Failure>,
        now: Instant,
    ) {
        if refresh != self.group.reads {
            return; // of an earlier read of the group
        }
        match self.group.refresh {
            Refresh::Claims { .. } => self.check_claims(result, watched, now),
            Refresh::Listing | Refresh::Reading { .. } => {
                self.group.early_claims = EarlyClaims::Got(result, watched);
            }
            Refresh::Idle => {}
        }
    }

    /// The claims check before a promotion: none may name a member node
    /// that is gone.
    fn check_claims(&mut self, result: Result<Answer, Failure>, watched: bool, now: Instant) {
        let Refresh::Claims { order } = std::mem::take(&mut self.group.refresh) else {
            return;
        };
        if !self.read_is_fresh() {
            return;
        }
        let blocked = match result {
            Ok(Answer::Children(claims, _)) => {
                // A claim counts only for the very node it was made for.
                let members: HashSet<String> = order
                    .iter()
                    .filter_map(|name| {
                        let czxid = self.group.czxid_of(name)?;
                        Some(crate::core::member::node_claim_name(czxid, name))
                    })
                    .collect();
                let orphaned: Vec<&String> = claims
                    .iter()
                    .filter(|c| sequence_of(c).is_some() && !members.contains(c.as_str()))
                    .collect();
                if !orphaned.is_empty() && !watched {
                    // The wait ends when they go: list them again, watched.
                    if let Some((session, conn)) = self.watcher.connected() {
                        self.group.refresh = Refresh::Claims { order };
                        return self.send_list_claims(session, conn, true, now);
                    }
                }
                self.group.claims = claims.clone();
                self.group.claims.sort();
                if !orphaned.is_empty() {
                    log::info!("waiting for {orphaned:?} to step down: their nodes are gone");
                }
                if self.settings.herd_free {
                    // The group is not watched: watch what can end the wait.
                    // The claims are (their deletion); the nodes they name
                    // may only be newer than our read.
                    let orphaned: Vec<String> = orphaned.iter().map(|c| c.to_string()).collect();
                    self.watch_claimed(&orphaned, now);
                }
                !orphaned.is_empty()
            }
            Err(Failure::NoNode) => {
                self.group.claims.clear();
                false
            }
            Err(e) => return self.lose_watcher(&format!("get_children failed: {e:?}"), now),
            Ok(other) => {
                log::error!("unexpected answer to get_children: {other:?}");
                true
            }
        };
        self.apply_order(order, blocked, now);
        self.group.claims_checked = true;
    }
}
