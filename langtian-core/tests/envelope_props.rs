//! Property tests: decoding arbitrary bytes never panics, and valid envelopes round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use langtian_core::envelope::{Envelope, EnvelopeBuilder, EnvelopeError};
use proptest::prelude::*;
use prost::Message as _;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        match Envelope::decode(&bytes) {
            Ok(env) => {
                // Anything accepted must satisfy the invariants.
                prop_assert!(!env.event_id().is_empty());
                prop_assert!(langtian_core::envelope::parse_schema_version(env.schema_version()).is_some());
            }
            Err(EnvelopeError::Decode { len, .. }) => prop_assert_eq!(len, bytes.len()),
            Err(_) => {}
        }
    }

    #[test]
    fn mutated_envelopes_never_panic(flip in 0usize..200, byte in any::<u8>()) {
        let env = EnvelopeBuilder::new("battery.sample", "dev-1")
            .event_id("dev-1:7").partition_key("p").payload(vec![1u8; 64], "application/octet-stream")
            .build().unwrap();
        let mut bytes = env.encode().to_vec();
        let i = flip % bytes.len();
        bytes[i] = byte;
        let _ = Envelope::decode(&bytes);
        bytes.truncate(i);
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn valid_envelopes_round_trip(
        id in "[a-z0-9:-]{1,40}",
        ty in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
        src in "[a-z0-9_-]{1,20}",
        major in 0u32..100, minor in 0u32..100,
        ts in any::<i64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        key in proptest::option::of("[a-z0-9]{1,10}"),
    ) {
        let mut b = EnvelopeBuilder::new(ty.clone(), src.clone())
            .event_id(id.clone())
            .schema_version(format!("{major}.{minor}"))
            .event_timestamp(ts)
            .payload(payload.clone(), "application/octet-stream");
        if let Some(k) = &key { b = b.partition_key(k.clone()); }
        let env = b.build().unwrap();
        let bytes = env.encode();
        prop_assert_eq!(bytes.len(), env.as_proto().encoded_len());
        let back = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.subject("lt.evt"), format!("lt.evt.{ty}.{src}"));
        prop_assert_eq!(back.schema_major(), major);
        prop_assert_eq!(back.partition_key(), key.as_deref());
    }
}
