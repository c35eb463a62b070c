//! Types both sides of Dray agree on: the generated gRPC code, ids, task kinds and
//! their parameters, secret-reference syntax and PKI helpers.
//!
//! No I/O beyond reading PEM text handed in, no platform SDKs: both the manager and
//! the delegate link this crate, and the manager must never pull in a target SDK.

pub mod clock;
pub mod codec;
pub mod error_type;
pub mod expr;
pub mod ids;
pub mod pb;
pub mod pki;
pub mod protocol;
pub mod secret_ref;
pub mod task;
pub mod telemetry;
pub mod tls;

pub use ids::{DelegateId, Epoch, TaskId};
