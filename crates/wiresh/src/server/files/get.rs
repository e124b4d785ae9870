//! Downloads (`get`): a file sent from an offset, with its BLAKE3.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio::fs::File;
use tokio::io::AsyncSeekExt;
use tracing::info;
use wiresh_proto::{ErrorCode, Frame, Message, TransferReady};

use super::common::{send, Files, Handled, Moved};
use super::root::refusal;
use super::transfer::{agree, Agreed, ShutdownGrace};
use crate::fileio::{hash_prefix, Source, CHUNK};
use crate::server::refusal::Refusal;
use crate::server::session::Session;

pub(super) async fn get(
    session: &mut Session,
    files: &Files,
    path: &str,
    resume_from: u64,
) -> Handled {
    let shown = Path::new(path);
    let rel = files.rel(path)?;
    let file = files
        .beneath(move |root| root.open_file(&rel))
        .await
        .map_err(|e| refusal("read", path, e))?;
    let mut file = File::from_std(file);
    let meta = file
        .metadata()
        .await
        .map_err(|e| Refusal::io("stat", shown, e))?;
    if !meta.is_file() {
        return Err(Refusal::Io(format!("{path}: not a regular file")).into());
    }
    let size = meta.len();
    let (offered, prefix) = if resume_from > 0 && resume_from <= size {
        let hasher = hash_prefix(&mut file, resume_from)
            .await
            .map_err(|e| Refusal::io("read", shown, e))?;
        (resume_from, Some(hasher))
    } else {
        (0, None)
    };
    let ready = TransferReady {
        offset: offered,
        prefix_blake3: prefix.as_ref().map(|h| h.finalize().to_hex().to_string()),
        size: Some(size),
        mode: Some(meta.mode() & 0o7777),
        mtime: Some(meta.mtime()),
    };
    let Agreed {
        offset,
        mut grace,
        hasher,
    } = agree(session, ready, prefix).await?;
    if let Err(e) = file.seek(SeekFrom::Start(offset)).await {
        let message = format!("cannot read {path}: {e}");
        return Err(session.fail(ErrorCode::IoError, message).await.into());
    }
    // Exactly the announced size, even if the file grows meanwhile.
    let mut source = Source::start(file, size - offset, CHUNK, hasher).await;
    loop {
        let next = tokio::select! {
            next = source.next() => next,
            () = grace.over() => return Err(ShutdownGrace::end(session).await.into()),
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(body) => {
                // A client that reads slowly cannot hold the shutdown either.
                let frame = Frame::with_body(Message::FileData, body);
                tokio::select! {
                    sent = session.answer(frame) => sent?,
                    () = grace.over() => return Err(ShutdownGrace::end(session).await.into()),
                }
            }
            Err(e) => {
                let message = format!("cannot read {path}: {e}");
                return Err(session.fail(ErrorCode::IoError, message).await.into());
            }
        }
    }
    let hasher = source.finish().await;
    let blake3 = hasher.finalize().to_hex().to_string();
    info!(peer = %session.peer, client = %session.identity, path, bytes = size - offset, resumed_at = offset, "file sent");
    send(session, Message::FileEnd { blake3 }).await?;
    Ok(Moved::Out(size - offset))
}
