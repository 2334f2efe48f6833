//! The overlap checker of the fault tests (tests/common/overlap.rs) on synthetic traces.

mod common;

use std::time::Duration;

use common::overlap::{self, Event, Source};

const MS: u64 = 1_000_000;

fn master(at: u64, member: &str) -> Event {
    Event::Master {
        at: at * MS,
        member: member.into(),
    }
}

fn slave(at: u64, member: &str, last_true: u64) -> Event {
    Event::Slave {
        at: at * MS,
        member: member.into(),
        last_true: last_true * MS,
    }
}

#[test]
fn checker_parses_traces_and_ignores_a_torn_last_line() {
    let text = "100 worker0000000001 master\n250 worker0000000001 slave 249\n300 worker00";
    let events = overlap::parse(text).expect("parse");
    assert_eq!(
        events,
        [
            Event::Master {
                at: 100,
                member: "worker0000000001".into()
            },
            Event::Slave {
                at: 250,
                member: "worker0000000001".into(),
                last_true: 249
            }
        ]
    );
    assert!(overlap::parse("1 a master\nx a master\n").is_err());
    assert!(overlap::parse("1 a boss\n").is_err());
    assert!(overlap::parse("1 a slave\n").is_err());
    assert_eq!(overlap::parse("").unwrap(), []);
}

#[test]
fn checker_finds_no_overlap_in_a_clean_handover() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(130, "n2")]);
    let report = overlap::check(1, &[a, b], 500 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.longest_overlap(), Duration::ZERO);
    assert_eq!(report.takeovers.len(), 1);
    let t = &report.takeovers[0];
    assert_eq!(t.lost, "a/n1");
    assert_eq!(t.successor.as_deref(), Some("b/n2"));
    assert_eq!(t.took, Some(Duration::from_millis(30)));
    report.assert_no_overlap("clean");
}

#[test]
fn checker_measures_the_longest_overlap() {
    // a is master 0..100, b from 60 (40 ms overlap), c from 300 while a is master again 290..400.
    let a = Source::new(
        "a",
        vec![
            master(0, "n1"),
            slave(101, "n1", 100),
            master(290, "n4"),
            slave(401, "n4", 400),
        ],
    );
    let b = Source::new("b", vec![master(60, "n2"), slave(201, "n2", 200)]);
    let c = Source::new("c", vec![master(300, "n3")]);
    let report = overlap::check(1, &[a, b, c], 1000 * MS);
    assert_eq!(report.overlaps.len(), 2, "{report}");
    assert_eq!(report.overlaps[0].start, 60 * MS);
    assert_eq!(report.overlaps[0].end, 100 * MS);
    assert_eq!(report.overlaps[1].length(), Duration::from_millis(100));
    assert_eq!(report.longest_overlap(), Duration::from_millis(100));
    assert_eq!(report.overlaps[1].most, 2);
}

#[test]
#[should_panic(expected = "1 overlap(s), longest 40ms")]
fn checker_assertion_fails_on_an_overlap() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(60, "n2")]);
    overlap::check(1, &[a, b], 1000 * MS).assert_no_overlap("synthetic");
}

#[test]
fn checker_counts_against_n_masters() {
    // Two places: a and b masters together is fine; c joining them is an overlap of 10 ms.
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(0, "n2")]);
    let c = Source::new("c", vec![master(90, "n3")]);
    let report = overlap::check(2, &[a.clone(), b.clone(), c.clone()], 200 * MS);
    assert_eq!(
        report.longest_overlap(),
        Duration::from_millis(10),
        "{report}"
    );
    assert_eq!(report.overlaps[0].most, 3);
    let c_late = Source::new("c", vec![master(110, "n3")]);
    let report = overlap::check(2, &[a, b, c_late], 200 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.takeovers.len(), 1);
    assert_eq!(report.takeovers[0].took, Some(Duration::from_millis(10)));
}

#[test]
fn checker_matches_an_early_successor_with_a_negative_gap() {
    // b reads true 5 ms before a stops: the successor of a's loss is b, 5 ms early; c then
    // follows b's loss normally.
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(95, "n2"), slave(301, "n2", 300)]);
    let c = Source::new("c", vec![master(320, "n3")]);
    let report = overlap::check(1, &[a, b, c], 1000 * MS);
    assert_eq!(report.longest_overlap(), Duration::from_millis(5));
    let t = &report.takeovers[0];
    assert_eq!(
        (t.successor.as_deref(), t.gap_ns, t.took),
        (Some("b/n2"), Some(-5_000_000), None)
    );
    assert_eq!(t.describe(), "b/n2 5ms BEFORE (overlap)");
    assert_eq!(report.takeovers[1].took, Some(Duration::from_millis(20)));
}

#[test]
fn checker_touching_intervals_overlap_for_zero_time() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(100, "n2")]);
    let report = overlap::check(1, &[a, b], 200 * MS);
    assert_eq!(report.overlaps.len(), 1, "{report}");
    assert_eq!(report.longest_overlap(), Duration::ZERO);
}

#[test]
fn checker_ends_a_killed_master_at_its_kill_time() {
    // a is killed at 500 while master: without the kill time its interval would be open and
    // overlap b (master from 1600) up to `now`.
    let a = Source::new("a", vec![master(0, "n1")]);
    let b = Source::new("b", vec![master(1600, "n2")]);
    let open = overlap::check(1, &[a.clone(), b.clone()], 2000 * MS);
    assert_eq!(open.longest_overlap(), Duration::from_millis(400));
    let report = overlap::check(1, &[a.killed_at(Some(500 * MS)), b], 2000 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.takeovers[0].how, overlap::End::Killed);
    assert_eq!(report.takeovers[0].took, Some(Duration::from_millis(1100)));
    // A killed process is not a current master.
    let killed = Source::new("a", vec![master(0, "n1")]).killed_at(Some(1));
    assert_eq!(killed.current_master(), None);
}

#[test]
fn checker_takeovers_follow_losses_in_order_and_a_member_may_come_back() {
    // Two places. a and b lose theirs at 100 and 110; c takes one at 150, a (with a new node)
    // the other at 400. Then c exits at 600 and nobody follows yet.
    let a = Source::new(
        "a",
        vec![master(0, "n1"), slave(101, "n1", 100), master(400, "n5")],
    );
    let b = Source::new("b", vec![master(0, "n2"), slave(111, "n2", 110)]);
    let c = Source::new("c", vec![master(150, "n3"), slave(600, "n3", 600)]);
    let report = overlap::check(2, &[a, b, c], 1000 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    let seen: Vec<(String, Option<String>, Option<Duration>)> = report
        .takeovers
        .iter()
        .map(|t| (t.lost.clone(), t.successor.clone(), t.took))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "a/n1".to_owned(),
                Some("c/n3".to_owned()),
                Some(Duration::from_millis(50))
            ),
            (
                "b/n2".to_owned(),
                Some("a/n5".to_owned()),
                Some(Duration::from_millis(290))
            ),
            ("c/n3".to_owned(), None, None),
        ]
    );
    assert_eq!(report.takeovers_since(105 * MS).len(), 2);
    // a's last line is a master line: it reads true now.
    let a_now = Source::new(
        "a",
        vec![master(0, "n1"), slave(2, "n1", 1), master(3, "n5")],
    );
    assert_eq!(a_now.current_master(), Some("n5"));
}

#[test]
fn checker_reports_malformed_sequences() {
    let twice = Source::new("a", vec![master(0, "n1"), master(10, "n2")]);
    let orphan = Source::new("b", vec![slave(5, "n3", 4)]);
    let report = overlap::check(1, &[twice, orphan], 100 * MS);
    assert_eq!(report.anomalies.len(), 2, "{:?}", report.anomalies);
}
