//! `wiresh reload`, and the pid file it reads: `serve` keeps its process id
//! in `$WIRESH_HOME/server.pid` (or `--pid-file`) while it runs, and
//! `reload` sends that process, and no other, SIGHUP. Never a recipe that
//! signals every process named wiresh (clients included).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wiresh::home;

use crate::args::ReloadArgs;

/// Name of the default pid file in `$WIRESH_HOME`.
pub const PID_FILE: &str = "server.pid";

/// `$WIRESH_HOME/server.pid`, or the file given.
pub fn path(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(home::wiresh_home()?.join(PID_FILE)),
    }
}

/// The pid file of a running server: removed when dropped, unless another
/// server has written its own id there since.
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's id to `path` (whole, by a rename).
    pub fn write(path: PathBuf) -> Result<PidFile> {
        let pid = std::process::id();
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("--pid-file {}: not a file name", path.display()))?;
        let mut partial = name.to_os_string();
        partial.push(".partial");
        let partial = path.with_file_name(partial);
        std::fs::write(&partial, format!("{pid}\n"))
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(PidFile { path, pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok() == Some(self.pid) {
            // After --run-as the directory may no longer be writable: then
            // the file stays, and `reload` tells it is stale.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The process id a pid file holds.
fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| anyhow!("{} does not hold a process id", path.display()))
}

/// Whether process `pid` is `wiresh serve`: a pid file left behind may
/// name a process that has since taken the same id.
fn is_wiresh_serve(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut words = cmdline.split(|&b| b == 0);
    let program = words.next().unwrap_or_default();
    let named_wiresh = Path::new(OsStr::from_bytes(program))
        .file_name()
        .is_some_and(|name| name.as_bytes().starts_with(b"wiresh"));
    named_wiresh && words.next() == Some(b"serve")
}

/// `wiresh reload`: SIGHUP to the server of the pid file, which re-reads
/// its settings and files; its log says whether that worked.
pub fn run(args: ReloadArgs) -> Result<()> {
    let path = path(args.pid_file.as_deref())?;
    let pid = read_pid(&path).with_context(|| {
        format!(
            "cannot read the pid file {}: is `wiresh serve` running with this WIRESH_HOME \
             (or with --pid-file; then pass the same here)?",
            path.display()
        )
    })?;
    anyhow::ensure!(
        is_wiresh_serve(pid),
        "process {pid} of {} is not a running `wiresh serve` (the file is left from one that \
         stopped); nothing was signalled",
        path.display()
    );
    let raw = i32::try_from(pid).context("process id out of range")?;
    kill(Pid::from_raw(raw), Signal::SIGHUP)
        .with_context(|| format!("cannot signal wiresh serve (pid {pid})"))?;
    eprintln!(
        "wiresh: asked wiresh serve (pid {pid}) to reload; its log says whether it worked \
         (`configuration reloaded`, or why not)"
    );
    Ok(())
}
