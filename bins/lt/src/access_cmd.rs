//! `lt nats-access` and `lt provision`: run the platform's services on your own nats-server, each
//! as its own NKey user with the permissions `lt up` gives it (docs/security.md).

use std::path::PathBuf;

use clap::Args;
use langtian_core::bus::Topology;
use langtian_core::platform::access::{NatsAuth, PlatformAccess, PlatformNames, SERVICES};

use crate::ConnArgs;

#[derive(Debug, Args)]
pub(crate) struct AccessArgs {
    /// Where to write `accounts.conf` and the seeds (`<out>/keys/<service>.nk`, mode 0600;
    /// existing seeds are kept, so running it again only rewrites the configuration).
    #[arg(long, default_value = "nats-access")]
    out: PathBuf,
    /// Topology file whose stream and bucket names the grants use (default: the built-in one).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// `keys`: every client needs a key; `local`: clients without credentials get the limited
    /// `local` user (as `lt up` does by default).
    #[arg(long, default_value = "keys")]
    nats_auth: NatsAuth,
}

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// Topology file (streams, consumers, KV, dead letters) instead of the built-in one.
    #[arg(long)]
    topology: Option<PathBuf>,
}

fn topology(file: Option<&PathBuf>) -> Result<Topology, String> {
    match file {
        Some(p) => Topology::from_file(p),
        None => Topology::default_topology(),
    }
    .map_err(|e| e.to_string())
}

pub(crate) fn cmd_nats_access(a: &AccessArgs) -> Result<(), String> {
    if a.nats_auth == NatsAuth::Open {
        return Err("--nats-auth open has no users to write; use keys or local".into());
    }
    let mut names = PlatformNames::for_topology(&topology(a.topology.as_ref())?);
    // The service binaries register themselves in the node registry.
    names.standalone = true;
    let access =
        PlatformAccess::open_keys(&a.out.join("keys"), a.nats_auth, names).map_err(|e| e.to_string())?;
    let conf = access.server_config().ok_or("no users to write")?;
    let path = a.out.join("accounts.conf");
    std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
    let abs = std::fs::canonicalize(&a.out).unwrap_or_else(|_| a.out.clone());
    let abs = abs.display();
    println!(
        "wrote {abs}/accounts.conf: account LANGTIAN with the NKey users {}",
        SERVICES.join(", ")
    );
    if a.nats_auth == NatsAuth::Local {
        println!("  and the `local` user for clients without credentials (no_auth_user)");
    }
    println!("seeds in {abs}/keys/<user>.nk (mode 0600; the server's configuration holds only public keys)");
    println!();
    println!(
        "1. nats-server: add `include \"{abs}/accounts.conf\"` to its configuration (JetStream enabled)."
    );
    println!("2. provision:   lt --nkey-seed-file {abs}/keys/admin.nk provision");
    println!("3. services:    each as its own user, for example");
    for (bin, user) in [
        ("lt-collector", "collector"),
        ("lt-aggregator", "aggregator"),
        ("lt-gateway", "gateway"),
        ("lt-query", "query"),
    ] {
        println!("     {bin} --nkey-seed-file {abs}/keys/{user}.nk --inbox-prefix _LT.{user} …");
    }
    println!(
        "   a pipeline file (lt-flow): source.nats.nkey_seed = the text of keys/flow.nk, inbox_prefix: _LT.flow"
    );
    Ok(())
}

pub(crate) async fn cmd_provision(conn: &ConnArgs, a: &ProvisionArgs) -> Result<(), String> {
    let topology = topology(a.topology.as_ref())?;
    let bus = conn.connect().await?;
    for line in topology.apply(&bus).await.map_err(|e| e.to_string())? {
        println!("provisioned: {line}");
    }
    Ok(())
}
