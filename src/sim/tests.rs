//! The simulator's tests: many schedules against the core as it is, each
//! deliberate defect caught, and the stale follower.

use std::time::{Duration, Instant};

use super::{report, run, Failed, Mix, Stats, Violation};
use crate::core::Mutant;

/// Runs seeds `start..end` on two threads; the first failure by seed, if any.
fn run_seeds(start: u64, end: u64, mix: &Mix) -> (Option<Failed>, Stats) {
    let threads = 2;
    let results: Vec<(Option<Failed>, Stats)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut total = Stats::default();
                    let mut first: Option<Failed> = None;
                    for seed in (start + t..end).step_by(threads as usize) {
                        if first.is_some() {
                            break;
                        }
                        match run(seed, mix, false) {
                            Ok(stats) => total.add(&stats),
                            Err(failed) => first = Some(failed),
                        }
                    }
                    (first, total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Stats::default();
    let mut first: Option<Failed> = None;
    for (failed, stats) in results {
        total.add(&stats);
        if let Some(f) = failed {
            if first.as_ref().is_none_or(|g| f.seed < g.seed) {
                first = Some(f);
            }
        }
    }
    (first, total)
}

fn schedules() -> u64 {
    std::env::var("ZK_MASTER_SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// A duration in milliseconds from the environment.
fn env_millis(name: &str) -> Option<Duration> {
    let millis = std::env::var(name).ok()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// The standard mix; `ZK_MASTER_SIM_WINDOW_MS` and `ZK_MASTER_SIM_GAP_MS`
/// change how long faults last and how often they come.
#[test]
fn many_schedules() {
    let standard = Mix::standard();
    let mix = Mix {
        fault_window: env_millis("ZK_MASTER_SIM_WINDOW_MS").unwrap_or(standard.fault_window),
        fault_gap: env_millis("ZK_MASTER_SIM_GAP_MS").unwrap_or(standard.fault_gap),
        ..standard
    };
    let count = schedules();
    let started = Instant::now();
    let (failed, stats) = run_seeds(0, count, &mix);
    let took = started.elapsed();
    if let Some(f) = failed {
        panic!("{}", report(f.seed, &mix));
    }
    eprintln!(
        "{count} schedules in {took:.1?} ({:.0}/s): {stats:?}",
        count as f64 / took.as_secs_f64()
    );
}

/// The first seed below `limit` at which `mix` breaks the promise while the
/// core without the mutant keeps it on the same seed.
fn first_broken_promise(mix: &Mix, limit: u64) -> Failed {
    let sound = Mix {
        mutant: Mutant::None,
        ..mix.clone()
    };
    let mut start = 0;
    loop {
        let (failed, _) = run_seeds(start, limit, mix);
        let failed = failed.unwrap_or_else(|| panic!("not caught in {limit} seeds: {mix:?}"));
        assert!(
            matches!(failed.violation, Violation::Promise { .. }),
            "{}",
            report(failed.seed, mix)
        );
        if run(failed.seed, &sound, false).is_ok() {
            eprintln!(
                "{:?} caught at seed {}: {:?}",
                mix.mutant, failed.seed, failed.violation
            );
            return failed;
        }
        start = failed.seed + 1;
    }
}

#[test]
fn catches_lease_from_receive() {
    // Slow answers to renewals, then the master's follower loses the leader,
    // which knows of the session only what reached it half a tick before:
    // a lease counted from an answer outlives the session.
    let mix = Mix {
        stale_follower: 1,
        aim_at_master: true,
        slow_replies_only: true,
        slow_chance: 0.3,
        slow: Duration::from_millis(900),
        ..Mix::only(Mutant::LeaseFromReceive)
    };
    first_broken_promise(&mix, 2_000);
}

#[test]
fn catches_no_claims_check() {
    let mix = Mix {
        freeze_master_then_delete: 1,
        ..Mix::only(Mutant::NoClaimsCheck)
    };
    first_broken_promise(&mix, 2_000);
}

/// Not caught, and cannot be in this model: a reply that shows our node in
/// our session was applied no earlier than it was sent, so the server could
/// not expire the session before `sent + timeout`, whatever connection the
/// reply came back on. Which connection matters only with stale reads, and a
/// stale follower fools the sound core as much (see the test below).
#[test]
#[ignore = "not catchable: a late reply on another connection still proves the session alive when it was sent"]
fn catches_any_connection_renews() {
    let mix = Mix {
        drop: 4,
        partition: 2,
        aim_at_master: true,
        slow_replies_only: true,
        slow_chance: 0.3,
        late_reply: 1.0,
        interrupt: 0.0,
        ..Mix::only(Mutant::AnyConnectionRenews)
    };
    first_broken_promise(&mix, 2_000);
}

#[test]
fn catches_fast_path_ignoring_claims() {
    let mix = Mix {
        freeze_master_then_delete: 1,
        ..Mix::only(Mutant::FastPathIgnoresClaim)
    };
    first_broken_promise(&mix, 2_000);
}

#[test]
fn catches_no_owner_check() {
    // The node's name comes back (group deleted and recreated) owned by
    // another member, after the master's claim was deleted by hand.
    let mix = Mix {
        partition: 2,
        delete_claim: 2,
        delete_group: 2,
        aim_at_master: true,
        claims_and_nodes_by_hand: true,
        ..Mix::only(Mutant::NoOwnerCheck)
    };
    first_broken_promise(&mix, 2_000);
}

/// A follower cut off from the leader answers reads from its stale copy for
/// syncLimit × tick (1 s) while the leader expires the master's session (and
/// the leader never heard of the last half tick of the master's requests).
/// A renewal counts only after a `sync`, which such a follower never answers,
/// so the master's lease ends before a successor is promoted.
#[test]
fn a_stale_follower_cannot_renew_a_lease() {
    let mix = Mix {
        stale_follower: 1,
        aim_at_master: true,
        ..Mix::only(Mutant::None)
    };
    let (failed, _) = run_seeds(0, 2_000, &mix);
    if let Some(f) = failed {
        panic!("{}", report(f.seed, &mix));
    }
}

/// The same faults, and a core that counts a renewal without its `sync`.
#[test]
fn catches_no_leader_proof() {
    let mix = Mix {
        stale_follower: 1,
        aim_at_master: true,
        ..Mix::only(Mutant::NoLeaderProof)
    };
    first_broken_promise(&mix, 2_000);
}

/// Replays one seed with a long trace:
/// `ZK_MASTER_SIM_SEED=7 ZK_MASTER_SIM_TRACE=100000 cargo test --lib sim::tests::replay -- --ignored --nocapture`.
#[test]
#[ignore = "a tool: replays ZK_MASTER_SIM_SEED"]
fn replay() {
    let seed = std::env::var("ZK_MASTER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!("{}", report(seed, &Mix::standard()));
}

/// The observer is hit by the faults aimed at one member too (its
/// connections dropped, partitioned, frozen, behind a stale follower): once
/// faults stop, it must still show the members that are master.
#[test]
fn an_observer_hit_by_faults_still_shows_the_masters() {
    let mix = Mix {
        fault_observer: true,
        ..Mix::standard()
    };
    let count = (schedules() / 10).max(100);
    let (failed, stats) = run_seeds(0, count, &mix);
    if let Some(f) = failed {
        panic!("{}", report(f.seed, &mix));
    }
    eprintln!("{count} schedules with a faulted observer: {stats:?}");
}
