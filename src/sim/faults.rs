//! The faults the scheduler injects, and the mixes that weigh them.

use std::time::Duration;

use super::world::{Event, World};
use crate::core::Mutant;

/// Something done to the system from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// Pick the next fault from the mix.
    Pick,
    /// One connection of the member drops (the session may survive).
    Drop {
        member: usize,
    },
    /// The member's network goes silent for `length` (maybe past expiry).
    Partition {
        member: usize,
        length: Duration,
    },
    Heal {
        member: usize,
    },
    /// The server goes down for `down`: every connection drops, sessions
    /// survive and their expiry is counted afresh.
    ServerRestart {
        down: Duration,
    },
    ServerUp,
    /// Someone deletes a member node by hand (the first one if `first`).
    DeleteNode {
        first: bool,
    },
    DeleteClaim,
    DeleteGroup,
    /// The member's process stops: its clock runs, it handles nothing.
    Freeze {
        member: usize,
        length: Duration,
    },
    Thaw {
        member: usize,
    },
    /// A current master freezes, and its node (or the whole group) is
    /// deleted by hand while it is frozen.
    FreezeMasterThenDelete {
        group: bool,
    },
    Requeue {
        member: usize,
    },
    Resign {
        member: usize,
    },
    /// The member's server is a follower cut off from the leader for
    /// `length`: for its first syncLimit × tick it still answers reads from
    /// its stale copy, then it drops its clients, who reach no other server
    /// until `length` ends; all along the leader hears nothing of them.
    StaleFollower {
        member: usize,
        length: Duration,
    },
    /// The follower gives up: its clients are cut off until `rest` has passed.
    StaleEnd {
        rest: Duration,
    },
}

/// Weights of the faults, and the network's behaviour.
#[derive(Debug, Clone)]
pub(super) struct Mix {
    pub(super) mutant: Mutant,
    /// Simulated time with faults, after which everything heals.
    pub(super) fault_window: Duration,
    /// Mean gap between faults.
    pub(super) fault_gap: Duration,
    pub(super) drop: u32,
    pub(super) partition: u32,
    pub(super) restart: u32,
    pub(super) delete_node: u32,
    pub(super) delete_claim: u32,
    pub(super) delete_group: u32,
    pub(super) freeze: u32,
    pub(super) freeze_master_then_delete: u32,
    pub(super) requeue: u32,
    pub(super) resign: u32,
    pub(super) stale_follower: u32,
    /// Chance a message is slow (up to `slow`) instead of fast.
    pub(super) slow_chance: f64,
    pub(super) slow: Duration,
    /// Chance a reply is lost though its request was applied.
    pub(super) lost_reply: f64,
    /// Chance an in-flight request fails with Interrupted when its
    /// connection drops (else its reply is just lost).
    pub(super) interrupt: f64,
    /// Chance a reply applied before its connection dropped (and not failed)
    /// still reaches the member afterwards, on no connection.
    pub(super) late_reply: f64,
    /// Chance a master's link dies right behind the answer to its renewal.
    pub(super) cut_after_renewal: f64,
    /// Chance a backend gives up a watcher session at a disconnect.
    pub(super) watcher_gives_up: f64,
    /// Largest clock rate error, in parts per million.
    pub(super) clock_ppm: i64,
    /// Faults aimed at one member hit a current master when there is one.
    pub(super) aim_at_master: bool,
    /// Only replies are slow (requests are fast).
    pub(super) slow_replies_only: bool,
    /// Claims and nodes may both be deleted by hand in one schedule (which
    /// a frozen or cut-off master cannot survive, whatever the core does).
    pub(super) claims_and_nodes_by_hand: bool,
    /// Faults aimed at one member may hit the observer too (dropped
    /// connections, partitions, freezes, a stale follower; never a requeue
    /// or a resign), so its containment is tested, not only its reading.
    pub(super) fault_observer: bool,
    /// Check only the promise (for mutants, whose other failures are moot).
    pub(super) promise_only: bool,
}

impl Mix {
    /// Everything but the stale follower.
    pub(super) fn standard() -> Mix {
        Mix {
            mutant: Mutant::None,
            fault_window: Duration::from_secs(10),
            fault_gap: Duration::from_millis(900),
            drop: 6,
            partition: 4,
            restart: 2,
            delete_node: 2,
            delete_claim: 2,
            delete_group: 1,
            freeze: 3,
            freeze_master_then_delete: 2,
            requeue: 2,
            resign: 1,
            stale_follower: 0,
            slow_chance: 0.05,
            slow: Duration::from_millis(400),
            lost_reply: 0.01,
            interrupt: 0.5,
            late_reply: 0.5,
            cut_after_renewal: 0.0,
            watcher_gives_up: 0.3,
            clock_ppm: 10_000,
            aim_at_master: false,
            slow_replies_only: false,
            promise_only: false,
            claims_and_nodes_by_hand: false,
            fault_observer: false,
        }
    }

    /// No faults at all but the given weights.
    pub(super) fn only(mutant: Mutant) -> Mix {
        Mix {
            mutant,
            drop: 0,
            partition: 0,
            restart: 0,
            delete_node: 0,
            delete_claim: 0,
            delete_group: 0,
            freeze: 0,
            freeze_master_then_delete: 0,
            requeue: 0,
            resign: 0,
            stale_follower: 0,
            promise_only: true,
            ..Mix::standard()
        }
    }
}

impl World {
    /// Picks a fault by weight and applies it, then schedules the next pick.
    pub(super) fn pick_fault(&mut self) {
        let mix = self.mix.clone();
        // Not the observer (the last), unless the mix says so.
        let n = self.members.len() as u64 - u64::from(!mix.fault_observer);
        let mut member = self.rng.below(n) as usize;
        if mix.aim_at_master {
            member = (0..self.members.len())
                .find(|&m| self.is_master(m))
                .unwrap_or(member);
        }
        let t = self.session_timeout;
        let weights = [
            mix.drop,
            mix.partition,
            mix.restart,
            mix.delete_node,
            mix.delete_claim,
            mix.delete_group,
            mix.freeze,
            mix.freeze_master_then_delete,
            mix.requeue,
            mix.resign,
            mix.stale_follower,
        ];
        let total: u32 = weights.iter().sum();
        let next = self.rng.between(mix.fault_gap / 4, mix.fault_gap * 7 / 4);
        if self.now + next < mix.fault_window {
            self.schedule(next, Event::Fault(Fault::Pick));
        }
        if total == 0 {
            return;
        }
        let mut roll = self.rng.below(u64::from(total)) as u32;
        let mut kind = 0;
        while roll >= weights[kind] {
            roll -= weights[kind];
            kind += 1;
        }
        // Deleting a live master's claim and then its node (or the group)
        // by hand defeats any successor's check: a schedule deletes one kind.
        let kind = match (kind, self.claims_by_hand) {
            _ if mix.claims_and_nodes_by_hand => kind,
            (4, false) | (3 | 5 | 7, true) => 0,
            _ => kind,
        };
        let fault = match kind {
            0 => Fault::Drop { member },
            1 => Fault::Partition {
                member,
                length: self.rng.between(t / 10, t * 5 / 2),
            },
            2 => Fault::ServerRestart {
                down: self.rng.between(Duration::from_millis(50), t * 3 / 4),
            },
            3 => Fault::DeleteNode {
                first: self.rng.chance(0.7),
            },
            4 => Fault::DeleteClaim,
            5 => Fault::DeleteGroup,
            6 => Fault::Freeze {
                member,
                length: self.rng.between(t / 10, t * 3 / 2),
            },
            7 => Fault::FreezeMasterThenDelete {
                group: self.rng.chance(0.5),
            },
            8 => Fault::Requeue { member },
            9 => Fault::Resign { member },
            _ => Fault::StaleFollower {
                member,
                length: self.rng.between(t, t * 2),
            },
        };
        self.apply_fault(fault);
    }

    /// Does what `fault` says, now.
    pub(super) fn apply_fault(&mut self, fault: Fault) {
        self.note(|| format!("FAULT {fault:?}"));
        self.stats.faults += 1;
        match fault {
            Fault::Pick => self.pick_fault(),
            Fault::Drop { member } => {
                let keys = self.connected_clients(member);
                if !keys.is_empty() {
                    let i = self.rng.below(keys.len() as u64) as usize;
                    self.drop_connection(keys[i]);
                }
            }
            Fault::Partition { member, length } => self.partition(member, length),
            Fault::Heal { member } => self.heal(member),
            Fault::ServerRestart { down } => self.restart_server(down),
            Fault::ServerUp => self.server_up(),
            Fault::DeleteNode { first } => self.delete_member_node(first),
            Fault::DeleteClaim => {
                let claims = self.tree.children(&self.claims_dir);
                if !claims.is_empty() {
                    let i = self.rng.below(claims.len() as u64) as usize;
                    let path = format!("{}/{}", self.claims_dir, claims[i]);
                    self.delete_by_hand(&path);
                }
            }
            Fault::DeleteGroup => {
                let group = self.group.clone();
                self.delete_by_hand(&group);
            }
            Fault::Freeze { member, length } => self.freeze(member, length),
            Fault::Thaw { member } => self.thaw(member),
            Fault::FreezeMasterThenDelete { group } => self.freeze_master_then_delete(group),
            Fault::Requeue { member } if !self.members[member].observer => {
                self.feed(member, crate::core::Input::Requeue)
            }
            Fault::Requeue { .. } => {}
            Fault::Resign { member } => self.resign(member),
            Fault::StaleFollower { member, length } => self.stale_follower(member, length),
            Fault::StaleEnd { rest } => self.stale_end(rest),
        }
    }

    /// A fault's length, cut so that it ends with the fault window.
    fn capped(&self, length: Duration) -> Duration {
        length.min(self.mix.fault_window.saturating_sub(self.now))
    }

    pub(super) fn partition(&mut self, member: usize, length: Duration) {
        if self.members[member].partitioned {
            return;
        }
        let length = self.capped(length);
        self.members[member].partitioned = true;
        // Some backends notice at once (a reset), others only when a request
        // misses its deadline and the core cuts the connection.
        for key in self.connected_clients(member) {
            if self.rng.chance(0.5) {
                self.drop_connection(key);
            }
        }
        self.schedule(length, Event::Fault(Fault::Heal { member }));
    }

    fn heal(&mut self, member: usize) {
        self.members[member].partitioned = false;
        // A connection whose session expired meanwhile was closed by the server.
        for key in self.connected_clients(member) {
            if self.server_session_alive(key) {
                // TCP delivers at last what the server sent meanwhile.
                self.flush_missed_watches(key);
            } else {
                self.drop_connection(key);
            }
        }
    }

    fn restart_server(&mut self, down: Duration) {
        if !self.server_up || self.stale.is_some() {
            return;
        }
        self.server_up = false;
        for key in self.all_connected_clients() {
            self.drop_connection(key);
        }
        let down = self.capped(down);
        self.schedule(down, Event::Fault(Fault::ServerUp));
    }

    fn server_up(&mut self) {
        self.server_up = true;
        let now = self.now;
        for session in self.sessions.values_mut() {
            session.heard = now;
        }
    }

    fn delete_member_node(&mut self, first: bool) {
        let children = crate::member::in_election_order(self.tree.children(&self.group));
        if children.is_empty() {
            return;
        }
        let i = if first {
            0
        } else {
            self.rng.below(children.len() as u64) as usize
        };
        let path = format!("{}/{}", self.group, children[i]);
        self.delete_by_hand(&path);
    }

    fn freeze(&mut self, member: usize, length: Duration) {
        if self.members[member].frozen {
            return;
        }
        let length = self.capped(length);
        self.members[member].frozen = true;
        self.schedule(length, Event::Fault(Fault::Thaw { member }));
    }

    fn thaw(&mut self, member: usize) {
        self.members[member].frozen = false;
        let backlog = std::mem::take(&mut self.members[member].backlog);
        for input in backlog {
            self.feed(member, input);
        }
        self.wake(member);
    }

    fn freeze_master_then_delete(&mut self, group: bool) {
        let Some(master) = (0..self.members.len()).find(|&m| self.is_master(m)) else {
            return;
        };
        let t = self.session_timeout;
        let length = self.rng.between(t / 2, t);
        self.freeze(master, length);
        if group {
            let group = self.group.clone();
            self.delete_by_hand(&group);
        } else if let Some(path) = self.members[master].node_path() {
            self.delete_by_hand(&path);
        }
    }

    fn resign(&mut self, member: usize) {
        let alive = self
            .members
            .iter()
            .filter(|m| !m.resigning && !m.observer)
            .count();
        let target = &self.members[member];
        if alive > 1 && !target.resigning && !target.observer {
            self.members[member].resigning = true;
            self.feed(member, crate::core::Input::Resign);
        }
    }
}
