//! Classified failure types. A task that fails, is lost or expires carries one of
//! these names (`TaskResult.error_type`, `Task.error_type`), so pipeline failure
//! strategies can match on *why* a step failed rather than on message text.
//!
//! The wire form is the name string; [`ErrorType`] is the typed view of it.
//! Who sets what:
//! - delegates: [`TIMEOUT`] (run timeout), [`CONNECTIVITY`] (DNS, connect, TLS,
//!   reset), [`AUTHENTICATION`] / [`AUTHORIZATION`] (credentials refused / not
//!   allowed, e.g. by a secret backend), [`NOT_FOUND`] (a secret's path or key
//!   is missing), [`UNKNOWN`] (non-zero exit, anything else);
//! - the manager: [`DELEGATE_RESTART`] (lease lost), [`DELEGATE_PROVISIONING`]
//!   (no eligible delegate before the queue timeout);
//! - pipeline steps: [`VERIFICATION`], [`APPROVAL_REJECTION`], ...
//!
//! [`ALL_ERRORS`] is never set on a task: it only appears in failure strategies,
//! where it matches every failure.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Matches every failure; used in failure strategies only.
pub const ALL_ERRORS: &str = "AllErrors";
/// The task ran out of time.
pub const TIMEOUT: &str = "Timeout";
/// The delegate running the task went away (lease lost, delegate restarted).
pub const DELEGATE_RESTART: &str = "DelegateRestart";
/// No eligible delegate took the task before its queue timeout.
pub const DELEGATE_PROVISIONING: &str = "DelegateProvisioning";
/// Credentials were missing or refused.
pub const AUTHENTICATION: &str = "Authentication";
/// Credentials were accepted but not allowed to do this.
pub const AUTHORIZATION: &str = "Authorization";
/// A remote endpoint could not be reached (DNS, connect, TLS, reset).
pub const CONNECTIVITY: &str = "Connectivity";
/// Something the step names does not exist (a secret's path or key).
pub const NOT_FOUND: &str = "NotFound";
/// A check on the result failed (e.g. an HTTP assertion).
pub const VERIFICATION: &str = "Verification";
/// An approver rejected the step.
pub const APPROVAL_REJECTION: &str = "ApprovalRejection";
/// Anything not classified otherwise.
pub const UNKNOWN: &str = "Unknown";

/// A classified failure type. Serialises as its name (`"Timeout"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorType {
    /// See [`ALL_ERRORS`].
    AllErrors,
    /// See [`TIMEOUT`].
    Timeout,
    /// See [`DELEGATE_RESTART`].
    DelegateRestart,
    /// See [`DELEGATE_PROVISIONING`].
    DelegateProvisioning,
    /// See [`AUTHENTICATION`].
    Authentication,
    /// See [`AUTHORIZATION`].
    Authorization,
    /// See [`CONNECTIVITY`].
    Connectivity,
    /// See [`NOT_FOUND`].
    NotFound,
    /// See [`VERIFICATION`].
    Verification,
    /// See [`APPROVAL_REJECTION`].
    ApprovalRejection,
    /// See [`UNKNOWN`].
    Unknown,
}

/// A name that is not an error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error type {0:?} (known: {known})", known = ErrorType::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownErrorType(pub String);

impl ErrorType {
    /// Every error type, [`ErrorType::AllErrors`] first.
    pub const ALL: &'static [ErrorType] = &[
        ErrorType::AllErrors,
        ErrorType::Timeout,
        ErrorType::DelegateRestart,
        ErrorType::DelegateProvisioning,
        ErrorType::Authentication,
        ErrorType::Authorization,
        ErrorType::Connectivity,
        ErrorType::NotFound,
        ErrorType::Verification,
        ErrorType::ApprovalRejection,
        ErrorType::Unknown,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::AllErrors => ALL_ERRORS,
            ErrorType::Timeout => TIMEOUT,
            ErrorType::DelegateRestart => DELEGATE_RESTART,
            ErrorType::DelegateProvisioning => DELEGATE_PROVISIONING,
            ErrorType::Authentication => AUTHENTICATION,
            ErrorType::Authorization => AUTHORIZATION,
            ErrorType::Connectivity => CONNECTIVITY,
            ErrorType::NotFound => NOT_FOUND,
            ErrorType::Verification => VERIFICATION,
            ErrorType::ApprovalRejection => APPROVAL_REJECTION,
            ErrorType::Unknown => UNKNOWN,
        }
    }

    /// True for types that only appear in failure strategies, never on a task.
    pub fn is_matching_only(self) -> bool {
        self == ErrorType::AllErrors
    }

    /// Whether a failure strategy listing `self` applies to a failure whose
    /// error type is `actual` (a wire name; empty or unknown names are matched
    /// by [`ErrorType::AllErrors`] only).
    pub fn matches(self, actual: &str) -> bool {
        self == ErrorType::AllErrors || self.as_str() == actual
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = UnknownErrorType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorType::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownErrorType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in ErrorType::ALL {
            assert_eq!(e.as_str().parse::<ErrorType>(), Ok(*e));
            assert_eq!(e.to_string(), e.as_str());
            assert_eq!(serde_json::to_string(e).unwrap(), format!("\"{e}\""));
            assert_eq!(serde_json::from_str::<ErrorType>(&format!("\"{e}\"")).unwrap(), *e);
        }
        assert_eq!(ErrorType::ALL.len(), 11);
        assert_eq!("NotFound".parse(), Ok(ErrorType::NotFound));
        assert_eq!("DelegateRestart".parse(), Ok(ErrorType::DelegateRestart));
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let e = "timeout".parse::<ErrorType>().unwrap_err();
        assert!(e.to_string().contains("\"timeout\""), "{e}");
        assert!(e.to_string().contains("Timeout, DelegateRestart"), "{e}");
        assert!("".parse::<ErrorType>().is_err());
    }

    #[test]
    fn all_errors_matches_everything_others_only_themselves() {
        assert!(ErrorType::AllErrors.matches(TIMEOUT));
        assert!(ErrorType::AllErrors.matches(""));
        assert!(ErrorType::Timeout.matches(TIMEOUT));
        assert!(!ErrorType::Timeout.matches(CONNECTIVITY));
        assert!(!ErrorType::Unknown.matches(""));
        assert!(ErrorType::AllErrors.is_matching_only());
        assert!(ErrorType::ALL.iter().filter(|e| e.is_matching_only()).count() == 1);
    }
}
