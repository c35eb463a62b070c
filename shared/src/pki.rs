//! PKI helpers: the manager's CA, its server certificate, delegate key pairs and
//! CSRs, signing a CSR into a short-lived client certificate, and reading the
//! delegate identity back out of a verified peer certificate.
//!
//! Keys are ECDSA P-256. The delegate's identity is the certificate's common name
//! (its delegate id); the manager never trusts identity from message fields.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::ids::DelegateId;

/// A PKI operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key generation, parsing or signing failed inside rcgen.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The certificate does not name a delegate.
    #[error("certificate does not name a delegate: {0}")]
    NotADelegate(String),
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Rcgen { what, source }
}

/// A certificate authority: its certificate (PEM) and private key (PEM).
#[derive(Clone)]
pub struct Authority {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA private key, PEM. Never leaves the manager's data dir.
    pub key_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A certificate plus the private key it was issued for, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    // Back-date a little so that small clock skew between hosts does not reject a
    // fresh cert, but by no more than a tenth of the lifetime: holders schedule
    // renewal from not_before, so a large back-date would delay it.
    let skew = (lifetime / 10).min(Duration::from_secs(300));
    params.not_before = now - time::Duration::try_from(skew).unwrap_or(time::Duration::ZERO);
    params.not_after = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::DAY);
}

impl Authority {
    /// Creates a new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(rc("generating CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Dray");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, Duration::from_secs(10 * 365 * 24 * 3600));
        let cert = params.self_signed(&key).map_err(rc("self-signing CA"))?;
        Ok(Authority { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(rc("parsing CA key"))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(rc("parsing CA certificate"))
    }

    /// Issues a server certificate for the given DNS names / IP addresses.
    pub fn issue_server(&self, hosts: &[String], lifetime: Duration) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(rc("generating server key"))?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(rc("server names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hosts.first().map(String::as_str).unwrap_or("dray"));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer()?).map_err(rc("signing server certificate"))?;
        Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a delegate's CSR into a client certificate naming `delegate`. Only the
    /// CSR's public key is used: subject, names and usages are set here, so a CSR
    /// cannot ask for more than a delegate identity.
    pub fn sign_delegate_csr(
        &self,
        csr_pem: &str,
        delegate: DelegateId,
        lifetime: Duration,
    ) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(rc("parsing CSR"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, delegate.to_string());
        dn.push(DnType::OrganizationalUnitName, "dray-delegate");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            format!("{delegate}.delegate.dray").try_into().map_err(rc("delegate name"))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, lifetime);
        let cert =
            params.signed_by(&csr.public_key, &self.issuer()?).map_err(rc("signing delegate certificate"))?;
        Ok(cert.pem())
    }
}

/// A delegate's freshly generated key pair and a CSR for it.
pub fn delegate_key_and_csr(name: &str) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(rc("generating delegate key"))?;
    let csr_pem = csr_for(&key.serialize_pem(), name)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A CSR for an existing key (used on renewal, which keeps the key).
pub fn csr_for(key_pem: &str, name: &str) -> Result<String, Error> {
    let key = KeyPair::from_pem(key_pem).map_err(rc("parsing delegate key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.serialize_request(&key).map_err(rc("creating CSR"))?.pem().map_err(rc("encoding CSR"))
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The delegate named by the certificate's common name.
    pub delegate: DelegateId,
    /// End of the certificate's validity, Unix milliseconds.
    pub not_after_ms: i64,
}

/// Reads the delegate identity out of a DER certificate that TLS has already
/// verified against the manager's CA.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| Error::NotADelegate("no common name".into()))?;
    let delegate = cn.parse::<DelegateId>().map_err(|e| Error::NotADelegate(e.to_string()))?;
    Ok(PeerIdentity { delegate, not_after_ms: cert.validity().not_after.timestamp() * 1000 })
}

/// End of validity (Unix ms) of the first certificate in `pem`.
pub fn not_after_ms(pem: &str) -> Result<i64, Error> {
    let der = first_cert_der(pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp() * 1000)
}

/// Start of validity (Unix ms) of the first certificate in `pem`.
pub fn not_before_ms(pem: &str) -> Result<i64, Error> {
    let der = first_cert_der(pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    Ok(cert.validity().not_before.timestamp() * 1000)
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| Error::InvalidCertificate("no PEM certificate found".into()))?
        .map(|c| c.to_vec())
        .map_err(|e| Error::InvalidCertificate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_round_trip_names_the_delegate() {
        let ca = Authority::generate("test CA").unwrap();
        let (_key, csr) = delegate_key_and_csr("builder-1").unwrap();
        let id = DelegateId::new();
        let cert = ca.sign_delegate_csr(&csr, id, Duration::from_secs(3600)).unwrap();
        let der = first_cert_der(&cert).unwrap();
        let who = peer_identity(&der).unwrap();
        assert_eq!(who.delegate, id);
        assert!(who.not_after_ms > crate::clock::now_ms());
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = Authority::generate("test CA").unwrap();
        assert!(ca.sign_delegate_csr("nope", DelegateId::new(), Duration::from_secs(60)).is_err());
    }

    #[test]
    fn server_certificate_has_the_names() {
        let ca = Authority::generate("test CA").unwrap();
        let leaf =
            ca.issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(60)).unwrap();
        assert!(not_after_ms(&leaf.cert_pem).unwrap() > not_before_ms(&leaf.cert_pem).unwrap());
    }
}
