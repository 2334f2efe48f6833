//! The original election script, ported and made right: it steps down when it
//! is no longer among the first N, keeps its watch across reconnects, and on
//! ctrl-c or SIGTERM deletes its node at once.
//!
//! ```text
//! cargo run --example worker -- --connect 127.0.0.1:2181 --group /Roles/workers \
//!     --masters 1 --session-timeout-ms 10000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zk_master::{Config, Election};

const USAGE: &str = "usage: worker [--connect HOST:PORT[,HOST:PORT...][/CHROOT]] [--group PATH] \
[--masters N] [--session-timeout-ms MS] [--data TEXT]";

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,zookeeper=warn"),
    )
    .init();
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst)) {
        log::error!("cannot handle ctrl-c: {e}");
        std::process::exit(1);
    }
    let election = match Election::join(config) {
        Ok(election) => election,
        Err(e) => {
            log::error!("cannot join: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "register ok! I'm {}",
        election.member_name().unwrap_or_default()
    );

    let mut last = None;
    while !stop.load(Ordering::SeqCst) {
        let master = election.is_master();
        let masters: Vec<String> = election
            .masters()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let seen = (master, masters);
        if last.as_ref() != Some(&seen) {
            if seen.0 {
                log::info!("I've become master!");
            } else {
                log::info!(
                    "[{}] is masters, I'm {}",
                    seen.1.join(", "),
                    election.role()
                );
            }
            last = Some(seen);
        }
        if master {
            // The master's work goes here; it runs only while is_master() holds.
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    election.resign();
    log::info!("resigned; my node is deleted");
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
    let (mut connect, mut group, mut masters) =
        ("127.0.0.1:2181".to_owned(), "/Roles/workers".to_owned(), 1);
    let (mut timeout_ms, mut data) = (10_000, b"1".to_vec());
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err("zk-master example worker".into());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--connect" => connect = value.clone(),
            "--group" => group = value.clone(),
            "--masters" => masters = number()? as usize,
            "--session-timeout-ms" => timeout_ms = number()?,
            "--data" => data = value.clone().into_bytes(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let config = Config::new(connect)
        .group(group)
        .masters(masters)
        .session_timeout(Duration::from_millis(timeout_ms))
        .data(data);
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
