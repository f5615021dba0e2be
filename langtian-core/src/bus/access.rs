//! Least-privilege NATS identities, enforced by nats-server itself.
//!
//! A [`Grant`] is an allow-list of the subjects one identity may publish and subscribe to,
//! written in terms of what the identity does ("reads stream X through durable Y", "writes KV
//! bucket Z") rather than as raw JetStream API subjects. [`render_account`] turns identities into
//! a nats-server `accounts` block: NKey users (ed25519; the server stores only the public key)
//! with their permissions, plus optionally one password user that clients without credentials
//! are bound to (`no_auth_user`). The server refuses everything else with a permissions
//! violation, which [`Bus`](super::Bus) counts and logs (code `nats_permission_denied`).
//!
//! Each identity has its own inbox prefix ([`inbox_prefix`]), so no other user can read the
//! replies (PubAcks, JetStream API answers, query results) sent to it.
//!
//! ```
//! use langtian_core::bus::access::{Grant, NatsUser, render_account};
//! let g = Grant::new("collector").publish(["lt.evt.>"]).stream_info("LT_EVENTS");
//! let seed = nkeys::KeyPair::new_user();
//! let users = [NatsUser::nkey(&seed.public_key(), g)];
//! let conf = render_account("LANGTIAN", &users, None);
//! assert!(conf.contains("\"lt.evt.>\"") && conf.contains("\"_LT.collector.>\""));
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The inbox prefix of identity `name`: `_LT.<name>`.
pub fn inbox_prefix(name: &str) -> String {
    format!("_LT.{name}")
}

/// What one identity may do: the subjects it may publish to and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Subjects (wildcards allowed) it may publish to.
    pub publish: BTreeSet<String>,
    /// Subjects it may subscribe to.
    pub subscribe: BTreeSet<String>,
    /// Subjects it may not subscribe to even where `subscribe` would allow them.
    pub subscribe_deny: BTreeSet<String>,
    /// Whether it may reply to the requests it received, and how (`allow_responses`).
    pub responses: Option<Responses>,
}

/// How an identity may answer requests: `max` messages per request, within `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responses {
    /// Messages it may send to one request's reply subject.
    pub max: u32,
    /// How long after the request it may answer (`None`: no limit).
    pub expires: Option<std::time::Duration>,
}

fn add<I, S>(set: &mut BTreeSet<String>, subjects: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    set.extend(subjects.into_iter().map(Into::into));
}

impl Grant {
    /// An identity that may read its own inbox (`_LT.<name>.>`) and its account's JetStream
    /// usage (`$JS.API.INFO`), and nothing else yet.
    pub fn new(name: &str) -> Self {
        let mut g = Self::default();
        g.subscribe.insert(format!("{}.>", inbox_prefix(name)));
        g.publish.insert("$JS.API.INFO".into());
        g
    }

    /// An identity using the default `_INBOX.` prefix (clients whose inbox cannot be chosen).
    pub fn with_default_inbox() -> Self {
        let mut g = Self::default();
        g.subscribe.insert("_INBOX.>".into());
        g.publish.insert("$JS.API.INFO".into());
        g
    }

    /// May publish to these subjects (core NATS or JetStream: a PubAck comes back on the inbox).
    pub fn publish<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Self {
        add(&mut self.publish, subjects);
        self
    }

    /// May subscribe to these subjects.
    pub fn subscribe<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Self {
        add(&mut self.subscribe, subjects);
        self
    }

    /// May not subscribe to these subjects (a deny wins over an allow).
    pub fn deny_subscribe<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Self {
        add(&mut self.subscribe_deny, subjects);
        self
    }

    /// May answer each request it receives with one message.
    pub fn responds(mut self) -> Self {
        self.responses = Some(Responses {
            max: 1,
            expires: None,
        });
        self
    }

    /// May answer each request it receives with up to `max` messages within `expires` (a
    /// service that streams its answer in chunks).
    pub fn responds_with(mut self, max: u32, expires: std::time::Duration) -> Self {
        self.responses = Some(Responses {
            max,
            expires: Some(expires),
        });
        self
    }

    /// May look up streams by subject and read `stream`'s configuration and state.
    pub fn stream_info(self, stream: &str) -> Self {
        self.publish([
            "$JS.API.STREAM.NAMES".to_owned(),
            format!("$JS.API.STREAM.INFO.{stream}"),
        ])
    }

    /// May create `stream` when it is missing (a service that provisions its own stream).
    pub fn creates_stream(self, stream: &str) -> Self {
        self.stream_info(stream)
            .publish([format!("$JS.API.STREAM.CREATE.{stream}")])
    }

    /// May read `stream` through the durable pull consumer `durable`: look it up, create or
    /// update it (when `create`), fetch and acknowledge (both ack subject formats: v1
    /// `$JS.ACK.<stream>.<durable>.…` and the 2.14+ v2 `$JS.ACK.<domain>.<hash>.<stream>.<durable>.…`).
    pub fn durable(self, stream: &str, durable: &str, create: bool) -> Self {
        let mut g = self.stream_info(stream).publish([
            format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.ACK.{stream}.{durable}.>"),
            format!("$JS.ACK.*.*.{stream}.{durable}.>"),
        ]);
        if create {
            g = g.publish([
                // Owner of the durable: reset it to a stream sequence (resume after a commit).
                format!("$JS.API.CONSUMER.RESET.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
            ]);
        }
        g
    }

    /// May read `stream` with ephemeral consumers (ordered consumers, KV watches and key
    /// listings): create, inspect and delete consumers on it, answer their flow control, and
    /// get single messages (direct or through the stream leader).
    pub fn ordered_reader(self, stream: &str) -> Self {
        self.stream_info(stream).publish([
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
            format!("$JS.FC.{stream}.>"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
        ])
    }

    /// [`ordered_reader`](Self::ordered_reader) whose ordered consumers pull (`MSG.NEXT`). The
    /// server cannot tell an ephemeral consumer's random name from a durable's, so this also
    /// lets the identity pull from the stream's durables: give it only to trusted services.
    pub fn ordered_pull_reader(self, stream: &str) -> Self {
        self.ordered_reader(stream)
            .publish([format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*")])
    }

    /// May read KV bucket `bucket` (get, keys, watch).
    pub fn kv_read(self, bucket: &str) -> Self {
        self.ordered_reader(&format!("KV_{bucket}"))
    }

    /// May read and write KV bucket `bucket` (put, create, update, delete).
    pub fn kv_write(self, bucket: &str) -> Self {
        self.kv_read(bucket).publish([format!("$KV.{bucket}.>")])
    }

    /// May create KV bucket `bucket` when it is missing, then read and write it.
    pub fn kv_owner(self, bucket: &str) -> Self {
        self.kv_write(bucket)
            .publish([format!("$JS.API.STREAM.CREATE.KV_{bucket}")])
    }

    /// Everything: for the identity that provisions streams, consumers and buckets.
    pub fn all() -> Self {
        Self::default().publish([">"]).subscribe([">"]).responds()
    }

    fn render(&self) -> String {
        let list = |set: &BTreeSet<String>| {
            let items: Vec<String> = set
                .iter()
                .map(|s| serde_json::to_string(s).unwrap_or_default())
                .collect();
            format!("[{}]", items.join(", "))
        };
        let mut sub = format!("allow: {}", list(&self.subscribe));
        if !self.subscribe_deny.is_empty() {
            let _ = write!(sub, ", deny: {}", list(&self.subscribe_deny));
        }
        let responses = match self.responses {
            None => String::new(),
            Some(Responses {
                max: 1,
                expires: None,
            }) => ", allow_responses: true".into(),
            Some(Responses { max, expires }) => format!(
                ", allow_responses: {{ max: {max}{} }}",
                expires
                    .map(|e| format!(", expires: \"{}ms\"", e.as_millis()))
                    .unwrap_or_default()
            ),
        };
        format!(
            "permissions: {{ publish: {{ allow: {} }}, subscribe: {{ {sub} }}{responses} }}",
            list(&self.publish),
        )
    }
}

/// One user of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsUser {
    /// Authenticated by an NKey (the server knows only the public key `U…`).
    Nkey {
        /// Public user key.
        public_key: String,
        /// Its permissions.
        grant: Grant,
    },
    /// Authenticated by user name and password.
    Password {
        /// User name.
        user: String,
        /// Password.
        password: String,
        /// Its permissions.
        grant: Grant,
    },
}

impl NatsUser {
    /// An NKey user.
    pub fn nkey(public_key: &str, grant: Grant) -> Self {
        Self::Nkey {
            public_key: public_key.to_owned(),
            grant,
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Nkey { public_key, grant } => {
                format!("{{ nkey: {public_key}, {} }}", grant.render())
            }
            Self::Password {
                user,
                password,
                grant,
            } => format!(
                "{{ user: {}, password: {}, {} }}",
                serde_json::to_string(user).unwrap_or_default(),
                serde_json::to_string(password).unwrap_or_default(),
                grant.render()
            ),
        }
    }
}

/// The nats-server configuration of one account (JetStream enabled) holding `users`; with
/// `no_auth_user`, clients that present no credentials are bound to that (password) user.
pub fn render_account(account: &str, users: &[NatsUser], no_auth_user: Option<&str>) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "accounts {{");
    let _ = writeln!(c, "  {account}: {{");
    let _ = writeln!(c, "    jetstream: enabled");
    let _ = writeln!(c, "    users: [");
    for u in users {
        let _ = writeln!(c, "      {}", u.render());
    }
    let _ = writeln!(c, "    ]");
    let _ = writeln!(c, "  }}");
    let _ = writeln!(c, "}}");
    if let Some(u) = no_auth_user {
        let _ = writeln!(
            c,
            "no_auth_user: {}",
            serde_json::to_string(u).unwrap_or_default()
        );
    }
    c
}

/// Failures of the key store.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A key file could not be read or written.
    #[error("NATS key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name that cannot be a file name or an inbox token.
    #[error("NATS identity name `{0}` must be letters, digits, `-` or `_`")]
    Name(String),
}

/// A user NKey kept in `<dir>/<name>.nk` (mode 0600): read when present, created otherwise, so
/// the identities stay the same across restarts.
#[derive(Debug)]
pub struct StoredKey {
    /// The identity's name.
    pub name: String,
    /// The seed (`SU…`): the secret the client connects with.
    pub seed: String,
    /// The public key (`U…`): what the server's configuration holds.
    pub public_key: String,
    /// Where the seed is kept.
    pub path: PathBuf,
}

impl StoredKey {
    /// Loads `<dir>/<name>.nk`, or creates a new user key there.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, AccessError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AccessError::Name(name.to_owned()));
        }
        let path = dir.join(format!("{name}.nk"));
        let err = |reason: String| AccessError::KeyFile {
            path: path.clone(),
            reason,
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            let seed = text.trim().to_owned();
            let kp = nkeys::KeyPair::from_seed(&seed)
                .map_err(|e| err(format!("not a user seed ({e}); delete it to get a new key")))?;
            if !seed.starts_with("SU") {
                return Err(err(
                    "not a user seed (must start with `SU`); delete it to get a new key".into(),
                ));
            }
            return Ok(Self {
                name: name.to_owned(),
                public_key: kp.public_key(),
                seed,
                path,
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| AccessError::KeyFile {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let kp = nkeys::KeyPair::new_user();
        let seed = kp.seed().map_err(|e| err(e.to_string()))?;
        write_private(&path, &seed).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            public_key: kp.public_key(),
            seed,
            path,
        })
    }
}

/// Writes `text` to a file only its owner can read (0600 on Unix).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    o.open(path).and_then(|mut f| f.write_all(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_grant_names_the_api_subjects_of_what_it_does() {
        let g = Grant::new("flow").durable("LT_EVENTS", "lake-writer", false);
        assert!(g.subscribe.contains("_LT.flow.>"));
        assert!(
            g.publish
                .contains("$JS.API.CONSUMER.MSG.NEXT.LT_EVENTS.lake-writer")
        );
        assert!(g.publish.contains("$JS.ACK.LT_EVENTS.lake-writer.>"));
        assert!(g.publish.contains("$JS.ACK.*.*.LT_EVENTS.lake-writer.>"));
        // Without `create` it cannot make or change the consumer.
        assert!(!g.publish.iter().any(|s| s.contains("CREATE")));
        let g = Grant::new("agg").kv_write("md_snapshots");
        assert!(g.publish.contains("$KV.md_snapshots.>"));
        assert!(g.publish.contains("$JS.API.DIRECT.GET.KV_md_snapshots.>"));
        assert!(!g.publish.iter().any(|s| s.contains("STREAM.CREATE")));
    }

    #[test]
    fn the_account_block_lists_users_and_the_no_auth_user() {
        let users = [
            NatsUser::nkey("UABC", Grant::new("a").publish(["x.>"]).responds()),
            NatsUser::Password {
                user: "local".into(),
                password: "p\"w".into(),
                grant: Grant::with_default_inbox().deny_subscribe(["_LT.>"]),
            },
        ];
        let c = render_account("LANGTIAN", &users, Some("local"));
        assert!(c.contains("LANGTIAN: {"), "{c}");
        assert!(c.contains("jetstream: enabled"), "{c}");
        assert!(
            c.contains(r#"{ nkey: UABC, permissions: { publish: { allow: ["$JS.API.INFO", "x.>"] }, subscribe: { allow: ["_LT.a.>"] }, allow_responses: true } }"#),
            "{c}"
        );
        assert!(c.contains(r#"password: "p\"w""#), "{c}");
        assert!(c.contains(r#"deny: ["_LT.>"]"#), "{c}");
        let g = Grant::new("q").responds_with(1000, std::time::Duration::from_secs(60));
        assert!(
            g.render()
                .ends_with(r#"allow_responses: { max: 1000, expires: "60000ms" } }"#),
            "{}",
            g.render()
        );
        assert!(c.contains("no_auth_user: \"local\""), "{c}");
    }

    #[test]
    fn keys_are_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoredKey::load_or_create(dir.path(), "gateway").unwrap();
        assert!(a.seed.starts_with("SU") && a.public_key.starts_with('U'));
        let b = StoredKey::load_or_create(dir.path(), "gateway").unwrap();
        assert_eq!((a.seed, a.public_key), (b.seed, b.public_key));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&b.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&b.path, "garbage").unwrap();
        let e = StoredKey::load_or_create(dir.path(), "gateway").unwrap_err();
        assert!(e.to_string().contains("gateway.nk"), "{e}");
        assert!(matches!(
            StoredKey::load_or_create(dir.path(), "../x"),
            Err(AccessError::Name(_))
        ));
    }
}
