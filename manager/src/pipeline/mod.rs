//! Pipelines at run time: a stored pipeline compiled into a [`plan::Plan`], run
//! by the pure [`machine`] and driven durably by the [`engine`], with step types
//! from the [`steps`] registry.
//!
//! - `plan` — the compiled tree (arena of nodes) an execution runs.
//! - `compile` — stored pipeline JSON + referenced entities → plan.
//! - `state` — the durable per-node and per-execution state.
//! - `machine` — pure transitions: flow, `when`, failure strategies, rollback,
//!   retries, approvals, barriers, timeouts, pause/abort.
//! - `context` — what `<+…>` expressions see at a node.
//! - `steps` — the step-type registry (ShellScript, Http, Wait, Approval,
//!   Barrier, Noop; platforms add theirs).
//! - `locks` — one running stage per service + infrastructure.
//! - `engine` — the actor: group commit of execution state, then tasks out.
//! - `start` — turning a run request (inputs, input sets) into a new execution.

pub mod compile;
pub mod context;
pub mod engine;
pub mod locks;
pub mod machine;
pub mod plan;
pub mod start;
pub mod state;
pub mod steps;

pub use engine::{Engine, Handle};
