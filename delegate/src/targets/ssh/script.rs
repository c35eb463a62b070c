//! The bash scripts run on each host, and the release layout they keep:
//!
//! ```text
//! BASE/releases/<release>/   one directory per release: artifact, unpacked files, config files
//! BASE/current -> releases/<release>   flipped atomically (symlink + rename)
//! BASE/.dray/history         release ids in activation order; the last is current
//! ```
//!
//! The hosts are the source of truth: a rollback reads the history on the host
//! and goes back one entry. A deploy keeps the newest `keep_releases` entries
//! and deletes every other release directory (failed, never activated ones too).
//!
//! Scripts are sent on the channel's stdin to `bash -s` (never on a command
//! line, so secret values in them are not in the host's process table). The
//! whole script is one function that bash parses before running it, and the
//! function's stdin is `/dev/null`, so a command reading stdin cannot eat the
//! rest of the script. User commands are passed as here-documents with a
//! random delimiter and run by their own `bash` (lifecycle commands with `-e`).
//!
//! A failing part exits with [`STAGE_EXIT_BASE`] + its index in [`STAGES`];
//! success prints one `dray-result: STATUS RELEASE` line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dray_shared::task::ssh::Commands;

/// Exit codes of failing parts start here.
pub const STAGE_EXIT_BASE: u32 = 90;
/// The parts of a script, in exit-code order.
pub const STAGES: &[&str] =
    &["prepare", "unpack", "install", "stop", "activate", "start", "health check", "rollback", "command"];
/// Prefix of the line that reports the script's process group.
pub const PGID_PREFIX: &str = "dray-pgid: ";
/// Prefix of the line that reports a host's result.
pub const RESULT_PREFIX: &str = "dray-result: ";

/// The part named by a script's exit code, if it is one of ours.
pub fn failed_stage(exit_code: u32) -> Option<&'static str> {
    exit_code.checked_sub(STAGE_EXIT_BASE).and_then(|i| STAGES.get(i as usize)).copied()
}

fn stage_code(name: &str) -> u32 {
    STAGE_EXIT_BASE + STAGES.iter().position(|s| *s == name).unwrap_or(0) as u32
}

/// `s` as one single-quoted shell word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `BASE` for `host`: `{host}` and `{port}` replaced.
pub fn base_dir(template: &str, host_name: &str, port: u16) -> String {
    template.replace("{host}", host_name).replace("{port}", &port.to_string())
}

/// Per-host facts a script needs.
#[derive(Debug, Clone)]
pub struct HostVars<'a> {
    /// `DRAY_HOST`.
    pub host: &'a str,
    /// The base directory on this host.
    pub base: &'a str,
    /// Exported variables (secrets resolved).
    pub env: &'a BTreeMap<String, String>,
}

/// Builds one script.
struct Script {
    text: String,
    delimiter: String,
}

impl Script {
    fn new(vars: &HostVars<'_>, all_text: &[&str]) -> Self {
        let mut s = Script { text: String::new(), delimiter: delimiter(all_text) };
        s.text.push_str("dray_main() {\nset -u\n");
        // The process group to kill on abort, for when sshd refuses `signal`
        // requests (it does for root logins).
        s.line(&format!("echo \"{PGID_PREFIX}$(cut -d' ' -f5 /proc/$$/stat 2>/dev/null)\""));
        s.line(&format!("export DRAY_HOST={}", quote(vars.host)));
        s.line(&format!("B={}", quote(vars.base)));
        s.line("export DRAY_BASE_DIR=\"$B\"");
        for (k, v) in vars.env {
            s.line(&format!("export {k}={}", quote(v)));
        }
        s.line("H=\"$B/.dray/history\"");
        s.line("dray_fail() { echo \"dray: $2\" >&2; exit \"$1\"; }");
        // `dray_run NAME DIR FLAGS` runs the script on fd 3 in DIR with its own bash.
        s.line("dray_run() { ( cd \"$2\" && exec bash $3 /dev/fd/3 </dev/null ); }");
        s
    }

    fn line(&mut self, l: &str) {
        self.text.push_str(l);
        self.text.push('\n');
    }

    /// Runs `command` as part `stage` in `dir` (a shell word), failing the
    /// script with the part's exit code.
    fn stage(&mut self, stage: &str, dir: &str, flags: &str, command: &str) {
        let code = stage_code(stage);
        let _ = writeln!(self.text, "echo \"dray: {stage}\"");
        let _ = writeln!(self.text, "dray_run {stage:?} {dir} {} 3<<'{}'", quote(flags), self.delimiter);
        self.text.push_str(command);
        if !command.ends_with('\n') {
            self.text.push('\n');
        }
        let _ = writeln!(self.text, "{}", self.delimiter);
        let _ = writeln!(
            self.text,
            "rc=$?; [ $rc -eq 0 ] || dray_fail {code} \"{stage} failed (exit code $rc)\""
        );
    }

    fn finish(mut self) -> String {
        self.text.push_str("}\ndray_main </dev/null\nexit $?\n");
        self.text
    }
}

/// A here-document delimiter that is no line of any of `texts`.
fn delimiter(texts: &[&str]) -> String {
    loop {
        let d = format!("DRAY_EOF_{:016x}", rand::random::<u64>());
        if !texts.iter().any(|t| t.lines().any(|l| l.trim() == d)) {
            return d;
        }
    }
}

fn commands_text(c: &Commands) -> Vec<&str> {
    [&c.install, &c.stop, &c.start, &c.health_check].into_iter().flatten().map(String::as_str).collect()
}

/// Creates the release directory and the directories of `config_paths`, before upload.
pub fn prepare(vars: &HostVars<'_>, release: &str, config_paths: &[String]) -> String {
    let mut s = Script::new(vars, &[]);
    s.line(&format!("RD=\"$B/releases/\"{}", quote(release)));
    let mut dirs = vec!["\"$B/.dray\"".to_string(), "\"$RD\"".to_string()];
    for p in config_paths {
        if let Some((parent, _)) = p.rsplit_once('/') {
            dirs.push(format!("\"$RD/\"{}", quote(parent)));
        }
    }
    let code = stage_code("prepare");
    s.line(&format!("mkdir -p {} || dray_fail {code} \"cannot create $RD\"", dirs.join(" ")));
    s.line(&format!("echo \"{RESULT_PREFIX}prepared {release}\""));
    s.finish()
}

/// Unpacks, installs, stops the current release, activates the new one,
/// starts and checks it, then prunes old releases.
pub fn deploy(vars: &HostVars<'_>, release: &str, artifact: &str, commands: &Commands, keep: u32) -> String {
    let mut s = Script::new(vars, &commands_text(commands));
    s.line(&format!("R={}", quote(release)));
    s.line("RD=\"$B/releases/$R\"");
    s.line(&format!(
        "export DRAY_RELEASE=\"$R\" DRAY_RELEASE_DIR=\"$RD\" DRAY_ARTIFACT=\"$RD/\"{}",
        quote(artifact)
    ));
    s.line(&format!("[ -d \"$RD\" ] || dray_fail {} \"$RD is missing\"", stage_code("prepare")));
    s.line("P=\"\"; [ -s \"$H\" ] && P=$(tail -n 1 \"$H\")");
    s.line("export DRAY_PREVIOUS_RELEASE=\"$P\"");
    let unpack = stage_code("unpack");
    s.line("case \"$DRAY_ARTIFACT\" in");
    s.line(&format!("  *.tar.gz|*.tgz) tar -xzf \"$DRAY_ARTIFACT\" -C \"$RD\" || dray_fail {unpack} \"cannot unpack $DRAY_ARTIFACT\";;"));
    s.line(&format!("  *.tar) tar -xf \"$DRAY_ARTIFACT\" -C \"$RD\" || dray_fail {unpack} \"cannot unpack $DRAY_ARTIFACT\";;"));
    s.line("esac");
    if let Some(c) = &commands.install {
        s.stage("install", "\"$RD\"", "-e", c);
    }
    if let Some(c) = &commands.stop {
        s.line("if [ -n \"$P\" ] && [ -d \"$B/current/\" ]; then");
        s.stage("stop", "\"$B/current/\"", "-e", c);
        s.line("fi");
    }
    activate(&mut s, "$R", "activate");
    // The history gets the release once, at its end.
    s.line(&format!(
        "{{ [ -f \"$H\" ] && grep -vxF \"$R\" \"$H\"; echo \"$R\"; }} > \"$H.tmp\" && mv -f \"$H.tmp\" \"$H\" || dray_fail {} \"cannot write $H\"",
        stage_code("activate")
    ));
    s.line("echo \"dray: release $R is current\"");
    if let Some(c) = &commands.start {
        s.stage("start", "\"$B/current/\"", "-e", c);
    }
    if let Some(c) = &commands.health_check {
        s.stage("health check", "\"$B/current/\"", "-e", c);
    }
    // Prune: keep the newest entries; delete every release directory not kept.
    s.line(&format!("tail -n {keep} \"$H\" > \"$H.tmp\" && mv -f \"$H.tmp\" \"$H\""));
    s.line("for d in \"$B\"/releases/*/; do [ -d \"$d\" ] || continue; n=$(basename \"$d\")");
    s.line(
        "  grep -qxF \"$n\" \"$H\" || { rm -rf -- \"$B/releases/$n\" && echo \"dray: pruned release $n\"; }",
    );
    s.line("done");
    s.line(&format!("echo \"{RESULT_PREFIX}deployed $R\""));
    s.finish()
}

/// Points `current` at `releases/<release>` atomically (a new symlink renamed over it).
fn activate(s: &mut Script, release: &str, stage: &str) {
    s.line(&format!(
        "ln -sfn \"releases/{release}\" \"$B/.current.$$\" && mv -Tf \"$B/.current.$$\" \"$B/current\" || dray_fail {} \"cannot point $B/current at {release}\"",
        stage_code(stage)
    ));
}

/// Goes back one release in the host's history. With `only` set, hosts whose
/// current release is another one are left alone (they never activated it).
pub fn rollback(vars: &HostVars<'_>, only: &str, commands: &Commands) -> String {
    let mut s = Script::new(vars, &commands_text(commands));
    let code = stage_code("rollback");
    s.line(&format!("W={}", quote(only)));
    s.line(&format!(
        "if [ ! -s \"$H\" ]; then echo \"dray: no release history in $B: nothing to roll back\"; echo \"{RESULT_PREFIX}unchanged -\"; return 0; fi"
    ));
    s.line("C=$(tail -n 1 \"$H\")");
    s.line(&format!(
        "if [ -n \"$W\" ] && [ \"$C\" != \"$W\" ]; then echo \"dray: current release is $C, not $W: nothing to roll back\"; echo \"{RESULT_PREFIX}unchanged $C\"; return 0; fi"
    ));
    s.line(&format!(
        "[ \"$(wc -l < \"$H\")\" -ge 2 ] || dray_fail {code} \"$C is the only release in $H: no previous release to roll back to\""
    ));
    s.line("R=$(tail -n 2 \"$H\" | head -n 1)");
    s.line(&format!(
        "[ -d \"$B/releases/$R\" ] || dray_fail {code} \"previous release $R is gone from $B/releases\""
    ));
    s.line("export DRAY_RELEASE=\"$R\" DRAY_RELEASE_DIR=\"$B/releases/$R\" DRAY_PREVIOUS_RELEASE=\"$C\"");
    s.line("echo \"dray: rolling back from $C to $R\"");
    if let Some(c) = &commands.stop {
        s.line("if [ -d \"$B/current/\" ]; then");
        s.stage("stop", "\"$B/current/\"", "-e", c);
        s.line("fi");
    }
    activate(&mut s, "$R", "rollback");
    s.line(&format!(
        "head -n -1 \"$H\" > \"$H.tmp\" && mv -f \"$H.tmp\" \"$H\" || dray_fail {code} \"cannot write $H\""
    ));
    s.line("echo \"dray: release $R is current\"");
    if let Some(c) = &commands.start {
        s.stage("start", "\"$B/current/\"", "-e", c);
    }
    if let Some(c) = &commands.health_check {
        s.stage("health check", "\"$B/current/\"", "-e", c);
    }
    s.line(&format!("echo \"{RESULT_PREFIX}rolled_back $R\""));
    s.finish()
}

/// Runs `script` (no `-e`: its exit code is the last command's, as in a
/// ShellScript step) in the base directory if it exists, else in the login
/// directory.
pub fn command(vars: &HostVars<'_>, script: &str) -> String {
    let mut s = Script::new(vars, &[script]);
    s.line("D=\"$HOME\"; [ -n \"$B\" ] && [ -d \"$B\" ] && D=\"$B\"");
    s.stage("command", "\"$D\"", "", script);
    s.line(&format!("echo \"{RESULT_PREFIX}ran -\""));
    s.finish()
}

/// A `dray-result:` line, as `(status, release)`.
pub fn parse_result(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix(RESULT_PREFIX)?;
    let (status, release) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((status.to_string(), if release == "-" { String::new() } else { release.to_string() }))
}

#[cfg(test)]
mod tests {
    //! The scripts run here with the local bash against a temp directory: the
    //! same text an SSH host would get on stdin.

    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::*;

    struct Ran {
        code: i32,
        stdout: String,
        stderr: String,
    }

    fn run(script: &str) -> Ran {
        use std::io::Write as _;
        let mut child = Command::new("bash")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn current(base: &Path) -> String {
        std::fs::read_link(base.join("current")).map(|p| p.display().to_string()).unwrap_or_default()
    }

    fn history(base: &Path) -> Vec<String> {
        std::fs::read_to_string(base.join(".dray/history"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn commands(log: &Path, health: &str) -> Commands {
        let l = log.display();
        Commands {
            install: Some(format!("echo \"install $DRAY_RELEASE in $(basename \"$PWD\")\" >> {l}\n")),
            stop: Some(format!("echo \"stop $(basename \"$(pwd -P)\")\" >> {l}")),
            start: Some(format!("echo \"start $(basename \"$(pwd -P)\") $SECRET_ENV\" >> {l}")),
            health_check: Some(health.to_string()),
        }
    }

    /// prepare + (upload) + deploy of `release` into `base`.
    fn deploy_release(base: &Path, release: &str, c: &Commands, keep: u32) -> Ran {
        let b = base.display().to_string();
        let env = BTreeMap::from([("SECRET_ENV".to_string(), "it's \"quoted\" $NOT_EXPANDED".to_string())]);
        let vars = HostVars { host: "h1:22", base: &b, env: &env };
        let p = run(&prepare(&vars, release, &["conf/app.env".into()]));
        assert_eq!(p.code, 0, "{}", p.stderr);
        assert_eq!(parse_result(p.stdout.lines().last().unwrap()), Some(("prepared".into(), release.into())));
        std::fs::write(base.join(format!("releases/{release}/app.txt")), release).unwrap();
        std::fs::write(base.join(format!("releases/{release}/conf/app.env")), "A=1").unwrap();
        run(&deploy(&vars, release, "app.txt", c, keep))
    }

    #[test]
    fn deploys_activate_record_history_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("app");
        let log = dir.path().join("log");
        let c = commands(&log, "test -f app.txt");
        for (i, r) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
            let ran = deploy_release(&base, r, &c, 3);
            assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
            assert_eq!(
                parse_result(ran.stdout.lines().last().unwrap()),
                Some(("deployed".into(), r.to_string()))
            );
            assert_eq!(current(&base), format!("releases/{r}"));
            assert_eq!(history(&base).last().map(String::as_str), Some(*r));
            assert!(history(&base).len() == (i + 1).min(3));
        }
        assert_eq!(history(&base), ["r2", "r3", "r4"]);
        let mut dirs: Vec<String> = std::fs::read_dir(base.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        assert_eq!(dirs, ["r2", "r3", "r4"], "r1 was pruned");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(log.starts_with("install r1 in r1\nstart r1 it's \"quoted\" $NOT_EXPANDED\n"), "{log}");
        assert!(log.contains("install r2 in r2\nstop r1\nstart r2"), "stop runs in the old release: {log}");
        assert!(!dir.path().join("app/.current.tmp").exists());
    }

    #[test]
    fn a_failed_health_check_leaves_the_release_current_for_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("app");
        let log = dir.path().join("log");
        assert_eq!(deploy_release(&base, "r1", &commands(&log, "true"), 3).code, 0);
        let bad = commands(&log, "echo unhealthy; exit 7");
        let ran = deploy_release(&base, "r2", &bad, 3);
        assert_eq!(failed_stage(ran.code as u32), Some("health check"), "{}", ran.stderr);
        assert!(ran.stderr.contains("dray: health check failed (exit code 7)"), "{}", ran.stderr);
        assert!(ran.stdout.contains("unhealthy"));
        assert_eq!(current(&base), "releases/r2");

        let b = base.display().to_string();
        let env = BTreeMap::new();
        let vars = HostVars { host: "h1:22", base: &b, env: &env };
        let c = commands(&log, "true");
        // Rolling back another release leaves this host alone.
        let ran = run(&rollback(&vars, "r9", &c));
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        assert_eq!(parse_result(ran.stdout.lines().last().unwrap()), Some(("unchanged".into(), "r2".into())));
        let ran = run(&rollback(&vars, "r2", &c));
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        assert_eq!(
            parse_result(ran.stdout.lines().last().unwrap()),
            Some(("rolled_back".into(), "r1".into()))
        );
        assert_eq!(current(&base), "releases/r1");
        assert_eq!(history(&base), ["r1"]);
        // Nothing before r1.
        let ran = run(&rollback(&vars, "", &c));
        assert_eq!(failed_stage(ran.code as u32), Some("rollback"));
        assert!(ran.stderr.contains("no previous release"), "{}", ran.stderr);
        // A host that never got anything.
        let empty = dir.path().join("empty").display().to_string();
        let vars = HostVars { host: "h2:22", base: &empty, env: &env };
        let ran = run(&rollback(&vars, "r2", &c));
        assert_eq!(
            parse_result(ran.stdout.lines().last().unwrap()),
            Some(("unchanged".into(), String::new()))
        );
    }

    #[test]
    fn failing_install_changes_nothing_and_names_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("app");
        let log = dir.path().join("log");
        assert_eq!(deploy_release(&base, "r1", &commands(&log, "true"), 3).code, 0);
        let mut c = commands(&log, "true");
        c.install = Some("false\necho not reached".into());
        let ran = deploy_release(&base, "r2", &c, 3);
        assert_eq!(failed_stage(ran.code as u32), Some("install"));
        assert!(!ran.stdout.contains("not reached"), "commands run with -e");
        assert_eq!(current(&base), "releases/r1");
        assert_eq!(history(&base), ["r1"]);
    }

    #[test]
    fn commands_get_no_stdin_and_cannot_eat_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().display().to_string();
        let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        let vars = HostVars { host: "h1:22", base: &b, env: &env };
        let ran = run(&command(&vars, "cat; echo \"$GREETING from $DRAY_HOST in $PWD\"\nexit 3"));
        assert_eq!(failed_stage(ran.code as u32), Some("command"));
        assert!(ran.stdout.contains(&format!("hi from h1:22 in {b}")), "{}", ran.stdout);
        let ran = run(&command(&vars, "echo ok"));
        assert_eq!(ran.code, 0);
        let pgid = ran.stdout.lines().next().and_then(|l| l.strip_prefix(PGID_PREFIX)).unwrap();
        assert!(pgid.parse::<u32>().is_ok_and(|p| p > 1), "{}", ran.stdout);
        assert_eq!(parse_result(ran.stdout.lines().last().unwrap()), Some(("ran".into(), String::new())));
    }

    #[test]
    fn quoting_and_names() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(base_dir("/srv/{host}/{port}/app", "web1", 2201), "/srv/web1/2201/app");
        assert_eq!(failed_stage(STAGE_EXIT_BASE + 6), Some("health check"));
        assert_eq!(failed_stage(1), None);
        let d = delimiter(&["x\nDRAY_EOF_0\n"]);
        assert!(d.starts_with("DRAY_EOF_") && d.len() == 25);
    }
}
