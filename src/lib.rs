//! <!-- The crate documentation is the README, so that docs.rs readers get the guarantee and its
//! assumptions, access control, the panic policy, threads and costs, and the C API, as GitHub
//! readers do. -->
#![doc = include_str!("../README.md")]
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
mod metrics;
mod observer;
mod role;
#[cfg(test)]
mod sim;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use callbacks::{CallbackId, Subscription};
pub use config::{Config, MAX_DATA_LEN};
pub use election::Election;
pub use error::{Error, IoError, Result};
pub use member::Member;
pub use metrics::Metrics;
pub use observer::{Observer, Snapshot};
pub use role::{Connection, Role, RoleChange};
