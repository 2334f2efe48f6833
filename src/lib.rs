//! Master election through Apache ZooKeeper, for programs that are not async.
//!
//! A process [joins](Election::join) a group (by default `/Roles/workers`):
//! the library keeps a ZooKeeper session that holds an EPHEMERAL_SEQUENTIAL
//! member node with the caller's data, and watches the group from a second
//! session (so that the first can survive reconnects; see the README). The N members with the lowest sequence numbers are masters. The
//! program polls [`Election::is_master`] from its own loop, or registers
//! [callbacks](Election::on_change) that fire on every change of role.
//! Dropping the handle or [resigning](Election::resign) deletes the node at
//! once, so the next member takes over in milliseconds.
//!
//! ```no_run
//! use std::time::Duration;
//! use zk_master::{Config, Election};
//!
//! let election = Election::join(Config::new("127.0.0.1:2181"))?;
//! election.on_change(|change| println!("{} -> {}", change.old, change.new));
//! for _ in 0..10 {
//!     if election.is_master() {
//!         println!("working as master");
//!     }
//!     std::thread::sleep(Duration::from_secs(1));
//! }
//! # Ok::<(), zk_master::Error>(())
//! ```
//!
//! # The promise
//! [`Election::is_master`] returns true only until a lease ends: the time a
//! read that showed this member's node alive in its session was *sent*, plus
//! the session timeout the server granted, minus a margin. The server cannot
//! expire the session, and so delete the node and let a successor be promoted,
//! before that moment. A node deleted by hand is covered too: a successor
//! waits until its owner has stepped down. See the README's "Guarantees"
//! section for the assumptions.
#![warn(missing_docs)]
// Safe Rust throughout; only the C API (feature `capi`) needs `unsafe`, and
// allows it in its own module.
#![cfg_attr(not(feature = "capi"), forbid(unsafe_code))]
#![cfg_attr(feature = "capi", deny(unsafe_code))]

mod backend;
mod callbacks;
#[cfg(feature = "capi")]
#[allow(unsafe_code)]
pub mod capi;
mod config;
mod core;
mod driver;
mod election;
mod error;
mod member;
mod role;
#[cfg(test)]
mod sim;
mod state;

pub use callbacks::{CallbackId, Subscription};
pub use config::{Config, MAX_DATA_LEN};
pub use election::Election;
pub use error::{Error, IoError, Result};
pub use member::Member;
pub use role::{Connection, Role, RoleChange};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
