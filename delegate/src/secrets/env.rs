//! `env:NAME` secrets: environment variables of the delegate process, or a fixed
//! map standing in for it (tests must not mutate the process environment).

use std::collections::BTreeMap;

use super::{SecretError, SecretValue};

/// Where `env:` references are looked up.
#[derive(Debug, Clone)]
pub enum EnvSource {
    /// The delegate process's own environment.
    Process,
    /// A fixed set of variables.
    Fixed(BTreeMap<String, String>),
}

impl EnvSource {
    /// The value of `name`.
    pub fn lookup(&self, name: &str) -> Result<SecretValue, SecretError> {
        match self {
            EnvSource::Process => match std::env::var_os(name) {
                None => Err(SecretError::EnvMissing { name: name.to_string() }),
                Some(v) => v
                    .into_string()
                    .map(SecretValue::new)
                    .map_err(|_| SecretError::EnvNotUnicode { name: name.to_string() }),
            },
            EnvSource::Fixed(vars) => vars
                .get(name)
                .cloned()
                .map(SecretValue::new)
                .ok_or_else(|| SecretError::EnvMissing { name: name.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_environment_is_read() {
        // PATH is set in any environment that can run cargo.
        assert!(EnvSource::Process.lookup("PATH").is_ok());
        let e = EnvSource::Process.lookup("DRAY_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(e, SecretError::EnvMissing { name: "DRAY_TEST_SURELY_UNSET_VARIABLE".into() });
    }

    #[test]
    fn fixed_map_is_used_instead_of_the_process() {
        let src = EnvSource::Fixed([("A".to_string(), "1".to_string())].into());
        assert_eq!(src.lookup("A").unwrap().expose(), "1");
        assert!(src.lookup("PATH").is_err());
    }
}
