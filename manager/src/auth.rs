//! Secrets the manager hands out (admin API token, delegate enrolment tokens) and
//! the bearer-token check on the public API. Only SHA-256 hashes of enrolment
//! tokens are stored.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh random secret with a recognisable prefix (32 random bytes, base64url).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256, the form in which enrolment tokens are stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented bearer token with the expected one without leaking
/// where they differ (both are hashed first, so lengths do not matter).
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_compare() {
        let a = new_secret("dray_dt_");
        let b = new_secret("dray_dt_");
        assert_ne!(a, b);
        assert!(a.starts_with("dray_dt_"));
        assert!(token_matches(&a, &a));
        assert!(!token_matches(&a, &b));
        assert_eq!(hash("x").len(), 64);
    }
}
