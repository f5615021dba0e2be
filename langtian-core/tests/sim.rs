//! The tick simulator publishing to a real nats-server (stream XY_SRC).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use langtian_core::bus::Topology;
use langtian_core::proto::md::v1::Tick;
use langtian_core::sim::ticks::{TickRun, publish_ticks};
use langtian_core::sim::{TickSim, TickSimConfig};
use prost::Message as _;

#[tokio::test]
async fn ticks_land_on_xy_src_per_venue_and_symbol() {
    let srv = common::server().await;
    let bus = common::bus(&srv.url()).await;
    Topology::default_topology().unwrap().apply(&bus).await.unwrap();
    let mut sim = TickSim::new(TickSimConfig {
        venues: 2,
        symbols_per_venue: 4,
        duplicate_rate: 0.05,
        out_of_order_rate: 0.05,
        seed: 3,
    });
    let run = TickRun {
        rate: 5_000.0,
        count: Some(2_000),
        ..TickRun::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let r = publish_ticks(&bus, &mut sim, &run, rx, |_| {}).await.unwrap();
    assert_eq!(r.published, 2_000);
    // The feed's duplicates are stored too (the aggregator, not the stream, drops them).
    assert_eq!(common::stream_len(&bus, "XY_SRC").await, 2_000);
    let stream = bus.jetstream().get_stream("XY_SRC").await.unwrap();
    let m = stream
        .get_last_raw_message_by_subject("xy.src.tick.shfe.rb2501")
        .await
        .unwrap();
    let t = Tick::decode(m.payload.as_ref()).unwrap();
    assert_eq!((t.venue.as_str(), t.symbol.as_str()), ("shfe", "rb2501"));
    assert!(t.seq > 0 && t.bids.len() == 5);
}
