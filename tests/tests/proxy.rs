//! The delegate behind an HTTP proxy (a real tinyproxy): the manager session and
//! enrolment go through a CONNECT tunnel, plain-HTTP requests of an `Http` step
//! go to the proxy in absolute form, NO_PROXY ranges go direct, and a proxy
//! setting the delegate cannot use stops it at start-up with a clear error.

use std::time::Duration;

use dray_tests::proxy_peer::Tinyproxy;
use dray_tests::*;

const T: Duration = Duration::from_secs(60);

fn via(proxy: &Tinyproxy, no_proxy: &str) -> DelegateOpts {
    DelegateOpts {
        env: vec![
            ("HTTPS_PROXY".into(), proxy.url()),
            ("http_proxy".into(), proxy.url()),
            ("NO_PROXY".into(), no_proxy.into()),
        ],
        ..Default::default()
    }
}

fn http_pipeline(m: &Manager, url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("check.yaml");
    std::fs::write(
        &file,
        format!(
            r#"pipeline:
  name: Proxy check
  identifier: proxy_check
  stages:
    - stage:
        name: Check
        identifier: check
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: Http
                  name: Health
                  identifier: health
                  timeout: 30s
                  spec:
                    url: {url}
                    method: GET
                    assertion: <+httpResponseCode> == 200
"#
        ),
    )?;
    m.apply(&file)?;
    Ok(())
}

#[test]
fn session_and_http_steps_go_through_the_proxy() -> anyhow::Result<()> {
    let proxy = Tinyproxy::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let manager_port = m.url().rsplit(':').next().unwrap_or_default().trim_end_matches('/').to_string();
    let _d = Delegate::enrol(&m, "behind-proxy", via(&proxy, ""))?;
    let tunnels = proxy.requests();
    assert!(
        tunnels.iter().any(|r| r == &format!("CONNECT 127.0.0.1:{manager_port} HTTP/1.1")),
        "enrolment and session tunnel through the proxy: {tunnels:?}"
    );

    let health = format!("http://127.0.0.1:{}/healthz", m.http_port);
    http_pipeline(&m, &health)?;
    let id = m.run_pipeline("proxy_check", &[])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r == &format!("GET {health} HTTP/1.1")),
        "plain http goes to the proxy in absolute form: {requests:?}"
    );
    Ok(())
}

#[test]
fn no_proxy_ranges_go_direct() -> anyhow::Result<()> {
    let proxy = Tinyproxy::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = Delegate::enrol(&m, "exempt", via(&proxy, "10.0.0.0/8, 127.0.0.0/8"))?;
    http_pipeline(&m, &format!("http://127.0.0.1:{}/healthz", m.http_port))?;
    let id = m.run_pipeline("proxy_check", &[])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(proxy.requests(), Vec::<String>::new(), "127.0.0.1 is inside 127.0.0.0/8");
    Ok(())
}

#[test]
fn an_unusable_proxy_setting_stops_the_delegate_at_start() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let token = m.token("tok-bad-proxy", &[])?;
    let opts = DelegateOpts {
        env: vec![("HTTPS_PROXY".into(), "socks5://127.0.0.1:1080".into())],
        ..Default::default()
    };
    let mut d = Delegate::with_token(&m, "bad-proxy", &token, opts)?;
    d.spawn()?;
    assert_eq!(d.wait_exit(T)?, Some(2));
    assert!(d.log().contains("HTTPS_PROXY: proxy scheme \"socks5\" is not supported"), "{}", d.log());
    Ok(())
}
