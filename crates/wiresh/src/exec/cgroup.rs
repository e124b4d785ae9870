//! Commands in cgroups of their own (cgroup v2), where the server can make
//! them: as root, or as a systemd service with `Delegate=yes`.
//!
//! A process can leave its process group, and even its session (`setsid`),
//! but not its cgroup: only whoever may write the cgroup tree moves it. So
//! each command (and each terminal session) gets a cgroup of its own, and
//! killing the command is writing `1` to its `cgroup.kill` (Linux 5.14):
//! every process in it is killed at once, forks in flight included.
//!
//! The tree, under the server's own cgroup (found from `/proc/self/cgroup`
//! and the cgroup2 mount in `/proc/self/mountinfo`, never a fixed path):
//!
//! ```text
//! <the server's cgroup>/wiresh-<pid>/server   the server itself
//! <the server's cgroup>/wiresh-<pid>/<n>      command n
//! ```
//!
//! One cgroup is made ahead for the next command, empty until a command
//! takes it: making one is a `mkdir` in cgroupfs, some 30 µs that would
//! otherwise be on each start's path. A start takes it and has the next
//! one made by a task of its own, which runs while the start waits on the
//! spawn helper.
//!
//! The server moves itself into `server` so that the cgroup above its
//! commands holds no process: only then may controllers be enabled for
//! them (cgroup v2's "no internal processes" rule), and only then is that
//! cgroup the nearest common ancestor of the server and its commands, the
//! one whose `cgroup.procs` a server that dropped root (`--run-as`) needs
//! to write to move a command (it is handed to that account).
//!
//! A command's processes are in its cgroup before its program runs: the
//! spawn helper creates the child there (`clone3` with
//! `CLONE_INTO_CGROUP`), or the child writes `0` (itself) to the cgroup's
//! `cgroup.procs` between fork and exec (`super::ctty`'s one `pre_exec`
//! hook, and the helper on kernels without `clone3`), so nothing it
//! starts can be outside. `--max-pids` and `--max-memory` set `pids.max` and
//! `memory.max` of each command's cgroup, where those controllers can be
//! had.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The tree commands are started in, once the server has set one up.
static TREE: OnceLock<Tree> = OnceLock::new();

/// From now on every command starts in a cgroup of its own, in `tree`.
/// Once per process; a second tree is refused (handed back).
pub fn install(tree: Tree) -> Result<&'static Tree, Tree> {
    let mut tree = Some(tree);
    let installed = TREE.get_or_init(|| tree.take().expect("taken once"));
    match tree {
        None => Ok(installed),
        Some(refused) => Err(refused),
    }
}

/// The tree commands are started in, if there is one.
pub fn installed() -> Option<&'static Tree> {
    TREE.get()
}

/// A cgroup for one more command, when commands have them: the one made
/// ahead, and the next is made by a task on the runtime (which this must
/// run on).
pub(super) fn for_command() -> io::Result<Option<CommandCgroup>> {
    let Some(tree) = TREE.get() else {
        return Ok(None);
    };
    // Its own statement: the lock is let go before any mkdir.
    let ahead = made_ahead().take();
    let cgroup = match ahead {
        Some(ahead) => ahead,
        None => tree.command()?,
    };
    tokio::spawn(async move { tree.make_ahead() });
    Ok(Some(cgroup))
}

/// The cgroup made ahead for the next command, if there is one.
fn made_ahead() -> MutexGuard<'static, Option<CommandCgroup>> {
    static MADE_AHEAD: Mutex<Option<CommandCgroup>> = Mutex::new(None);
    MADE_AHEAD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Limits on each command's cgroup; `None` leaves a resource alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most processes (and threads) at once: `pids.max`.
    pub pids: Option<u64>,
    /// Most memory, in bytes: `memory.max`.
    pub memory: Option<u64>,
}

impl Limits {
    /// The limits as the log says them: `, at most 64 processes and 1073741824
    /// bytes of memory each`, or nothing.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.pids.map(|n| format!("{n} processes")),
            self.memory.map(|n| format!("{n} bytes of memory")),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.is_empty() {
            true => String::new(),
            false => format!(", at most {} each", parts.join(" and ")),
        }
    }

    /// The controllers these limits need.
    fn controllers(&self) -> Vec<&'static str> {
        let mut needed = Vec::new();
        if self.pids.is_some() {
            needed.push("pids");
        }
        if self.memory.is_some() {
            needed.push("memory");
        }
        needed
    }
}

/// Why commands cannot have cgroups here; the server then keeps them in
/// sessions of their own (see `super::sweep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This server's cgroups: the one above its commands.
#[derive(Debug)]
pub struct Tree {
    /// `<the server's cgroup>/wiresh-<pid>`.
    dir: PathBuf,
    /// The cgroup the server was started in, to go back to at the end.
    origin: PathBuf,
    limits: Limits,
    next: AtomicU64,
}

/// The cgroup in a server's tree for processes that outlived the command
/// that started them ([`CommandCgroup::release`]).
pub const DETACHED: &str = "detached";

/// One command's cgroup, removed once empty (see `super::sweep`).
#[derive(Debug)]
pub struct CommandCgroup {
    dir: PathBuf,
    /// Its `cgroup.procs`, for the child to write itself into.
    procs: CString,
}

impl CommandCgroup {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `cgroup.procs`, as the child's hook opens it.
    pub(super) fn procs(&self) -> &CString {
        &self.procs
    }

    /// Whether any process is in it (zombies are not).
    pub fn populated(&self) -> bool {
        let events = std::fs::read_to_string(self.dir.join("cgroup.events")).unwrap_or_default();
        // A cgroup that cannot be read is treated as empty: it is gone.
        events.lines().any(|line| line == "populated 1")
    }

    /// The processes in it now.
    pub fn processes(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }

    /// Kills every process in it, forks in flight included (SIGKILL).
    pub fn kill(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.kill"), "1")
    }

    /// Moves the processes `leaving` picks to the cgroup beside the
    /// commands' that holds what outlived its command (`detached`, made on
    /// first use): a daemon a command started lives on after the command
    /// ended by itself, as over ssh, outside the command's limits.
    pub fn release(&self, leaving: impl Fn(i32) -> bool) {
        let processes = self.processes();
        let mut leaving = processes.iter().filter(|&&pid| leaving(pid)).peekable();
        let (Some(tree), Some(_)) = (self.dir.parent(), leaving.peek()) else {
            return;
        };
        let detached = tree.join(DETACHED);
        let _ = std::fs::create_dir(&detached);
        for pid in leaving {
            let _ = std::fs::write(detached.join("cgroup.procs"), pid.to_string());
        }
    }

    /// Removes it; it must be empty.
    pub fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }
}

impl Tree {
    /// Makes this server's tree under its own cgroup and moves the server
    /// into it, with `limits` for every command; `owner` (uid, gid) is the
    /// account the server will become (`--run-as`), which must be able to
    /// make and fill command cgroups. Says why not when it cannot.
    pub fn set_up(limits: Limits, owner: Option<(u32, u32)>) -> Result<Tree, Unavailable> {
        let origin = own_cgroup()?;
        sweep_stale(&origin);
        let dir = origin.join(format!("wiresh-{}", std::process::id()));
        let failed = |what: &str, e: io::Error| {
            Unavailable(format!("cannot {what} in {}: {e}", origin.display()))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("make a cgroup", e)),
        }
        let tree = Tree {
            dir,
            origin,
            limits,
            next: AtomicU64::new(0),
        };
        let set_up = tree.enter_and_delegate(owner);
        if let Err(e) = set_up {
            tree.tear_down();
            return Err(e);
        }
        Ok(tree)
    }

    /// What [`Tree::set_up`] would find, without making anything (for
    /// `serve --check`): the cgroup it would make the tree in, or why
    /// there is none (`cgroup.kill` is only looked for at start).
    pub fn check(limits: Limits) -> Result<PathBuf, Unavailable> {
        let origin = own_cgroup()?;
        let access = rustix::fs::Access::WRITE_OK;
        rustix::fs::access(&origin, access).map_err(|e| {
            Unavailable(format!("cannot make a cgroup in {}: {e}", origin.display()))
        })?;
        let available =
            std::fs::read_to_string(origin.join("cgroup.controllers")).unwrap_or_default();
        for controller in limits.controllers() {
            if !available.split_whitespace().any(|c| c == controller) {
                return Err(Unavailable(format!(
                    "the {controller} controller is not available in {}",
                    origin.display()
                )));
            }
        }
        Ok(origin)
    }

    /// Checks for `cgroup.kill`, moves the server into `server`, enables
    /// the controllers the limits need, and hands the tree to `owner`.
    fn enter_and_delegate(&self, owner: Option<(u32, u32)>) -> Result<(), Unavailable> {
        let dir = &self.dir;
        if !dir.join("cgroup.kill").exists() {
            return Err(Unavailable(
                "this kernel has no cgroup.kill (Linux 5.14 or later has)".into(),
            ));
        }
        let server = dir.join("server");
        let _ = std::fs::create_dir(&server);
        std::fs::write(server.join("cgroup.procs"), std::process::id().to_string()).map_err(
            |e| {
                Unavailable(format!(
                    "cannot move the server into {}: {e}",
                    server.display()
                ))
            },
        )?;
        for controller in self.limits.controllers() {
            enable(&self.origin, dir, controller)?;
        }
        if let Some((uid, gid)) = owner {
            for path in [
                dir.clone(),
                dir.join("cgroup.procs"),
                dir.join("cgroup.subtree_control"),
                server.join("cgroup.procs"),
            ] {
                let (uid, gid) = (
                    rustix::fs::Uid::from_raw(uid),
                    rustix::fs::Gid::from_raw(gid),
                );
                let owned = rustix::fs::chown(&path, Some(uid), Some(gid));
                owned.map_err(|e| {
                    let uid = uid.as_raw();
                    Unavailable(format!("cannot hand {} to uid {uid}: {e}", path.display()))
                })?;
            }
        }
        Ok(())
    }

    /// The directory above the commands' cgroups.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes a cgroup for one more command, with the limits.
    pub fn command(&self) -> io::Result<CommandCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(n.to_string());
        std::fs::create_dir(&dir)?;
        let made = CommandCgroup {
            procs: CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(io::Error::other)?,
            dir,
        };
        let limited = [
            ("pids.max", self.limits.pids),
            ("memory.max", self.limits.memory),
        ];
        for (file, limit) in limited {
            if let Some(limit) = limit {
                if let Err(e) = std::fs::write(made.dir.join(file), limit.to_string()) {
                    let _ = made.remove();
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Makes a cgroup ahead for the next command, unless one is there (the
    /// mkdir outside the lock, which starts take). A failure is left for
    /// that command's start to meet, and report.
    fn make_ahead(&self) {
        if made_ahead().is_some() {
            return;
        }
        let Ok(made) = self.command() else {
            return;
        };
        // Another task made one meanwhile: one is enough.
        if let Some(extra) = made_ahead().replace(made) {
            let _ = extra.remove();
        }
    }

    /// At the server's end: moves it back where it started, and removes
    /// what is empty (best effort: a server that dropped root may not be
    /// allowed to go back, and leaves its empty cgroups for the next start
    /// to remove).
    pub fn tear_down(&self) {
        if let Some(ahead) = made_ahead().take() {
            let _ = ahead.remove();
        }
        let _ = std::fs::write(
            self.origin.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        remove_empty(&self.dir);
    }
}

/// Enables `controller` for the children of `dir`, and of its parents up
/// to `origin` (the server's own cgroup, which must have it available).
fn enable(origin: &Path, dir: &Path, controller: &str) -> Result<(), Unavailable> {
    let available = std::fs::read_to_string(origin.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == controller) {
        return Err(Unavailable(format!(
            "the {controller} controller is not available in {} (its cgroup.controllers: {:?}; \
             under systemd, run the server as a service with Delegate=yes)",
            origin.display(),
            available.trim()
        )));
    }
    for at in [origin, dir] {
        let control = at.join("cgroup.subtree_control");
        std::fs::write(&control, format!("+{controller}")).map_err(|e| {
            Unavailable(format!(
                "cannot enable the {controller} controller in {}: {e} (a cgroup that holds \
                 processes cannot hand controllers down; run the server in a cgroup of its own, \
                 such as a systemd service with Delegate=yes)",
                control.display()
            ))
        })?;
    }
    Ok(())
}

/// The directory of this process's cgroup v2: its path in `/proc/self/cgroup`
/// (`0::/path`) under where the cgroup2 hierarchy is mounted.
fn own_cgroup() -> Result<PathBuf, Unavailable> {
    let read = |path| {
        std::fs::read_to_string(path).map_err(|e| Unavailable(format!("cannot read {path}: {e}")))
    };
    let own = read("/proc/self/cgroup")?;
    let own = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| Unavailable("this process is in no cgroup v2 hierarchy".into()))?;
    let (root, mount) = cgroup2_mount(&read("/proc/self/mountinfo")?)
        .ok_or_else(|| Unavailable("no cgroup2 file system is mounted".into()))?;
    let relative = Path::new(own.trim())
        .strip_prefix(&root)
        .map_err(|_| Unavailable(format!("the cgroup {own} is not under the mount of {root}")))?;
    Ok(Path::new(&mount).join(relative))
}

/// The root and the mount point of the cgroup2 mount, from a mountinfo
/// text: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS ... - TYPE SOURCE ...`.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace().skip(3);
        let root = unescape(fields.next()?);
        let point = unescape(fields.next()?);
        Some((root, point))
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the empty trees that servers no longer running left in
/// `origin` (killed before they could): `wiresh-<pid>` of a pid that is
/// gone. A cgroup that holds processes cannot be removed, so nothing that
/// runs is touched.
fn sweep_stale(origin: &Path) {
    let Ok(entries) = std::fs::read_dir(origin) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wiresh-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid)
            .map_or(true, |pid| rustix::process::test_kill_process(pid).is_err());
        if gone {
            remove_empty(&entry.path());
        }
    }
}

/// Removes `dir` and the cgroups in it, those that are empty.
fn remove_empty(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let mountinfo = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        let namespaced =
            "30 25 0:26 /system.slice/x /sys/fs/cgroup\\040here ro - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(namespaced),
            Some(("/system.slice/x".into(), "/sys/fs/cgroup here".into()))
        );
        assert_eq!(cgroup2_mount("22 1 0:21 / /proc rw - proc proc rw"), None);
    }

    #[test]
    fn limits_name_their_controllers() {
        assert!(Limits::default().controllers().is_empty());
        let both = Limits {
            pids: Some(64),
            memory: Some(1 << 30),
        };
        assert_eq!(both.controllers(), ["pids", "memory"]);
    }
}
