//! The file messages frame by frame over a [`RawConn`]: `put` and `get`
//! from offset 0, `mkdir`, `stat`, refusals, and a check that the connection still
//! runs commands.

use bytes::Bytes;
use wiresh_proto::{ErrorCode, ExecRequest, FileEntry, Frame, Message, PutRequest, TransferReady};

use super::disk::hex_blake3;
use super::{RawConn, KIB};

pub type Refused = (ErrorCode, String);

/// The next frame that is not a `pong`.
pub async fn answer(c: &mut RawConn) -> Frame {
    loop {
        let f = c.recv().await;
        if f.message != Message::Pong {
            return f;
        }
    }
}

/// Uploads `data` to `path` from offset 0.
pub async fn raw_put(c: &mut RawConn, path: &str, data: &[u8]) -> Result<u64, Refused> {
    raw_put_start(c, path, data.len() as u64).await?;
    send_file_data(c, data).await;
    raw_put_end(c, path, hex_blake3(data)).await
}

/// `put` of `size` bytes to `path`: the server's `transfer_ready`, or its
/// refusal.
async fn put_offer(
    c: &mut RawConn,
    path: &str,
    size: u64,
    resume: bool,
) -> Result<TransferReady, Refused> {
    c.send(Message::Put(PutRequest {
        path: path.into(),
        size,
        mode: None,
        mtime: None,
        resume,
    }))
    .await;
    match answer(c).await.message {
        Message::TransferReady(ready) => Ok(ready),
        Message::Error { code, message } => Err((code, message)),
        other => panic!("put {path:?}: expected transfer_ready or error, got {other:?}"),
    }
}

/// The first steps of an upload: `put` of `size` bytes to `path`, and once
/// the server is ready, `transfer_start` from offset 0.
pub async fn raw_put_start(c: &mut RawConn, path: &str, size: u64) -> Result<(), Refused> {
    put_offer(c, path, size, false).await?;
    c.send(Message::TransferStart { offset: 0 }).await;
    Ok(())
}

/// `put` of `size` bytes to `path` asking to resume: the server's offer
/// (`transfer_ready`), before any `transfer_start`.
pub async fn raw_put_offered(c: &mut RawConn, path: &str, size: u64) -> TransferReady {
    put_offer(c, path, size, true)
        .await
        .unwrap_or_else(|e| panic!("put --resume {path:?} refused: {e:?}"))
}

/// Sends `data` as `file_data` frames of 256 KiB.
pub async fn send_file_data(c: &mut RawConn, data: &[u8]) {
    for chunk in data.chunks(256 * KIB) {
        c.send_frame(Frame::with_body(
            Message::FileData,
            Bytes::copy_from_slice(chunk),
        ))
        .await;
    }
}

/// The last step of an upload: `file_end` with `blake3`, and the server's
/// answer.
pub async fn raw_put_end(c: &mut RawConn, path: &str, blake3: String) -> Result<u64, Refused> {
    c.send(Message::FileEnd { blake3 }).await;
    match answer(c).await.message {
        Message::TransferOk { bytes } => Ok(bytes),
        Message::Error { code, message } => Err((code, message)),
        other => panic!("put {path:?}: expected transfer_ok or error, got {other:?}"),
    }
}

/// Downloads `path` from offset 0: its `transfer_ready`, bytes and the
/// BLAKE3 announced in `file_end`.
pub async fn raw_get(
    c: &mut RawConn,
    path: &str,
) -> Result<(TransferReady, Vec<u8>, String), Refused> {
    let ready = raw_get_start(c, path).await?;
    let mut data = Vec::new();
    loop {
        let f = answer(c).await;
        match f.message {
            Message::FileData => data.extend_from_slice(&f.body),
            Message::FileEnd { blake3 } => return Ok((ready, data, blake3)),
            Message::Error { code, message } => return Err((code, message)),
            other => panic!("get {path:?}: unexpected {other:?} during the data"),
        }
    }
}

/// The first steps of a download from offset 0: `get` of `path`, and once
/// the server is ready, `transfer_start`; the server's `transfer_ready`.
pub async fn raw_get_start(c: &mut RawConn, path: &str) -> Result<TransferReady, Refused> {
    c.send(Message::Get {
        path: path.into(),
        resume_from: 0,
    })
    .await;
    let ready = match answer(c).await.message {
        Message::TransferReady(r) => r,
        Message::Error { code, message } => return Err((code, message)),
        other => panic!("get {path:?}: expected transfer_ready or error, got {other:?}"),
    };
    c.send(Message::TransferStart { offset: 0 }).await;
    Ok(ready)
}

/// `mkdir` of `path` with `mode`, which must succeed.
pub async fn raw_mkdir(c: &mut RawConn, path: &str, mode: Option<u32>) {
    c.send(Message::Mkdir {
        path: path.into(),
        mode,
    })
    .await;
    match answer(c).await.message {
        Message::TransferOk { bytes: 0 } => {}
        other => panic!("mkdir {path:?}: expected transfer_ok, got {other:?}"),
    }
}

/// `stat` of `path`, which must answer with an entry.
pub async fn raw_stat(c: &mut RawConn, path: &str) -> FileEntry {
    c.send(Message::Stat { path: path.into() }).await;
    match answer(c).await.message {
        Message::Entry(e) => e,
        other => panic!("stat {path}: expected entry, got {other:?}"),
    }
}

/// What [`raw_put`] or [`raw_get`] returned must be a refusal with `code`.
#[track_caller]
pub fn refused_with(what: &str, got: Result<impl std::fmt::Debug, Refused>, code: ErrorCode) {
    match got {
        Err((c, message)) => assert_eq!(c, code, "{what}: wrong error code; message: {message}"),
        Ok(v) => panic!("{what}: expected error {code}, got success {v:?}"),
    }
}

/// Sends `msg` and expects an `error` with `code` in answer.
pub async fn expect_refusal(c: &mut RawConn, msg: Message, code: ErrorCode) {
    let what = format!("{msg:?}");
    c.send(msg).await;
    match answer(c).await.message {
        Message::Error { code: got, message } => {
            assert_eq!(got, code, "{what}: wrong error code; message: {message}")
        }
        other => panic!("{what}: expected error {code}, got {other:?}"),
    }
}

/// The connection still runs commands.
pub async fn assert_usable(c: &mut RawConn) {
    let run = c.exec(ExecRequest::shell("echo still usable")).await;
    assert_eq!(run.stdout, b"still usable\n");
    assert_eq!(run.status.code, Some(0));
}
