//! Webhook secrets. Each webhook trigger has its own secret, which users paste into
//! GitHub/GitLab (or their own sender) and which never lives in YAML or git.
//!
//! The secret is derived, not stored: `hex(HMAC-SHA256(master_key,
//! "account/org/project/trigger"))`. The 32-byte random master key is created once
//! and kept in the store, so every manager replica derives the same secrets, and a
//! trigger keeps its secret across re-applies. (Rotating the master key would
//! change every secret at once; per-trigger rotation is not offered yet.)

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::store::triggers::{TriggerRef, TriggerStore};
use crate::store::{Error, Result};

/// Length of the master key, in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The key webhook secrets are derived from.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself: with it, every webhook secret can be derived.
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    /// A key from its bytes.
    pub fn new(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        MasterKey(bytes)
    }

    /// The stored key, or a fresh random one stored now. When several managers
    /// start at once, all of them end up with the one stored first.
    pub async fn load_or_create(store: &dyn TriggerStore, now_ms: i64) -> Result<MasterKey> {
        let mut candidate = [0u8; MASTER_KEY_LEN];
        rand::rng().fill_bytes(&mut candidate);
        let stored = store.trigger_master_key(&candidate, now_ms).await?;
        let bytes: [u8; MASTER_KEY_LEN] = stored.as_slice().try_into().map_err(|_| Error::Corrupt {
            table: "trigger_master_key",
            id: "1".into(),
            reason: format!("the master key is {} bytes, expected {MASTER_KEY_LEN}", stored.len()),
        })?;
        Ok(MasterKey(bytes))
    }

    /// The webhook secret of `trigger`: 64 lower-case hex digits.
    pub fn webhook_secret(&self, trigger: &TriggerRef) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(trigger.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_hmac_of_the_scoped_identifier() {
        let key = MasterKey::new([7; MASTER_KEY_LEN]);
        let t = TriggerRef::new("default", "eng", "web", "on_push");
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7; MASTER_KEY_LEN]).unwrap();
        mac.update(b"default/eng/web/on_push");
        assert_eq!(key.webhook_secret(&t), hex::encode(mac.finalize().into_bytes()));
        assert_eq!(key.webhook_secret(&t).len(), 64);
    }

    #[test]
    fn secrets_differ_by_scope_trigger_and_key() {
        let key = MasterKey::new([7; MASTER_KEY_LEN]);
        let base = key.webhook_secret(&TriggerRef::new("default", "eng", "web", "t"));
        for other in [
            TriggerRef::new("default", "eng", "web", "u"),
            TriggerRef::new("default", "eng", "api", "t"),
            TriggerRef::new("default", "ops", "web", "t"),
        ] {
            assert_ne!(key.webhook_secret(&other), base, "{other}");
        }
        let other_key = MasterKey::new([8; MASTER_KEY_LEN]);
        assert_ne!(other_key.webhook_secret(&TriggerRef::new("default", "eng", "web", "t")), base);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        assert_eq!(format!("{:?}", MasterKey::new([0xab; MASTER_KEY_LEN])), "MasterKey(…)");
    }
}
