//! Identifier newtypes. Task and delegate ids are UUIDv7 (time-ordered), written
//! as 32 lower-case hex digits; an epoch is a per-task fencing token.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} id {value:?}: expected 32 hex digits")]
pub struct InvalidId {
    /// "task" or "delegate".
    pub what: &'static str,
    /// The offending text.
    pub value: String,
}

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("Identifier of a ", $what, ".")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(uuid::Uuid);

        impl $name {
            #[doc = concat!("A fresh, time-ordered ", $what, " id.")]
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                if s.len() != 32 {
                    return Err(InvalidId { what: $what, value: s.to_string() });
                }
                uuid::Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| InvalidId { what: $what, value: s.to_string() })
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                s.parse()
            }
        }
    };
}

uuid_id!(TaskId, "task");
uuid_id!(DelegateId, "delegate");

/// Fencing token of a task's lease. Every offer of a task gets a higher epoch than
/// the last; anything a delegate reports carries the epoch it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = TaskId::new();
        let back: TaskId = id.to_string().parse().unwrap();
        assert_eq!(id, back);
        assert!("not-an-id".parse::<TaskId>().is_err());
        assert!("zz".repeat(16).parse::<DelegateId>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert!(a < b);
    }
}
