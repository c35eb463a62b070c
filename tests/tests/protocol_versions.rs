//! Delegate protocol versions: a manager accepts its own version and the one
//! before (a delegate that predates versioning counts as version 1), says what
//! it speaks in Welcome, and refuses a newer delegate — at enrolment and at
//! session start — with an error that names both sides' versions.

use std::time::Duration;

use dray_shared::pb::delegate_service_client::DelegateServiceClient;
use dray_shared::pb::{self, delegate_message::Msg, manager_message};
use dray_shared::protocol::{MIN_DELEGATE_PROTOCOL, PROTOCOL};
use dray_shared::{pki, tls};
use dray_tests::*;
use tonic::Code;

/// Opens a session speaking `protocol`; returns the Welcome or the refusal.
async fn session(m: &Manager, cert: &str, key: &str, protocol: u32) -> Result<pb::Welcome, tonic::Status> {
    let ca = std::fs::read_to_string(m.ca_file()).expect("ca");
    let ch =
        tls::endpoint(&m.url(), &ca, Some((cert, key))).expect("endpoint").connect().await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = pb::Hello { version: "test".into(), capacity: 1, protocol, ..Default::default() };
    tx.send(pb::DelegateMessage { msg: Some(Msg::Hello(hello)) }).await.expect("send");
    let mut inbound = DelegateServiceClient::new(ch)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(pb::ManagerMessage { msg: Some(manager_message::Msg::Welcome(w)) }))) => Ok(w),
        Ok(Ok(other)) => Err(tonic::Status::aborted(format!("unexpected {other:?}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

#[test]
fn adjacent_versions_talk_and_newer_delegates_are_told_why_not() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let d = Delegate::enrol(&m, "current", DelegateOpts::default())?;
    assert!(d.log().contains(&format!("manager.protocol={PROTOCOL}")), "{}", d.log());
    let cert = std::fs::read_to_string(d.state_dir().join("cert.pem"))?;
    let key = std::fs::read_to_string(d.state_dir().join("key.pem"))?;
    drop(d);
    let rt = tokio::runtime::Runtime::new()?;

    for accepted in [0, MIN_DELEGATE_PROTOCOL, PROTOCOL] {
        let w = rt
            .block_on(session(&m, &cert, &key, accepted))
            .map_err(|e| anyhow::anyhow!("{accepted}: {e:?}"))?;
        assert_eq!((w.protocol, w.min_delegate_protocol), (PROTOCOL, MIN_DELEGATE_PROTOCOL));
    }
    let newer = rt.block_on(session(&m, &cert, &key, PROTOCOL + 1)).expect_err("newer protocol");
    assert_eq!(newer.code(), Code::FailedPrecondition, "{newer:?}");
    let expected = format!(
        "delegate protocol {} is not supported by this manager (it accepts {MIN_DELEGATE_PROTOCOL} to {PROTOCOL}); upgrade the manager first",
        PROTOCOL + 1
    );
    assert_eq!(newer.message(), expected);

    // Enrolment checks the version before spending the one-time token.
    let token = m.token("tok-versions", &[])?;
    let ca = std::fs::read_to_string(m.ca_file())?;
    let enrol = |protocol: u32| {
        rt.block_on(async {
            let ch = tls::endpoint(&m.url(), &ca, None).expect("endpoint").connect().await.expect("connect");
            let (_key, csr_pem) = pki::delegate_key_and_csr("v").expect("csr");
            DelegateServiceClient::new(ch)
                .enrol(pb::EnrolRequest {
                    token: token.clone(),
                    name: "v".into(),
                    csr_pem,
                    tags: vec![],
                    protocol,
                })
                .await
        })
    };
    let refused = enrol(PROTOCOL + 1).expect_err("newer delegate");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), expected);
    enrol(PROTOCOL).map_err(|e| anyhow::anyhow!("the token still works: {e:?}"))?;
    Ok(())
}
