//! Host lists: entries (`host`, `host:port`, `[v6]:port`), ranges such as
//! `web[01:20].example`, and inventory files on the delegate. Pure apart from
//! [`load`] reading the file.

use std::fmt;

use dray_shared::task::ssh::{Inventory, MAX_HOSTS};

/// One host to work on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    /// Name or address, as written (without brackets).
    pub name: String,
    /// SSH port.
    pub port: u16,
}

impl Host {
    /// `name:port` (`[v6]:port`), the address used to connect and report.
    pub fn address(&self) -> String {
        if self.name.contains(':') {
            format!("[{}]:{}", self.name, self.port)
        } else {
            format!("{}:{}", self.name, self.port)
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address())
    }
}

/// Why a host list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An entry is malformed.
    #[error("host entry {entry:?}: {reason}")]
    Entry {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// The inventory file cannot be read.
    #[error("hosts file {path}: {reason}")]
    File {
        /// Its path on the delegate.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Too many hosts after expansion.
    #[error("{0} hosts after expanding ranges; at most {MAX_HOSTS}")]
    TooMany(usize),
    /// Nothing to work on.
    #[error("the host list is empty")]
    Empty,
}

/// Every host of `inv`: `hosts` then the file's, expanded, duplicates dropped
/// (first one wins), in order.
pub fn load(inv: &Inventory) -> Result<Vec<Host>, Error> {
    let mut entries: Vec<String> = inv.hosts.iter().flat_map(|h| split_list(h)).collect();
    if let Some(path) = &inv.hosts_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::File { path: path.clone(), reason: e.to_string() })?;
        entries.extend(parse_file(&text));
    }
    expand_all(&entries, inv.port)
}

/// Entries of a string that may hold several, separated by commas or white
/// space (a rendered runtime input such as `"a:22, b:22"`).
pub fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Entries of an inventory file: one or more per line, `#` starts a comment.
pub fn parse_file(text: &str) -> Vec<String> {
    text.lines().flat_map(|l| split_list(l.split('#').next().unwrap_or(""))).collect()
}

/// Expands and parses `entries`, dropping duplicates.
pub fn expand_all(entries: &[String], default_port: u16) -> Result<Vec<Host>, Error> {
    let mut out: Vec<Host> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        for h in expand(e)? {
            let host = parse_entry(&h, default_port)?;
            if seen.insert(host.clone()) {
                out.push(host);
            }
            if out.len() > MAX_HOSTS {
                return Err(Error::TooMany(out.len()));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Empty);
    }
    Ok(out)
}

/// Expands the first `[a:b]` numeric range of `entry` (recursively, so
/// several ranges multiply). `[01:20]` keeps the width of the first bound.
/// A bracketed IPv6 address (`[::1]:22`) is not a range.
pub fn expand(entry: &str) -> Result<Vec<String>, Error> {
    let bad = |reason: &str| Error::Entry { entry: entry.to_string(), reason: reason.to_string() };
    let Some(open) = find_range_start(entry) else {
        return Ok(vec![entry.to_string()]);
    };
    let close = entry[open..].find(']').map(|i| open + i).ok_or_else(|| bad("unclosed ["))?;
    let inner = &entry[open + 1..close];
    let (a, b) = inner.split_once(':').ok_or_else(|| bad("a range is written [FROM:TO]"))?;
    let (from, to): (u64, u64) = match (a.parse(), b.parse()) {
        (Ok(f), Ok(t)) => (f, t),
        _ => return Err(bad("range bounds must be numbers")),
    };
    if from > to {
        return Err(bad("the range goes backwards"));
    }
    if to - from >= MAX_HOSTS as u64 {
        return Err(Error::TooMany((to - from + 1) as usize));
    }
    let width = if a.starts_with('0') && a.len() > 1 { a.len() } else { 0 };
    let (head, tail) = (&entry[..open], &entry[close + 1..]);
    let mut out = Vec::new();
    for n in from..=to {
        for rest in expand(tail)? {
            out.push(format!("{head}{n:0width$}{rest}"));
        }
    }
    Ok(out)
}

/// Index of a `[` that opens a numeric range (digits, a colon, digits).
fn find_range_start(entry: &str) -> Option<usize> {
    let bytes = entry.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'['
            && entry[i + 1..].find(']').is_some_and(|j| {
                let inner = &entry[i + 1..i + 1 + j];
                inner.split_once(':').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit())
                })
            })
    })
}

/// `host`, `host:port` or `[v6]:port` (a bare IPv6 address takes the default port).
pub fn parse_entry(entry: &str, default_port: u16) -> Result<Host, Error> {
    let bad = |reason: String| Error::Entry { entry: entry.to_string(), reason };
    let port = |p: &str| -> Result<u16, Error> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(format!("{p:?} is not a port"))),
        }
    };
    let (name, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (name, after) = rest.split_once(']').ok_or_else(|| bad("unclosed [".into()))?;
        match after.strip_prefix(':') {
            Some(p) => (name, port(p)?),
            None if after.is_empty() => (name, default_port),
            None => return Err(bad("expected :PORT after ]".into())),
        }
    } else if entry.matches(':').count() > 1 {
        (entry, default_port)
    } else if let Some((n, p)) = entry.split_once(':') {
        (n, port(p)?)
    } else {
        (entry, default_port)
    };
    if name.is_empty() {
        return Err(bad("no host name".into()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b)) {
        return Err(bad("a host name has letters, digits, '-', '.', '_' (or an IP address)".into()));
    }
    Ok(Host { name: name.to_string(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[&str]) -> Vec<String> {
        let v: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        expand_all(&v, 22).unwrap().iter().map(Host::address).collect()
    }

    #[test]
    fn ranges_expand_with_their_padding() {
        assert_eq!(
            expand("web[01:03].example").unwrap(),
            ["web01.example", "web02.example", "web03.example"]
        );
        assert_eq!(expand("h[8:10]").unwrap(), ["h8", "h9", "h10"]);
        assert_eq!(expand("r[1:2]-n[0:1]").unwrap(), ["r1-n0", "r1-n1", "r2-n0", "r2-n1"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(expand("[::1]:22").unwrap(), ["[::1]:22"], "IPv6 is not a range");
        assert!(matches!(expand("h[3:1]"), Err(Error::Entry { .. })));
        assert!(matches!(expand("h[0:99999]"), Err(Error::TooMany(_))));
    }

    #[test]
    fn entries_take_ports_and_duplicates_go() {
        assert_eq!(
            names(&["a", "b:2222", "[::1]:2200", "::1", "a:22", "10.0.0.[1:2]:2022"]),
            ["a:22", "b:2222", "[::1]:2200", "[::1]:22", "10.0.0.1:2022", "10.0.0.2:2022"]
        );
        assert!(parse_entry("a:0", 22).is_err());
        assert!(parse_entry("a:x", 22).is_err());
        assert!(parse_entry("a b", 22).is_err());
        assert!(parse_entry(":22", 22).is_err());
        assert_eq!(expand_all(&[], 22), Err(Error::Empty));
    }

    #[test]
    fn lists_and_files_split_on_commas_space_and_lines() {
        assert_eq!(split_list("a:1, b:2 c"), ["a:1", "b:2", "c"]);
        assert_eq!(parse_file("# hosts\nweb1 web2\n\n db:2222 # primary\n"), ["web1", "web2", "db:2222"]);
    }

    #[test]
    fn load_reads_the_inventory_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "web[1:2]\n").unwrap();
        let inv = Inventory {
            hosts: vec!["x:2".into()],
            hosts_file: Some(f.display().to_string()),
            port: 2200,
            host_key: dray_shared::task::ssh::HostKeyPolicy::AcceptAnyInsecure,
            connect_timeout_ms: 0,
        };
        let hosts: Vec<String> = load(&inv).unwrap().iter().map(Host::address).collect();
        assert_eq!(hosts, ["x:2", "web1:2200", "web2:2200"]);
        let missing = Inventory { hosts_file: Some("/nonexistent/hosts".into()), ..inv };
        assert!(load(&missing).unwrap_err().to_string().starts_with("hosts file /nonexistent/hosts: "));
    }
}
