//! Node discovery on native JetStream KV, against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use langtian_core::discovery::{DiscoveryConfig, DiscoveryError, LeftReason, NodeEvent, NodeInfo, Registry};

type Events = BoxStream<'static, Result<NodeEvent, DiscoveryError>>;

async fn next_event(w: &mut Events, within: Duration) -> NodeEvent {
    tokio::time::timeout(within, w.next())
        .await
        .expect("an event in time")
        .expect("watch open")
        .expect("valid event")
}

fn cfg(ttl: Duration) -> DiscoveryConfig {
    DiscoveryConfig {
        bucket: "lt_nodes_test".into(),
        ttl,
        history: 5,
        replicas: 1,
        marker_ttl: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn join_update_unregister_and_leave_by_ttl() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(reg.expiry_visible(), "nats-server 2.15 supports limit markers");

    let mut w = reg.watch().await.unwrap();
    let mut a = reg
        .register(NodeInfo::new("collector-a", "collector"))
        .await
        .unwrap();
    match next_event(&mut w, Duration::from_secs(5)).await {
        NodeEvent::Joined(n) => assert_eq!(
            (n.node_id.as_str(), n.role.as_str()),
            ("collector-a", "collector")
        ),
        other => panic!("expected Joined, got {other:?}"),
    }
    a.heartbeat(0.75).await.unwrap();
    match next_event(&mut w, Duration::from_secs(5)).await {
        NodeEvent::Updated(n) => assert_eq!(n.load, 0.75),
        other => panic!("expected Updated, got {other:?}"),
    }
    assert_eq!(reg.nodes().await.unwrap().len(), 1);
    assert_eq!(
        reg.history("collector-a").await.unwrap().len(),
        2,
        "history keeps revisions"
    );

    // An explicit unregister.
    let b = reg.register(NodeInfo::new("flow-b", "flow")).await.unwrap();
    assert!(matches!(
        next_event(&mut w, Duration::from_secs(5)).await,
        NodeEvent::Joined(_)
    ));
    b.unregister().await.unwrap();
    assert_eq!(
        next_event(&mut w, Duration::from_secs(5)).await,
        NodeEvent::Left {
            node_id: "flow-b".into(),
            reason: LeftReason::Unregistered
        }
    );

    // collector-a stops heart-beating: the server expires it after the TTL and says so.
    let started = tokio::time::Instant::now();
    assert_eq!(
        next_event(&mut w, Duration::from_secs(10)).await,
        NodeEvent::Left {
            node_id: "collector-a".into(),
            reason: LeftReason::Expired
        }
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "left too early: {:?}",
        started.elapsed()
    );
    assert!(reg.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn heartbeats_keep_a_node_alive_past_its_ttl() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(2)))
        .await
        .unwrap();
    let node = reg.register(NodeInfo::new("alive", "gateway")).await.unwrap();
    let beat = node.spawn_heartbeat();
    let mut w = reg.watch().await.unwrap();
    // For three TTLs we must only ever see Joined/Updated for this node.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut updates = 0;
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, w.next()).await {
            Err(_) => break,
            Ok(Some(Ok(NodeEvent::Left { .. }))) => panic!("node left while heart-beating"),
            Ok(Some(Ok(_))) => updates += 1,
            Ok(other) => panic!("watch ended: {other:?}"),
        }
    }
    beat.abort();
    assert!(updates >= 4, "expected regular heartbeats, saw {updates} events");
    assert_eq!(reg.nodes().await.unwrap().len(), 1);
}

/// The key listing behind `nodes()` is a live consumer: a heartbeat written while it runs is
/// delivered again. CI once saw `nodes()` return the same node twice that way; each node must be
/// listed once however busy its heartbeats are.
#[tokio::test]
async fn listing_while_heartbeats_are_written_lists_each_node_once() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(30)))
        .await
        .unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("busy-{i:02}")).collect();
    let mut handles = Vec::new();
    for id in &ids {
        handles.push(reg.register(NodeInfo::new(id, "collector")).await.unwrap());
    }
    let writer = tokio::spawn(async move {
        for round in 0u32.. {
            for h in handles.iter_mut() {
                h.heartbeat(f64::from(round % 100) / 100.0).await.unwrap();
            }
        }
    });
    for _ in 0..30 {
        let listed: Vec<String> = reg
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(listed, ids, "each node once, sorted by id");
    }
    writer.abort();
}

#[tokio::test]
async fn registrations_survive_a_server_restart() {
    let mut srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(30)))
        .await
        .unwrap();
    reg.register(NodeInfo::new("persisted", "collector"))
        .await
        .unwrap();
    srv.stop().await.unwrap();
    srv.restart().await.unwrap();
    let bus2 = common::bus(&srv.url()).await;
    let reg2 = Registry::open(&bus2, cfg(Duration::from_secs(30))).await.unwrap();
    let nodes = reg2.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node_id, "persisted");
    // A watcher started after the restart sees it as present.
    let mut w = reg2.watch().await.unwrap();
    assert!(
        matches!(next_event(&mut w, Duration::from_secs(5)).await, NodeEvent::Joined(n) if n.node_id == "persisted")
    );
}

#[tokio::test]
async fn invalid_node_ids_and_documents_are_rejected() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(30)))
        .await
        .unwrap();
    let err = reg.register(NodeInfo::new("bad id", "x")).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::InvalidNodeId(_)), "{err}");
    // Someone writes garbage into the bucket: listing names the key instead of panicking.
    let kv = bus.jetstream().get_key_value("lt_nodes_test").await.unwrap();
    kv.put("junk", "not json".into()).await.unwrap();
    let err = reg.nodes().await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::BadNode { key, .. } if key == "junk"),
        "{err}"
    );
}

#[tokio::test]
async fn live_count_follows_joins_unregisters_and_expiry_from_one_watch() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    let reg = Registry::provision(&bus, cfg(Duration::from_secs(2)))
        .await
        .unwrap();
    // A node registered before counting starts is counted (the watch replays current values).
    let early = reg.register(NodeInfo::new("early", "collector")).await.unwrap();
    let _early_beat = early.spawn_heartbeat();
    let live = reg.live_count();
    let mut changes = live.subscribe();
    let wait = |n: usize| {
        let mut changes = changes.clone();
        async move {
            let got = tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|c| *c == n))
                .await
                .map(|r| r.map(|c| *c));
            match got {
                Ok(Ok(c)) => c,
                Ok(Err(_)) => panic!("the counter stopped"),
                Err(_) => panic!("count never reached {n}, is {}", *changes.borrow()),
            }
        }
    };
    assert_eq!(wait(1).await, 1);

    let late = reg.register(NodeInfo::new("late", "flow")).await.unwrap();
    let gone = reg.register(NodeInfo::new("gone", "query")).await.unwrap();
    assert_eq!(wait(3).await, 3);
    assert_eq!(live.count(), reg.nodes().await.unwrap().len());

    // Heartbeats of counted nodes do not count them twice.
    let late_beat = late.spawn_heartbeat();
    gone.unregister().await.unwrap();
    assert_eq!(wait(2).await, 2);
    late_beat.abort();

    // `late` stops heart-beating: the server expires it and the count follows, `early` stays.
    assert_eq!(wait(1).await, 1);
    assert_eq!(
        reg.nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>(),
        ["early"]
    );

    // Dropping the counter stops its task (its sender goes with it).
    changes.borrow_and_update();
    drop(live);
    let ended = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the counting task has ended: {ended:?}"
    );
}
