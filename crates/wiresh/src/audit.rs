//! The audit log (`--audit-log FILE`) of both servers: JSON lines,
//! appended, never rewritten. A command or transfer gets a `start` line
//! before it runs and an `end` line when it ends, sharing an `id`; a
//! refused one gets an `end` line only.
//!
//! A handler opens an action with [`begin`], which writes the `start` line
//! and returns a [`Record`]; [`Record::end`] writes the `end` line with its
//! [`Outcome`], and a record dropped unended (an early return, a panic, a
//! connection dropped) writes `aborted`, so no start is left without an end.
//!
//! Activity that cannot be audited does not happen: when a line cannot be
//! written — a full disk, the file removed or replaced — the error is
//! logged and the server refuses new commands and transfers until it is
//! restarted (fail closed), and since the `start` line comes first, the
//! command whose line failed does not run. A line is written whole or not
//! at all: a failed write is cut back off the file, and a torn last line
//! left by a crash is cut off when the log is opened.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tracing::{error, warn};

use crate::error::SetupError;
use crate::home::append_private_file;

/// One line of the log.
#[derive(Debug, Serialize)]
struct Line<'a> {
    /// When it happened, RFC 3339 UTC.
    time: String,
    /// `start` or `end`.
    event: Event,
    /// The same for the `start` and `end` of one action (within one run of
    /// the server).
    id: u64,
    /// Peer address.
    peer: String,
    /// Who authenticated (see [`Action::identity`]).
    identity: &'a str,
    /// What was done.
    action: Verb,
    /// The command line, argv, or file path.
    target: &'a str,
    /// Whether the command ran on a pty (`exec -t`, `wiresh shell`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pty: bool,
    /// Exit code, when the command exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    /// Signal that killed the command, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    /// Whether the command hit its timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    timed_out: bool,
    /// How it went, in a word.
    outcome: Outcome,
    /// Wall-clock duration.
    duration_ms: u64,
    /// Bytes received from the client (stdin, uploaded data).
    bytes_in: u64,
    /// Bytes sent to the client (stdout and stderr, downloaded data).
    bytes_out: u64,
}

/// Which line of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    Start,
    End,
}

/// What an action does, as the `action` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// A command (either listener).
    Exec,
    /// An upload.
    Put,
    /// A download.
    Get,
    /// A directory made.
    Mkdir,
}

/// How an action went, as the `outcome` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// On a `start` line: it is about to run.
    #[serde(rename = "started")]
    Started,
    /// A command ran to its end (whatever its exit status).
    #[serde(rename = "finished")]
    Finished,
    /// A command ended because its client cancelled it.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// The connection ended before the action did.
    #[serde(rename = "aborted")]
    Aborted,
    /// Turned down before it started (one `end` line), or a file request
    /// turned down once under way.
    #[serde(rename = "refused")]
    Refused,
    /// A command that could not be started.
    #[serde(rename = "not started")]
    NotStarted,
    /// A file request carried out.
    #[serde(rename = "ok")]
    Succeeded,
}

/// Who does what, for both lines of an action.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Who authenticated: a key's name, or a key id derived from the token
    /// (never the token); on the legacy listener the local user owning the
    /// peer's socket when it is known.
    pub identity: &'a str,
    /// What is done.
    pub verb: Verb,
    /// The command line, argv, or file path.
    pub target: &'a str,
    /// Whether the command runs on a pty.
    pub pty: bool,
}

/// How an action ended, for its `end` line.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    /// How it went.
    pub outcome: Outcome,
    /// Exit code, when a command exited.
    pub code: Option<i32>,
    /// Signal that killed a command, if one did.
    pub signal: Option<i32>,
    /// Whether a command hit its timeout.
    pub timed_out: bool,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
}

impl Ending {
    /// An ending with `outcome` and nothing else to say.
    pub fn of(outcome: Outcome) -> Ending {
        Ending {
            outcome,
            code: None,
            signal: None,
            timed_out: false,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl<'a> Line<'a> {
    /// The line for one event of an action.
    fn new(
        event: Event,
        id: u64,
        action: &Action<'a>,
        ending: &Ending,
        duration_ms: u64,
    ) -> Line<'a> {
        Line {
            time: rfc3339(SystemTime::now()),
            event,
            id,
            peer: action.peer.to_string(),
            identity: action.identity,
            action: action.verb,
            target: action.target,
            pty: action.pty,
            code: ending.code,
            signal: ending.signal,
            timed_out: ending.timed_out,
            outcome: ending.outcome,
            duration_ms,
            bytes_in: ending.bytes_in,
            bytes_out: ending.bytes_out,
        }
    }
}

/// Records that `action` starts, before it does, in `log` if there is one;
/// the [`Record`] writes its end. An error means it must not run.
pub fn begin(log: Option<&Arc<AuditLog>>, action: &Action<'_>) -> Result<Record, AuditError> {
    let Some(log) = log else {
        return Ok(Record { open: None });
    };
    let id = log.next_id();
    log.write(&Line::new(
        Event::Start,
        id,
        action,
        &Ending::of(Outcome::Started),
        0,
    ))?;
    Ok(Record {
        open: Some(Box::new(Open {
            log: log.clone(),
            id,
            peer: action.peer,
            identity: action.identity.to_string(),
            verb: action.verb,
            target: action.target.to_string(),
            pty: action.pty,
            since: Instant::now(),
        })),
    })
}

/// An action whose `start` line is written (or that has no log to be
/// written in). [`Record::end`] writes its `end` line; dropped unended, it
/// writes `aborted`.
#[derive(Debug)]
#[must_use]
pub struct Record {
    open: Option<Box<Open>>,
}

/// What a [`Record`] needs for the `end` line: the action, owned, since the
/// handler that began it goes on using what it borrowed from.
#[derive(Debug)]
struct Open {
    log: Arc<AuditLog>,
    id: u64,
    peer: SocketAddr,
    identity: String,
    verb: Verb,
    target: String,
    pty: bool,
    since: Instant,
}

impl Open {
    fn end(&self, ending: &Ending) {
        let action = Action {
            peer: self.peer,
            identity: &self.identity,
            verb: self.verb,
            target: &self.target,
            pty: self.pty,
        };
        let duration_ms = self.since.elapsed().as_millis() as u64;
        let _ = self.log.write(&Line::new(
            Event::End,
            self.id,
            &action,
            ending,
            duration_ms,
        ));
    }
}

impl Record {
    /// Records how the action ended; its duration is the time since
    /// [`begin`].
    pub fn end(mut self, ending: Ending) {
        if let Some(open) = self.open.take() {
            open.end(&ending);
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            open.end(&Ending::of(Outcome::Aborted));
        }
    }
}

/// Why a line could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A write failed earlier; nothing more is written.
    #[error("an earlier write failed")]
    Broken,
    /// The file at the log's path is gone or is another file.
    #[error("the audit log {0} was removed or replaced")]
    Replaced(PathBuf),
    /// Writing failed.
    #[error("cannot write the audit log {path}: {source}")]
    Write {
        /// The log.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The next action id, for every audit log this process opens: a reload
/// opens the log anew while the legacy listener and the connections already
/// open keep writing through the handle they started with, and ids must
/// not repeat within one run of the server.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Held while a line is appended (and, on failure, cut back), by every
/// audit log this process opens: two handles on one file (before and after
/// a reload) must not interleave their lines, nor cut back each other's.
static APPENDING: Mutex<()> = Mutex::new(());

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    /// Device and inode of the file opened, to notice it being replaced.
    identity: (u64, u64),
    broken: AtomicBool,
}

impl AuditLog {
    /// Opens (creating, mode 600) `path` for appending, cutting off a torn
    /// last line a crash may have left.
    pub fn open(path: &Path) -> Result<AuditLog, SetupError> {
        let failed = |action, source| SetupError::File {
            action,
            what: "audit log",
            path: path.to_path_buf(),
            source,
        };
        let file = append_private_file(path).map_err(|e| failed("open", e))?;
        if let Some(torn) = repair_tail(path).map_err(|e| failed("repair", e))? {
            warn!(
                "audit log {}: cut off a torn last line of {torn} bytes (left by a crash or a full disk)",
                path.display()
            );
        }
        let meta = file.metadata().map_err(|e| failed("read", e))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            identity: (meta.dev(), meta.ino()),
            broken: AtomicBool::new(false),
        })
    }

    /// Whether a write has failed (and activity must be refused).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// A new id for an action's `start` and `end` lines.
    fn next_id(&self) -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// Records an action refused before it started (one line).
    pub fn refused(&self, action: &Action<'_>) {
        let ending = Ending::of(Outcome::Refused);
        let _ = self.write(&Line::new(Event::End, self.next_id(), action, &ending, 0));
    }

    /// Appends one line, whole or not at all. On failure the log is marked
    /// broken (and the error logged).
    fn write(&self, line: &Line<'_>) -> Result<(), AuditError> {
        if self.is_broken() {
            return Err(AuditError::Broken);
        }
        let result = self.append(line);
        if let Err(e) = &result {
            error!("{e}; refusing new commands and transfers until the server is restarted");
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    fn append(&self, line: &Line<'_>) -> Result<(), AuditError> {
        let write_error = |source| AuditError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(line).map_err(|e| write_error(e.into()))?;
        bytes.push(b'\n');
        let _appending = APPENDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {}
            _ => return Err(AuditError::Replaced(self.path.clone())),
        }
        let before = file.metadata().map_err(write_error)?.len();
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.flush()) {
            // A part of the line may have reached the file: cut it off.
            let _ = file.set_len(before);
            return Err(write_error(e));
        }
        Ok(())
    }
}

/// Cuts off a last line without its newline; returns its length if there
/// was one.
fn repair_tail(path: &Path) -> std::io::Result<Option<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    // Look back for the last newline, a block at a time.
    let mut end = len;
    let mut block = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep == len {
                return Ok(None);
            }
            file.set_len(keep)?;
            return Ok(Some(len - keep));
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(Some(len))
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T06:45:20.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let at = |s| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_675_520_123), "2026-11-26T06:45:20.123Z");
    }

    fn exec(target: &str) -> Action<'_> {
        Action {
            peer: "127.0.0.1:1".parse().unwrap(),
            identity: "token:0",
            verb: Verb::Exec,
            target,
            pty: false,
        }
    }

    fn line(id: u64) -> Line<'static> {
        let ending = Ending {
            code: Some(0),
            ..Ending::of(Outcome::Finished)
        };
        Line::new(Event::End, id, &exec("true"), &ending, 1)
    }

    /// Every line of the log at `path`, parsed.
    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    }

    /// A record ends once, with its outcome; dropped unended it says
    /// `aborted`; without a log it writes nothing and refuses nothing.
    #[test]
    fn a_record_ends_once_and_aborted_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let record = begin(Some(&log), &exec("exit 3")).unwrap();
        record.end(Ending {
            code: Some(3),
            bytes_out: 5,
            ..Ending::of(Outcome::Finished)
        });
        drop(begin(Some(&log), &exec("sleep 1000")).unwrap());
        begin(Some(&log), &exec("nope"))
            .unwrap()
            .end(Ending::of(Outcome::NotStarted));
        let put = Action {
            verb: Verb::Put,
            ..exec("a/file")
        };
        begin(Some(&log), &put)
            .unwrap()
            .end(Ending::of(Outcome::Succeeded));
        let lines = lines(&path);
        let fields = |i: usize| {
            let l = &lines[i];
            (
                l["event"].clone(),
                l["outcome"].clone(),
                l["target"].clone(),
            )
        };
        let expected = [
            ("start", "started", "exit 3"),
            ("end", "finished", "exit 3"),
            ("start", "started", "sleep 1000"),
            ("end", "aborted", "sleep 1000"),
            ("start", "started", "nope"),
            ("end", "not started", "nope"),
            ("start", "started", "a/file"),
            ("end", "ok", "a/file"),
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:?}");
        for (i, (event, outcome, target)) in expected.into_iter().enumerate() {
            assert_eq!(fields(i), (event.into(), outcome.into(), target.into()));
        }
        assert_eq!(lines[0]["id"], lines[1]["id"]);
        assert_ne!(lines[1]["id"], lines[3]["id"]);
        assert_eq!(
            (lines[1]["code"].clone(), lines[1]["bytes_out"].clone()),
            (3.into(), 5.into())
        );
        assert_eq!(lines[7]["action"], "put");
        // Without a log: nothing to write, nothing to refuse.
        begin(None, &exec("true"))
            .unwrap()
            .end(Ending::of(Outcome::Finished));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 8);
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"id\":1}\n{\"id\":2,\"bytes_out\":").unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.write(&line(3)).unwrap();
        let lines = lines(&path);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[1]["id"], 3);
        // A file that is one torn line becomes empty.
        std::fs::write(&path, "{\"id\":").unwrap();
        assert_eq!(repair_tail(&path).unwrap(), Some(6));
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    /// A reload opens the log again while the legacy listener and the
    /// connections already open write through the first handle: the ids of
    /// both go on, never start over.
    #[test]
    fn ids_do_not_repeat_across_handles_on_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let before = Arc::new(AuditLog::open(&path).unwrap());
        let _first = begin(Some(&before), &exec("true")).unwrap();
        let reloaded = Arc::new(AuditLog::open(&path).unwrap());
        let _second = begin(Some(&reloaded), &exec("true")).unwrap();
        let _third = begin(Some(&before), &exec("true")).unwrap();
        let lines = lines(&path);
        let ids: std::collections::HashSet<u64> =
            lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), 3, "{lines:?}");
    }

    #[test]
    fn a_removed_log_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        log.write(&line(1)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(log.write(&line(2)), Err(AuditError::Replaced(_))));
        assert!(log.is_broken());
        // A new file at the same path is not the log either, and nothing
        // more may start.
        std::fs::write(&path, "").unwrap();
        assert!(matches!(log.write(&line(3)), Err(AuditError::Broken)));
        assert!(matches!(
            begin(Some(&log), &exec("true")),
            Err(AuditError::Broken)
        ));
    }
}
