//! The manual pages' sections that clap does not know: ENVIRONMENT and
//! FILES (one list for every page, the same as docs/USAGE.md's), EXIT
//! STATUS and EXAMPLES (each page its own), written as roff.

use wiresh::exit;

/// The environment variables wiresh reads: name, what it does.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "WIRESH_HOME",
        "the directory of every file under FILES; default ~/.wiresh",
    ),
    (
        "WIRESH_HOST",
        "the default host of exec, shell, put and get, when none is named",
    ),
    (
        "WIRESH_TOKEN",
        "the token, when --token-file is not given (client)",
    ),
    (
        "WIRESH_PERSIST",
        "the default --persist of exec, shell, put and get: start a master when none answers",
    ),
    (
        "WIRESH_TRANSFER_TIMEOUT",
        "the default --transfer-timeout of put and get",
    ),
    ("WIRESH_CONFIG", "serve's --config"),
    ("WIRESH_LISTEN", "serve's --listen"),
    ("WIRESH_LOG_FORMAT", "serve's --log-format"),
    (
        "WIRESH_LOG",
        "the server's (and a master's) log level: debug, info, warn",
    ),
    (
        "NO_COLOR",
        "no colour in the server's log, even on a terminal",
    ),
    (
        "TMPDIR",
        "where fan-out keeps its stdin and what --gather, --diff and --json hold for the end",
    ),
];

/// The files in `$WIRESH_HOME`: name, who uses it, what it is.
pub const FILES: &[(&str, &str)] = &[
    (
        "token",
        "the shared token (server, client); created by the server on first start",
    ),
    (
        "server.key, server.crt",
        "the server's TLS identity, created on first start",
    ),
    ("server.toml", "the server's settings, if the file exists"),
    (
        "server.pid",
        "the running server's process id, for wiresh reload (serve --pid-file)",
    ),
    (
        "authorized_clients",
        "the client keys that may log in to the server",
    ),
    ("known_hosts", "the client's pinned server fingerprints"),
    (
        "client.key, client.crt",
        "this client's key, from wiresh keygen",
    ),
    (
        "client.toml",
        "how the client reaches each host (address, port, fingerprint, key, token file), groups, defaults",
    ),
    (
        "hosts.toml",
        "the inventory of earlier releases, read for this release with a warning",
    ),
    ("history", "the shell --each-line prompt's history"),
    (
        "masters/",
        "the masters' sockets, locks and logs (mode 700)",
    ),
];

/// A page's exit statuses: status, when.
fn exit_statuses(page: &str) -> Vec<(String, &'static str)> {
    let n = |code: i32| code.to_string();
    let mut rows =
        match page {
            "exec" | "shell" => {
                vec![
            ("N".into(), "the remote command (or shell) exited with N"),
            ("128+N".into(), "the remote command died of signal N (143: SIGTERM)"),
            (
                n(exit::NOT_STARTED),
                "the server could not start it: no such program, or no such working directory",
            ),
            (n(exit::STDOUT_CLOSED), "local stdout was closed early (128+SIGPIPE)"),
            (
                n(exit::CLIENT_FAILURE),
                "wiresh itself failed: connection refused, changed fingerprint, wrong token",
            ),
            (
                n(exit::SOME_FAILED),
                "on many hosts: some command failed, timed out or was not run",
            ),
            (n(exit::INTERRUPTED), "on many hosts: after Ctrl-C"),
            (n(exit::LOCAL_IO), "on many hosts: this machine's disk would not keep the output"),
        ]
            }
            "put" | "get" => vec![
                (n(exit::SUCCESS), "everything was copied"),
                (
                    n(exit::TRANSFER_FAILED),
                    "a transfer failed (refused, checksum, local file)",
                ),
                (
                    n(exit::CLIENT_FAILURE),
                    "wiresh could not connect or authenticate, or lost the connection",
                ),
            ],
            "serve" => vec![
                (
                    n(exit::SUCCESS),
                    "it was stopped (SIGTERM, SIGINT) and ended cleanly; --check: valid",
                ),
                (
                    n(exit::SERVE_FAILED),
                    "it could not start, or stopped on an error",
                ),
            ],
            _ => vec![
                (n(exit::SUCCESS), "done"),
                (
                    n(exit::LOCAL_FAILED),
                    "it failed; a message on stderr says why",
                ),
            ],
        };
    rows.push(("2".into(), "the command line could not be parsed"));
    rows
}

/// A page's examples: command line, what it does.
fn examples(page: &str) -> &'static [(&'static str, &'static str)] {
    match page {
        "exec" => &[
            ("wiresh exec -H web1 -- uname -a", "like ssh web1 uname -a"),
            (
                "wiresh exec -C /srv/app -e LANG=C -- make",
                "in a directory, with a variable",
            ),
            ("wiresh exec -t -- top", "on a remote terminal, like ssh -t"),
            ("wiresh exec -H 'web[01-20]' -- uptime", "on twenty hosts"),
        ],
        "shell" => &[
            ("wiresh shell -H web1", "a login shell, like ssh web1"),
            (
                "printf 'cd /tmp\\npwd\\n' | wiresh shell",
                "the remote shell runs the script",
            ),
        ],
        "put" => &[
            (
                "wiresh put app.tar.gz releases/",
                "into the server's files root",
            ),
            ("wiresh put -r site/ www/", "a tree"),
        ],
        "get" => &[
            ("wiresh get logs/app.log .", "into the current directory"),
            (
                "wiresh get -g web logs/app.log collected/",
                "collected/web01/app.log, ...",
            ),
        ],
        "serve" => &[
            ("wiresh serve --listen 0.0.0.0:7878", "serve other machines"),
            (
                "wiresh serve --check",
                "the settings in force, as server.toml would say them",
            ),
        ],
        "reload" => &[(
            "wiresh reload",
            "the server of this WIRESH_HOME re-reads its settings",
        )],
        "keygen" => &[(
            "wiresh keygen",
            "a key, and the line for authorized_clients",
        )],
        "man" => &[(
            "wiresh man --dir /usr/local/share/man/man1",
            "install every page",
        )],
        "completions" => &[(
            "wiresh completions bash > /etc/bash_completion.d/wiresh",
            "",
        )],
        _ => &[
            ("wiresh serve", "on the server"),
            ("wiresh exec -H server -- uptime", "on a client"),
        ],
    }
}

/// Text made safe for roff: backslashes and dashes escaped, no line
/// starting with a control character.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    match text.starts_with(['.', '\'']) {
        true => format!("\\&{text}"),
        false => text,
    }
}

/// A tagged paragraph: the tag in bold, then the text.
fn item(tag: &str, text: &str) -> String {
    format!(".TP\n\\fB{}\\fR\n{}\n", escape(tag), escape(text))
}

/// The sections of `page` (a subcommand's name, or `wiresh`) that follow
/// clap's, in the order man-pages(7) gives.
pub fn sections(page: &str) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (status, when) in exit_statuses(page) {
        out.push_str(&item(&status, when));
    }
    out.push_str(".SH ENVIRONMENT\n");
    for (name, what) in ENVIRONMENT {
        out.push_str(&item(name, what));
    }
    out.push_str(".SH FILES\n");
    for (names, what) in FILES {
        let paths: Vec<String> = names
            .split(", ")
            .map(|name| format!("$WIRESH_HOME/{name}"))
            .collect();
        out.push_str(&item(&paths.join(", "), what));
    }
    out.push_str(".SH EXAMPLES\n");
    for (line, what) in examples(page) {
        out.push_str(&item(line, what));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_control_characters_are_escaped() {
        assert_eq!(escape(".x -y \\z"), "\\&.x \\-y \\ez");
        assert!(sections("exec").contains("\\fB127\\fR\n"));
    }
}
