//! The Dray manager: control plane (`dray server`) and operator CLI (`dray …`).
//!
//! Never links a target or secret SDK (kube, russh, aws-sdk, vaultrs): the manager
//! only holds state and leases work; delegates touch targets and secrets.

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod grpc;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod server;
pub mod store;
pub mod triggers;
