//! Host key policy: is the key a host presents the one we expect?
//!
//! [`decide`] is pure: given the policy's evidence (keys recorded for the host
//! in a `known_hosts` file, or pinned fingerprints) and the presented key, it
//! says accept, unknown or changed. An unknown or changed key fails the host
//! with error type `Verification` (the step failed to verify who it talks
//! to; credentials were never offered). `AcceptAnyInsecure` accepts every key,
//! only when asked for by that name.

use dray_shared::task::ssh::HostKeyPolicy;
use russh::keys::{HashAlg, PublicKey};

use super::inventory::Host;

/// The verdict on a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It is the expected key.
    Accept,
    /// Accepted without checking (the user chose `AcceptAnyInsecure`).
    AcceptInsecure,
    /// No key is recorded or pinned for this host.
    Unknown,
    /// Keys are recorded for this host, with the same algorithm, and this is
    /// not one of them: a changed key or a man in the middle.
    Changed,
}

impl Decision {
    /// True when the connection may go on.
    pub fn accepted(&self) -> bool {
        matches!(self, Decision::Accept | Decision::AcceptInsecure)
    }
}

/// `SHA256:…` (unpadded base64), as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Compares fingerprints ignoring base64 padding.
fn same_fingerprint(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('=') == b.trim().trim_end_matches('=')
}

/// The decision for `presented`, given the keys `recorded` for the host (from
/// a known_hosts file) under a known-hosts policy.
pub fn decide_known(recorded: &[PublicKey], presented: &PublicKey) -> Decision {
    if recorded.iter().any(|k| k.key_data() == presented.key_data()) {
        Decision::Accept
    } else if recorded.iter().any(|k| k.algorithm() == presented.algorithm()) {
        Decision::Changed
    } else {
        Decision::Unknown
    }
}

/// The decision for `presented` under a pinned-fingerprint policy.
pub fn decide_pinned(pins: &[String], presented: &PublicKey) -> Decision {
    let fp = fingerprint(presented);
    if pins.iter().any(|p| same_fingerprint(p, &fp)) { Decision::Accept } else { Decision::Unknown }
}

/// Decides for `host` under `policy`, reading a known_hosts file if the policy
/// names one. A missing file means nothing is known.
pub fn decide(policy: &HostKeyPolicy, host: &Host, presented: &PublicKey) -> Result<Decision, String> {
    match policy {
        HostKeyPolicy::AcceptAnyInsecure => Ok(Decision::AcceptInsecure),
        HostKeyPolicy::Pinned { fingerprints } => Ok(decide_pinned(fingerprints, presented)),
        HostKeyPolicy::KnownHosts { file } => {
            if !std::path::Path::new(file).exists() {
                return Ok(Decision::Unknown);
            }
            let recorded = russh::keys::known_hosts::known_host_keys_path(&host.name, host.port, file)
                .map_err(|e| format!("known_hosts file {file}: {e}"))?;
            let keys: Vec<PublicKey> = recorded.into_iter().map(|(_, k)| k).collect();
            Ok(decide_known(&keys, presented))
        }
    }
}

/// The message for a refused key.
pub fn refusal(policy: &HostKeyPolicy, host: &Host, presented: &PublicKey, d: &Decision) -> String {
    let what = format!("{} {}", presented.algorithm().as_str(), fingerprint(presented));
    let entry = if host.port == 22 { host.name.clone() } else { format!("[{}]:{}", host.name, host.port) };
    match (policy, d) {
        (HostKeyPolicy::KnownHosts { file }, Decision::Changed) => format!(
            "host key of {host} has CHANGED: it presented {what}, which does not match the {entry} entry in {file} \
             (a re-installed host or a man in the middle; update known_hosts only after checking)"
        ),
        (HostKeyPolicy::KnownHosts { file }, _) => {
            format!("unknown host key for {host}: {what} is not in {file} (no {entry} entry with this key)")
        }
        (_, _) => format!("unknown host key for {host}: {what} is not one of the pinned fingerprints"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys generated with ssh-keygen for these tests (public halves only).
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAII9bSou9F1ah8uD6aj0AosKAi53KzKBIQd7PJQ49Xdx5";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGDVcSl4uDncrohud8btJmyWdv9bGeakP7VYybv6Q51I";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBq07xRr4vJWTRMTZfPl2Gl9zonYroos+Z1Gk2/2xjZJNwAjTa+Lil9nZomH1VQ+wrkCMuFYir5e/z0ZZkUwRVY=";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn host(port: u16) -> Host {
        Host { name: "127.0.0.1".into(), port }
    }

    #[test]
    fn known_keys_accept_changed_and_unknown() {
        assert_eq!(decide_known(&[key(ED_A)], &key(ED_A)), Decision::Accept);
        assert_eq!(decide_known(&[key(ED_A)], &key(ED_B)), Decision::Changed);
        assert_eq!(decide_known(&[key(ECDSA)], &key(ED_B)), Decision::Unknown, "another algorithm only");
        assert_eq!(decide_known(&[key(ED_B), key(ECDSA)], &key(ED_B)), Decision::Accept);
        assert_eq!(decide_known(&[], &key(ED_A)), Decision::Unknown);
    }

    #[test]
    fn pins_match_with_or_without_padding() {
        let fp = fingerprint(&key(ED_A));
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        assert_eq!(decide_pinned(std::slice::from_ref(&fp), &key(ED_A)), Decision::Accept);
        assert_eq!(decide_pinned(&[format!("{fp}=")], &key(ED_A)), Decision::Accept);
        assert_eq!(decide_pinned(&[fp], &key(ED_B)), Decision::Unknown);
    }

    #[test]
    fn policies_read_known_hosts_files_with_port_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!("# test\n[127.0.0.1]:2201 ssh-ed25519 {ED_A}\n127.0.0.1 ssh-ed25519 {ED_B}\n"),
        )
        .unwrap();
        let policy = HostKeyPolicy::KnownHosts { file: file.display().to_string() };
        assert_eq!(decide(&policy, &host(2201), &key(ED_A)), Ok(Decision::Accept));
        assert_eq!(decide(&policy, &host(2201), &key(ED_B)), Ok(Decision::Changed));
        assert_eq!(decide(&policy, &host(22), &key(ED_B)), Ok(Decision::Accept));
        assert_eq!(decide(&policy, &host(2202), &key(ED_A)), Ok(Decision::Unknown));
        let msg = refusal(&policy, &host(2201), &key(ED_B), &Decision::Changed);
        assert!(msg.contains("has CHANGED") && msg.contains("[127.0.0.1]:2201"), "{msg}");
        let missing = HostKeyPolicy::KnownHosts { file: "/nonexistent/known_hosts".into() };
        assert_eq!(decide(&missing, &host(22), &key(ED_A)), Ok(Decision::Unknown));
        assert!(decide(&HostKeyPolicy::AcceptAnyInsecure, &host(22), &key(ED_A)).unwrap().accepted());
        assert!(!Decision::Unknown.accepted() && !Decision::Changed.accepted());
    }
}
