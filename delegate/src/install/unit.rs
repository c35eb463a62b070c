//! Pure rendering of what `dray-delegate install --systemd` writes: the unit
//! (the shipped `deploy/systemd/dray-delegate.service` with this host's paths,
//! user and stop timeout put in) and the environment file with the settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The unit as shipped in `deploy/systemd/`; the one place its text lives.
pub const TEMPLATE: &str = include_str!("../../../deploy/systemd/dray-delegate.service");

/// The unit's file name.
pub const UNIT_NAME: &str = "dray-delegate.service";

/// The environment file's name in the config directory.
pub const ENV_FILE_NAME: &str = "delegate.env";

/// Time the service manager waits after SIGTERM beyond the drain grace period
/// before it SIGKILLs what is left (the drain hands work back, then exits).
pub const STOP_MARGIN: Duration = Duration::from_secs(15);

/// Where state directories managed by systemd (`StateDirectory=`) live.
const SYSTEMD_STATE_ROOT: &str = "/var/lib";

/// A value that cannot go into the unit or the environment file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A path is relative or holds characters the unit syntax would interpret.
    #[error(
        "invalid {what} {path:?}: must be an absolute path of letters, digits and . _ - + @ / only \
         (systemd would interpret spaces, quotes, % and $)"
    )]
    Path {
        /// Which flag: `--bin-path`, `--state-dir`...
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The user or group name is not a valid system account name.
    #[error("invalid {what} {name:?}: use letters, digits, _ and - (starting with a letter or _)")]
    Account {
        /// `--user` or its group.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The template lacks a line the install rewrites (a broken build).
    #[error("the unit template has no `{0}=` line")]
    Template(&'static str),
}

/// What varies from host to host in the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSettings {
    /// The `dray-delegate` binary.
    pub bin_path: PathBuf,
    /// The environment file.
    pub env_file: PathBuf,
    /// The service user.
    pub user: String,
    /// Its group.
    pub group: String,
    /// The state directory (identity).
    pub state_dir: PathBuf,
    /// `--drain-grace`; the stop timeout is this plus [`STOP_MARGIN`].
    pub drain_grace: Duration,
}

fn check_path(what: &'static str, path: &Path) -> Result<String, RenderError> {
    let s = path.to_str().unwrap_or_default();
    let ok = path.is_absolute()
        && !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-+@/".contains(c))
        && !s.split('/').any(|part| part == "..");
    if ok {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(RenderError::Path { what, path: path.to_path_buf() })
    }
}

/// Checks a user or group name (the portable POSIX account name set).
pub fn check_account(what: &'static str, name: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && name.len() <= 32 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        Ok(())
    } else {
        Err(RenderError::Account { what, name: name.to_string() })
    }
}

/// Seconds, rounded up, as systemd reads them.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_millis().div_ceil(1000))
}

/// The unit text for `s`: the template with its host-specific lines replaced.
pub fn render_unit(s: &UnitSettings) -> Result<String, RenderError> {
    let bin = check_path("--bin-path", &s.bin_path)?;
    let env_file = check_path("--config-dir", &s.env_file)?;
    let state_dir = check_path("--state-dir", &s.state_dir)?;
    check_account("--user", &s.user)?;
    check_account("group of --user", &s.group)?;
    // Under /var/lib systemd creates the directory and hands it to the user on
    // every start; elsewhere it must be writable despite ProtectSystem=strict.
    let state_line = match state_dir.strip_prefix(SYSTEMD_STATE_ROOT).and_then(|r| r.strip_prefix('/')) {
        Some(rel) if !rel.is_empty() => format!("StateDirectory={rel}"),
        _ => format!("ReadWritePaths={state_dir}"),
    };
    let replacements: [(&'static str, String); 6] = [
        ("ExecStart", format!("ExecStart={bin} run")),
        ("EnvironmentFile", format!("EnvironmentFile={env_file}")),
        ("User", format!("User={}", s.user)),
        ("Group", format!("Group={}", s.group)),
        ("StateDirectory", state_line),
        ("TimeoutStopSec", format!("TimeoutStopSec={}", seconds(s.drain_grace + STOP_MARGIN))),
    ];
    let mut seen = [false; 6];
    let mut out = String::with_capacity(TEMPLATE.len() + 128);
    for line in TEMPLATE.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match replacements.iter().position(|(k, _)| Some(*k) == key) {
            Some(i) => {
                seen[i] = true;
                out.push_str(&replacements[i].1);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(RenderError::Template(replacements[i].0));
    }
    Ok(out)
}

/// The environment file: one `DRAY_*="value"` line per setting, in the
/// double-quoted form systemd's `EnvironmentFile=` reads (`\` and `"` escaped).
pub fn render_env(header: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for (k, v) in vars {
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{k}=\"{escaped}\"\n"));
    }
    out
}

/// The new environment file `rendered`, followed by what the operator added to
/// the `previous` one (secrets for `env:` references, proxy settings…): every
/// line except the install's own header and the assignments it rewrites.
pub fn merge_env(rendered: &str, previous: &str) -> String {
    let own_line = |line: &str| {
        let trimmed = line.trim();
        let key = trimmed.split_once('=').map(|(k, _)| k.trim());
        rendered.lines().any(|r| {
            (r.starts_with('#') && r == trimmed)
                || (key.is_some() && r.split_once('=').map(|(k, _)| k) == key)
        })
    };
    let kept: Vec<&str> = previous.lines().filter(|l| !own_line(l)).collect();
    let mut out = rendered.to_string();
    if kept.iter().any(|l| !l.trim().is_empty()) {
        let start = kept.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
        for line in &kept[start..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> UnitSettings {
        UnitSettings {
            bin_path: "/opt/dray/bin/dray-delegate".into(),
            env_file: "/etc/dray/delegate.env".into(),
            user: "builder".into(),
            group: "builders".into(),
            state_dir: "/var/lib/dray/delegate".into(),
            drain_grace: Duration::from_secs(90),
        }
    }

    fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
    }

    #[test]
    fn replaces_the_host_specific_lines_and_keeps_the_rest() {
        let unit = render_unit(&settings()).unwrap();
        assert_eq!(value(&unit, "ExecStart"), ["/opt/dray/bin/dray-delegate run"]);
        assert_eq!(value(&unit, "EnvironmentFile"), ["/etc/dray/delegate.env"]);
        assert_eq!(value(&unit, "User"), ["builder"]);
        assert_eq!(value(&unit, "Group"), ["builders"]);
        assert_eq!(value(&unit, "StateDirectory"), ["dray/delegate"]);
        assert_eq!(value(&unit, "TimeoutStopSec"), ["105s"], "drain grace plus the margin");
        for kept in ["NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes"] {
            assert!(unit.lines().any(|l| l == kept), "{kept} kept");
        }
        assert_eq!(unit.lines().count(), TEMPLATE.lines().count());
    }

    #[test]
    fn the_template_as_shipped_has_the_documented_defaults() {
        assert_eq!(value(TEMPLATE, "ExecStart"), ["/usr/local/bin/dray-delegate run"]);
        assert_eq!(value(TEMPLATE, "EnvironmentFile"), ["/etc/dray/delegate.env"]);
        assert_eq!(value(TEMPLATE, "StateDirectory"), ["dray-delegate"]);
        let default_stop = seconds(crate::config::DEFAULT_DRAIN_GRACE + STOP_MARGIN);
        assert_eq!(value(TEMPLATE, "TimeoutStopSec"), [default_stop.as_str()], "matches the default drain");
    }

    #[test]
    fn a_state_dir_outside_var_lib_is_made_writable() {
        let unit = render_unit(&UnitSettings { state_dir: "/srv/dray/state/".into(), ..settings() }).unwrap();
        assert!(value(&unit, "StateDirectory").is_empty());
        assert_eq!(value(&unit, "ReadWritePaths"), ["/srv/dray/state"]);
        let unit = render_unit(&UnitSettings { state_dir: "/var/lib".into(), ..settings() }).unwrap();
        assert_eq!(value(&unit, "ReadWritePaths"), ["/var/lib"]);
    }

    #[test]
    fn the_stop_timeout_rounds_up() {
        let unit =
            render_unit(&UnitSettings { drain_grace: Duration::from_millis(1500), ..settings() }).unwrap();
        assert_eq!(value(&unit, "TimeoutStopSec"), ["17s"]);
    }

    #[test]
    fn refuses_what_systemd_would_interpret() {
        for bad in ["relative/dray-delegate", "/opt/my dray/bin", "/opt/%h/bin", "/opt/$X", "/opt/../x"] {
            let e = render_unit(&UnitSettings { bin_path: bad.into(), ..settings() }).unwrap_err();
            assert!(e.to_string().starts_with("invalid --bin-path"), "{bad}: {e}");
        }
        let e = render_unit(&UnitSettings { user: "root user".into(), ..settings() }).unwrap_err();
        assert!(e.to_string().starts_with("invalid --user \"root user\""), "{e}");
        let e = render_unit(&UnitSettings { state_dir: "state".into(), ..settings() }).unwrap_err();
        assert!(e.to_string().starts_with("invalid --state-dir"), "{e}");
    }

    #[test]
    fn a_reinstall_keeps_what_the_operator_added() {
        let first = render_env("header", &[("DRAY_NAME", "a".into()), ("DRAY_TAGS", "x".into())]);
        let edited =
            format!("{first}\n# registry credentials\nREGISTRY_PASSWORD=s3cret\nDRAY_TAGS=\"hand-edited\"\n");
        let second = render_env("header", &[("DRAY_NAME", "b".into()), ("DRAY_TAGS", "y".into())]);
        let merged = merge_env(&second, &edited);
        assert_eq!(
            merged,
            "# header\nDRAY_NAME=\"b\"\nDRAY_TAGS=\"y\"\n# registry credentials\nREGISTRY_PASSWORD=s3cret\n"
        );
        assert_eq!(merge_env(&second, &first), second, "nothing added, nothing kept");
        assert_eq!(merge_env(&second, &merged), merged, "stable over reinstalls");
    }

    #[test]
    fn env_values_are_quoted_and_escaped() {
        let text = render_env(
            "written by a test\nsecond line",
            &[("DRAY_NAME", r#"a "quoted" \ name"#.to_string()), ("DRAY_CAPACITY", "4".into())],
        );
        assert_eq!(
            text,
            "# written by a test\n# second line\nDRAY_NAME=\"a \\\"quoted\\\" \\\\ name\"\nDRAY_CAPACITY=\"4\"\n"
        );
    }
}
