//! The one mapping from manager errors to gRPC status codes.

use tonic::Status;

use crate::lease::engine::Stopped;
use crate::store;

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
