//! What a fan-out shows at the end, or host by host as each finishes:
//! groups of hosts with identical output (`--gather`), diffs against the
//! largest group (`--diff`), JSON lines (`--json`), and the summary.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::HumanBytes;
use serde::Serialize;

use super::capture::{Captured, Lines};
use super::spool::{NotKept, Spool, Spooled};
use super::{Kind, Outcome, Verdict};
use crate::hostlist::{fold, natural_cmp};
use crate::untrusted::TerminalFilter;

/// Outputs larger than this are not diffed (the diff would hold both in
/// memory); `--outdir` and `diff -u` do it better.
const DIFF_LIMIT: u64 = 4 * 1024 * 1024;

/// Why the groups or a JSON line could not be written out.
#[derive(Debug)]
pub(crate) enum PrintError {
    /// Local stdout (or stderr) would not take them.
    Output(io::Error),
    /// The spool could not be read back.
    Spool(NotKept),
}

impl From<io::Error> for PrintError {
    fn from(e: io::Error) -> PrintError {
        PrintError::Output(e)
    }
}

impl From<NotKept> for PrintError {
    fn from(e: NotKept) -> PrintError {
        PrintError::Spool(e)
    }
}

/// How the groups are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupStyle {
    /// Each group after the first as a diff against the first.
    pub(crate) diff: bool,
    /// Filter stdout and stderr for a terminal.
    pub(crate) filter: (bool, bool),
    /// The `--max-output` that cut what was kept, for the marker.
    pub(crate) max_output: Option<u64>,
}

/// One host, finished.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its name.
    pub(crate) name: String,
    /// Where it was reached (`host:port`).
    pub(crate) target: String,
    /// What happened.
    pub(crate) outcome: Outcome,
    /// From launch to end, connecting included.
    pub(crate) duration: Duration,
    /// What it printed.
    pub(crate) captured: Captured,
}

/// The summary line of the hosts whose output `--max-output` cut (none
/// when there are none).
pub(crate) fn truncated_line(truncated: &[&str], max_output: Option<u64>) -> String {
    if truncated.is_empty() {
        return String::new();
    }
    let at = max_output.map_or(String::new(), |n| format!(" at {}", HumanBytes(n)));
    format!(
        "  output truncated{at} (--max-output) ({}): {}\n",
        truncated.len(),
        fold(truncated)
    )
}

/// The summary: counts on the first line, then each outcome's hosts as a
/// folded host list, failures grouped by status.
pub(crate) fn summary<'a>(hosts: impl IntoIterator<Item = (&'a str, Verdict)>) -> String {
    let mut groups: HashMap<Verdict, Vec<&str>> = HashMap::new();
    let mut total = 0;
    for (name, verdict) in hosts {
        groups.entry(verdict).or_default().push(name);
        total += 1;
    }
    let mut groups: Vec<(Verdict, Vec<&str>)> = groups.into_iter().collect();
    groups.sort_by(|(a, ha), (b, hb)| {
        (a.kind, std::cmp::Reverse(ha.len()), &a.label).cmp(&(
            b.kind,
            std::cmp::Reverse(hb.len()),
            &b.label,
        ))
    });
    let mut counts: Vec<(Kind, usize)> = Vec::new();
    for (verdict, hosts) in &groups {
        match counts.last_mut() {
            Some((kind, n)) if *kind == verdict.kind => *n += hosts.len(),
            _ => counts.push((verdict.kind, hosts.len())),
        }
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.as_str().replace('_', " ")))
        .collect();
    let mut text = format!(
        "wiresh: {total} host{}: {}\n",
        if total == 1 { "" } else { "s" },
        counts.join(", ")
    );
    for (verdict, hosts) in &groups {
        text.push_str(&format!(
            "  {} ({}): {}\n",
            match verdict.kind {
                Kind::Ok => "ok",
                _ => &verdict.label,
            },
            hosts.len(),
            fold(hosts)
        ));
    }
    text
}

/// Hosts whose command ran, grouped by identical stdout, stderr and status,
/// largest group first.
pub(crate) fn groups(hosts: &[Finished]) -> Vec<Vec<&Finished>> {
    type Key = (blake3::Hash, blake3::Hash, String, bool, bool);
    let mut by_key: HashMap<Key, Vec<&Finished>> = HashMap::new();
    for host in hosts {
        let (Outcome::Exited(_), Some((out, err))) = (&host.outcome, &host.captured.spooled) else {
            continue;
        };
        let label = host.outcome.verdict().label;
        let key = (out.digest(), err.digest(), label, out.cut, err.cut);
        by_key.entry(key).or_default().push(host);
    }
    let mut groups: Vec<Vec<&Finished>> = by_key.into_values().collect();
    for group in &mut groups {
        group.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    }
    groups.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then_with(|| natural_cmp(&a[0].name, &b[0].name))
    });
    groups
}

/// The header of a group: `web[01-03,07] (4 hosts, exit 0)`.
fn header(group: &[&Finished]) -> String {
    let names: Vec<&str> = group.iter().map(|h| h.name.as_str()).collect();
    let n = group.len();
    format!(
        "{} ({n} host{}, {}{})",
        fold(&names),
        if n == 1 { "" } else { "s" },
        group[0].outcome.verdict().label,
        if group[0].captured.truncated() {
            ", truncated"
        } else {
            ""
        }
    )
}

/// The line that ends a stream `--max-output` cut.
fn cut_marker(max_output: Option<u64>) -> String {
    let kept = max_output.map_or(String::new(), |n| format!(" after {}", HumanBytes(n)));
    format!("[wiresh: output cut{kept}: raise --max-output to keep more]\n")
}

/// Writes `pieces` to `out`, through a terminal filter when `filter`;
/// returns the last byte written.
fn write_pieces(
    pieces: impl Iterator<Item = Result<Vec<u8>, NotKept>>,
    filter: bool,
    out: &mut dyn Write,
) -> Result<u8, PrintError> {
    let mut filter = filter.then(TerminalFilter::new);
    let mut last = b'\n';
    let mut write = |bytes: &[u8], out: &mut dyn Write| -> io::Result<()> {
        out.write_all(bytes)?;
        last = bytes.last().copied().unwrap_or(last);
        Ok(())
    };
    for piece in pieces {
        let piece = piece?;
        match &mut filter {
            Some(f) => write(&f.push(&piece), out)?,
            None => write(&piece, out)?,
        }
    }
    if let Some(f) = &mut filter {
        write(&f.finish(), out)?;
    }
    Ok(last)
}

fn streams(host: &Finished) -> (&Spooled, &Spooled) {
    let (out, err) = host
        .captured
        .spooled
        .as_ref()
        .expect("grouped hosts are spooled");
    (out, err)
}

/// Prints the groups: each header, then its stdout on `out`; its stderr
/// goes to `err` as lines prefixed with the group's hosts. With `diff`,
/// every group after the first shows its stdout as a unified diff against
/// the first's. A stream `--max-output` cut ends with a marker.
pub(crate) fn print_groups(
    groups: &[Vec<&Finished>],
    spool: &Spool,
    style: GroupStyle,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), PrintError> {
    let rule = "-".repeat(15);
    for (i, group) in groups.iter().enumerate() {
        let header = header(group);
        writeln!(out, "{rule}\n{header}\n{rule}")?;
        let (stdout, stderr) = streams(group[0]);
        if style.diff && i > 0 {
            let (base, _) = streams(groups[0][0]);
            let text = diff_text(&header, &groups[0], base, stdout, spool)?;
            write_pieces(std::iter::once(Ok(text)), style.filter.0, out)?;
        } else {
            let last = write_pieces(stdout.pieces(spool), style.filter.0, out)?;
            // The next header starts on a line of its own.
            if last != b'\n' {
                out.write_all(b"\n")?;
            }
        }
        if stdout.cut {
            out.write_all(cut_marker(style.max_output).as_bytes())?;
        }
        out.flush()?;
        if stderr.len > 0 || stderr.cut {
            let names: Vec<&str> = group.iter().map(|h| h.name.as_str()).collect();
            let mut lines = Lines::new(format!("{}: ", fold(&names)).into_bytes().into());
            let mut filter = style.filter.1.then(TerminalFilter::new);
            for piece in stderr.pieces(spool) {
                let piece = piece?;
                let piece = match &mut filter {
                    Some(f) => f.push(&piece),
                    None => piece,
                };
                err.write_all(&lines.push(&piece))?;
            }
            if let Some(f) = &mut filter {
                err.write_all(&lines.push(&f.finish()))?;
            }
            err.write_all(&lines.finish())?;
            if stderr.cut {
                err.write_all(&lines.push(cut_marker(style.max_output).as_bytes()))?;
            }
            err.flush()?;
        }
    }
    Ok(())
}

/// The unified diff of `this` against `base`, or a line saying why not.
fn diff_text(
    header: &str,
    base_group: &[&Finished],
    base: &Spooled,
    this: &Spooled,
    spool: &Spool,
) -> Result<Vec<u8>, NotKept> {
    let (Some(old), Some(new)) = (
        base.read_all(spool, DIFF_LIMIT)?,
        this.read_all(spool, DIFF_LIMIT)?,
    ) else {
        return Ok(format!(
            "(not diffed: {} and {} bytes, over {DIFF_LIMIT}; use --outdir and diff)\n",
            base.len, this.len
        )
        .into_bytes());
    };
    let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
    let base_names: Vec<&str> = base_group.iter().map(|h| h.name.as_str()).collect();
    let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&fold(&base_names), header)
        .to_string();
    Ok(text.into_bytes())
}

/// The fixed fields of a host's JSON line (the output follows them).
#[derive(Serialize)]
struct JsonHead<'a> {
    host: &'a str,
    target: &'a str,
    status: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    error: Option<JsonError>,
    duration_ms: u128,
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// `--max-output` cut what was kept: `stdout` and `stderr` hold less
    /// than the byte counts say.
    truncated: bool,
}

#[derive(Serialize)]
struct JsonError {
    kind: &'static str,
    message: String,
}

/// Writes one host as one JSON line: host, status, exit code or signal
/// or error, duration, byte counts, whether its output was truncated, and
/// its stdout and stderr as strings (invalid UTF-8 replaced), streamed
/// from the spool.
pub(crate) fn write_json(
    host: &Finished,
    spool: &Spool,
    out: &mut dyn Write,
) -> Result<(), PrintError> {
    let verdict = host.outcome.verdict();
    let (exit_code, signal, timed_out) = match &host.outcome {
        Outcome::Exited(s) => (s.code, s.signal, s.timed_out),
        _ => (None, None, false),
    };
    let message = match &host.outcome {
        Outcome::Unreachable(e) | Outcome::Failed(e) => Some(e.to_string()),
        Outcome::NotKept(e) => Some(e.to_string()),
        Outcome::NotRun => Some("not run (interrupted, or --fail-fast after a failure)".into()),
        Outcome::Exited(_) => None,
    };
    let error = host
        .outcome
        .error_kind()
        .zip(message)
        .map(|(kind, message)| JsonError {
            kind: kind.as_str(),
            message,
        });
    let head = JsonHead {
        host: &host.name,
        target: &host.target,
        status: verdict.kind.as_str(),
        exit_code,
        signal,
        timed_out,
        error,
        duration_ms: host.duration.as_millis(),
        stdout_bytes: host.captured.out_len,
        stderr_bytes: host.captured.err_len,
        truncated: host.captured.truncated(),
    };
    let mut line = serde_json::to_vec(&head).map_err(io::Error::other)?;
    line.pop(); // the closing brace: the output comes first
    out.write_all(&line)?;
    let empty = Spooled::default();
    let (stdout, stderr) = match &host.captured.spooled {
        Some((o, e)) => (o, e),
        None => (&empty, &empty),
    };
    for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
        write!(out, ",\"{name}\":\"")?;
        let mut text = Utf8Pieces::default();
        for piece in stream.pieces(spool) {
            write_escaped(&text.push(&piece?), out)?;
        }
        write_escaped(&text.finish(), out)?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"}\n")?;
    Ok(out.flush()?)
}

/// Writes `text` as the inside of a JSON string.
fn write_escaped(text: &str, out: &mut dyn Write) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let quoted = serde_json::to_string(text).map_err(io::Error::other)?;
    out.write_all(&quoted.as_bytes()[1..quoted.len() - 1])
}

/// Decodes bytes that come in pieces as UTF-8, replacing invalid
/// sequences, without breaking a character cut between two pieces.
#[derive(Debug, Default)]
struct Utf8Pieces {
    carry: Vec<u8>,
}

impl Utf8Pieces {
    fn push(&mut self, piece: &[u8]) -> String {
        self.carry.extend_from_slice(piece);
        let mut text = String::new();
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after; // cut short: wait for the next piece
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        text
    }

    fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.carry);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;
    use wiresh_proto::ExitStatus;

    fn exited(code: i32) -> Outcome {
        Outcome::Exited(ExitStatus {
            code: Some(code),
            ..Default::default()
        })
    }

    #[test]
    fn utf8_cut_between_pieces_survives() {
        let text = "héllo wörld €";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut d = Utf8Pieces::default();
            let mut got = d.push(&bytes[..cut]);
            got += &d.push(&bytes[cut..]);
            got += &d.finish();
            assert_eq!(got, text, "cut at {cut}");
        }
        let mut d = Utf8Pieces::default();
        assert_eq!(d.push(b"a\xffb") + &d.finish(), "a\u{fffd}b");
    }

    #[test]
    fn summary_groups_by_status_and_folds() {
        let refused = || {
            Outcome::Unreachable(ClientError::Connect {
                target: "x".into(),
                source: io::ErrorKind::ConnectionRefused.into(),
                hint: "",
                unknown_host: false,
            })
        };
        let hosts = [
            ("web1", exited(0)),
            ("web2", exited(0)),
            ("web3", exited(3)),
            ("web4", refused()),
            ("web5", exited(0)),
            ("web6", exited(3)),
            ("web7", exited(1)),
        ];
        let text = summary(hosts.iter().map(|(n, o)| (*n, o.verdict())));
        assert_eq!(
            text,
            "wiresh: 7 hosts: 3 ok, 3 failed, 1 unreachable\n  \
             ok (3): web[1-2,5]\n  \
             exit 3 (2): web[3,6]\n  \
             exit 1 (1): web7\n  \
             unreachable (connection refused) (1): web4\n"
        );
    }
}
