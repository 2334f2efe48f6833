//! The C API (feature `capi`), declared in `include/zk_master.h`.
//!
//! Shaped like the ZooKeeper C client and rustls-ffi: opaque handles
//! (`zkm_config`, `zkm_election`) made and freed by the library; functions
//! that return a [`zkm_result`] code, with a message for the last failure of
//! the calling thread from [`zkm_last_error`]; views (`zkm_snapshot`,
//! `zkm_role_change`) whose pointers live as long as the view. NULL pointers
//! give `ZKM_ERR_NULL`, and no panic crosses the boundary (it becomes
//! `ZKM_ERR_PANIC`). Role-change callbacks are C function pointers with a
//! `void *user_data`, called on one library thread per election, in order.
//!
//! Build the libraries with
//! `cargo rustc --release --lib --features capi --crate-type cdylib --crate-type staticlib`.
//!
//! ```c
//! #include "zk_master.h"
//!
//! zkm_config *config = NULL;
//! zkm_election *election = NULL;
//! if (zkm_config_new("127.0.0.1:2181", &config) != ZKM_OK ||
//!     zkm_join(config, &election) != ZKM_OK)
//!     fprintf(stderr, "%s\n", zkm_last_error());
//! zkm_config_free(config);
//! ```
#![allow(non_camel_case_types)]

mod callbacks;
mod config;
mod election;
mod errors;
mod log;
mod observer;
mod view;

pub use callbacks::zkm_role_cb;
pub use config::*;
pub use election::*;
pub use errors::{zkm_last_error, zkm_result, zkm_result_name};
pub use log::{zkm_log_cb, zkm_log_level, zkm_set_logger};
pub use observer::*;
pub use view::{zkm_connection, zkm_member, zkm_role, zkm_role_change, zkm_snapshot};
