//! The one mapping from manager errors to gRPC status codes.

use tonic::Status;

use crate::lease::engine::Stopped;
use crate::model::apply::ApplyError;
use crate::store;
use crate::store::entities::EntityKey;

impl From<store::Error> for Status {
    fn from(e: store::Error) -> Status {
        match e {
            store::Error::Conflict { .. } => Status::already_exists(e.to_string()),
            store::Error::Unavailable(_) => Status::unavailable(e.to_string()),
            store::Error::Corrupt { .. } | store::Error::Config(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<Stopped> for Status {
    fn from(e: Stopped) -> Status {
        Status::unavailable(e.to_string())
    }
}

/// `InvalidArgument` naming the field.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

impl From<ApplyError> for Status {
    fn from(e: ApplyError) -> Status {
        match e {
            ApplyError::Invalid(d) => {
                Status::invalid_argument(d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
            }
            // A referenced entity went away between the checks and the write.
            ApplyError::Store(store::Error::Conflict { what }) => Status::aborted(format!(
                "the store changed during the apply ({what}); nothing was applied, try again"
            )),
            ApplyError::Store(e) => e.into(),
        }
    }
}

/// `FailedPrecondition` for deleting an entity others still reference, naming them.
pub fn entity_in_use(key: &EntityKey, referrers: &[EntityKey]) -> Status {
    let by: Vec<String> = referrers.iter().map(|r| format!("{} {}", r.kind, r.identifier)).collect();
    Status::failed_precondition(format!(
        "{} {} is used by {}; delete or change those first",
        key.kind,
        key.identifier,
        by.join(", ")
    ))
}
