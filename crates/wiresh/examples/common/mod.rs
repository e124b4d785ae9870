//! What the benchmark examples share.

use wiresh::client::{Endpoint, Pinning, Security, Target};

/// The endpoint a benchmark connects to: the token from the usual places,
/// TLS pinned in $WIRESH_HOME/known_hosts, or plaintext.
pub fn endpoint(target: Target, plaintext: bool) -> anyhow::Result<Endpoint> {
    Ok(Endpoint {
        target,
        token: wiresh::auth::client_token(None)?,
        security: if plaintext {
            Security::Plaintext
        } else {
            Security::Tls(Pinning {
                known_hosts: wiresh::home::wiresh_home()?.join("known_hosts"),
                fingerprint: None,
                client_key: None,
            })
        },
        connect_timeout: wiresh::client::CONNECT_TIMEOUT,
        persist: None,
    })
}
