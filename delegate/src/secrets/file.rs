//! `file:/path` secrets: the contents of a file on the delegate host, with one
//! trailing newline trimmed (files written by `echo` or editors end in one).

use std::path::Path;

use super::{SecretError, SecretValue};

/// Larger files are refused: a secret is a password or key, and reading an
/// arbitrary large file into memory (and into every masker) is a mistake.
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the secret stored in `path`.
pub async fn read(path: &Path) -> Result<SecretValue, SecretError> {
    let unreadable =
        |e: std::io::Error| SecretError::FileUnreadable { path: path.to_path_buf(), reason: e.to_string() };
    let meta = tokio::fs::metadata(path).await.map_err(unreadable)?;
    if !meta.is_file() {
        return Err(SecretError::FileUnreadable {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::FileTooLarge { path: path.to_path_buf(), max: MAX_SECRET_FILE_BYTES });
    }
    let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| SecretError::FileNotUnicode { path: path.to_path_buf() })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretValue::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trims_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        for (content, want) in [("abc\n", "abc"), ("abc\n\n", "abc\n"), ("abc", "abc"), ("a b\r\n", "a b")] {
            std::fs::write(&p, content).unwrap();
            assert_eq!(read(&p).await.unwrap().expose(), want, "{content:?}");
        }
    }

    #[tokio::test]
    async fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).await.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let p = dir.path().join("bin");
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        let e = read(&p).await.unwrap_err();
        assert!(e.to_string().ends_with("is not valid UTF-8 text"), "{e}");
        let e = read(Path::new("/nonexistent/dray-secret")).await.unwrap_err();
        assert!(e.to_string().starts_with("secret file:/nonexistent/dray-secret cannot be read"), "{e}");
    }
}
