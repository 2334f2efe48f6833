//! Statistics, process figures (`/proc/self/status`) and the JSON text of the results.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

/// Summary of a sample of durations.
pub struct Summary {
    pub n: usize,
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Median, nearest-rank p90, min and max of `samples` (not empty).
pub fn summarize(samples: &[Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples to summarize");
    let mut v = samples.to_vec();
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    Summary {
        n,
        median,
        p90: v[(n * 9).div_ceil(10) - 1],
        min: v[0],
        max: v[n - 1],
    }
}

impl Summary {
    /// `{"n": .., "median": .., "p90": .., "min": .., "max": ..}` in milliseconds.
    pub fn json(&self) -> String {
        format!(
            "{{\"n\": {}, \"median\": {:.4}, \"p90\": {:.4}, \"min\": {:.4}, \"max\": {:.4}}}",
            self.n,
            ms(self.median),
            ms(self.p90),
            ms(self.min),
            ms(self.max)
        )
    }
}

pub fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A JSON object written field by field (no serde for one flat report).
#[derive(Default)]
pub struct JsonObject {
    fields: Vec<String>,
}

impl JsonObject {
    /// Adds `"key": value`, `value` being JSON text already.
    pub fn raw(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.fields.push(format!("\"{key}\": {value}"));
        self
    }

    /// Adds a number; NaN and infinities become `null`.
    pub fn num(&mut self, key: &str, value: f64) -> &mut Self {
        if value.is_finite() {
            self.raw(key, format!("{value:.4}"))
        } else {
            self.raw(key, "null")
        }
    }

    /// Adds a string (no escaping needed for the bench's own texts; quotes are replaced).
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        let value = value.replace(['"', '\\'], "'");
        self.raw(key, format!("\"{value}\""))
    }

    pub fn finish(&self) -> String {
        let mut out = String::from("{");
        for (i, field) in self.fields.iter().enumerate() {
            let _ = write!(out, "{}{field}", if i == 0 { "" } else { ", " });
        }
        out.push('}');
        out
    }
}

#[derive(Clone, Copy)]
pub struct ProcSnapshot {
    pub rss_kib: u64,
    pub threads: u64,
}

pub fn proc_status() -> ProcSnapshot {
    let text = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    ProcSnapshot {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    }
}
