//! A delegate without a valid certificate gets nothing: no client certificate, a
//! certificate from another CA (impersonating a real delegate id), and a revoked
//! delegate are all refused, and no task is leased to any of them.

use std::time::Duration;

use dray_shared::pb::delegate_service_client::DelegateServiceClient;
use dray_shared::pb::{self, delegate_message::Msg};
use dray_shared::{pki, tls};
use dray_tests::*;
use tonic::Code;

fn hello() -> pb::DelegateMessage {
    pb::DelegateMessage {
        msg: Some(Msg::Hello(pb::Hello {
            version: "test".into(),
            tags: vec![],
            capacity: 4,
            ..Default::default()
        })),
    }
}

/// Opens a session with the given identity; returns the first error (if any).
async fn try_session(m: &Manager, identity: Option<(&str, &str)>) -> Result<(), tonic::Status> {
    let ca = std::fs::read_to_string(m.ca_file()).expect("ca");
    let ep = tls::endpoint(&m.url(), &ca, identity).expect("endpoint");
    let ch = match ep.connect().await {
        Ok(ch) => ch,
        Err(e) => return Err(tonic::Status::unavailable(format!("handshake refused: {e}"))),
    };
    let mut c = DelegateServiceClient::new(ch);
    // Keep the outbound side open so the manager answers rather than seeing EOF.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello()).await.expect("send");
    let mut inbound = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(_welcome))) => Ok(()),
        Ok(Ok(None)) => Err(tonic::Status::aborted("stream closed")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

fn nothing_is_leased(m: &Manager) -> anyhow::Result<()> {
    let id = m.run_task("echo should-not-run", &["--queue-timeout", "2s"])?;
    let t = m.wait_state(&id, &["expired"], Duration::from_secs(20))?;
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no eligible delegate"), "{t}");
    assert!(!reason.contains("eligible but busy"), "{t}");
    Ok(())
}

both_stores!(no_certificate_and_forged_certificate, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let real = Delegate::enrol(&m, "real", DelegateOpts::default())?;
    let real_id: dray_shared::DelegateId = real.id()?.parse()?;
    drop(real);
    let rt = tokio::runtime::Runtime::new()?;

    let err = rt.block_on(try_session(&m, None)).expect_err("no client certificate must be refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");

    // A certificate for the real delegate's id, signed by some other CA.
    let evil = pki::Authority::generate("evil CA")?;
    let (key, csr) = pki::delegate_key_and_csr("evil")?;
    let cert = evil.sign_delegate_csr(&csr, real_id, Duration::from_secs(3600))?;
    let err =
        rt.block_on(try_session(&m, Some((&cert, &key)))).expect_err("a forged certificate must be refused");
    assert_ne!(err.code(), Code::Ok);

    // The forged identity cannot renew into a real certificate either.
    let ca = std::fs::read_to_string(m.ca_file())?;
    let renew = rt.block_on(async {
        let ep = tls::endpoint(&m.url(), &ca, Some((&cert, &key))).expect("endpoint");
        match ep.connect().await {
            Ok(ch) => DelegateServiceClient::new(ch)
                .renew(pb::RenewRequest { csr_pem: pki::csr_for(&key, "evil").expect("csr") })
                .await
                .map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        }
    });
    assert!(renew.is_err(), "renewal with a forged certificate must fail");

    nothing_is_leased(&m)
});

both_stores!(revoked_delegate_is_cut_off, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let mut d = Delegate::enrol(&m, "doomed", DelegateOpts::default())?;
    let id = d.id()?;
    m.cli_ok(&["delegate", "revoke", &id])?;
    let code = d.wait_exit(Duration::from_secs(20))?;
    assert_ne!(code, Some(0), "a revoked delegate stops");
    assert!(d.log().contains("revoked"), "{}", d.log());

    // Its still-valid certificate no longer opens a session.
    let cert = std::fs::read_to_string(d.state_dir().join("cert.pem"))?;
    let key = std::fs::read_to_string(d.state_dir().join("key.pem"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let err = rt.block_on(try_session(&m, Some((&cert, &key)))).expect_err("revoked");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");

    // Restarting it does not help.
    let mut again = Delegate::with_token(&m, "doomed", "unused", DelegateOpts::default())?;
    std::fs::create_dir_all(again.state_dir())?;
    for f in ["cert.pem", "key.pem", "identity.json"] {
        std::fs::copy(d.state_dir().join(f), again.state_dir().join(f))?;
    }
    again.spawn()?;
    assert_ne!(again.wait_exit(Duration::from_secs(20))?, Some(0));

    let ds = m.delegates()?;
    assert_eq!(ds[0]["revoked"], true);
    assert_eq!(ds[0]["connected"], false);
    nothing_is_leased(&m)
});
