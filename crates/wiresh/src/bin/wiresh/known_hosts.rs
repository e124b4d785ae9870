//! `wiresh known-hosts`: the pinned server fingerprints, listed, or one
//! forgotten (`--remove`, as `ssh-keygen -R`).

use anyhow::Result;
use wiresh::reach::{Reach, Resolver, KNOWN_HOSTS};
use wiresh::tls;

use crate::args::KnownHostsArgs;

/// Lists the pins on stdout, or removes the pin of one server and says so
/// on stderr; a server with no pin is an error.
pub fn run(args: KnownHostsArgs) -> Result<()> {
    let file = Reach::default().home()?.join(KNOWN_HOSTS);
    let Some(host) = args.remove else {
        for (target, fingerprint) in tls::read_pins(&file)? {
            println!("{target} {fingerprint}");
        }
        return Ok(());
    };
    // The server as `wiresh exec HOST` reaches it: the pin's key.
    let target = Resolver::new(Reach::default())?.target(&host)?.to_string();
    let removed = tls::remove_pins(&file, &target)?;
    anyhow::ensure!(
        !removed.is_empty(),
        "no fingerprint is pinned for {target} in {} (`wiresh known-hosts` lists them)",
        file.display()
    );
    for fingerprint in removed {
        eprintln!(
            "wiresh: forgot {target} {fingerprint} (from {}); the next connection pins what it is shown",
            file.display()
        );
    }
    Ok(())
}
