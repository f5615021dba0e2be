//! `lt up`'s NATS identities: every service connects as its own NKey user whose permissions
//! allow what that service does and nothing else (seed 002: NATS accounts + NKey, subject ACLs
//! with least privilege, unauthorised subjects refused and audited).
//!
//! | identity | may |
//! |---|---|
//! | `admin` | everything: provisions the topology, registers the node, forwards dead letters, reads status |
//! | `collector` | publish envelopes to `lt.evt.>` (stream `LT_EVENTS`) |
//! | `flow` | read `LT_EVENTS` through its durable `lake-writer` and ack; dead-letter to `lt.dlq.<flow>` |
//! | `query` | take requests on `lt.query.v1` (queue group) and stream each answer back |
//! | `aggregator` | read the source streams with ordered consumers; publish `<prefix>.md.>`; write KV `md_snapshots`; answer snapshot requests |
//! | `gateway` | subscribe to what browsers may see (`UI_SUBJECTS`); request snapshots; read KV `md_snapshots`; own KV `lt_feature_flags` and stream `LT_AUDIT` |
//! | `ticks` | publish simulated ticks to `xy.src.tick.>` (stream `XY_SRC`) and contracts to `xy.ref.contract.>` (stream `XY_REF`) |
//! | `local` | clients without credentials (SDKs, the `lt` CLI) in `--nats-auth local`: publish events, ticks and analysis tables, query, read node and snapshot buckets, subscribe to anything but the services' inboxes and request subjects |
//!
//! Seeds are kept in `<data dir>/nats/keys/<identity>.nk` (mode 0600), so a service started by
//! hand (or `lt --nkey-seed-file …`) can use the same identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bus::access::{Grant, NatsUser, StoredKey, inbox_prefix, render_account};
use crate::bus::{BusOptions, Topology};

/// The account every `lt up` identity belongs to.
pub const ACCOUNT: &str = "LANGTIAN";
/// The user that clients without credentials are bound to in [`NatsAuth::Local`].
pub const LOCAL_USER: &str = "local";

/// How `lt up`'s embedded nats-server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// Services connect with their own NKeys; clients without credentials get the `local`
    /// identity's limited permissions (the default: SDKs and the CLI work without setup).
    #[default]
    Local,
    /// Every connection must present an NKey (the seeds are in `<data dir>/nats/keys`).
    Keys,
    /// No authentication or permissions at all (every client may do anything).
    Open,
}

impl std::str::FromStr for NatsAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "keys" => Ok(Self::Keys),
            "open" => Ok(Self::Open),
            other => Err(format!("`{other}` is not one of local, keys, open")),
        }
    }
}

/// The services of `lt up`, each a NATS identity.
pub const SERVICES: [&str; 7] = [
    "admin",
    "collector",
    "flow",
    "query",
    "aggregator",
    "gateway",
    "ticks",
];

/// The names the grants are written from: what `lt up` actually runs.
#[derive(Debug, Clone)]
pub struct PlatformNames {
    /// The stream the collector publishes to and the flow reads (`LT_EVENTS`).
    pub events_stream: String,
    /// The collector's subject prefix (`lt.evt`).
    pub events_prefix: String,
    /// The flow's durable consumer and its pipeline name.
    pub flow_durable: String,
    /// The default flow's name (its dead letters go to `<dlq prefix>.<name>`).
    pub flow_name: String,
    /// Dead-letter subject prefix and stream.
    pub dlq_prefix: String,
    /// The dead-letter stream.
    pub dlq_stream: String,
    /// The query service's subject.
    pub query_subject: String,
    /// Node registry bucket.
    pub nodes_bucket: String,
    /// Aggregator feeds: (source stream, output subject prefix such as `xy`).
    pub feeds: Vec<(String, String)>,
    /// The aggregator's snapshot bucket.
    pub snapshot_bucket: String,
    /// The gateway's feature-flag bucket.
    pub flags_bucket: String,
    /// The gateway's audit subject prefix (stream `LT_AUDIT`).
    pub audit_prefix: String,
    /// What browsers may subscribe to through the gateway.
    pub ui_subjects: Vec<String>,
    /// The tick simulator's stream and subject prefix.
    pub ticks: (String, String),
    /// The stream and subject prefix of the simulator's contracts (reference data).
    pub contracts: (String, String),
    /// Grants for the services run as their own processes (`lt-collector`, `lt-aggregator`,
    /// `lt-query`), which also register themselves in the node registry; inside `lt up` the
    /// `admin` connection registers the one node.
    pub standalone: bool,
}

impl PlatformNames {
    /// The names of `lt up` with `topology`.
    pub fn for_topology(topology: &Topology) -> Self {
        let dlq = topology.dlq.as_ref();
        Self {
            events_stream: "LT_EVENTS".into(),
            events_prefix: crate::bus::EVENT_PREFIX.into(),
            flow_durable: "lake-writer".into(),
            flow_name: "battery-to-lake".into(),
            dlq_prefix: dlq
                .map(|d| d.dlq_prefix.clone())
                .unwrap_or_else(|| "lt.dlq".into()),
            dlq_stream: dlq
                .map(|d| d.dlq_stream.clone())
                .unwrap_or_else(|| "LT_DLQ".into()),
            query_subject: "lt.query.v1".into(),
            nodes_bucket: crate::discovery::DiscoveryConfig::default().bucket,
            feeds: vec![
                ("XY_SRC".into(), "xy".into()),
                ("XY_REF".into(), "xy".into()),
                ("LT_EVENTS".into(), "lt".into()),
            ],
            snapshot_bucket: "md_snapshots".into(),
            flags_bucket: "lt_feature_flags".into(),
            audit_prefix: "lt.audit".into(),
            ui_subjects: super::UI_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            ticks: ("XY_SRC".into(), "xy.src.tick".into()),
            contracts: ("XY_REF".into(), "xy.ref.contract".into()),
            standalone: false,
        }
    }

    /// The grant of service `name` (one of [`SERVICES`]), or of [`LOCAL_USER`].
    pub fn grant(&self, name: &str) -> Option<Grant> {
        let mut g = Grant::new(name);
        if self.standalone && matches!(name, "collector" | "aggregator" | "query") {
            g = g.kv_write(&self.nodes_bucket);
        }
        Some(match name {
            "admin" => Grant::all(),
            "collector" => g
                .publish([format!("{}.>", self.events_prefix)])
                .stream_info(&self.events_stream),
            "flow" => g
                .durable(&self.events_stream, &self.flow_durable, true)
                .publish([format!("{}.{}", self.dlq_prefix, self.flow_name)])
                .stream_info(&self.dlq_stream),
            "query" => g
                .subscribe([self.query_subject.clone()])
                // An answer comes in chunks; a query may run for minutes.
                .responds_with(1_000_000, Duration::from_secs(3600)),
            "aggregator" => {
                let mut g = g.kv_owner(&self.snapshot_bucket).responds();
                for (stream, prefix) in &self.feeds {
                    g = g
                        .ordered_pull_reader(stream)
                        .publish([format!("{prefix}.md.>")])
                        .subscribe([format!("{prefix}.md.req.>")]);
                }
                g
            }
            "gateway" => {
                let mut g = g
                    .subscribe(self.ui_subjects.clone())
                    .kv_read(&self.snapshot_bucket)
                    .kv_owner(&self.flags_bucket)
                    .creates_stream("LT_AUDIT")
                    .publish([format!("{}.>", self.audit_prefix)]);
                for (_, prefix) in &self.feeds {
                    g = g.publish([format!("{prefix}.md.req.>")]);
                }
                g
            }
            "ticks" => g
                .publish([format!("{}.>", self.ticks.1)])
                .stream_info(&self.ticks.0)
                .publish([format!("{}.>", self.contracts.1)])
                .stream_info(&self.contracts.0),
            LOCAL_USER => {
                let mut g = Grant::with_default_inbox()
                    .publish([
                        format!("{}.>", self.events_prefix),
                        "xy.src.>".into(),
                        "xy.ref.>".into(),
                        "lt.analysis.>".into(),
                        self.query_subject.clone(),
                        "$JS.API.STREAM.NAMES".into(),
                        "$JS.API.STREAM.INFO.*".into(),
                        // `lt streams`: every stream's and consumer's state, read only.
                        "$JS.API.STREAM.LIST".into(),
                        "$JS.API.CONSUMER.LIST.*".into(),
                    ])
                    // Clients may register themselves as nodes (the C# tray tool does).
                    .kv_write(&self.nodes_bucket)
                    .kv_read(&self.snapshot_bucket)
                    .subscribe([">"])
                    // Not the services' replies, and not their requests (no one may pose as
                    // the query service or the aggregator).
                    .deny_subscribe(["_LT.>".to_owned(), self.query_subject.clone()])
                    .responds();
                for (_, prefix) in &self.feeds {
                    g = g
                        .publish([format!("{prefix}.md.req.>")])
                        .deny_subscribe([format!("{prefix}.md.req.>")]);
                }
                g
            }
            _ => return None,
        })
    }
}

/// The identities of one `lt up`: the services' stored keys and the server configuration that
/// grants each its permissions.
#[derive(Debug)]
pub struct PlatformAccess {
    /// How the server authenticates.
    pub mode: NatsAuth,
    /// Where the seeds are kept.
    pub keys_dir: PathBuf,
    keys: Vec<StoredKey>,
    names: PlatformNames,
}

impl PlatformAccess {
    /// Loads (or creates) every service's key under `<data_dir>/nats/keys`.
    pub fn open(
        data_dir: &Path,
        mode: NatsAuth,
        names: PlatformNames,
    ) -> Result<Self, crate::bus::access::AccessError> {
        Self::open_keys(&data_dir.join("nats").join("keys"), mode, names)
    }

    /// Loads (or creates) every service's key in `keys_dir`.
    pub fn open_keys(
        keys_dir: &Path,
        mode: NatsAuth,
        names: PlatformNames,
    ) -> Result<Self, crate::bus::access::AccessError> {
        let keys_dir = keys_dir.to_owned();
        let mut keys = Vec::new();
        if mode != NatsAuth::Open {
            for s in SERVICES {
                keys.push(StoredKey::load_or_create(&keys_dir, s)?);
            }
        }
        Ok(Self {
            mode,
            keys_dir,
            keys,
            names,
        })
    }

    /// The nats-server configuration (the account with its users), or `None` when open.
    pub fn server_config(&self) -> Option<String> {
        if self.mode == NatsAuth::Open {
            return None;
        }
        let mut users: Vec<NatsUser> = self
            .keys
            .iter()
            .filter_map(|k| Some(NatsUser::nkey(&k.public_key, self.names.grant(&k.name)?)))
            .collect();
        let mut no_auth = None;
        if self.mode == NatsAuth::Local {
            users.push(NatsUser::Password {
                user: LOCAL_USER.into(),
                // Nobody logs in with it: clients without credentials are bound to this user.
                password: format!("{}{}", nuid::next(), nuid::next()),
                grant: self.names.grant(LOCAL_USER)?,
            });
            no_auth = Some(LOCAL_USER);
        }
        Some(render_account(ACCOUNT, &users, no_auth))
    }

    /// Connection options of service `name` at `url` (its NKey, name and inbox prefix); with
    /// [`NatsAuth::Open`], plain options.
    pub fn options(&self, url: &str, name: &str) -> BusOptions {
        let mut o = BusOptions::new(url);
        o.name = Some(format!("lt-up:{name}"));
        if let Some(k) = self.keys.iter().find(|k| k.name == name) {
            o.nkey_seed = Some(k.seed.clone());
            o.inbox_prefix = Some(inbox_prefix(name));
        }
        o
    }

    /// The seed file of service `name`.
    pub fn seed_file(&self, name: &str) -> Option<&Path> {
        self.keys
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.path.as_path())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_service_has_a_grant_and_none_may_do_everything_but_admin() {
        let names = PlatformNames::for_topology(&Topology::default_topology().unwrap());
        for s in SERVICES.iter().copied().chain([LOCAL_USER]) {
            let g = names.grant(s).unwrap();
            assert_eq!(g.publish.contains(">"), s == "admin", "{s}");
        }
        assert!(names.grant("nobody").is_none());
        // The collector cannot write market data or create streams.
        let c = names.grant("collector").unwrap();
        assert!(c.publish.contains("lt.evt.>"));
        assert!(
            !c.publish
                .iter()
                .any(|p| p.starts_with("xy.") || p.contains("CREATE"))
        );
        // Clients without credentials cannot read the services' inboxes or pose as the query service.
        let l = names.grant(LOCAL_USER).unwrap();
        assert!(l.subscribe_deny.contains("_LT.>") && l.subscribe_deny.contains("lt.query.v1"));
        assert!(
            !l.publish
                .iter()
                .any(|p| p.contains("$KV.md_snapshots") || p.contains("CREATE.LT_"))
        );
        assert!(l.publish.contains("$KV.lt_nodes.>"), "clients may register nodes");
    }

    #[test]
    fn modes_parse_and_open_has_no_users() {
        assert_eq!("keys".parse::<NatsAuth>().unwrap(), NatsAuth::Keys);
        assert!(
            "none"
                .parse::<NatsAuth>()
                .unwrap_err()
                .contains("local, keys, open")
        );
        let dir = tempfile::tempdir().unwrap();
        let names = PlatformNames::for_topology(&Topology::default_topology().unwrap());
        let open = PlatformAccess::open(dir.path(), NatsAuth::Open, names.clone()).unwrap();
        assert!(open.server_config().is_none());
        assert!(open.options("nats://x:1", "gateway").nkey_seed.is_none());
        let keys = PlatformAccess::open(dir.path(), NatsAuth::Keys, names).unwrap();
        let conf = keys.server_config().unwrap();
        assert!(!conf.contains("no_auth_user"), "{conf}");
        let o = keys.options("nats://x:1", "gateway");
        assert!(o.nkey_seed.unwrap().starts_with("SU"));
        assert_eq!(o.inbox_prefix.as_deref(), Some("_LT.gateway"));
    }
}
