//! What callers see: the view published after every step, the callbacks
//! told of each change, the masters as the group gives them, and the
//! counters behind [`crate::Metrics`].

use std::time::Instant;

use super::{Command, Core, Phase, View};
use crate::member::Member;
use crate::role::{Connection, Role, RoleChange};

impl Core {
    /// Publishes what callers see if it changed, and tells the callbacks of
    /// a change of role, connection or masters.
    pub(super) fn publish(&mut self, now: Instant) {
        let role = self.role_at(now);
        let old = self.notified.0;
        if role != old {
            self.counters.role_transitions += 1;
            let lapsed = self.lease_until.is_some_and(|end| now >= end);
            if old == Role::Master && lapsed {
                self.counters.lease_lapses += 1;
            }
        }
        let members = self.group.members();
        let masters = self.masters_of(&members);
        let resigned = matches!(self.phase, Phase::Resigning { .. } | Phase::Done);
        let view = View {
            role,
            lease_until: self.lease_until.filter(|_| role == Role::Master),
            member: self.node.name().map(str::to_owned),
            members: if resigned { Vec::new() } else { members },
            masters: if resigned { Vec::new() } else { masters },
            token: self.node.czxid().filter(|_| role == Role::Master),
            connection: if resigned {
                Connection::Lost
            } else {
                self.connection
            },
            connection_since: self.connection_since,
            session_timeout: self.granted,
            resigned,
            counters: self.counters,
            claims: if self.settings.observe && !resigned {
                self.group.claims.clone()
            } else {
                Vec::new()
            },
        };
        if self.published.as_ref() != Some(&view) {
            self.published = Some(view.clone());
            self.commands.push_back(Command::Publish(view.clone()));
        }
        let observed = if self.settings.observe {
            view.members.clone()
        } else {
            Vec::new()
        };
        let told = (view.role, view.connection, view.masters.clone(), observed);
        if told != self.notified {
            log::debug!("role {old} -> {role}, connection {}", view.connection);
            self.notified = told;
            self.commands.push_back(Command::Notify(RoleChange {
                old,
                new: role,
                member: view.member.clone(),
                masters: view.masters,
                members: view.members.clone(),
                connection: view.connection,
                at: now,
            }));
        }
    }

    /// The masters `members` (in election order) give: the first N. A
    /// member promoted while a claim names a node that is gone waits, as
    /// the member itself does (see `role_at`): an observer, which cannot ask
    /// it, keeps among the first N only those it already told as masters.
    fn masters_of(&self, members: &[Member]) -> Vec<Member> {
        let first = members.iter().take(self.settings.masters);
        if self.settings.observe && self.group.blocked() {
            let told = &self.notified.2;
            first
                .filter(|m| told.iter().any(|t| t.name() == m.name()))
                .cloned()
                .collect()
        } else {
            first.cloned().collect()
        }
    }
}
