//! Killing a command and everything it started, and making sure of it.
//!
//! A command's processes are kept in one of two ways (see `super::spawn`):
//!
//! - **its own cgroup** (`super::cgroup`), where the server can make one:
//!   nothing can leave it, and `cgroup.kill` kills all of it at once;
//! - otherwise **its own session** (the command is a session leader): a
//!   process may leave its process group but stays in the session unless
//!   it calls `setsid` itself.
//!
//! Terminating a command sends SIGTERM to what it holds at once, then hands
//! it to the sweeper, one thread for every command being killed: every
//! [`GROUP_GONE_POLL`] it looks again, sends SIGTERM to processes it has
//! not signalled yet (a process that hops from group to group, or forks
//! and exits, has new ones), and once the kill grace is over SIGKILL (or
//! `cgroup.kill`) to all, again and again until nothing is left, for at
//! most [`SWEEP_LIMIT`] past the grace. An empty cgroup is then removed.
//! A command that ended by itself and left something in its cgroup is
//! handed over whole: the sweeper first lets go what left its session
//! (moved to the detached cgroup, a move that can wait for the kernel),
//! then sends the SIGTERM, so that the command's `exit` waits for neither.
//! Zombies do not count: the server, a child subreaper, reaps them
//! (`super::reaper`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::cgroup::CommandCgroup;
use super::procfs;
use crate::defaults::{GROUP_GONE_POLL, SWEEP_LIMIT};

/// What a command's processes are kept in.
#[derive(Debug)]
pub(super) enum Target {
    /// The session this id leads (its process group too).
    Session(u32),
    /// Its own cgroup.
    Cgroup(CommandCgroup),
}

/// What [`kill_all`] kills: every command started and not yet known gone.
#[derive(Debug, Clone)]
enum Live {
    Session(u32),
    Cgroup(PathBuf),
}

static LIVE: Mutex<BTreeMap<u64, Live>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<u64, Live>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts what [`kill_all`] must reach until [`terminate`] finishes with
/// it; returns its id.
pub(super) fn track(target: &Target) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = match target {
        Target::Session(sid) => Live::Session(*sid),
        Target::Cgroup(cgroup) => Live::Cgroup(cgroup.dir().to_path_buf()),
    };
    live().insert(id, entry);
    id
}

/// SIGKILLs every command this process started that may still be running:
/// for an operator who asked twice for the server to stop now.
pub fn kill_all() {
    let targets: Vec<Live> = live().values().cloned().collect();
    let sessions: HashSet<u32> = targets
        .iter()
        .filter_map(|t| match t {
            Live::Session(sid) => Some(*sid),
            Live::Cgroup(_) => None,
        })
        .collect();
    for target in &targets {
        if let Live::Cgroup(dir) = target {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
    }
    for (pid, sid) in processes() {
        if sessions.contains(&sid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Terminates what `target` holds (tracked as `id`): SIGTERM now, SIGKILL
/// once `grace` is over, until it is empty (see the module's docs).
pub(super) fn terminate(id: u64, target: Target, grace: Duration) {
    if let Target::Cgroup(cgroup) = &target {
        if !cgroup.populated() {
            let _ = cgroup.remove();
            live().remove(&id);
            return;
        }
    }
    let mut job = Job::new(id, target, grace, None);
    job.term_now();
    hand_over(job);
}

/// Ends what `target` holds once its command ended by itself (tracked as
/// `id`; `leader` leads its session): as [`terminate`], but a process that
/// left the command's session (`setsid`, as a daemon does) is let go, as a
/// terminal's hangup lets it go; from a cgroup it moves to the detached
/// one first. A cancel, a timeout or a vanished client [`terminate`]s all.
pub(super) fn end(id: u64, target: Target, leader: u32, grace: Duration) {
    if let Target::Cgroup(cgroup) = &target {
        // Most commands leave nothing: their cgroup is removed at once (a
        // cgroup holding a process refuses). Else what left the session is
        // let go and the rest swept, both by the sweeper: a move out of
        // the cgroup can wait for the kernel (an RCU grace period, ~16 ms
        // after a quiet spell), and the command's `exit` need not.
        if cgroup.remove().is_ok() {
            live().remove(&id);
            return;
        }
        hand_over(Job::new(id, target, grace, Some(leader)));
        return;
    }
    terminate(id, target, grace);
}

/// Gives `job` to the sweeper; without one (no thread could be started)
/// what was sent so far, and its start if it was left to the sweeper, is
/// all.
fn hand_over(job: Job) {
    let unsent = match sweeper() {
        Some(queue) => {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.send(job).err().map(|unsent| unsent.0)
        }
        None => Some(job),
    };
    if let Some(mut job) = unsent {
        job.begin();
        live().remove(&job.id);
    }
}

/// The sweeper's queue, its thread started at the first job.
fn sweeper() -> Option<&'static Mutex<Sender<Job>>> {
    static SWEEPER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    SWEEPER
        .get_or_init(|| {
            let (jobs, queue) = mpsc::channel();
            std::thread::Builder::new()
                .name("wiresh-sweeper".into())
                .spawn(move || sweep(queue))
                .ok()
                .map(|_| Mutex::new(jobs))
        })
        .as_ref()
}

/// One command being killed.
#[derive(Debug)]
struct Job {
    id: u64,
    target: Target,
    kill_at: Instant,
    /// Processes sent SIGTERM already (a second one can cut a graceful
    /// exit short).
    signalled: HashSet<i32>,
    /// The leader of the command's session, while what left that session
    /// is still to be let go, and the rest signalled, by [`Job::begin`] (a
    /// command that ended by itself, in a cgroup).
    let_go: Option<u32>,
}

impl Job {
    fn new(id: u64, target: Target, grace: Duration, let_go: Option<u32>) -> Job {
        Job {
            id,
            target,
            kill_at: Instant::now() + grace,
            signalled: HashSet::new(),
            let_go,
        }
    }

    /// The start left to the sweeper, if any (once): what left the
    /// session moves to the detached cgroup, then the rest gets its
    /// SIGTERM.
    fn begin(&mut self) {
        let Some(leader) = self.let_go.take() else {
            return;
        };
        if let Target::Cgroup(cgroup) = &self.target {
            cgroup.release(|pid| session_of(pid).is_some_and(|sid| sid != leader));
        }
        self.term_now();
    }

    /// The SIGTERM at once, to what can be reached without looking
    /// through `/proc`: the leader's group, or the cgroup's processes.
    fn term_now(&mut self) {
        match &self.target {
            Target::Session(sid) => {
                let _ = killpg(Pid::from_raw(*sid as i32), Signal::SIGTERM);
            }
            Target::Cgroup(cgroup) => {
                for pid in cgroup.processes() {
                    if self.signalled.insert(pid) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                    }
                }
            }
        }
    }

    /// One look: signals what is left; whether it is done.
    fn step(&mut self, sessions: &HashMap<u32, Vec<i32>>, now: Instant) -> bool {
        let killing = now >= self.kill_at;
        let members = match &self.target {
            Target::Session(sid) => sessions.get(sid).cloned().unwrap_or_default(),
            Target::Cgroup(cgroup) => {
                if !cgroup.populated() {
                    let _ = cgroup.remove();
                    return true;
                }
                if killing {
                    let _ = cgroup.kill();
                }
                cgroup.processes()
            }
        };
        if members.is_empty() {
            return true;
        }
        for pid in members {
            let signal = match killing {
                true => Signal::SIGKILL,
                false if self.signalled.insert(pid) => Signal::SIGTERM,
                false => continue,
            };
            let _ = kill(Pid::from_raw(pid), signal);
        }
        if now >= self.kill_at + SWEEP_LIMIT {
            tracing::warn!(
                "processes of a killed command are still there after {SWEEP_LIMIT:?} of SIGKILL \
                 ({:?}); giving up on them",
                self.target
            );
            return true;
        }
        false
    }
}

/// The sweeper thread: takes jobs, looks at them every
/// [`GROUP_GONE_POLL`] until each is done.
fn sweep(queue: Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        let next = match jobs.is_empty() {
            true => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            false => queue.recv_timeout(GROUP_GONE_POLL),
        };
        match next {
            Ok(job) => {
                jobs.push(job);
                // Take whatever else is queued before looking.
                jobs.extend(queue.try_iter());
                jobs.iter_mut().for_each(Job::begin);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let any_session = jobs.iter().any(|j| matches!(j.target, Target::Session(_)));
        let sessions = match any_session {
            true => by_session(),
            false => HashMap::new(),
        };
        let now = Instant::now();
        jobs.retain_mut(|job| {
            let done = job.step(&sessions, now);
            if done {
                live().remove(&job.id);
            }
            !done
        });
    }
}

/// Live processes (not zombies) by session id, from `/proc`.
fn by_session() -> HashMap<u32, Vec<i32>> {
    let mut sessions: HashMap<u32, Vec<i32>> = HashMap::new();
    for (pid, sid) in processes() {
        sessions.entry(sid).or_default().push(pid);
    }
    sessions
}

/// Every live process (not a zombie) and its session id.
fn processes() -> Vec<(i32, u32)> {
    procfs::pids()
        .filter_map(|pid| Some((pid, session_of(pid)?)))
        .collect()
}

/// The session of a live process (not a zombie).
fn session_of(pid: i32) -> Option<u32> {
    procfs::stat(pid)
        .filter(procfs::Stat::live)
        .map(|stat| stat.session)
}
