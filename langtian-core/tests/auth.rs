//! Connect options against real servers that require token, user/password, NKey or TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use langtian_core::bus::{Bus, BusError, BusOptions, OutgoingMessage, Publisher, PublisherConfig, Qos};
use langtian_core::testkit::TestServer;

async fn publish_ok(bus: &Bus) {
    let p = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtMostOnce));
    p.publish(OutgoingMessage::new("auth.x", "1")).await.unwrap();
    bus.flush().await.unwrap();
}

#[tokio::test]
async fn token_auth() {
    let srv = TestServer::start_with(|c| c.extra_config = Some("authorization { token: s3cret }".into()))
        .await
        .unwrap();
    let mut o = BusOptions::new(&srv.url());
    o.token = Some("s3cret".into());
    publish_ok(&Bus::connect(&o).await.unwrap()).await;
    o.token = Some("wrong".into());
    let err = Bus::connect(&o).await.unwrap_err();
    assert!(matches!(err, BusError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn user_password_auth_and_option_errors() {
    let srv = TestServer::start_with(|c| {
        c.extra_config = Some("authorization { users: [ { user: svc, password: pw } ] }".into())
    })
    .await
    .unwrap();
    let mut o = BusOptions::new(&srv.url());
    o.user = Some("svc".into());
    o.password = Some("pw".into());
    publish_ok(&Bus::connect(&o).await.unwrap()).await;
    o.password = None;
    let err = Bus::connect(&o).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("user and password must be given together"),
        "{err}"
    );
    o.password = Some("pw".into());
    o.token = Some("t".into());
    let err = Bus::connect(&o).await.unwrap_err();
    assert!(err.to_string().contains("choose one of"), "{err}");
}

#[tokio::test]
async fn nkey_auth() {
    let kp = nkeys::KeyPair::new_user();
    let public = kp.public_key();
    let seed = kp.seed().unwrap();
    let srv = TestServer::start_with(|c| {
        c.extra_config = Some(format!("authorization {{ users: [ {{ nkey: {public} }} ] }}"))
    })
    .await
    .unwrap();
    let mut o = BusOptions::new(&srv.url());
    o.nkey_seed = Some(seed);
    publish_ok(&Bus::connect(&o).await.unwrap()).await;
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    o.nkey_seed = Some(other);
    assert!(Bus::connect(&o).await.is_err(), "a foreign key must be refused");
    o.nkey_seed = Some("not-a-seed".into());
    let err = Bus::connect(&o).await.unwrap_err();
    assert!(err.to_string().contains("nkey_seed"), "{err}");
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("srv.pem"),
        dir.path().join("srv.key"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, srv_cert.pem()).unwrap();
    std::fs::write(&key_pem, srv_key.serialize_pem()).unwrap();
    let tls = format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        cert_pem.display().to_string(),
        key_pem.display().to_string()
    );
    let srv = TestServer::start_with(|c| c.extra_config = Some(tls))
        .await
        .unwrap();
    let url = srv.url().replace("nats://", "tls://");
    let mut o = BusOptions::new(&url);
    o.tls.required = true;
    o.tls.ca_file = Some(ca_pem.clone());
    publish_ok(&Bus::connect(&o).await.unwrap()).await;
    // Without the CA the server certificate is not trusted.
    o.tls.ca_file = None;
    assert!(
        Bus::connect(&o).await.is_err(),
        "an untrusted server certificate must be refused"
    );
}

#[tokio::test]
async fn connect_within_gives_up_on_a_server_that_never_answers() {
    // A TCP port that accepts connections (the kernel's backlog) but never sends INFO.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let err = Bus::connect_within(&BusOptions::new(&url), std::time::Duration::from_millis(300))
        .await
        .unwrap_err();
    match err {
        BusError::Connect { urls, reason } => {
            assert_eq!(urls, url);
            assert!(reason.contains("within 300 ms"), "{reason}");
        }
        other => panic!("expected Connect, got {other}"),
    }
}
