//! Task outputs and error types end to end: a shell task's output variables and
//! an http task's response travel from the delegate (masked) to the task row and
//! back out through `GetTask`, `WaitTask` and `dray task get`; failures carry
//! their classification, including the manager's own (`DelegateRestart` for a
//! lost lease, `DelegateProvisioning` for a queue expiry).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use dray_shared::pb::{self, api_client::ApiClient};
use dray_shared::task::{self, HttpParams};
use dray_tests::*;
use nix::sys::signal::Signal;
use tonic::metadata::MetadataValue;

const SECRET: &str = "t0ken\"with\\quote";
const MASK: &str = "**************";

type Client = ApiClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>>;

#[derive(Clone)]
struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

/// Runs `f` with an API client on a runtime of its own (the harness is sync).
fn with_api<T>(m: &Manager, f: impl AsyncFnOnce(&mut Client) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let ca = std::fs::read_to_string(m.ca_file())?;
        let channel = dray_shared::tls::endpoint(&m.url(), &ca, None)?.connect().await?;
        let auth = Auth(format!("Bearer {}", m.admin_token()).parse()?);
        f(&mut ApiClient::with_interceptor(channel, auth)).await
    })
}

/// A one-request-at-a-time HTTP/1.1 server answering 201 with the request it
/// got as JSON (`{"head": …, "body": …}`), so the test sees exactly what was sent
/// and secrets come back JSON-escaped.
fn echo_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let reply = serde_json::json!({"head": head, "body": String::from_utf8_lossy(&body)}).to_string();
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Echo: yes\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    Ok(port)
}

async fn submit_and_wait(c: &mut Client, spec: pb::TaskSpec) -> anyhow::Result<pb::Task> {
    let ids = c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![spec] }).await?.into_inner().task_ids;
    let id = ids.into_iter().next().ok_or_else(|| anyhow::anyhow!("no task id"))?;
    Ok(c.wait_task(pb::GetTaskRequest { id }).await?.into_inner())
}

both_stores!(shell_and_http_outputs_reach_the_api, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = Delegate::enrol(
        &m,
        "outputs",
        DelegateOpts { env: vec![("API_TOKEN".into(), SECRET.into())], ..Default::default() },
    )?;

    // Shell: variables set before `exit 3` are reported; unset ones are left out;
    // a secret's value in an output is masked.
    let script = r#"X='two words'; Y=$'line1\nline2=ok'; TOKEN="Bearer $PW"; exit 3"#;
    let shell = m.run_task(
        script,
        &[
            "--env",
            r#"PW=<+secrets.getValue("env:API_TOKEN")>"#,
            "--output-var",
            "X",
            "--output-var",
            "Y",
            "--output-var",
            "TOKEN",
            "--output-var",
            "NEVER_SET",
        ],
    )?;
    let t = m.wait_state(&shell, &["failed", "succeeded"], Duration::from_secs(20))?;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["exit_code"], 3, "{t}");
    assert_eq!(t["error_type"], "Unknown", "{t}");
    let want =
        serde_json::json!({"X": "two words", "Y": "line1\nline2=ok", "TOKEN": format!("Bearer {MASK}")});
    assert_eq!(t["outputs"], want, "{t}");
    let table = m.cli_ok(&["task", "get", &shell])?;
    assert!(table.contains("Error type: Unknown"), "{table}");
    assert!(table.contains(r"Y      line1\nline2=ok"), "{table}");

    // HTTP: through the gRPC API, since the CLI has no http task command.
    let port = echo_server()?;
    let closed = free_port();
    let (http, refused, fetched) = with_api(&m, async |c| {
        let mut params = HttpParams::get(&format!("http://127.0.0.1:{port}/hook?x=1"));
        params.method = "POST".into();
        params.headers = BTreeMap::from([
            ("X-Token".to_string(), r#"Bearer <+secrets.getValue("env:API_TOKEN")>"#.to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ]);
        params.body = Some(r#"{"token":"<+secrets.getValue("env:API_TOKEN")>"}"#.into());
        let http = submit_and_wait(c, task::http_spec(&params)).await?;
        let refused =
            submit_and_wait(c, task::http_spec(&HttpParams::get(&format!("http://127.0.0.1:{closed}/"))))
                .await?;
        let fetched = c.get_task(pb::GetTaskRequest { id: http.id.clone() }).await?.into_inner();
        Ok((http, refused, fetched))
    })?;
    assert_eq!(http.state(), pb::TaskState::Succeeded, "{http:?}");
    assert_eq!(http.error_type, "");
    assert_eq!(http, fetched, "WaitTask and GetTask agree");
    assert_eq!(http.outputs["httpResponseCode"], "201");
    // The secret came back JSON-escaped (`t0ken\"with\\quote`): masked in that form too.
    let body = &http.outputs["httpResponseBody"];
    assert!(!body.contains("t0ken"), "{body}");
    let echoed: serde_json::Value = serde_json::from_str(body)?;
    let head = echoed["head"].as_str().unwrap_or_default();
    assert!(head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("x-token: Bearer {MASK}\r\n")), "the header was sent: {head}");
    assert_eq!(echoed["body"], format!("{{\"token\":\"{MASK}\"}}"));
    let headers: serde_json::Value = serde_json::from_str(&http.outputs["httpResponseHeaders"])?;
    assert_eq!(headers["x-echo"], "yes");
    assert_eq!(refused.state(), pb::TaskState::Failed, "{refused:?}");
    assert_eq!(refused.error_type, "Connectivity", "{refused:?}");

    // The manager stores masked values only.
    let dump = store_dump(&m)?;
    assert!(!dump.windows(5).any(|w| w == b"t0ken"), "a secret value reached the store");
    Ok(())
});

both_stores!(manager_side_failures_are_classified, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?; // lease TTL 3s
    let d = Delegate::enrol(&m, "frozen", DelegateOpts::default())?;
    let id = m.run_task("sleep 30", &[])?;
    m.wait_state(&id, &["running"], Duration::from_secs(20))?;
    let pid = d.pid().expect("pid");
    signal(pid, Signal::SIGSTOP);
    let t = m.wait_state(&id, &["lost"], Duration::from_secs(10));
    signal(pid, Signal::SIGCONT);
    let t = t?;
    assert_eq!(t["error_type"], "DelegateRestart", "{t}");

    let expiring = m.run_task("true", &["--selector", "no-such-tag", "--queue-timeout", "1s"])?;
    let t = m.wait_state(&expiring, &["expired"], Duration::from_secs(20))?;
    assert_eq!(t["error_type"], "DelegateProvisioning", "{t}");
    Ok(())
});
