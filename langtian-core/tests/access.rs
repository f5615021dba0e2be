//! `lt up`'s NATS identities against a real nats-server running the generated account: each
//! service may do what it does, the server refuses the rest, and the refusal is counted on the
//! connection that tried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use langtian_core::bus::{
    Bus, BusError, BusOptions, OutgoingMessage, Publisher, PublisherConfig, Qos, Topology,
};
use langtian_core::platform::access::{NatsAuth, PlatformAccess, PlatformNames};
use langtian_core::testkit::TestServer;

async fn platform(mode: NatsAuth) -> (TestServer, PlatformAccess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let names = PlatformNames::for_topology(&Topology::default_topology().unwrap());
    let access = PlatformAccess::open(dir.path(), mode, names).unwrap();
    let conf = access.server_config();
    let srv = TestServer::start_with(|c| c.extra_config = conf).await.unwrap();
    let admin = Bus::connect(&access.options(&srv.url(), "admin")).await.unwrap();
    Topology::default_topology().unwrap().apply(&admin).await.unwrap();
    (srv, access, dir)
}

async fn connect(access: &PlatformAccess, url: &str, name: &str) -> Bus {
    let mut o = access.options(url, name);
    o.request_timeout = Duration::from_secs(1);
    Bus::connect(&o).await.unwrap()
}

/// Waits (up to 5 s) until `bus` has seen `n` refusals.
async fn until_denied(bus: &Bus, n: u64) {
    let t0 = std::time::Instant::now();
    while bus.permission_denials() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "expected {n} refusals, saw {}",
            bus.permission_denials()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn qos1(bus: &Bus, subject: &str) -> Result<(), BusError> {
    let mut cfg = PublisherConfig::new(Qos::AtLeastOnce);
    cfg.max_attempts = 1;
    Publisher::new(bus.clone(), cfg)
        .publish(OutgoingMessage::new(subject, "1"))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn each_service_may_do_its_job_and_nothing_else() {
    let (srv, access, _dir) = platform(NatsAuth::Keys).await;
    let url = srv.url();
    let admin = connect(&access, &url, "admin").await;
    let mut md = admin.client().subscribe("xy.md.>").await.unwrap();
    admin.flush().await.unwrap();

    // The collector stores events (a PubAck comes back on its own inbox)...
    let collector = connect(&access, &url, "collector").await;
    qos1(&collector, "lt.evt.note.test").await.unwrap();
    assert_eq!(collector.permission_denials(), 0);
    // ...but cannot publish market data, nor create a stream.
    collector
        .client()
        .publish("xy.md.tick.shfe.0", "fake".into())
        .await
        .unwrap();
    collector.flush().await.unwrap();
    until_denied(&collector, 1).await;
    let err = collector
        .jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ROGUE".into(),
            subjects: vec!["rogue.>".into()],
            ..Default::default()
        })
        .await;
    assert!(err.is_err());
    until_denied(&collector, 2).await;

    // The aggregator's delta reaches a reader; the collector's fake one never did.
    let aggregator = connect(&access, &url, "aggregator").await;
    aggregator
        .client()
        .publish("xy.md.tick.shfe.1", "real".into())
        .await
        .unwrap();
    aggregator.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), md.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("xy.md.tick.shfe.1", &b"real"[..])
    );
    assert_eq!(aggregator.permission_denials(), 0);

    // The gateway may follow what browsers see, not the raw events.
    let gateway = connect(&access, &url, "gateway").await;
    let _ok = gateway.client().subscribe("xy.md.tick.>").await.unwrap();
    let _denied = gateway.client().subscribe("lt.evt.>").await.unwrap();
    gateway.flush().await.unwrap();
    until_denied(&gateway, 1).await;

    // The flow reads LT_EVENTS only through its durable and cannot delete the stream.
    let flow = connect(&access, &url, "flow").await;
    let consumer: async_nats::jetstream::consumer::PullConsumer = flow
        .jetstream()
        .get_consumer_from_stream("lake-writer", "LT_EVENTS")
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), batch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.subject.as_str(), "lt.evt.note.test");
    first.ack().await.unwrap();
    assert!(flow.jetstream().delete_stream("LT_EVENTS").await.is_err());
    until_denied(&flow, 1).await;
    assert!(admin.jetstream().get_stream("LT_EVENTS").await.is_ok());

    // With `keys`, a client without credentials is refused at the door.
    let err = Bus::connect(&BusOptions::new(&url)).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("authorization"), "{err}");
    // A seed the server does not know is refused too.
    let mut o = BusOptions::new(&url);
    o.nkey_seed = Some(nkeys::KeyPair::new_user().seed().unwrap());
    assert!(Bus::connect(&o).await.is_err());
}

#[tokio::test]
async fn clients_without_credentials_get_the_local_user() {
    let (srv, access, _dir) = platform(NatsAuth::Local).await;
    let url = srv.url();
    let mut o = BusOptions::new(&url);
    o.request_timeout = Duration::from_secs(1);
    let local = Bus::connect(&o).await.unwrap();
    // It may publish events (QoS 1: the PubAck comes to the default inbox) and read the node registry...
    qos1(&local, "lt.evt.note.sdk").await.unwrap();
    // A publish the user may not make fails with a typed error naming the subject, not an ack timeout.
    let err = qos1(&local, "xy.md.tick.shfe.0").await.unwrap_err();
    assert!(
        matches!(&err, BusError::PermissionDenied { subject } if subject == "xy.md.tick.shfe.0"),
        "{err:?}"
    );
    until_denied(&local, 1).await;
    let kv = local.jetstream().get_key_value("lt_nodes").await.unwrap();
    assert!(kv.get("nobody").await.unwrap().is_none());
    assert_eq!(local.permission_denials(), 1);
    // ...but not pose as the query service, nor read a service's replies, nor touch the streams.
    let _q = local.client().subscribe("lt.query.v1").await.unwrap();
    local.flush().await.unwrap();
    until_denied(&local, 2).await;
    assert!(local.jetstream().delete_stream("LT_EVENTS").await.is_err());
    until_denied(&local, 3).await;
    // A service's inbox stays private: the query service's reply never reaches a `>` reader.
    let mut all = local.client().subscribe(">").await.unwrap();
    local.flush().await.unwrap();
    let query = connect(&access, &url, "query").await;
    query
        .client()
        .publish("_LT.query.secret", "answer".into())
        .await
        .unwrap();
    query
        .client()
        .publish("lt.evt.note.public", "hello".into())
        .await
        .unwrap();
    query.flush().await.unwrap();
    until_denied(&query, 2).await; // neither is a subject the query service may publish to
    let admin = connect(&access, &url, "admin").await;
    admin
        .client()
        .publish("_LT.query.secret", "answer".into())
        .await
        .unwrap();
    admin
        .client()
        .publish("lt.evt.note.public", "hello".into())
        .await
        .unwrap();
    admin.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), all.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.subject.as_str(),
        "lt.evt.note.public",
        "the local user saw a service's inbox"
    );
}
