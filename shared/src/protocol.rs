//! The delegate protocol's version, and which versions talk to each other.
//!
//! A manager accepts delegates speaking its own protocol version or the one
//! before it, so during a rolling upgrade (managers first, then delegates)
//! every delegate keeps working. A delegate from before versions were sent
//! sends 0, which counts as version 1.

/// The protocol this build speaks.
pub const PROTOCOL: u32 = 1;

/// The oldest delegate protocol this manager accepts.
pub const MIN_DELEGATE_PROTOCOL: u32 = if PROTOCOL > 1 { PROTOCOL - 1 } else { 1 };

/// A delegate protocol the manager does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "delegate protocol {got} is not supported by this manager (it accepts {MIN_DELEGATE_PROTOCOL} to {PROTOCOL}); {advice}",
    advice = if *got > PROTOCOL { "upgrade the manager first" } else { "upgrade the delegate" }
)]
pub struct Unsupported {
    /// The version the delegate sent.
    pub got: u32,
}

/// Checks a delegate's protocol version (0 = sent by a delegate that predates
/// versioning, i.e. version 1).
pub fn check_delegate(version: u32) -> Result<u32, Unsupported> {
    let v = version.max(1);
    if (MIN_DELEGATE_PROTOCOL..=PROTOCOL).contains(&v) { Ok(v) } else { Err(Unsupported { got: version }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_previous_versions_are_accepted() {
        assert_eq!(check_delegate(0), Ok(1), "pre-versioning delegates are version 1");
        assert_eq!(check_delegate(PROTOCOL), Ok(PROTOCOL));
        assert_eq!(check_delegate(MIN_DELEGATE_PROTOCOL), Ok(MIN_DELEGATE_PROTOCOL));
        let newer = check_delegate(PROTOCOL + 1).unwrap_err();
        assert!(newer.to_string().contains("upgrade the manager first"), "{newer}");
        if MIN_DELEGATE_PROTOCOL > 1 {
            let older = check_delegate(MIN_DELEGATE_PROTOCOL - 1).unwrap_err();
            assert!(older.to_string().contains("upgrade the delegate"), "{older}");
        }
    }
}
