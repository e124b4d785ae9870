//! Processes as `/proc` shows them: there is no system call that lists
//! processes, or signals a session.

/// What the sweep and the reaper read of a process's `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// The state letter: `Z` a zombie, `X` dead.
    pub state: char,
    pub ppid: u32,
    pub session: u32,
}

impl Stat {
    /// Whether it still runs (a zombie or a dead one does not).
    pub fn live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// The process ids in `/proc` now.
pub(super) fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
}

/// Process `pid`'s stat, if it is still there.
pub(super) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(&text)
}

/// "pid (comm) state ppid pgrp session ...": comm may hold anything, so the
/// fields are counted from its last `)`.
fn parse(text: &str) -> Option<Stat> {
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let session = fields.nth(1)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_counted_after_the_command_name() {
        let text = "42 (a) b) (c) S 7 42 40 34817 42 4194560 115 0 0 0";
        assert_eq!(
            parse(text),
            Some(Stat {
                state: 'S',
                ppid: 7,
                session: 40
            })
        );
        let me = stat(std::process::id() as i32).expect("this process is there");
        assert!(me.live());
        assert!(pids().any(|pid| pid == std::process::id() as i32));
    }
}
