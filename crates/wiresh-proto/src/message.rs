//! The messages wiresh peers exchange, as carried in frame headers.
//!
//! Each message is a JSON object whose `type` field names the variant; the
//! codec adds `body_len`. Messages that carry bytes (stdin, stdout, stderr,
//! ping, pong) carry them in the frame body, never inside the JSON, so binary
//! output needs no escaping and costs nothing to parse.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// Declares [`Message`] from one list in which each variant's wire name is
/// written once, and derives from that list serde's `rename` of every
/// variant, [`Message::TYPES`], [`Message::type_name`] and
/// [`Message::carries_body`], so they cannot drift apart.
///
/// Each variant is written `Variant = "wire_name"` (with its tuple or struct
/// fields, if any, before the `=`), then `+ body` if its frames may carry a
/// body.
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum Message {
            $(
                $(#[$vmeta:meta])*
                $variant:ident $( ( $($tuple:tt)* ) )? $( { $($fields:tt)* } )?
                    = $wire:literal $( + $body:ident )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum Message {
            $(
                $(#[$vmeta])*
                #[serde(rename = $wire)]
                $variant $( ( $($tuple)* ) )? $( { $($fields)* } )?,
            )*
        }

        impl Message {
            /// Every `type` value this version understands, so a decoder can
            /// tell an unknown type from a malformed known one.
            pub const TYPES: &'static [&'static str] = &[$($wire),*];

            /// Whether frames of this type may have a non-empty body.
            pub fn carries_body(type_name: &str) -> bool {
                match type_name {
                    $( $wire => carries_body!($($body)?), )*
                    _ => false,
                }
            }

            /// The `type` string of this message.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( Message::$variant { .. } => $wire, )*
                }
            }
        }
    };
}

/// The body flag of one [`messages!`] entry: `+ body` or nothing. Any other
/// word after `+` is a compile error, so a typo cannot silently mean "no".
macro_rules! carries_body {
    () => {
        false
    };
    (body) => {
        true
    };
}

messages! {
    /// One protocol message (the JSON header of a frame, minus `body_len`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum Message {
        /// Server → client, first frame after the preamble: who is speaking.
        Hello(Hello) = "hello",
        /// Client → server: the shared secret. Must be the first client frame.
        Auth {
            /// The token, compared by the server in constant time. Absent
            /// (empty here) when the client proves itself with its TLS
            /// client certificate alone.
            #[serde(default, skip_serializing_if = "Secret::is_empty")]
            token: Secret,
        } = "auth",
        /// Server → client: authentication succeeded; requests may follow.
        AuthOk = "auth_ok",
        /// Client → server: run one command.
        Exec(ExecRequest) = "exec",
        /// Server → client: the command was spawned with this process id.
        Started {
            /// Process id (and process group id) of the command on the server.
            pid: u32,
        } = "started",
        /// Client → server: bytes for the command's standard input (in the body).
        Stdin = "stdin" + body,
        /// Client → server: the command's standard input is at its end.
        StdinEnd = "stdin_end",
        /// Server → client: this many bytes of `stdin` were handed to the command
        /// (or discarded because it closed its input); the client may send that
        /// many more. See [`Hello::stdin_window`].
        StdinAck {
            /// Bytes acknowledged.
            bytes: u64,
        } = "stdin_ack",
        /// Server → client: bytes the command wrote to standard output (in the body).
        Stdout = "stdout" + body,
        /// Server → client: bytes the command wrote to standard error (in the body).
        Stderr = "stderr" + body,
        /// Server → client: the command has finished; the last frame of a command.
        Exit(ExitStatus) = "exit",
        /// Either direction: something went wrong.
        Error {
            /// Stable, machine-readable reason.
            code: ErrorCode,
            /// Human-readable explanation.
            message: String,
        } = "error",
        /// Client → server: stop the running command (its whole process group).
        Cancel = "cancel",
        /// Client → server: deliver a signal to the running command's
        /// process group, as a terminal's Ctrl-C would (needs the
        /// `"signal"` feature in [`Hello::features`]).
        Signal {
            /// Which signal.
            name: SignalName,
        } = "signal",
        /// Client → server: the client's terminal has a new size; the running
        /// command's pseudo-terminal takes it (see [`ExecRequest::pty`]).
        Resize(WindowSize) = "resize",
        /// Either direction: liveness check; the peer answers with `pong` and the same body.
        Ping = "ping" + body,
        /// Answer to `ping`, echoing its body.
        Pong = "pong" + body,
        /// Client → server: describe one path under the files root.
        Stat {
            /// Path relative to the server's files root.
            path: String,
        } = "stat",
        /// Server → client: one file or directory (answer to `stat`, or one of
        /// the entries of a `list`).
        Entry(FileEntry) = "entry",
        /// Client → server: list a directory, recursively.
        List {
            /// Directory, relative to the files root.
            path: String,
        } = "list",
        /// Server → client: the end of a `list`.
        ListEnd {
            /// Number of `entry` frames sent.
            count: u64,
        } = "list_end",
        /// Client → server: create a directory (and its parents).
        Mkdir {
            /// Directory, relative to the files root.
            path: String,
            /// Permission bits for the new directory.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            mode: Option<u32>,
        } = "mkdir",
        /// Client → server: upload a file.
        Put(PutRequest) = "put",
        /// Client → server: download a file.
        Get {
            /// File, relative to the files root.
            path: String,
            /// Length of a partial download the client holds and would like to
            /// continue; 0 for none.
            #[serde(default)]
            resume_from: u64,
        } = "get",
        /// Server → client: the transfer can begin, possibly from an offset.
        TransferReady(TransferReady) = "transfer_ready",
        /// Client → server, for `put` and `get` alike: the file data starts at
        /// this offset (0, or the offset offered in `transfer_ready` once the
        /// prefixes matched).
        TransferStart {
            /// First byte that will be sent.
            offset: u64,
        } = "transfer_start",
        /// File bytes (in the body), in order.
        FileData = "file_data" + body,
        /// The end of a file's data, with the checksum of the whole file.
        FileEnd {
            /// Lowercase hex BLAKE3 of the complete file.
            blake3: String,
        } = "file_end",
        /// Server → client: the upload (or `mkdir`) is done and published.
        TransferOk {
            /// Bytes received in this transfer.
            bytes: u64,
        } = "transfer_ok",
    }
}

/// A file or directory as `stat` and `list` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path: as asked for `stat`; relative to the listed directory for `list`.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// Kinds of filesystem entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else (socket, device, ...); not transferred.
    Other,
}

/// An upload request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// Destination file, relative to the files root.
    pub path: String,
    /// Size of the complete file.
    pub size: u64,
    /// Permission bits to give the file (`-p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time to give the file, Unix seconds (`-p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Continue a partial upload if the server holds one.
    #[serde(default)]
    pub resume: bool,
}

/// The receiver's go-ahead for a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReady {
    /// Length of the partial copy the receiver (put) or client (get) may
    /// continue from; 0 to start over.
    pub offset: u64,
    /// Hex BLAKE3 of the first `offset` bytes, so the other side can check
    /// they match its own before continuing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_blake3: Option<String>,
    /// For `get`: the file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For `get`: the file's permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// For `get`: the file's modification time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

impl Message {
    /// Shorthand for an error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Message::Error {
            code,
            message: message.into(),
        }
    }
}

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the server speaks on this connection.
    pub version: u16,
    /// Server software and version, e.g. `wiresh/0.1.0`. Informational.
    pub server: String,
    /// Optional capabilities, e.g. `"exec"`, `"stdin"`, `"cancel"`.
    #[serde(default)]
    pub features: Vec<String>,
    /// While a command runs, the client must send some frame (a `ping` will
    /// do) at least this often, or the server treats it as gone and kills
    /// the command. 0 means no such requirement.
    #[serde(default)]
    pub keepalive_secs: u32,
    /// Largest frame body the server accepts.
    pub max_body: u32,
    /// Largest frame header the server accepts once the client has
    /// authenticated (before that, [`Limits::PRE_AUTH`] applies). Servers
    /// older than this field do not send it; they accept
    /// [`Limits::DEFAULT_MAX_HEADER`], which is what it defaults to.
    #[serde(default = "default_max_header")]
    pub max_header: u32,
    /// Most bytes of `stdin` the client may have sent and not yet had
    /// acknowledged by `stdin_ack`. The server buffers that much, so it can
    /// always go on reading the connection (for `cancel`, `ping`, or a
    /// disconnect) even while a command does not read its input.
    pub stdin_window: u32,
}

/// What [`Hello::max_header`] is when the server did not send it.
fn default_max_header() -> u32 {
    // The default header limit is 64 KiB; this keeps the cast honest.
    const _: () = assert!(Limits::DEFAULT_MAX_HEADER <= u32::MAX as usize);
    Limits::DEFAULT_MAX_HEADER as u32
}

/// A secret string whose `Debug` output never shows it, so it cannot leak
/// into logs by accident.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// Whether there is no secret at all (an `auth` without a token).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A request to run one command.
///
/// Exactly one of `command` (run by `sh -c`), `argv` (run directly, no
/// shell) and `login_shell` must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// A command line for `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A program and its arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Run the server account's login shell, as `ssh host` does: reading
    /// its commands from the terminal, or from stdin without one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub login_shell: bool,
    /// Extra environment variables, added to the server's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; the server's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether the client will send `stdin` frames. When false the command's
    /// standard input is empty (`/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Run the command on a pseudo-terminal of this type and size instead of
    /// pipes (needs the `"pty"` feature in [`Hello::features`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtyRequest>,
}

/// A pseudo-terminal for a command, as `ssh -t` asks for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyRequest {
    /// The terminal type, for the command's `TERM` (empty: leave `TERM` alone).
    pub term: String,
    /// Width in character cells.
    pub cols: u16,
    /// Height in character cells.
    pub rows: u16,
}

impl PtyRequest {
    /// Longest terminal type a server accepts.
    pub const MAX_TERM: usize = 64;

    /// Why this request is invalid, if it is: `term` must be short and made
    /// of letters, digits and `.+-_` (terminfo names never hold `/`, and a
    /// `TERM` with one could send terminfo lookups elsewhere).
    pub fn check(&self) -> Result<(), String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
        if self.term.len() > Self::MAX_TERM || !self.term.chars().all(ok) {
            return Err(format!(
                "pty `term` {:?} is not a terminal type (at most {} letters, digits and `._+-`)",
                self.term,
                Self::MAX_TERM
            ));
        }
        Ok(())
    }

    /// The requested size.
    pub fn size(&self) -> WindowSize {
        WindowSize {
            cols: self.cols,
            rows: self.rows,
        }
    }
}

/// A terminal's size in character cells (0 means unknown, as for the kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Width.
    pub cols: u16,
    /// Height.
    pub rows: u16,
}

/// What an [`ExecRequest`] runs, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program<'a> {
    /// `sh -c <command>`.
    Shell(&'a str),
    /// A program and arguments, no shell.
    Argv(&'a [String]),
    /// The server account's login shell.
    LoginShell,
}

impl ExecRequest {
    /// A request that runs `command` with `sh -c`.
    pub fn shell(command: impl Into<String>) -> Self {
        ExecRequest {
            command: Some(command.into()),
            ..Default::default()
        }
    }

    /// A request that runs `argv[0]` with arguments `argv[1..]`, no shell.
    pub fn argv(argv: Vec<String>) -> Self {
        ExecRequest {
            argv: Some(argv),
            ..Default::default()
        }
    }

    /// A request that runs the server account's login shell.
    pub fn login_shell() -> Self {
        ExecRequest {
            login_shell: true,
            ..Default::default()
        }
    }

    /// What to run, or why the request is invalid.
    pub fn program(&self) -> Result<Program<'_>, &'static str> {
        match (&self.command, &self.argv, self.login_shell) {
            (Some(c), None, false) => Ok(Program::Shell(c)),
            (None, Some(a), false) if a.is_empty() => {
                Err("exec `argv` is empty; it needs at least the program")
            }
            (None, Some(a), false) => Ok(Program::Argv(a)),
            (None, None, true) => Ok(Program::LoginShell),
            (None, None, false) => Err(
                "exec needs `command` (a shell command), `argv` (a program and arguments) or `login_shell`",
            ),
            _ => Err("exec has more than one of `command`, `argv` and `login_shell`; send one"),
        }
    }

    /// A short human description of the command, for logs.
    pub fn describe(&self) -> String {
        match self.program() {
            Ok(Program::Shell(c)) => c.to_string(),
            // JSON, a spelling both people and parsers read (not Rust's).
            Ok(Program::Argv(a)) => serde_json::to_string(a).unwrap_or_default(),
            Ok(Program::LoginShell) => "<login shell>".to_string(),
            Err(_) => "<invalid>".to_string(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the command exited normally.
    pub code: Option<i32>,
    /// Number of the signal that killed the command, when it did not.
    pub signal: Option<i32>,
    /// Wall-clock run time in milliseconds.
    pub duration_ms: u64,
    /// True when the server killed the command because its timeout expired.
    #[serde(default)]
    pub timed_out: bool,
    /// True when the server killed the command because it is shutting down
    /// (its grace period ended, or it was told twice to stop). Absent when
    /// false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shutdown: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + signal; 255 for
    /// anything that does not fit an exit status (0..=255).
    pub fn shell_code(&self) -> i32 {
        let code = match (self.code, self.signal) {
            (Some(code), _) => Some(code),
            (None, Some(sig)) => sig.checked_add(128),
            (None, None) => None,
        };
        code.filter(|c| (0..=255).contains(c)).unwrap_or(255)
    }
}

/// Declares [`ErrorCode`] from one list in which each code's wire name is
/// written once, and derives from it serde's `rename` of every variant,
/// [`ErrorCode::ALL`] and [`ErrorCode::as_str`] (and so `Display`).
macro_rules! error_codes {
    (
        $(#[$meta:meta])*
        pub enum ErrorCode {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum ErrorCode {
            $(
                $(#[$vmeta])*
                #[serde(rename = $wire)]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code this version knows, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The wire spelling of this code.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $wire, )*
                }
            }
        }
    };
}

error_codes! {
    /// Stable, machine-readable error reasons. New codes may be added; clients
    /// must treat unknown ones as [`ErrorCode::Other`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum ErrorCode {
        /// The peer did not open with the wiresh preamble.
        BadPreamble = "bad_preamble",
        /// The requested protocol version is not supported.
        UnsupportedVersion = "unsupported_version",
        /// A request came before authentication.
        AuthRequired = "auth_required",
        /// The token was wrong.
        AuthFailed = "auth_failed",
        /// A header or body length exceeds the limit.
        FrameTooLarge = "frame_too_large",
        /// The header is not a JSON object with `type` and `body_len`, or a
        /// known message has invalid fields.
        BadFrame = "bad_frame",
        /// The header's `type` is not one this peer knows.
        UnknownType = "unknown_type",
        /// The message is valid but not allowed in the current state.
        UnexpectedMessage = "unexpected_message",
        /// The exec request is invalid (neither or both of command/argv, ...).
        BadRequest = "bad_request",
        /// The command could not be started (no such program, bad cwd, ...).
        SpawnFailed = "spawn_failed",
        /// The server has reached its connection limit.
        TooManyConnections = "too_many_connections",
        /// The peer was silent for too long.
        Timeout = "timeout",
        /// The client sent more stdin than `hello.stdin_window` allows.
        FlowControl = "flow_control",
        /// The server is shutting down.
        ShuttingDown = "shutting_down",
        /// An internal error on the server.
        Internal = "internal",
        /// File transfer is off on this server (no `--files-root`).
        FilesDisabled = "files_disabled",
        /// The path is outside the files root, or uses `..`.
        PathRefused = "path_refused",
        /// No such file or directory.
        NotFound = "not_found",
        /// Reading or writing a file failed on the server.
        IoError = "io_error",
        /// The received file's checksum does not match the sender's.
        ChecksumMismatch = "checksum_mismatch",
        /// Too many failed authentications from this address; wait and retry.
        RateLimited = "rate_limited",
        /// The server runs as many commands as it allows; retry later.
        Busy = "busy",
        /// The server's policy (or the policy on the client key's line in
        /// `authorized_clients`) does not allow this request.
        Forbidden = "forbidden",
        /// Any code this version does not know.
        #[serde(other)]
        Other = "other",
    }
}

/// Declares [`SignalName`] from one list in which each name is written
/// once, as on the wire, and derives from it serde's `rename` of every
/// variant, [`SignalName::ALL`] and [`SignalName::as_str`].
macro_rules! signal_names {
    (
        $(#[$meta:meta])*
        pub enum SignalName {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum SignalName {
            $(
                $(#[$vmeta])*
                #[serde(rename = $wire)]
                $variant,
            )*
        }

        impl SignalName {
            /// Every name this version knows, in declaration order.
            pub const ALL: &'static [SignalName] = &[$(SignalName::$variant),*];

            /// The wire spelling of this name.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( SignalName::$variant => $wire, )*
                }
            }
        }
    };
}

signal_names! {
    /// The signals a client may send a running command (`signal`), by
    /// their POSIX names without `SIG`, as ssh names them. Their numbers
    /// are the server's business.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum SignalName {
        /// Hangup.
        Hup = "HUP",
        /// Interrupt: what Ctrl-C sends on a terminal.
        Int = "INT",
        /// Quit: what Ctrl-\\ sends on a terminal.
        Quit = "QUIT",
        /// Kill (cannot be caught).
        Kill = "KILL",
        /// Terminate.
        Term = "TERM",
        /// User-defined signal 1.
        Usr1 = "USR1",
        /// User-defined signal 2.
        Usr2 = "USR2",
        /// Any name this version does not know: a server ignores it.
        #[serde(other)]
        Other = "other",
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug() {
        let m = Message::Auth {
            token: Secret("hunter2".into()),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn an_argv_command_is_described_as_json() {
        let req = ExecRequest::argv(vec!["ls".into(), "-l".into(), "a \"b\"\u{1b}".into()]);
        assert_eq!(req.describe(), r#"["ls","-l","a \"b\"\u001b"]"#);
        assert_eq!(ExecRequest::shell("ls -l").describe(), "ls -l");
    }

    #[test]
    fn auth_token_may_be_absent() {
        let m: Message = serde_json::from_str(r#"{"type":"auth"}"#).unwrap();
        assert_eq!(
            m,
            Message::Auth {
                token: Secret::default()
            }
        );
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"type":"auth"}"#);
        let m: Message = serde_json::from_str(r#"{"type":"auth","token":"t"}"#).unwrap();
        assert_eq!(
            m,
            Message::Auth {
                token: Secret("t".into())
            }
        );
    }

    #[test]
    fn unknown_error_code_is_other() {
        let m: Message =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#)
                .unwrap();
        assert_eq!(m, Message::error(ErrorCode::Other, "m"));
    }

    #[test]
    fn exec_program_validation() {
        assert_eq!(ExecRequest::shell("ls").program(), Ok(Program::Shell("ls")));
        assert!(ExecRequest::default().program().is_err());
        assert!(ExecRequest::argv(vec![]).program().is_err());
        let both = ExecRequest {
            command: Some("a".into()),
            argv: Some(vec!["b".into()]),
            ..Default::default()
        };
        assert!(both.program().is_err());
        assert_eq!(
            ExecRequest::login_shell().program(),
            Ok(Program::LoginShell)
        );
        let shell_and_login = ExecRequest {
            login_shell: true,
            ..ExecRequest::shell("ls")
        };
        assert!(shell_and_login.program().is_err());
    }

    #[test]
    fn pty_terminal_types() {
        let pty = |term: &str| PtyRequest {
            term: term.into(),
            cols: 80,
            rows: 24,
        };
        assert!(pty("xterm-256color").check().is_ok());
        assert!(pty("").check().is_ok());
        assert!(pty("../../etc/x").check().is_err());
        assert!(pty("a b").check().is_err());
        assert!(pty(&"x".repeat(65)).check().is_err());
    }

    #[test]
    fn shell_code() {
        let st = |code, signal| ExitStatus {
            code,
            signal,
            ..Default::default()
        };
        assert_eq!(st(Some(3), None).shell_code(), 3);
        assert_eq!(st(None, Some(9)).shell_code(), 137);
        assert_eq!(st(Some(256), None).shell_code(), 255);
        assert_eq!(st(Some(-1), None).shell_code(), 255);
        assert_eq!(st(None, Some(i32::MAX)).shell_code(), 255);
        assert_eq!(st(None, None).shell_code(), 255);
    }
}
