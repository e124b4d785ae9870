//! The audit log (`--audit-log FILE`): one JSON line per command and per
//! file transfer, appended, never rewritten.
//!
//! A line that cannot be written is reported in the server log, and the
//! server then refuses new commands and transfers (fail closed): activity
//! that cannot be audited does not happen.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tracing::error;

use crate::error::SetupError;
use crate::home::append_private_file;

/// One audited action.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// When it ended, RFC 3339 UTC.
    pub time: String,
    /// Peer address.
    pub peer: String,
    /// Who authenticated: a key id derived from the token, never the token.
    pub identity: &'a str,
    /// `exec`, `put` or `get`.
    pub action: &'a str,
    /// The command line, argv, or file path.
    pub target: &'a str,
    /// Whether the command ran on a pty (`exec -t`, `wiresh shell`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pty: bool,
    /// Exit code, when the command exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal that killed the command, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the command hit its timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Outcome in a word: `ok`, `failed`, `refused`, ...
    pub outcome: &'a str,
    /// Wall-clock duration.
    pub duration_ms: u64,
    /// Bytes received from the client (stdin, uploaded data).
    pub bytes_in: u64,
    /// Bytes sent to the client (stdout and stderr, downloaded data).
    pub bytes_out: u64,
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<File>,
    broken: AtomicBool,
}

impl AuditLog {
    /// Opens (creating, mode 600) `path` for appending.
    pub fn open(path: &Path) -> Result<AuditLog, SetupError> {
        let file = append_private_file(path).map_err(|source| SetupError::File {
            action: "open",
            what: "audit log",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(AuditLog {
            file: Mutex::new(file),
            broken: AtomicBool::new(false),
        })
    }

    /// Whether a write has failed (and activity must be refused).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Appends one record as one line in one write.
    pub fn record(&self, record: &Record<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot serialise an audit record: {e}");
                self.broken.store(true, Ordering::Release);
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            error!("audit log write failed: {e}; refusing new commands until restarted");
            self.broken.store(true, Ordering::Release);
        }
    }
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
}
