//! The checks: the promise after every event, liveness once faults stop,
//! cleanliness after everyone resigns.

use std::time::Duration;

/// The longest overlap measured; a longer one is reported as this.
const OVERLAP_CAP: Duration = Duration::from_secs(60);

use super::world::{key_text, World};
use super::Violation;
use crate::core::Input;

impl World {
    /// Once faults stop, the right number of members must be master within
    /// three session timeouts plus 5 s, and stay so for 2 s.
    pub(super) fn check_liveness(&mut self, faults_end: Duration) -> Result<(), Violation> {
        let settle = self.session_timeout * 3 + Duration::from_secs(5);
        let mut at = faults_end + settle;
        while at <= faults_end + settle + Duration::from_secs(2) {
            self.run_until(at)?;
            let alive = self
                .members
                .iter()
                .filter(|m| !m.resigning && !m.observer)
                .count();
            let masters = (0..self.members.len())
                .filter(|&m| self.is_master(m))
                .count();
            if masters != alive.min(self.masters) {
                self.note_state();
                return Err(Violation::Liveness { at, masters, alive });
            }
            self.check_observer(at)?;
            at += Duration::from_millis(250);
        }
        Ok(())
    }

    /// Everyone resigns; once every Resigned is seen and the closes are
    /// applied, no ephemeral node may be left.
    pub(super) fn check_cleanliness(&mut self) -> Result<(), Violation> {
        for m in 0..self.members.len() {
            if !self.members[m].resigning {
                self.members[m].resigning = true;
                self.feed(m, Input::Resign);
            }
        }
        let deadline = self.now + Duration::from_secs(5);
        while self.now < deadline && self.members.iter().any(|m| !m.resigned) {
            let step = self.now + Duration::from_millis(10);
            self.run_until(step)?;
        }
        if let Some(member) = self.members.iter().position(|m| !m.resigned) {
            return Err(Violation::ResignHung { member });
        }
        // Closes travel like any message: let them all arrive.
        let settled = self.now + self.mix.slow + Duration::from_millis(100);
        self.run_until(settled)?;
        let left: Vec<String> = self
            .tree
            .ephemerals()
            .into_iter()
            .map(|(path, owner)| format!("{path} (session {owner:#x})"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(Violation::Cleanliness { left })
        }
    }

    /// Once the masters have settled, the observer tells the same masters,
    /// as the members themselves list them.
    fn check_observer(&mut self, at: std::time::Duration) -> Result<(), Violation> {
        let node = |m: &super::world::Member| m.view.as_ref().and_then(|v| v.member.clone());
        let mut masters: Vec<String> = (0..self.members.len())
            .filter(|&m| self.is_master(m))
            .filter_map(|m| node(&self.members[m]))
            .collect();
        masters.sort();
        let Some(observer) = self.members.iter().find(|m| m.observer) else {
            return Ok(());
        };
        let mut observed: Vec<String> = observer
            .view
            .iter()
            .flat_map(|v| v.masters.iter().map(|m| m.name().to_owned()))
            .collect();
        observed.sort();
        if observed == masters {
            return Ok(());
        }
        self.note_state();
        Err(Violation::Observer {
            at,
            observed,
            masters,
        })
    }

    /// What a member publishes is one consistent view: a master is among
    /// the masters it lists.
    pub(super) fn check_views(&mut self) -> Result<(), Violation> {
        for (member, m) in self.members.iter().enumerate() {
            let Some(view) = &m.view else { continue };
            let listed = view
                .masters
                .iter()
                .any(|master| Some(master.name()) == view.member.as_deref());
            if view.role == crate::role::Role::Master && !listed {
                return Err(Violation::View {
                    at: self.now,
                    member,
                });
            }
        }
        Ok(())
    }

    pub(super) fn check_promise(&mut self) -> Result<(), Violation> {
        let masters: Vec<usize> = (0..self.members.len())
            .filter(|&m| self.is_master(m))
            .collect();
        let too_many = masters.len() > self.masters;
        match self.overlap.take() {
            None if too_many => {
                self.note(|| format!("VIOLATION: masters {masters:?}"));
                self.overlap = Some((self.now, masters));
                Ok(())
            }
            None => Ok(()),
            // The run goes on until the overlap ends, to measure it.
            Some((at, first)) if too_many && self.now < at + OVERLAP_CAP => {
                self.overlap = Some((at, first));
                Ok(())
            }
            Some((at, masters)) => {
                let violation = Violation::Promise {
                    at,
                    masters,
                    overlap: self.now - at,
                };
                self.note(|| format!("VIOLATION ends: {violation:?}"));
                Err(violation)
            }
        }
    }

    /// While more than `masters` are master: when the next of their leases
    /// ends, to end the overlap exactly.
    pub(super) fn next_lease_end(&self) -> Option<Duration> {
        self.overlap.as_ref()?;
        (0..self.members.len())
            .filter(|&m| self.is_master(m))
            .filter_map(|m| {
                let end = self.members[m].view.as_ref()?.lease_until?;
                Some(self.global_time(m, end))
            })
            .min()
    }

    /// Adds what each member sees, and the tree, to the trace.
    fn note_state(&mut self) {
        for m in 0..self.members.len() {
            let member = &self.members[m];
            let line = match &member.view {
                Some(v) => format!(
                    "STATE m{m}: {:?} node {:?} {:?} members {:?} frozen {} partitioned {} resigning {}",
                    v.role,
                    v.member,
                    v.connection,
                    v.members.iter().map(|x| x.name().to_owned()).collect::<Vec<_>>(),
                    member.frozen,
                    member.partitioned,
                    member.resigning,
                ),
                None => format!("STATE m{m}: no view"),
            };
            self.note(|| line);
        }
        let group = self.tree.children(&self.group);
        let claims = self.tree.children(&self.claims_dir);
        let sessions: Vec<String> = self
            .sessions
            .iter()
            .map(|(id, s)| format!("{id:#x}:{}", key_text(s.client())))
            .collect();
        self.note(|| {
            format!("STATE tree: group {group:?} claims {claims:?} sessions {sessions:?}")
        });
    }
}
