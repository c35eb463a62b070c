//! A secret's value never appears in the manager's store or logs, and is masked
//! (with its base64 and URL-encoded forms) in the task's logs.

use std::time::Duration;

use dray_tests::*;

const SECRET: &str = "s3cr3t/value+with=chars";

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

both_stores!(secret_values_stay_on_the_delegate, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let dir = tempfile::tempdir()?;
    let file_secret = dir.path().join("token");
    std::fs::write(&file_secret, "file-secret-4711\n")?;
    let _d = Delegate::enrol(
        &m,
        "vaulted",
        DelegateOpts { env: vec![("APP_PASSWORD".into(), SECRET.into())], ..Default::default() },
    )?;
    let script = format!(
        r#"echo "plain: $PW"; printf '%s' "$PW" | base64; python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PW" ; echo "file: <+secrets.getValue("file:{}")>"; echo "$PW" >&2"#,
        file_secret.display()
    );
    let id = m.run_task(&script, &["--env", r#"PW=<+secrets.getValue("env:APP_PASSWORD")>"#])?;
    let t = m.wait_state(&id, &["succeeded", "failed"], Duration::from_secs(20))?;
    assert_eq!(t["state"], "succeeded", "{t}");

    let logs = m.cli_ok(&["logs", &id])?;
    let all = format!("{logs}{}", String::from_utf8_lossy(&m.cli(&["logs", &id]).stderr));
    assert!(all.contains("plain: **************"), "{all}");
    assert!(all.contains("file: **************"), "{all}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    for needle in [SECRET, b64.as_str(), "s3cr3t%2Fvalue%2Bwith%3Dchars", "file-secret-4711"] {
        assert!(!all.contains(needle), "{needle:?} leaked into task logs:\n{all}");
    }

    // The store and the manager's own log hold the reference, never the value.
    let dump = store_dump(&m)?;
    assert!(contains(&dump, "env:APP_PASSWORD"), "the reference is stored");
    for needle in [SECRET, b64.as_str(), "file-secret-4711"] {
        assert!(!contains(&dump, needle), "{needle:?} found in the manager's store");
        assert!(!m.log().contains(needle), "{needle:?} found in the manager's log");
    }
    Ok(())
});
