//! A deterministic simulator: several members, each running a real
//! [`Core`](crate::core::Core), against a model of ZooKeeper, with faults
//! injected by a seeded scheduler. After every event it checks the promise
//! (never more than `masters` members master at any simulated instant); once
//! faults stop it checks liveness, and after everyone resigns, cleanliness.
//!
//! A failing seed replays exactly: `run(seed, &mix)` again gives the same
//! run, and [`report`] prints the last events of that replay
//! (`ZK_MASTER_SIM_TRACE=n` keeps `n` lines instead of 40;
//! `ZK_MASTER_SIM_SEED=s cargo test --lib sim::tests::replay -- --ignored`).
//!
//! # A schedule
//! 2 to 5 members, 1 or 2 masters, a session timeout of 1, 2 or 5 s asked
//! (granted clamped to 2–20 ticks of 200 ms), clocks off by up to ±1 %.
//! Faults for 10 s of simulated time (see [`faults::Fault`]); then no more
//! faults, slow or lost messages. Liveness: from 3 session timeouts + 5 s
//! after that, for 2 s, exactly `min(masters, members not resigned)` are
//! master. Then everyone resigns: each must say Resigned within 5 s, and once
//! the closes have arrived no ephemeral node may be left.
//!
//! # What the model leaves out
//! One leader: reads are up to date except on the stale follower. The
//! leader hears a session while its connection is up and the member is
//! neither frozen nor cut off (pings stand in for the client's own). A
//! schedule deletes by hand either claims or member nodes and the group,
//! never both: a master cut off or frozen while both its claim and its node
//! are deleted cannot be protected by anything a successor can read.

mod backend;
mod checks;
mod faults;
mod model;
mod server;
mod world;

#[cfg(test)]
mod tests;

use std::time::Duration;

use faults::Mix;
use world::World;

/// A small seeded generator (splitmix64): the only source of randomness.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// A duration in `[lo, hi]`, to the microsecond.
    pub(super) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

/// What went wrong in a run.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Violation {
    /// More than `masters` members were master at once.
    Promise {
        at: Duration,
        masters: Vec<usize>,
        /// How long more than `masters` members stayed master.
        overlap: Duration,
    },
    /// Faults had stopped long enough, yet the wrong number were master.
    Liveness {
        at: Duration,
        masters: usize,
        alive: usize,
    },
    /// A member published a view that contradicts itself: master, yet not
    /// among the masters it lists.
    View { at: Duration, member: usize },
    /// Once the masters had settled, the observer told other masters.
    Observer {
        at: Duration,
        observed: Vec<String>,
        masters: Vec<String>,
    },
    /// A member did not finish resigning in time.
    ResignHung { member: usize },
    /// Nodes left behind after everyone resigned and closed.
    Cleanliness { left: Vec<String> },
}

/// What a run did, for the statistics.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub(super) events: u64,
    /// Of which once faults had stopped.
    pub(super) calm_events: u64,
    /// Wake-ups that found a newer one set meanwhile.
    pub(super) stale_wakes: u64,
    pub(super) master_views: u64,
    pub(super) expiries: u64,
    pub(super) faults: u64,
}

impl Stats {
    pub(super) fn add(&mut self, other: &Stats) {
        self.events += other.events;
        self.calm_events += other.calm_events;
        self.stale_wakes += other.stale_wakes;
        self.master_views += other.master_views;
        self.expiries += other.expiries;
        self.faults += other.faults;
    }
}

/// A failed run: the seed, the violation and (when traced) the last events.
#[derive(Debug, Clone)]
pub(super) struct Failed {
    pub(super) seed: u64,
    pub(super) violation: Violation,
    pub(super) trace: Vec<String>,
}

/// Runs one schedule.
fn run(seed: u64, mix: &Mix, trace: bool) -> Result<Stats, Failed> {
    let mut world = World::new(seed, mix.clone(), trace);
    match world.run_schedule() {
        Ok(()) => Ok(world.stats.clone()),
        Err(violation) => Err(Failed {
            seed,
            violation,
            trace: world.trace_lines(),
        }),
    }
}

/// Replays a failed seed with tracing on, and describes it.
fn report(seed: u64, mix: &Mix) -> String {
    match run(seed, mix, true) {
        Ok(_) => format!("seed {seed}: passed"),
        Err(failed) => {
            let mut text = format!("seed {seed} failed: {:?}\nlast events:\n", failed.violation);
            for line in &failed.trace {
                text.push_str(line);
                text.push('\n');
            }
            text
        }
    }
}
