//! `wiresh shell` in a real terminal (tmux), as a person uses it: the
//! remote login shell keeps its state, `vi` works, `stty size` follows the
//! window, Ctrl-C reaches the remote command, `~.` disconnects and leaves
//! nothing running, the shell's status is wiresh's, and the local terminal
//! is put back as it was on every way out (the remote exit, `~.`, the
//! server killed, the client sent SIGTERM or SIGHUP). Also the line-by-line
//! shells (`--each-line`, and `shell` on many hosts, which share one line
//! reader) keeping what is typed ahead while a command runs: lines, run in
//! turn; Ctrl-D, which ends the shell once the lines before it have run;
//! Ctrl-C, which throws away what was typed before it and never reaches
//! the next command.
//!
//! No key is typed before the program can take it, unless the test is
//! about keeping such keys: each waits for a sign on the screen (a prompt,
//! a line printed by the remote shell or command) or in the files a
//! command leaves.
//!
//! Every test here needs tmux (and the `vi` test, vi): where they are not
//! installed, the test is skipped and says what to install.

mod common;

use std::path::Path;

use common::fleet::Fleet;
use common::tmux::{recording, Recorded, Tmux};
use common::*;

/// The client command line for a pane script: `wiresh ARGS -H server`
/// with the server's home (its token and the pinned fingerprint).
fn client_line(server: &Server, args: &str) -> String {
    format!(
        "env -u WIRESH_TOKEN -u WIRESH_HOST WIRESH_HOME='{home}' '{BIN}' {args} -H {addr}",
        home = server.home().display(),
        addr = server.addr
    )
}

/// The pane script's line for `client` (a command line), with the client's
/// pid written first to `client.pid` in the tmux's directory: `exec` keeps
/// the pid, and the client in the foreground.
fn with_pidfile(tmux: &Tmux, client: &str) -> String {
    let pidfile = tmux.dir().join("client.pid");
    format!(
        "sh -c 'echo $$ > \"{}\"; exec \"$@\"' sh {client}",
        pidfile.display()
    )
}

/// The pid that [`with_pidfile`] recorded.
fn client_pid(tmux: &Tmux) -> i32 {
    let pidfile = tmux.dir().join("client.pid");
    std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// `wiresh shell` in an 80 × 24 terminal, recorded; waits until the remote
/// shell answers. `None` where tmux is not installed (the test is skipped).
///
/// The first line is typed at once, before the client has connected: keys
/// typed before it is ready are kept (the terminal holds them, and raw mode
/// is entered without flushing them), and every test here shows it.
async fn shell_in_tmux(server: &Server) -> Option<Tmux> {
    let tmux = Tmux::new()?;
    tmux.start(
        &recording(tmux.dir(), &client_line(server, "shell")),
        80,
        24,
    );
    tmux.type_line("echo READY-$((6*7))");
    tmux.wait_for_line("READY-42").await;
    Some(tmux)
}

/// The number after `name=` on the screen (as printed by `echo name=$$`).
async fn wait_for_number(tmux: &Tmux, name: &str) -> u32 {
    let prefix = format!("{name}=");
    let screen = tmux
        .wait_for(&format!("{prefix}<number>"), |s| {
            s.lines().any(|l| {
                l.trim()
                    .strip_prefix(&prefix)
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .await;
    screen
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix)?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_remote_shell_keeps_state_and_its_status_is_wireshs() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("cd /usr");
    tmux.type_line("pwd");
    tmux.wait_for_line("/usr").await;
    tmux.type_line("answer=42; echo \"answer is $answer\"");
    tmux.wait_for_line("answer is 42").await;
    tmux.type_line("exit 3");
    let rec = Recorded::wait(&tmux).await;
    assert_eq!(rec.status, 3, "{}", tmux.screen());
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
}

#[tokio::test]
async fn stty_size_follows_the_window() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("stty size");
    tmux.wait_for_line("24 80").await;
    // The remote command says when SIGWINCH reaches it, and what it sees.
    tmux.type_line(
        "sh -c 'trap \"stty size; exit\" WINCH; echo armed; while :; do sleep 0.05; done'",
    );
    tmux.wait_for_line("armed").await;
    tmux.resize(100, 30);
    tmux.wait_for_line("30 100").await;
    tmux.type_line("stty size | tr ' ' x");
    tmux.wait_for_line("30x100").await;
}

#[tokio::test]
async fn vi_edits_a_remote_file() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    // The remote shell runs on this machine: it finds vi where we do.
    if !skip::needs_program("vi", "vim-tiny") {
        return;
    }
    let file = tmux.dir().join("from-vi.txt");
    tmux.type_line(&format!("vi '{}'", file.display()));
    // An empty buffer: vi shows its `~` lines once it owns the screen.
    tmux.wait_for("vi's empty buffer", |s| {
        s.lines().filter(|l| l.trim() == "~").count() >= 10
    })
    .await;
    tmux.type_text("ihello from vi");
    tmux.press(&["Escape"]);
    tmux.type_line(":wq");
    // Keys typed before vi has given the terminal back may be flushed by
    // it; it has once its screen (the `~` lines) is gone.
    tmux.wait_for("vi to leave", |s| !s.lines().any(|l| l.trim() == "~"))
        .await;
    tmux.type_line("echo VI-DONE-$((1+1))");
    tmux.wait_for_line("VI-DONE-2").await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello from vi\n");
}

#[tokio::test]
async fn ctrl_c_stops_the_remote_command_and_the_shell_lives_on() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("sh -c 'echo sleeper=$$; exec sleep 100'");
    let sleeper = wait_for_number(&tmux, "sleeper").await;
    // Before the `exec`, the key would stop `sh` rather than `sleep`.
    bounded("`sleep` to run", async {
        while std::fs::read_to_string(format!("/proc/{sleeper}/comm"))
            .is_ok_and(|c| c.trim() != "sleep")
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    tmux.press(&["C-c"]);
    assert_gone(&[sleeper], None, GONE_WITHIN, "remote sleep after Ctrl-C").await;
    tmux.type_line("echo alive-$((40+2))");
    tmux.wait_for_line("alive-42").await;
}

#[tokio::test]
async fn tilde_dot_disconnects_and_nothing_is_left_running() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("echo shell=$$");
    let shell = wait_for_number(&tmux, "shell").await;
    // A job of its own: a job-control shell puts it in its own group.
    tmux.type_line("sleep 1000 & echo job=$!");
    let job = wait_for_number(&tmux, "job").await;
    assert!(alive(shell) && alive(job));
    tmux.type_text("~?");
    tmux.wait_for("the list of escapes", |s| s.contains("~.  - disconnect"))
        .await;
    tmux.type_text("~.");
    let rec = Recorded::wait(&tmux).await;
    assert_eq!(rec.status, 255, "{}", tmux.screen());
    assert!(tmux.screen().contains("disconnected"), "{}", tmux.screen());
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
    assert_gone(&[shell, job], Some(shell), GONE_WITHIN, "after ~.").await;
    assert_gone(&[job], Some(job), GONE_WITHIN, "the job's group after ~.").await;
}

#[tokio::test]
async fn the_terminal_is_restored_when_the_server_is_killed() {
    let server = Server::start();
    let Some(tmux) = shell_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("echo shell=$$");
    let shell = wait_for_number(&tmux, "shell").await;
    server.signal(libc::SIGKILL);
    let rec = Recorded::wait(&tmux).await;
    assert_eq!(rec.status, 255, "{}", tmux.screen());
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
    // The server's end of the terminal closed with it: the shell is hung up.
    assert_gone(&[shell], None, BOUND, "the remote shell").await;
}

#[tokio::test]
async fn the_terminal_is_restored_when_the_client_gets_sigterm_or_sighup() {
    let server = Server::start();
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        let Some(tmux) = Tmux::new() else {
            return;
        };
        let client = with_pidfile(&tmux, &client_line(&server, "shell"));
        tmux.start(&recording(tmux.dir(), &client), 80, 24);
        tmux.type_line("echo READY-$((6*7))");
        tmux.wait_for_line("READY-42").await;
        let pid = client_pid(&tmux);
        // SAFETY: kill(2) on the client we started.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let rec = Recorded::wait(&tmux).await;
        assert_eq!(rec.status, 255, "signal {signal}: {}", tmux.screen());
        assert!(
            tmux.screen()
                .contains(&format!("killed by signal {signal}")),
            "{}",
            tmux.screen()
        );
        assert_eq!(rec.stty_before, rec.stty_after, "signal {signal}");
    }
}

/// `wiresh shell --each-line` in an 80 × 24 terminal, recorded, its pid
/// known ([`client_pid`]); waits for its first prompt. `None` where tmux is
/// not installed (the test is skipped).
async fn each_line_in_tmux(server: &Server) -> Option<Tmux> {
    let tmux = Tmux::new()?;
    let client = with_pidfile(&tmux, &client_line(server, "shell --each-line"));
    tmux.start(&recording(tmux.dir(), &client), 80, 24);
    tmux.wait_for("the prompt", |s| s.contains(">>: ")).await;
    Some(tmux)
}

/// A command line that prints `busy-2`, runs until the file `go` is in
/// `dir`, then prints `done-4`: while it runs, the test types ahead.
fn held_until_go(dir: &Path) -> String {
    format!(
        "echo busy-$((1+1)); while [ ! -e '{}' ]; do sleep 0.05; done; echo done-$((2+2))",
        dir.join("go").display()
    )
}

/// Types a [`held_until_go`] command and waits until it runs.
async fn run_held(tmux: &Tmux) {
    tmux.type_line(&held_until_go(tmux.dir()));
    tmux.wait_for_line("busy-2").await;
}

/// Lets a [`held_until_go`] command end.
fn go(tmux: &Tmux) {
    std::fs::write(tmux.dir().join("go"), "").unwrap();
}

/// Whether the last line `screen` shows is a prompt with nothing typed.
fn at_an_empty_prompt(screen: &str) -> bool {
    let last = screen.lines().rfind(|l| !l.trim().is_empty());
    last.is_some_and(|l| l.trim_end().ends_with(">>:"))
}

/// Whether the client's line editor is asleep waiting for keys: in a
/// terminal read (`wait_woken`) or `poll`/`select` (a command's wait is
/// tokio's `epoll_wait`, elsewhere in the kernel). It cannot sleep there
/// while the terminal holds keys for it or a signal is pending, so
/// whatever was pressed before has been handled.
fn editor_waits_for_keys(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan"))
        .is_ok_and(|wchan| wchan == "wait_woken" || wchan.starts_with("poll_schedule_timeout"))
}

/// Whether some line of `screen`, trimmed, is `line`.
fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim() == line)
}

/// On a terminal, `wiresh shell --each-line` starts its line editor with a
/// prompt, runs what is typed, ends at Ctrl-D and keeps its history. The
/// Ctrl-D is pressed as soon as the output shows, wherever it lands.
#[tokio::test]
async fn each_line_prompts_runs_and_keeps_history() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("echo interactive-$((2*3))");
    tmux.wait_for_line("interactive-6").await;
    tmux.press(&["C-d"]);
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 0, "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    let history = std::fs::read_to_string(server.home().join("history")).expect("history saved");
    assert!(history.contains("echo interactive-$((2*3))"), "{history}");
}

/// Lines typed while a command runs are run after it, not lost when the
/// line editor takes the terminal back.
#[tokio::test]
async fn each_line_keeps_lines_typed_ahead() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    run_held(&tmux).await;
    tmux.type_line("echo first-$((2+2))");
    tmux.type_line("echo second-$((3+3))");
    // Both are typed (the terminal echoes them) before the command ends.
    tmux.wait_for("the typed-ahead lines", |s| {
        s.contains("echo second-$((3+3))")
    })
    .await;
    go(&tmux);
    tmux.wait_for_line("done-4").await;
    tmux.wait_for_line("first-4").await;
    tmux.wait_for_line("second-6").await;
    tmux.type_line("exit");
    let rec = Recorded::wait(&tmux).await;
    assert_eq!(rec.status, 0, "{}", tmux.screen());
    assert_eq!(rec.stty_before, rec.stty_after);
}

/// A Ctrl-D typed while a command runs is kept, after the lines typed
/// before it: they run, then the shell leaves with the status of the last
/// one, as at the prompt. What is typed after it is not run.
#[tokio::test]
async fn each_line_leaves_at_a_ctrl_d_typed_while_a_command_runs() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    run_held(&tmux).await;
    tmux.type_line("sh -c 'echo ahead-$((3+3)); exit 3'");
    tmux.press(&["C-d"]);
    tmux.type_line("echo after-$((4+4))");
    // The terminal echoes what it takes in order: once the last line shows,
    // the Ctrl-D before it has been typed, while the command still runs.
    tmux.wait_for("the line typed after Ctrl-D", |s| {
        s.contains("echo after-$((4+4))")
    })
    .await;
    go(&tmux);
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 3, "{screen}");
    assert!(has_line(&screen, "done-4"), "{screen}");
    assert!(has_line(&screen, "ahead-6"), "{screen}");
    assert!(!has_line(&screen, "after-8"), "{screen}");
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
}

/// A Ctrl-D pressed as soon as a command's output shows (while the command
/// ends, or before the prompt is back) ends the shell as at the prompt.
#[tokio::test]
async fn each_line_leaves_at_a_ctrl_d_typed_right_after_the_output() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    run_held(&tmux).await;
    tmux.type_line("sh -c 'echo ahead-$((3+3)); exit 3'");
    tmux.wait_for("the line typed ahead", |s| {
        s.contains("echo ahead-$((3+3))")
    })
    .await;
    go(&tmux);
    tmux.wait_for_line("ahead-6").await;
    tmux.press(&["C-d"]);
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 3, "{screen}");
    assert!(has_line(&screen, "done-4"), "{screen}");
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
}

/// A Ctrl-C typed while a command runs interrupts it, and throws away what
/// was typed before it (the terminal does, as under any shell); what is
/// typed after it runs.
#[tokio::test]
async fn each_line_ctrl_c_interrupts_the_command_and_drops_what_was_typed_before() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    run_held(&tmux).await;
    tmux.type_line("echo dropped-$((2+3))");
    tmux.press(&["C-c"]);
    tmux.wait_for("the command interrupted", |s| {
        s.contains("[killed by signal")
    })
    .await;
    tmux.type_line("echo after-$((3+4))");
    tmux.wait_for_line("after-7").await;
    tmux.type_line("exit");
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 0, "{screen}");
    assert!(!has_line(&screen, "dropped-5"), "{screen}");
    assert!(!has_line(&screen, "done-4"), "{screen}");
}

/// A Ctrl-C pressed as soon as a command's output shows does what it does
/// at the prompt, wherever it lands (the command's end, before the prompt,
/// the prompt): the line being typed is thrown away, and the next command
/// runs, not interrupted.
#[tokio::test]
async fn each_line_ctrl_c_typed_right_after_the_output_drops_the_line_being_typed() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    run_held(&tmux).await;
    tmux.type_text("echo dropped-$((2+3))");
    tmux.wait_for("the line being typed", |s| {
        s.contains("echo dropped-$((2+3))")
    })
    .await;
    go(&tmux);
    // After the echo of the line being typed, not on a line of its own.
    tmux.wait_for("the output", |s| s.contains("done-4")).await;
    tmux.press(&["C-c"]);
    // Taken by the terminal (which echoes `^C`, and the prompt may be drawn
    // over it) or at the prompt (which then starts afresh on a line of its
    // own): either way the editor ends up waiting for keys at an empty
    // prompt, with no key or signal left to handle. The editor drops the
    // keys that came with a Ctrl-C, so the next line waits for that.
    let client = client_pid(&tmux);
    tmux.wait_for("the Ctrl-C taken", |s| {
        at_an_empty_prompt(s) && editor_waits_for_keys(client)
    })
    .await;
    // Held too, so that an interrupt it got would show.
    std::fs::remove_file(tmux.dir().join("go")).unwrap();
    tmux.type_line(&held_until_go(tmux.dir()).replace("done-", "next-"));
    tmux.wait_for("the next command", |s| {
        s.lines().filter(|l| l.trim() == "busy-2").count() == 2
    })
    .await;
    go(&tmux);
    tmux.wait_for_line("next-4").await;
    tmux.type_line("exit");
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 0, "{screen}");
    assert!(!screen.contains("dropped-5"), "{screen}");
}

/// A SIGINT that arrives between commands (here sent while the prompt
/// waits, after a first command) is not kept for the next command, which
/// runs to its end.
#[tokio::test]
async fn each_line_an_interrupt_between_commands_spares_the_next_one() {
    let server = Server::start();
    let Some(tmux) = each_line_in_tmux(&server).await else {
        return;
    };
    tmux.type_line("echo first-$((1+1))");
    tmux.wait_for_line("first-2").await;
    tmux.wait_for("the second prompt", |s| s.matches(">>: ").count() >= 2)
        .await;
    let client = nix::unistd::Pid::from_raw(client_pid(&tmux));
    nix::sys::signal::kill(client, nix::sys::signal::Signal::SIGINT).unwrap();
    run_held(&tmux).await;
    go(&tmux);
    tmux.wait_for_line("done-4").await;
    tmux.type_line("exit");
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    assert_eq!(rec.status, 0, "{screen}");
    assert!(!screen.contains("[killed"), "{screen}");
}

/// `wiresh shell` on the hosts of `fleet` in a 100 × 30 terminal,
/// recorded; waits for its first prompt. `None` where tmux is not
/// installed (the test is skipped).
async fn fanout_in_tmux(fleet: &Fleet) -> Option<Tmux> {
    let tmux = Tmux::new()?;
    let client = format!(
        "env -u WIRESH_TOKEN -u WIRESH_HOST WIRESH_HOME='{home}' '{BIN}' shell -H {hosts}",
        home = fleet.home().display(),
        hosts = fleet.host_list()
    );
    tmux.start(&recording(tmux.dir(), &client), 100, 30);
    let prompt = format!("[{} hosts]>>: ", fleet.servers.len());
    tmux.wait_for("the prompt", |s| s.contains(&prompt)).await;
    Some(tmux)
}

/// Types a line that runs on every host until the file `go` is in the
/// tmux's directory, then prints `busy`; waits until it runs on all of
/// them. Gathered output shows only once a line is done on every host:
/// each host's command says it runs by a file of its own.
async fn run_held_on_every_host(tmux: &Tmux, hosts: usize) {
    let dir = tmux.dir().display().to_string();
    tmux.type_line(&format!(
        "touch '{dir}/running-'$$; while [ ! -e '{dir}/go' ]; do sleep 0.05; done; echo busy"
    ));
    bounded("the line to run on every host", async {
        let running = || {
            std::fs::read_dir(tmux.dir())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("running-")
                })
                .count()
        };
        while running() < hosts {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `wiresh shell` on many hosts reads its lines as `--each-line` does: a
/// prompt and history on a terminal, and lines typed while a line runs on
/// every host are run after it, not lost.
#[tokio::test]
async fn the_fanout_shell_keeps_lines_typed_ahead_and_its_history() {
    let fleet = Fleet::start(2, &[]);
    let Some(tmux) = fanout_in_tmux(&fleet).await else {
        return;
    };
    run_held_on_every_host(&tmux, 2).await;
    tmux.type_line("echo first-$((2+2))");
    tmux.type_line("echo second-$((3+3))");
    tmux.wait_for("the typed-ahead lines", |s| {
        s.contains("echo second-$((3+3))")
    })
    .await;
    go(&tmux);
    tmux.wait_for_line("busy").await;
    tmux.wait_for_line("first-4").await;
    tmux.wait_for_line("second-6").await;
    tmux.type_line("exit");
    let rec = Recorded::wait(&tmux).await;
    assert_eq!(rec.status, 0, "{}", tmux.screen());
    assert_eq!(rec.stty_before, rec.stty_after);
    let history = std::fs::read_to_string(fleet.home().join("history")).expect("history saved");
    assert!(history.contains("echo second-$((3+3))"), "{history}");
}

/// The shell on many hosts keeps a Ctrl-D typed while a line runs as
/// `--each-line` does: the lines before it run, then it leaves with the
/// status of the last one; what is typed after it is not run.
#[tokio::test]
async fn the_fanout_shell_leaves_at_a_ctrl_d_typed_while_a_line_runs() {
    let fleet = Fleet::start(2, &[]);
    let Some(tmux) = fanout_in_tmux(&fleet).await else {
        return;
    };
    run_held_on_every_host(&tmux, 2).await;
    tmux.type_line("sh -c 'echo ahead-$((3+3)); exit 3'");
    tmux.press(&["C-d"]);
    tmux.type_line("echo after-$((4+4))");
    // Echoed in order: the Ctrl-D is typed, and the line still runs.
    tmux.wait_for("the line typed after Ctrl-D", |s| {
        s.contains("echo after-$((4+4))")
    })
    .await;
    go(&tmux);
    let rec = Recorded::wait(&tmux).await;
    let screen = tmux.screen();
    // The last line failed on every host.
    assert_eq!(rec.status, wiresh::exit::SOME_FAILED, "{screen}");
    assert!(has_line(&screen, "busy"), "{screen}");
    assert!(has_line(&screen, "ahead-6"), "{screen}");
    assert!(!screen.contains("after-8"), "{screen}");
    assert_eq!(rec.stty_before, rec.stty_after, "terminal not restored");
}
