//! `wiresh keygen`: a client key pair and the line that authorizes it.

use anyhow::Result;
use wiresh::keys::{self, ClientKey};
use wiresh::server::clients::check_name;

use crate::args::KeygenArgs;

/// Makes the key pair and prints the `authorized_clients` line on stdout
/// (so `wiresh keygen >> authorized_clients` works on one machine), and
/// what to do with it on stderr.
pub fn run(args: KeygenArgs) -> Result<()> {
    let path = match args.key {
        Some(path) => path,
        None => keys::default_key_path()?,
    };
    let name = args.name.unwrap_or_else(default_name);
    check_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let key = ClientKey::generate(&path)?;
    eprintln!(
        "wiresh: created the client key {} (mode 600) and its certificate {}",
        path.display(),
        keys::cert_path(&path).display()
    );
    eprintln!(
        "wiresh: to let this client in, add this line to the server's authorized_clients \
         file ($WIRESH_HOME/authorized_clients there) and reload the server (`wiresh reload` or `systemctl reload wiresh` there):"
    );
    println!("{} {name}", key.fingerprint);
    Ok(())
}

/// `USER@HOSTNAME`, as ssh-keygen names a key, with anything a client
/// name may not hold left out. USER is the account's name in the user
/// database, as ssh-keygen takes it (`$USER` may be unset, under cron or
/// systemd, or stale after `su`).
fn default_name() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "wiresh".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = format!("{user}@{}", host.trim());
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._@-".contains(*c))
        .take(64)
        .collect();
    name.trim_end_matches('@').to_string()
}
