//! File transfer on the client: the library calls behind `wiresh put` and
//! `wiresh get`.
//!
//! Everything the server says is checked before it touches the local disk:
//! names from a listing must be plain relative paths (no `..`, no absolute
//! path), a download must be exactly the announced size and match its
//! BLAKE3, and it is written to `.NAME.wiresh-part` and renamed into place
//! only once verified — whatever a malicious or broken server sends back.

use std::ffi::OsString;
use std::io::SeekFrom;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::fs::{self, File};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;
use wiresh_proto::{FileEntry, Frame, Message, PutRequest, TransferReady};

use super::{ClientError, Connection};
use crate::conn::{RecvError, SendError};
use crate::fileio::{
    hash_prefix, mode_to_apply, open_dir, open_partial, open_source, partial_name, publish,
    unblock, Sink, Source, CHUNK,
};
use crate::task::AbortOnDrop;
use crate::untrusted::escape;

/// Most entries a listing may have: a bound on what a server can make the
/// client hold in memory.
const MAX_LIST_ENTRIES: usize = 1_000_000;

/// How a transfer treats metadata and partial files.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferOptions {
    /// Give the copy the original's mode and modification time (`-p`).
    pub preserve: bool,
    /// Continue a partial copy left by an interrupted transfer, after
    /// checking that its bytes match the source's.
    pub resume: bool,
}

/// What one file transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferReport {
    /// Size of the file.
    pub size: u64,
    /// Bytes that crossed the network (less than `size` after a resume).
    pub sent: u64,
    /// Where the transfer started (0 unless resumed).
    pub resumed_at: u64,
}

/// Why a file could not be transferred.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The connection or the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local file could not be read or written (in `get -r`, its name
    /// may come from the server).
    #[error("{}: {source}", escape(&path.display().to_string()))]
    Local {
        /// The local path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The server sent something unsafe or inconsistent.
    #[error("refusing what the server sent: {}", escape(.0))]
    Unsafe(String),
    /// The received data does not match its checksum (the text may hold a
    /// name from the server, and its message).
    #[error("{}", escape(.0))]
    Checksum(String),
}

/// Where a connection that broke or stalled was: the words the errors of a
/// transfer in progress say, and what [`TransferError::left_a_partial`]
/// looks for.
const DURING: &str = "during a transfer";

impl TransferError {
    /// Whether the connection broke or stalled in the middle of a transfer,
    /// which leaves a partial file that the same copy with `--resume`
    /// continues from.
    pub fn left_a_partial(&self) -> bool {
        match self {
            TransferError::Client(ClientError::Closed(during)) => *during == DURING,
            TransferError::Client(ClientError::Timeout(text)) => text.contains(DURING),
            _ => false,
        }
    }

    fn local(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
        move |source| TransferError::Local {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks that a name from the server is a plain relative path (normal
/// components only) and returns it as a path to join under a local directory.
pub fn safe_relative(name: &str) -> Result<PathBuf, TransferError> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            _ => {
                return Err(TransferError::Unsafe(format!(
                    "{name:?} is not a plain relative path"
                )))
            }
        }
    }
    if out.as_os_str().is_empty() || name.contains('\0') {
        return Err(TransferError::Unsafe(format!(
            "{name:?} is not a file name"
        )));
    }
    Ok(out)
}

impl Connection {
    /// Reads the next frame of a file request, skipping pongs.
    async fn next_file_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            let frame =
                self.conn
                    .recv_within(self.transfer_timeout)
                    .await
                    .map_err(|e| match e {
                        RecvError::TimedOut(limit) => ClientError::Timeout(format!(
                            "the server sent nothing for {limit:?} during a transfer; the \
                         connection seems dead (--transfer-timeout sets how long to wait)"
                        )),
                        e => ClientError::from_recv(e, DURING),
                    })?;
            match frame.message {
                Message::Pong => {}
                Message::Ping => self.conn.pong(frame.body),
                Message::Error { code, message } => {
                    return Err(ClientError::Remote {
                        code,
                        message,
                        started: false,
                    })
                }
                _ => return Ok(frame),
            }
        }
    }

    async fn send_data(&self, frame: Frame) -> Result<(), ClientError> {
        match self
            .conn
            .send_unless_stalled(frame, self.transfer_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(SendError::Closed) => Err(ClientError::Closed(DURING)),
            Err(SendError::Stalled(limit)) => Err(stalled(limit)),
        }
    }

    async fn request(&mut self, message: Message) -> Result<Frame, ClientError> {
        self.send_data(Frame::new(message)).await?;
        self.next_file_frame().await
    }

    /// Describes a path on the server.
    pub async fn stat(&mut self, path: &str) -> Result<FileEntry, ClientError> {
        match self
            .request(Message::Stat {
                path: path.to_string(),
            })
            .await?
            .message
        {
            Message::Entry(entry) => Ok(entry),
            other => Err(unexpected(&other, "stat")),
        }
    }

    /// Lists a directory on the server, recursively. Every name is checked
    /// with [`safe_relative`]; one unsafe name fails the whole listing.
    pub async fn list(&mut self, path: &str) -> Result<Vec<FileEntry>, TransferError> {
        self.send_data(Frame::new(Message::List {
            path: path.to_string(),
        }))
        .await?;
        let mut entries = Vec::new();
        let mut unsafe_name = None;
        loop {
            match self.next_file_frame().await?.message {
                Message::Entry(entry) => {
                    if entries.len() >= MAX_LIST_ENTRIES {
                        return Err(TransferError::Unsafe(format!(
                            "the listing of {path} has more than {MAX_LIST_ENTRIES} entries"
                        )));
                    }
                    if unsafe_name.is_none() {
                        if let Err(e) = safe_relative(&entry.path) {
                            unsafe_name = Some(e);
                        }
                    }
                    entries.push(entry);
                }
                Message::ListEnd { .. } => break,
                other => return Err(unexpected(&other, "list").into()),
            }
        }
        match unsafe_name {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }

    /// Creates a directory (and its parents) on the server.
    pub async fn mkdir(&mut self, path: &str, mode: Option<u32>) -> Result<(), ClientError> {
        match self
            .request(Message::Mkdir {
                path: path.to_string(),
                mode,
            })
            .await?
            .message
        {
            Message::TransferOk { .. } => Ok(()),
            other => Err(unexpected(&other, "mkdir")),
        }
    }

    /// Uploads `local` to `remote`. `progress` is told the bytes done so
    /// far (starting at the resume offset).
    pub async fn put_file(
        &mut self,
        local: &Path,
        remote: &str,
        options: TransferOptions,
        progress: &mut dyn FnMut(u64),
    ) -> Result<TransferReport, TransferError> {
        let mut file = open_source(local)
            .await
            .map_err(TransferError::local(local))?;
        let meta = file.metadata().await.map_err(TransferError::local(local))?;
        if !meta.is_file() {
            return Err(TransferError::Local {
                path: local.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        let size = meta.len();
        let request = PutRequest {
            path: remote.to_string(),
            size,
            mode: options.preserve.then_some(meta.mode() & 0o7777),
            mtime: options.preserve.then_some(meta.mtime()),
            resume: options.resume,
        };
        let ready = match self.request(Message::Put(request)).await?.message {
            Message::TransferReady(ready) => ready,
            other => return Err(unexpected(&other, "put").into()),
        };
        let (offset, hasher) = agree_on_offset(&mut file, &ready, size, local).await?;
        self.send_data(Frame::new(Message::TransferStart { offset }))
            .await?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(TransferError::local(local))?;
        progress(offset);
        let chunk = CHUNK.min(self.hello.max_body as usize).max(1);
        let source = Source::start(file, size - offset, chunk, hasher).await;
        let hasher = self.send_file(source, offset, local, progress).await?;
        let blake3 = hasher.finalize().to_hex().to_string();
        match self.request(Message::FileEnd { blake3 }).await {
            Ok(Frame {
                message: Message::TransferOk { .. },
                ..
            }) => Ok(TransferReport {
                size,
                sent: size - offset,
                resumed_at: offset,
            }),
            Ok(other) => Err(unexpected(&other.message, "file_end").into()),
            Err(ClientError::Remote {
                code: wiresh_proto::ErrorCode::ChecksumMismatch,
                message,
                ..
            }) => Err(TransferError::Checksum(format!(
                "checksum mismatch, the upload was discarded: {message}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends an upload's data from `source` (the file from `done` on),
    /// listening to the server all the while: an error it sends meanwhile
    /// (its disk is full, say) ends the upload with that error, rather
    /// than with the broken connection that follows it. Returns the hash
    /// of the whole file.
    async fn send_file(
        &mut self,
        mut source: Source,
        mut done: u64,
        local: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<blake3::Hasher, TransferError> {
        /// Why the data stopped going out.
        enum Stopped {
            Read(std::io::Error),
            Closed,
        }
        let data = self.conn.sender();
        let (sent, mut sent_rx) = watch::channel(done);
        let mut stall = self.conn.stall_watch(self.transfer_timeout);
        // The data goes out from a task of its own, so that this one can
        // keep reading what the server says.
        let mut pump = AbortOnDrop(tokio::spawn(async move {
            while let Some(body) = source.next().await {
                let body = body.map_err(Stopped::Read)?;
                done += body.len() as u64;
                let frame = Frame::with_body(Message::FileData, body);
                data.send(frame).await.map_err(|_| Stopped::Closed)?;
                sent.send_replace(done);
            }
            Ok(source.finish().await)
        }));
        loop {
            tokio::select! {
                biased;
                frame = self.conn.recv() => match frame {
                    Some(Ok(frame)) => match frame.message {
                        Message::Ping => self.conn.pong(frame.body),
                        Message::Pong => {}
                        other => return Err(unexpected(&other, "an upload").into()),
                    },
                    // A reset (a server killed mid-upload) is a lost connection.
                    Some(Err(e)) => {
                        return Err(ClientError::from_recv(RecvError::Decode(e), DURING).into())
                    }
                    None => return Err(ClientError::Closed(DURING).into()),
                },
                Ok(()) = sent_rx.changed() => progress(*sent_rx.borrow_and_update()),
                () = stall.stalled() => return Err(stalled(self.transfer_timeout).into()),
                pumped = &mut pump.0 => {
                    progress(*sent_rx.borrow());
                    return match pumped {
                        Ok(Ok(hasher)) => Ok(hasher),
                        Ok(Err(Stopped::Read(e))) => Err(TransferError::local(local)(e)),
                        Ok(Err(Stopped::Closed)) => Err(self.why_closed().await.into()),
                        Err(e) => Err(TransferError::local(local)(std::io::Error::other(e))),
                    };
                }
            }
        }
    }

    /// The connection broke while the client was sending: the server's
    /// own error if it sent one before closing, or else the broken
    /// connection.
    async fn why_closed(&mut self) -> ClientError {
        loop {
            match self.conn.recv_within(Duration::from_secs(2)).await {
                Ok(Frame {
                    message: Message::Error { code, message },
                    ..
                }) => {
                    return ClientError::Remote {
                        code,
                        message,
                        started: false,
                    }
                }
                Ok(_) => {}
                Err(_) => return ClientError::Closed(DURING),
            }
        }
    }

    /// Downloads `remote` to the local file `local` (through
    /// `.NAME.wiresh-part` beside it, renamed into place once verified).
    pub async fn get_file(
        &mut self,
        remote: &str,
        local: &Path,
        options: TransferOptions,
        progress: &mut dyn FnMut(u64),
    ) -> Result<TransferReport, TransferError> {
        let Partial {
            name,
            partial,
            path: part,
            dir,
            mut file,
        } = Partial::open(local).await?;
        let have = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let resume_from = if options.resume { have } else { 0 };
        let (ready, size) = match self.request_get(remote, resume_from).await {
            Ok(ready) => ready,
            Err(e) => {
                if have == 0 {
                    let _ = fs::remove_file(&part).await;
                }
                return Err(e);
            }
        };
        let (offset, hasher) = agree_on_offset(&mut file, &ready, size, &part).await?;
        self.send_data(Frame::new(Message::TransferStart { offset }))
            .await?;
        let positioned = async {
            file.set_len(offset).await?;
            file.seek(SeekFrom::Start(offset)).await
        };
        positioned.await.map_err(TransferError::local(&part))?;
        progress(offset);
        let mut sink = Sink::start(file, hasher).await;
        let received = self
            .receive_file(&mut sink, offset, size, &part, progress)
            .await;
        // Whatever happened, what was received is on disk (for a resume)
        // and the partial's lock is released before this returns.
        let finished = sink.finish().await;
        let (done, expected) = match received {
            Ok(received) => received,
            Err(e) => {
                if matches!(e, TransferError::Unsafe(_)) {
                    drop(finished);
                    let _ = fs::remove_file(&part).await;
                }
                return Err(e);
            }
        };
        let (file, hasher) = finished.map_err(TransferError::local(&part))?;
        let actual = hasher.finalize().to_hex().to_string();
        if let Some(mismatch) = mismatch(remote, (done, size), (&actual, &expected)) {
            drop(file);
            let _ = fs::remove_file(&part).await;
            return Err(mismatch);
        }
        let (mode, mtime) = if options.preserve {
            (ready.mode, ready.mtime)
        } else {
            (None, None)
        };
        publish(file, dir, partial, name, mode, mtime)
            .await
            .map_err(TransferError::local(local))?;
        Ok(TransferReport {
            size,
            sent: size - offset,
            resumed_at: offset,
        })
    }

    /// Asks for `remote` from `resume_from` on; the server's answer, and
    /// the size it announces.
    async fn request_get(
        &mut self,
        remote: &str,
        resume_from: u64,
    ) -> Result<(TransferReady, u64), TransferError> {
        let request = Message::Get {
            path: remote.to_string(),
            resume_from,
        };
        let ready = match self.request(request).await? {
            Frame {
                message: Message::TransferReady(ready),
                ..
            } => ready,
            other => return Err(unexpected(&other.message, "get").into()),
        };
        let size = ready
            .size
            .ok_or_else(|| TransferError::Unsafe("transfer_ready for get has no size".into()))?;
        Ok((ready, size))
    }

    /// Receives a download's data into `sink`, from `done` on, never more
    /// than the `size` announced; returns how much was received in all and
    /// the BLAKE3 the server sent at the end.
    async fn receive_file(
        &mut self,
        sink: &mut Sink,
        mut done: u64,
        size: u64,
        part: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u64, String), TransferError> {
        loop {
            let frame = self.next_file_frame().await?;
            match frame.message {
                Message::FileData => {
                    done += frame.body.len() as u64;
                    if done > size {
                        return Err(TransferError::Unsafe(format!(
                            "the server sent more than the {size} bytes it announced"
                        )));
                    }
                    sink.write(frame.body)
                        .await
                        .map_err(TransferError::local(part))?;
                    progress(done);
                }
                Message::FileEnd { blake3 } => return Ok((done, blake3)),
                other => return Err(unexpected(&other, "a download").into()),
            }
        }
    }
}

/// A download's partial file, `.NAME.wiresh-part` beside its final name,
/// open (and locked) inside a handle on its directory.
struct Partial {
    /// The final name.
    name: OsString,
    /// The partial's name.
    partial: OsString,
    /// The partial's path, for messages and removal.
    path: PathBuf,
    /// The directory both names are in.
    dir: Arc<OwnedFd>,
    file: File,
}

impl Partial {
    /// Opens (creating) the partial file for a download to `local`.
    async fn open(local: &Path) -> Result<Partial, TransferError> {
        let name = local
            .file_name()
            .map(OsString::from)
            .ok_or_else(|| TransferError::Local {
                path: local.to_path_buf(),
                source: std::io::Error::other("names no file"),
            })?;
        let partial = partial_name(&name);
        let path = local.with_file_name(&partial);
        let dir_path = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = unblock(move || open_dir(&dir_path))
            .await
            .map_err(TransferError::local(&path))?;
        let dir = Arc::new(dir);
        let (at, named) = (dir.clone(), partial.clone());
        let file = unblock(move || open_partial(&at, &named))
            .await
            .map_err(TransferError::local(&path))?;
        Ok(Partial {
            name,
            partial,
            path,
            dir,
            file: File::from_std(file),
        })
    }
}

/// The error for a download that is not what was announced: `received`
/// is (bytes received, bytes announced), `hashes` (BLAKE3 of what was
/// received, BLAKE3 sent).
fn mismatch(remote: &str, received: (u64, u64), hashes: (&str, &str)) -> Option<TransferError> {
    let ((done, size), (actual, expected)) = (received, hashes);
    if done != size {
        return Some(TransferError::Checksum(format!(
            "{remote}: received {done} of {size} bytes; nothing was written"
        )));
    }
    (actual != expected.to_ascii_lowercase()).then(|| {
        TransferError::Checksum(format!(
            "{remote}: checksum mismatch (BLAKE3 {actual} received, {expected} sent); \
             nothing was written"
        ))
    })
}

/// Decides where a transfer starts: at the offered offset if the other
/// side's prefix hash matches ours, else from the beginning. Returns the
/// offset and the hasher positioned after it.
async fn agree_on_offset(
    file: &mut File,
    ready: &TransferReady,
    size: u64,
    path: &Path,
) -> Result<(u64, blake3::Hasher), TransferError> {
    if ready.offset == 0 || ready.offset > size {
        return Ok((0, blake3::Hasher::new()));
    }
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len < ready.offset {
        return Ok((0, blake3::Hasher::new()));
    }
    let hasher = hash_prefix(file, ready.offset)
        .await
        .map_err(TransferError::local(path))?;
    if ready.prefix_blake3.as_deref() == Some(hasher.finalize().to_hex().as_str()) {
        Ok((ready.offset, hasher))
    } else {
        Ok((0, blake3::Hasher::new()))
    }
}

/// The error for a server that took nothing for `limit`.
fn stalled(limit: Duration) -> ClientError {
    ClientError::Timeout(format!(
        "the server took nothing for {limit:?} during a transfer; the connection seems dead \
         (--transfer-timeout sets how long to wait)"
    ))
}

fn unexpected(message: &Message, during: &str) -> ClientError {
    super::not_expected(message.clone(), &format!("an answer to {during}"))
}

/// Whether a local path is a directory (following symlinks).
pub async fn is_local_dir(path: &Path) -> bool {
    fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Creates a local directory, with `mode`'s permission bits when
/// preserving (never set-user-ID, set-group-ID or sticky bits from the
/// server).
pub async fn make_local_dir(path: &Path, mode: Option<u32>) -> Result<(), TransferError> {
    fs::create_dir_all(path)
        .await
        .map_err(TransferError::local(path))?;
    if let Some(mode) = mode {
        let current = fs::metadata(path)
            .await
            .map_err(TransferError::local(path))?
            .mode();
        let mode = mode_to_apply(mode, current, true);
        fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(TransferError::local(path))?;
    }
    Ok(())
}
