//! Several `dray server` replicas on one PostgreSQL database
//! (`docs/ha-design.md`).
//!
//! - [`replica`]: this process's registration and heartbeat.
//! - [`bus`]: the notices replicas send each other with their commits.
//! - [`listen`]: hears notices (and polls as the fallback) and feeds the
//!   lease engine what happened elsewhere.
//! - [`watch`]: adopts the unfinished tasks of replicas that died.
//! - [`leader`]: one replica at a time drives pipeline executions and cron
//!   triggers; [`forward`] sends the others' pipeline calls to it.
//!
//! Task dispatch itself is shared: see `lease::engine::cluster`.

pub mod bus;
pub mod forward;
pub mod leader;
pub mod listen;
mod replica;
pub mod watch;

pub use replica::{HEARTBEAT, REPLICA_TTL, Replica};
