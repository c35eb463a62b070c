//! Tasks and leases (DESIGN §3): the pure transition function (`machine`), the
//! pure matching of queued tasks to delegates (`offer`), and the engine that owns
//! the live state, commits every transition before acting on it, and talks to
//! delegate sessions (`engine`).

pub mod engine;
pub mod machine;
pub mod offer;

pub use engine::{Engine, EngineConfig, Handle};
