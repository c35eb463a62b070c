//! Outbound proxies for everything the delegate dials (the manager, `http`
//! tasks, artifact downloads): `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` choose the
//! proxy by the target's scheme, and `NO_PROXY` exempts hosts by name, domain
//! suffix, IP address or CIDR range (`10.0.0.0/8`, `fd00::/8`), optionally
//! with a port. Lower-case variable names are honoured too, upper case first.
//!
//! Only `http://` proxies are supported: HTTPS targets go through an HTTP
//! `CONNECT` tunnel ([`tunnel`]), plain HTTP requests are sent to the proxy in
//! absolute form. Credentials in the proxy URL become `Proxy-Authorization:
//! Basic` and are never logged.

pub mod connector;
pub mod tunnel;

use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

pub use connector::ProxyConnector;

/// A proxy setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ProxyError {
    /// The environment variable it came from.
    pub var: String,
    /// What is wrong.
    pub reason: String,
}

/// One proxy server.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host name or address.
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// `Proxy-Authorization` header value, when the URL carries user info.
    pub authorization: Option<String>,
    /// The user info as written (percent-encoded), for clients that take a
    /// proxy URL rather than a header.
    pub userinfo: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print credentials.
        write!(
            f,
            "http://{}:{}{}",
            self.host,
            self.port,
            if self.authorization.is_some() { " (with credentials)" } else { "" }
        )
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port][/]`.
    pub fn parse(var: &str, url: &str) -> Result<Proxy, ProxyError> {
        let bad = |reason: String| ProxyError { var: var.to_string(), reason };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(format!("proxy scheme {scheme:?} is not supported (use http://HOST:PORT)")));
            }
            // curl and most tools read a bare host:port as http.
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("a proxy URL has no path (use http://HOST:PORT)".into()));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport).map_err(|r| bad(format!("{r} in the proxy URL")))?;
        if host.is_empty() {
            return Err(bad("the proxy URL has no host".into()));
        }
        let authorization = userinfo.map(|u| {
            let decoded = percent_encoding::percent_decode_str(u).decode_utf8_lossy().into_owned();
            use base64::Engine as _;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))
        });
        Ok(Proxy { host, port: port.unwrap_or(80), authorization, userinfo: userinfo.map(str::to_string) })
    }

    /// The proxy as an `http://` URL, credentials included (never log it).
    pub fn url_with_credentials(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match &self.userinfo {
            Some(u) => format!("http://{u}@{host}:{}", self.port),
            None => format!("http://{host}:{}", self.port),
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [ in an IPv6 address")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after an IPv6 address")),
        };
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => Ok((s.to_string(), None)),
        Some((h, p)) => Ok((h.to_string(), Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?))),
        None => Ok((s.to_string(), None)),
    }
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exempt {
    /// `*`: no proxy for anything.
    All,
    /// A host name; matches itself and its subdomains.
    Domain(String, Option<u16>),
    /// An address range (a single address is a full-length prefix).
    Cidr(IpAddr, u8, Option<u16>),
}

/// The parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<Exempt>);

impl NoProxy {
    /// Parses a comma-separated list; entries that are neither a host name,
    /// an address nor a CIDR range are refused.
    pub fn parse(var: &str, list: &str) -> Result<NoProxy, ProxyError> {
        let mut out = vec![];
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if raw == "*" {
                out.push(Exempt::All);
                continue;
            }
            let bad = |reason: String| ProxyError {
                var: var.to_string(),
                reason: format!("entry {raw:?}: {reason}"),
            };
            if let Some((addr, bits)) = raw.split_once('/') {
                let ip: IpAddr = addr
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse()
                    .map_err(|_| bad("not an IP range".into()))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| bad(format!("prefix length must be 0..={max}")))?;
                out.push(Exempt::Cidr(ip, bits, None));
                continue;
            }
            let (host, port) = split_host_port(raw).map_err(bad)?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.push(Exempt::Cidr(ip, if ip.is_ipv4() { 32 } else { 128 }, port));
                continue;
            }
            let domain = host.trim_start_matches("*.").trim_start_matches('.').to_ascii_lowercase();
            if domain.is_empty() || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(bad("not a host name, address or CIDR range".into()));
            }
            out.push(Exempt::Domain(domain, port));
        }
        Ok(NoProxy(out))
    }

    /// True when `host:port` must be reached directly.
    pub fn exempts(&self, host: &str, port: u16) -> bool {
        let host =
            host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().any(|e| match e {
            Exempt::All => true,
            Exempt::Domain(d, p) => {
                p.is_none_or(|p| p == port) && (host == *d || host.ends_with(&format!(".{d}")))
            }
            Exempt::Cidr(net, bits, p) => {
                p.is_none_or(|p| p == port) && ip.is_some_and(|ip| in_range(ip, *net, *bits))
            }
        })
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    // IPv4-mapped IPv6 addresses match IPv4 ranges.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The proxy settings of this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// For `http://` targets.
    pub http: Option<Proxy>,
    /// For `https://` targets (and gRPC to the manager).
    pub https: Option<Proxy>,
    /// Targets reached directly.
    pub no_proxy: NoProxy,
}

impl Proxies {
    /// Reads the standard variables through `get` (upper case first, then
    /// lower case; `ALL_PROXY` fills a scheme left unset). Empty values count
    /// as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Proxies, ProxyError> {
        let var = |name: &str| -> Option<(String, String)> {
            [name.to_string(), name.to_ascii_lowercase()]
                .into_iter()
                .find_map(|n| get(&n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(|v| (n, v)))
        };
        let proxy = |name: &str| -> Result<Option<Proxy>, ProxyError> {
            var(name).or_else(|| var("ALL_PROXY")).map(|(n, v)| Proxy::parse(&n, &v)).transpose()
        };
        Ok(Proxies {
            http: proxy("HTTP_PROXY")?,
            https: proxy("HTTPS_PROXY")?,
            no_proxy: var("NO_PROXY").map(|(n, v)| NoProxy::parse(&n, &v)).transpose()?.unwrap_or_default(),
        })
    }

    /// The process environment's settings.
    pub fn from_env() -> Result<Proxies, ProxyError> {
        Proxies::from_vars(|n| std::env::var(n).ok())
    }

    /// The proxy for a target, if any: by scheme, unless `NO_PROXY` exempts it.
    pub fn for_target(&self, https: bool, host: &str, port: u16) -> Option<&Proxy> {
        let p = if https { self.https.as_ref() } else { self.http.as_ref() }?;
        (!self.no_proxy.exempts(host, port)).then_some(p)
    }

    /// The proxy for the target of `uri`, if any (see [`target_of`]).
    pub fn for_uri(&self, uri: &http::Uri) -> Option<&Proxy> {
        let (https, host, port) = target_of(uri)?;
        self.for_target(https, host, port)
    }

    /// The `Proxy-Authorization` value a plain-HTTP request to `uri` needs:
    /// such requests go to the proxy in absolute form, so the client sends the
    /// proxy's credentials itself (HTTPS tunnels carry them in `CONNECT`).
    pub fn absolute_form_authorization(&self, uri: &http::Uri) -> Option<String> {
        match target_of(uri)? {
            (false, host, port) => self.for_target(false, host, port)?.authorization.clone(),
            _ => None,
        }
    }
}

/// `(https, host, port)` of `uri` as proxy decisions see it: HTTPS unless the
/// scheme is `http`, the host without IPv6 brackets, the scheme's default port.
pub fn target_of(uri: &http::Uri) -> Option<(bool, &str, u16)> {
    let https = uri.scheme_str() != Some("http");
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some((https, host, uri.port_u16().unwrap_or(if https { 443 } else { 80 })))
}

static GLOBAL: OnceLock<Proxies> = OnceLock::new();

/// Sets the process-wide settings (once, at start-up, after validating them).
pub fn init(p: Proxies) {
    let _ = GLOBAL.set(p);
}

/// The process-wide settings: those given to [`init`], else the environment's
/// (unusable values are ignored here; start-up refuses them first).
pub fn global() -> &'static Proxies {
    GLOBAL.get_or_init(|| Proxies::from_env().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<Proxies, ProxyError> {
        let m: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Proxies::from_vars(|n| m.get(n).cloned())
    }

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let p = Proxy::parse("HTTPS_PROXY", "http://proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.authorization.is_none()), ("proxy.corp", 3128, true));
        let p = Proxy::parse("HTTPS_PROXY", "http://us%40er:p%3Ass@10.0.0.1").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 80));
        // base64("us@er:p:ss")
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNAZXI6cDpzcw=="));
        assert!(!format!("{p:?}").contains("dXN"), "credentials never printed: {p:?}");
        assert_eq!(p.url_with_credentials(), "http://us%40er:p%3Ass@10.0.0.1:80");
        assert_eq!(Proxy::parse("X", "proxy:8080").unwrap().port, 8080);
        assert_eq!(Proxy::parse("X", "http://[::1]:3128").unwrap().host, "::1");
        let e = Proxy::parse("HTTPS_PROXY", "socks5://p:1080").unwrap_err();
        assert_eq!(
            e.to_string(),
            "HTTPS_PROXY: proxy scheme \"socks5\" is not supported (use http://HOST:PORT)"
        );
        assert!(Proxy::parse("X", "http://p:99999").unwrap_err().reason.contains("bad port"));
        assert!(Proxy::parse("X", "http://p:80/path").is_err());
    }

    #[test]
    fn no_proxy_matches_names_suffixes_addresses_and_ranges() {
        let n = NoProxy::parse(
            "NO_PROXY",
            "localhost, .corp.example, internal.io:8443, 10.0.0.0/8, 192.168.1.5, fd00::/8",
        )
        .unwrap();
        assert!(n.exempts("localhost", 80));
        assert!(n.exempts("a.corp.example", 443) && n.exempts("corp.example", 443));
        assert!(!n.exempts("notcorp.example", 443), "suffix match is on a dot boundary");
        assert!(n.exempts("internal.io", 8443) && !n.exempts("internal.io", 443), "a port limits the entry");
        assert!(n.exempts("10.1.2.3", 443) && !n.exempts("11.1.2.3", 443));
        assert!(n.exempts("192.168.1.5", 1) && !n.exempts("192.168.1.6", 1));
        assert!(n.exempts("[fd12::1]", 443) && !n.exempts("fe80::1", 443));
        assert!(n.exempts("::ffff:10.9.9.9", 443), "IPv4-mapped addresses match IPv4 ranges");
        assert!(!n.exempts("example.com", 443));
        assert!(NoProxy::parse("NO_PROXY", "*").unwrap().exempts("anything", 1));
        assert!(NoProxy::parse("NO_PROXY", "10.0.0.0/33").unwrap_err().to_string().contains("prefix length"));
        assert!(NoProxy::parse("NO_PROXY", "bad host!").is_err());
        assert!(NoProxy::parse("NO_PROXY", "0.0.0.0/0").unwrap().exempts("8.8.8.8", 53));
    }

    #[test]
    fn scheme_picks_the_proxy_and_no_proxy_exempts() {
        let p =
            vars(&[("https_proxy", "http://s:1"), ("HTTP_PROXY", "http://h:2"), ("NO_PROXY", "127.0.0.0/8")])
                .unwrap();
        assert_eq!(p.for_target(true, "manager.example", 443).map(|p| p.host.as_str()), Some("s"));
        assert_eq!(p.for_target(false, "manager.example", 80).map(|p| p.host.as_str()), Some("h"));
        assert!(p.for_target(true, "127.0.0.1", 443).is_none());
        let all = vars(&[("ALL_PROXY", "http://a:3")]).unwrap();
        assert_eq!(all.for_target(true, "x", 1).map(|p| p.port), Some(3));
        assert!(vars(&[("HTTPS_PROXY", " ")]).unwrap().https.is_none(), "empty means unset");
        let upper_wins = vars(&[("HTTPS_PROXY", "http://u:1"), ("https_proxy", "http://l:1")]).unwrap();
        assert_eq!(upper_wins.https.unwrap().host, "u");
        assert_eq!(vars(&[("NO_PROXY", "a b")]).unwrap_err().var, "NO_PROXY");
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        assert_eq!(target_of(&uri("https://[::1]/x")), Some((true, "::1", 443)));
        assert_eq!(target_of(&uri("http://h:8080/")), Some((false, "h", 8080)));
        let creds = vars(&[("HTTP_PROXY", "http://u:p@h:2"), ("HTTPS_PROXY", "http://u:p@s:1")]).unwrap();
        assert_eq!(creds.for_uri(&uri("https://x/")).map(|p| p.host.as_str()), Some("s"));
        assert_eq!(creds.absolute_form_authorization(&uri("http://x/")).as_deref(), Some("Basic dTpw"));
        assert_eq!(
            creds.absolute_form_authorization(&uri("https://x/")),
            None,
            "tunnels carry it in CONNECT"
        );
    }
}
