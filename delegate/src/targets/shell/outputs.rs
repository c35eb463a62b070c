//! Output variables of `shell` tasks: the values named shell variables hold when
//! the script ends become the task's outputs.
//!
//! How: bash sources `$BASH_ENV` before a non-interactive script, so the task's
//! bash gets a small prelude (written next to the script, 0600 in the task's
//! 0700 scratch directory) that installs an EXIT trap. The trap writes
//! `dray-outputs-v1 NUL (name NUL value NUL)*` into a file the delegate created
//! (0600) and reads once bash is gone. The user's script file is untouched, so
//! `$0`, line numbers in error messages and `exit` behave as before; `exit N`,
//! `set -e` failures and SIGTERM (timeout, cancel) all run the EXIT trap.
//!
//! Details the prelude takes care of:
//! - it unsets `BASH_ENV` first, so `bash -c …` children do not capture too;
//! - it writes only from the task's own shell (`$BASHPID == $$`), never from a
//!   subshell;
//! - a script that installs its own EXIT trap keeps ours: `trap` is wrapped so
//!   the capture runs first and the script's action after it, with `$?` intact;
//! - xtrace (`set -x`) of the capture itself is hidden and `set -u`/`set -e`
//!   cannot break it.
//!
//! Semantics: an unset variable is left out of the outputs (the consumer says
//! which names it expected and did not get); set but empty gives `""`; for an
//! array, element 0. When the trap never ran (bash killed with SIGKILL, `exec`
//! replaced it, POSIX mode bypassed the `trap` wrapper and the script replaced
//! the trap) there are no outputs and [`Capture::read`] says so.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Largest capture file read back; larger means the task fails (outputs travel
/// in one gRPC message and are stored in the task row).
pub const MAX_OUTPUTS_BYTES: u64 = 1024 * 1024;

/// First field of a capture file: tells "the trap ran and nothing was set"
/// apart from "the trap never ran".
const HEADER: &str = "dray-outputs-v1";

/// Why the captured outputs cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The prelude or the capture file could not be written or read.
    #[error("cannot {what} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The values add up to more than [`MAX_OUTPUTS_BYTES`].
    #[error("output variables are larger than {MAX_OUTPUTS_BYTES} bytes in total")]
    TooLarge,
    /// The file does not have the expected layout.
    #[error("the output variables file is malformed: {0}")]
    Malformed(String),
}

/// The files that capture one task's output variables.
#[derive(Debug)]
pub struct Capture {
    prelude: PathBuf,
    outputs: PathBuf,
    names: Vec<String>,
}

impl Capture {
    /// Writes the prelude for `names` and creates the empty capture file, both
    /// 0600 in `scratch`. `names` must be valid shell variable names (the task
    /// parameters were validated).
    pub fn prepare(scratch: &Path, names: &[String]) -> Result<Capture, CaptureError> {
        let capture = Capture {
            prelude: scratch.join("capture.sh"),
            outputs: scratch.join("outputs"),
            names: names.to_vec(),
        };
        create_private(&capture.outputs, b"")?;
        create_private(&capture.prelude, prelude(&capture.outputs, names).as_bytes())?;
        Ok(capture)
    }

    /// The variable that makes bash source the prelude.
    pub fn env(&self) -> (String, String) {
        ("BASH_ENV".into(), self.prelude.display().to_string())
    }

    /// The captured values, or `None` when the trap never ran.
    pub fn read(&self) -> Result<Option<BTreeMap<String, String>>, CaptureError> {
        let io = |source| CaptureError::Io { what: "read", path: self.outputs.clone(), source };
        let file = std::fs::File::open(&self.outputs).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_OUTPUTS_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_OUTPUTS_BYTES {
            return Err(CaptureError::TooLarge);
        }
        parse(&bytes, &self.names)
    }
}

fn create_private(path: &Path, contents: &[u8]) -> Result<(), CaptureError> {
    let io = |source| CaptureError::Io { what: "write", path: path.to_path_buf(), source };
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(contents).map_err(io)
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The bash prelude that captures `names` into `outputs` at exit.
fn prelude(outputs: &Path, names: &[String]) -> String {
    // Names are validated shell identifiers: safe unquoted in the array.
    let list = names.join(" ");
    let file = quote(&outputs.display().to_string());
    format!(
        r#"# Written by the dray delegate: reports output variables when the script ends.
unset BASH_ENV
__dray_out_file={file}
__dray_out_vars=({list})
__dray_capture() {{
  local __dray_status=$? __dray_flags=$- __dray_name
  set +x
  if [[ $BASHPID == "$$" ]]; then
    {{
      printf '%s\0' {HEADER}
      for __dray_name in "${{__dray_out_vars[@]}}"; do
        if [[ -v $__dray_name ]]; then
          printf '%s\0%s\0' "$__dray_name" "${{!__dray_name}}"
        fi
      done
    }} >| "$__dray_out_file"
  fi
  if [[ $__dray_flags == *x* ]]; then set -x; fi
  return "$__dray_status"
}}
__dray_on_exit='{{ __dray_capture; }} 2>/dev/null'
# Keeps the capture in front of any EXIT action the script installs.
trap() {{
  if [[ $# -eq 0 || ( $1 == -* && $1 != - && $1 != -- ) ]]; then
    builtin trap "$@"
    return
  fi
  if [[ $1 == -- ]]; then shift; fi
  if [[ $# -eq 0 ]]; then builtin trap; return; fi
  local __dray_action=$1 __dray_sig __dray_exit=0
  local -a __dray_other=()
  shift
  # `trap SIG` alone resets SIG, like `trap - SIG`.
  if [[ $# -eq 0 ]]; then set -- "$__dray_action"; __dray_action=-; fi
  for __dray_sig in "$@"; do
    case ${{__dray_sig^^}} in
      EXIT|SIGEXIT|0) __dray_exit=1 ;;
      *) __dray_other+=("$__dray_sig") ;;
    esac
  done
  if [[ ${{#__dray_other[@]}} -gt 0 ]]; then
    builtin trap -- "$__dray_action" "${{__dray_other[@]}}" || return
  fi
  if [[ $__dray_exit == 1 ]]; then
    case $__dray_action in
      -|'') builtin trap -- "$__dray_on_exit" EXIT ;;
      *) builtin trap -- "$__dray_on_exit"$'\n'"$__dray_action" EXIT ;;
    esac
  fi
}}
builtin trap -- "$__dray_on_exit" EXIT
"#
    )
}

/// Decodes a capture file: `None` when empty (the trap never ran).
fn parse(bytes: &[u8], names: &[String]) -> Result<Option<BTreeMap<String, String>>, CaptureError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let body = bytes
        .strip_suffix(b"\0")
        .ok_or_else(|| CaptureError::Malformed("it does not end with a NUL".into()))?;
    let mut fields = body.split(|b| *b == 0);
    if fields.next() != Some(HEADER.as_bytes()) {
        return Err(CaptureError::Malformed("unexpected header".into()));
    }
    let mut out = BTreeMap::new();
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or_else(|| CaptureError::Malformed("a name without a value".into()))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if !names.contains(&name) {
            return Err(CaptureError::Malformed(format!("{name:?} was not asked for")));
        }
        out.insert(name, String::from_utf8_lossy(value).into_owned());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capture_files_parse() {
        let n = names(&["A", "B"]);
        assert_eq!(parse(b"", &n).unwrap(), None, "trap never ran");
        assert_eq!(parse(b"dray-outputs-v1\0", &n).unwrap(), Some(BTreeMap::new()));
        let got = parse(b"dray-outputs-v1\0A\0x=1\ny\0B\0\0", &n).unwrap().unwrap();
        assert_eq!(got["A"], "x=1\ny");
        assert_eq!(got["B"], "");
        let lossy = parse(b"dray-outputs-v1\0A\0\xff\0", &n).unwrap().unwrap();
        assert_eq!(lossy["A"], "\u{fffd}");
        for bad in [&b"dray-outputs-v1"[..], b"other\0", b"dray-outputs-v1\0A\0", b"dray-outputs-v1\0C\0v\0"]
        {
            assert!(matches!(parse(bad, &n), Err(CaptureError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn files_are_private_and_paths_quoted() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("it's here");
        std::fs::create_dir(&scratch).unwrap();
        let c = Capture::prepare(&scratch, &names(&["A"])).unwrap();
        for p in [&c.prelude, &c.outputs] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        let text = std::fs::read_to_string(&c.prelude).unwrap();
        assert!(text.contains(r"it'\''s here/outputs'"), "{text}");
        assert_eq!(c.read().unwrap(), None);
        std::fs::write(&c.outputs, vec![b'x'; MAX_OUTPUTS_BYTES as usize + 1]).unwrap();
        assert!(matches!(c.read(), Err(CaptureError::TooLarge)));
    }
}
