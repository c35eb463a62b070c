//! The CD entity model: typed schemas of the YAML users apply (services,
//! environments, infrastructure definitions, connectors, pipelines, input sets,
//! overlay input sets, triggers), loading with file:line:col diagnostics,
//! validation, and runtime inputs.
//!
//! - `yaml` — documents → trees that remember where every node came from, and a
//!   serde deserializer over them whose errors name the field and its location.
//! - `common`, `entities`, `pipeline` — the schemas (Harness field names).
//! - `steps` — built-in step specs and the step-type validator registry.
//! - `validate` — checks of one document on its own.
//! - `refs` — references between documents, resolved against the store plus
//!   the documents of the same apply.
//! - `load` — files → documents + diagnostics.
//! - `apply` — the whole apply/validate flow against an [`EntityStore`].
//! - `inputs` — `<+input>` discovery, input-set flattening and resolution, for
//!   the engine at run time.
//!
//! Nothing here does I/O except `apply`, which talks to the store it is given.
//!
//! [`EntityStore`]: crate::store::entities::EntityStore

pub mod apply;
pub mod common;
pub mod entities;
pub mod inputs;
pub mod load;
pub mod pipeline;
pub mod refs;
pub mod steps;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::fmt;

pub use entities::{Entity, Kind};
pub use inputs::{InputError, InputField, flatten_input_set, parse_pipeline, resolve_inputs, runtime_inputs};
pub use load::{Diagnostic, Document, SourceFile, load};
pub use pipeline::Pipeline;
pub use steps::{StepSpecValidator, StepTypes};

/// The account every entity lives in until there are several.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The organisation of a document without `orgIdentifier`.
pub const DEFAULT_ORG: &str = "default";
/// The project of a document without `projectIdentifier`.
pub const DEFAULT_PROJECT: &str = "default";

/// Where an entity lives: account ▸ organisation ▸ project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// Account.
    pub account: String,
    /// Organisation.
    pub org: String,
    /// Project.
    pub project: String,
}

impl Scope {
    /// A scope in the default account; empty parts become `default`.
    pub fn new(org: &str, project: &str) -> Self {
        let or_default = |s: &str, d: &str| if s.is_empty() { d.to_string() } else { s.to_string() };
        Scope {
            account: DEFAULT_ACCOUNT.into(),
            org: or_default(org, DEFAULT_ORG),
            project: or_default(project, DEFAULT_PROJECT),
        }
    }

    /// The store key of `kind`/`identifier` in this scope.
    pub fn key(&self, kind: Kind, identifier: &str) -> crate::store::entities::EntityKey {
        crate::store::entities::EntityKey::new(
            &self.account,
            &self.org,
            &self.project,
            kind.key(),
            identifier,
        )
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new("", "")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.org, self.project)
    }
}
