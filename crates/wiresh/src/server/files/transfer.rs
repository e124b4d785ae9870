//! What an upload and a download share: waiting for the client's next
//! transfer frame, within the server's shutdown grace.

use std::time::Duration;

use wiresh_proto::{ErrorCode, Frame, Message, TransferReady};

use crate::conn::RecvError;
use crate::defaults::TRANSFER_FRAME_WAIT;
use crate::listener::{During, End};
use crate::server::session::Session;

/// The shutdown grace of one transfer: once the server has been shutting
/// down for `--shutdown-grace`, a transfer still going ends with
/// `shutting_down`, as a command still running is killed then. Without
/// it, a client that keeps a transfer open (pinging, or sending slowly)
/// would hold the server's shutdown until a second signal.
pub(super) struct ShutdownGrace {
    shutdown: tokio_util::sync::CancellationToken,
    grace: Duration,
    /// When this transfer saw the shutdown begin.
    since: Option<tokio::time::Instant>,
}

impl ShutdownGrace {
    pub(super) fn of(session: &Session) -> ShutdownGrace {
        ShutdownGrace {
            shutdown: session.shutdown.clone(),
            grace: session.config.shutdown_grace,
            since: None,
        }
    }

    /// Resolves once the grace is over; cancel-safe, so it can stand in a
    /// `select!` beside each wait of the transfer.
    pub(super) async fn over(&mut self) {
        let since = match self.since {
            Some(since) => since,
            None => {
                self.shutdown.cancelled().await;
                *self.since.insert(tokio::time::Instant::now())
            }
        };
        tokio::time::sleep_until(since + self.grace).await;
    }

    /// Ends the connection with `shutting_down`, saying how to go on (or
    /// with `auth_failed` when a reload revoked the connection's login).
    pub(super) async fn end(session: &Session) -> End {
        let (code, message) = match session.revocation.reason() {
            Some(why) => (
                ErrorCode::AuthFailed,
                format!("{why}; the transfer stopped here and the connection is closed"),
            ),
            None => (
                ErrorCode::ShuttingDown,
                "server is shutting down: the transfer stopped here; `--resume` continues it \
                 once the server is back"
                    .to_string(),
            ),
        };
        session.fail(code, message).await
    }
}

/// Reads the next frame of a transfer, answering pings on the way.
pub(super) async fn next_transfer_frame(
    session: &mut Session,
    grace: &mut ShutdownGrace,
) -> Result<Frame, End> {
    loop {
        let received = tokio::select! {
            received = session.conn.recv_within(TRANSFER_FRAME_WAIT) => received,
            () = grace.over() => return Err(ShutdownGrace::end(session).await),
        };
        let frame = match received {
            Ok(frame) => frame,
            Err(RecvError::Closed) => return Err(End::disconnected(During::Transfer)),
            Err(e) => return Err(session.fail_recv(e, "during a transfer").await),
        };
        match frame.message {
            Message::Ping => session.conn.pong(frame.body),
            Message::Pong => {}
            _ => return Ok(frame),
        }
    }
}

/// A transfer agreed on: where it starts, the shutdown grace it runs
/// under, and the hash to go on with from there.
pub(super) struct Agreed {
    pub offset: u64,
    pub grace: ShutdownGrace,
    pub hasher: blake3::Hasher,
}

/// Offers `ready` (with `prefix`, the hash of the bytes before its offset,
/// when it offers to resume) and waits for the client's `transfer_start`.
pub(super) async fn agree(
    session: &mut Session,
    ready: TransferReady,
    prefix: Option<blake3::Hasher>,
) -> Result<Agreed, End> {
    let offered = ready.offset;
    session
        .answer(Frame::new(Message::TransferReady(ready)))
        .await?;
    let mut grace = ShutdownGrace::of(session);
    let offset = expect_start(session, &mut grace, offered).await?;
    let hasher = match (offset, prefix) {
        (0, _) | (_, None) => blake3::Hasher::new(),
        (_, Some(h)) => h,
    };
    Ok(Agreed {
        offset,
        grace,
        hasher,
    })
}

/// Reads `transfer_start` and checks its offset is 0 or the one offered.
async fn expect_start(
    session: &mut Session,
    grace: &mut ShutdownGrace,
    offered: u64,
) -> Result<u64, End> {
    let frame = next_transfer_frame(session, grace).await?;
    match frame.message {
        Message::TransferStart { offset } if offset == 0 || offset == offered => Ok(offset),
        Message::TransferStart { offset } => {
            let message =
                format!("transfer_start offset {offset} is neither 0 nor the offered {offered}");
            Err(session.fail(ErrorCode::BadRequest, message).await)
        }
        other => Err(session.unexpected(&other, "before transfer_start").await),
    }
}
