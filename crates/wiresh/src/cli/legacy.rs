//! `wiresh exec --legacy` and `wiresh shell --legacy`: the same front ends
//! against a server of the original protocol ([`crate::legacy`]), which has
//! no exit status and joins stderr to stdout. Its text is in `encoding`
//! (`None`: UTF-8, passed through).

use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

use super::lines::{run_lines, LineRunner, Step};
use crate::client::CONNECT_TIMEOUT;
use crate::exit;
use crate::legacy::{LegacyClient, LegacyError};
use crate::untrusted::escape;

/// Runs `command` on the legacy server at `target` (`HOST[:PORT]`). That
/// protocol has no exit status, so this returns 0 after a complete answer
/// and [`exit::CLIENT_FAILURE`] after a broken one.
pub fn exec(
    rt: &Runtime,
    target: &str,
    command: &str,
    encoding: Option<&'static encoding_rs::Encoding>,
) -> i32 {
    let result = rt.block_on(async {
        let mut client = LegacyClient::connect(target, CONNECT_TIMEOUT).await?;
        client.set_encoding(encoding);
        to_stdout(&mut client, command).await
    });
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("wiresh: {}", escape(&e.to_string()));
            exit::CLIENT_FAILURE
        }
    }
}

/// The `--each-line` shell on a legacy server. Returns 0, or 255 once the
/// connection is broken.
pub fn shell(rt: &Runtime, target: &str, encoding: Option<&'static encoding_rs::Encoding>) -> i32 {
    let mut client = match rt.block_on(LegacyClient::connect(target, CONNECT_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiresh: {}", escape(&e.to_string()));
            return exit::CLIENT_FAILURE;
        }
    };
    client.set_encoding(encoding);
    let banner = format!("connected to legacy server {}", client.target());
    let prompt = format!("{} (legacy)>>: ", client.target());
    run_lines(rt, Legacy(client), &prompt, &banner)
}

/// Lines on a server of the original protocol.
struct Legacy(LegacyClient);

impl LineRunner for Legacy {
    async fn run_line(&mut self, line: &str) -> Step {
        match to_stdout(&mut self.0, line).await {
            Ok(()) => Step::Ran(exit::SUCCESS),
            Err(e) => {
                eprintln!("wiresh: {}", escape(&e.to_string()));
                Step::Stop(exit::CLIENT_FAILURE)
            }
        }
    }

    async fn close(self) {}
}

/// Runs one legacy command with its answer on stdout, warning on stderr
/// when the answer's md5 does not match.
async fn to_stdout(client: &mut LegacyClient, command: &str) -> Result<(), LegacyError> {
    let mut out = tokio::io::stdout();
    let reply = client.run(command, &mut out).await;
    let _ = out.flush().await;
    if let Some(warning) = reply.as_ref().ok().and_then(|r| r.md5_warning()) {
        // The md5 it quotes is the server's.
        eprintln!("wiresh: {}", escape(&warning));
    }
    reply.map(drop)
}
