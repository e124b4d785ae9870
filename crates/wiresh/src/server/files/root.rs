//! The files root, held open: every path a client names is resolved by the
//! kernel beneath the root's directory handle (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`), so neither `..`, nor a
//! symbolic link, nor a directory swapped for a link while a request runs
//! can lead out of it. Everything below works on handles from here on:
//! a file is created, renamed and listed relative to the handle of its
//! directory, by one name that has no `/`, never by a path looked up again.
//!
//! [`RelPath`] keeps the lexical checks, which come first for their clear
//! messages (`..`, an absolute path outside the root, NUL); the kernel's
//! check is the one that holds.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::super::refusal::Refusal;

/// Why a path that leads out of the root is refused.
const OUTSIDE: &str = "leads outside the server's files root (symbolic links are followed \
     only when they are relative and stay inside it)";

/// How many times a lookup is retried when the kernel reports that a
/// concurrent rename may have disturbed it (`EAGAIN`).
const RETRIES: usize = 8;

/// A client's path, checked by its text and made relative to the root:
/// its normal components joined by `/`, empty for the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RelPath(String);

impl RelPath {
    /// Checks `path` as a client sent it: no NUL, no `..`, and an absolute
    /// path only if it names something inside `root` (canonical).
    pub fn parse(root: &Path, path: &str) -> Result<RelPath, Refusal> {
        let refused = |why| Refusal::PathRefused {
            path: path.to_string(),
            why,
        };
        if path.contains('\0') {
            return Err(refused("contains a NUL byte"));
        }
        let requested = Path::new(path);
        let relative = if requested.is_absolute() {
            requested
                .strip_prefix(root)
                .map_err(|_| refused("absolute paths must lie inside the server's files root"))?
        } else {
            requested
        };
        let mut parts = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(part) => parts.push(part),
                    None => return Err(refused("is not UTF-8")),
                },
                Component::CurDir => {}
                Component::ParentDir => return Err(refused("`..` is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused("not a relative path"))
                }
            }
        }
        Ok(RelPath(parts.join("/")))
    }

    /// The path as `openat2` takes it (`.` for the root).
    fn as_arg(&self) -> &str {
        if self.0.is_empty() {
            "."
        } else {
            &self.0
        }
    }

    /// The directory that holds this path and its last name; `None` for
    /// the root itself.
    pub fn split_last(&self) -> Option<(RelPath, &str)> {
        match self.0.rsplit_once('/') {
            Some((dir, name)) => Some((RelPath(dir.to_string()), name)),
            None if self.0.is_empty() => None,
            None => Some((RelPath(String::new()), &self.0)),
        }
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_arg())
    }
}

/// The files root as an open directory.
#[derive(Debug)]
pub(super) struct Root {
    dir: OwnedFd,
}

impl Root {
    /// Opens the root (canonical, so it has no symbolic link to follow).
    pub fn open(path: &Path) -> io::Result<Root> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Root { dir })
    }

    /// Opens `rel` beneath the root: symbolic links are followed only while
    /// they stay beneath it, and never through `/proc`-style magic links.
    fn open_at(&self, rel: &RelPath, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.dir,
                rel.as_arg(),
                flags | OFlags::CLOEXEC,
                mode,
                resolve,
            ) {
                Err(Errno::AGAIN) if tries < RETRIES => tries += 1,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// What `rel` is, following a symbolic link that stays inside.
    pub fn metadata(&self, rel: &RelPath) -> io::Result<Metadata> {
        File::from(self.open_at(rel, OFlags::PATH, Mode::empty())?).metadata()
    }

    /// Opens `rel` for reading, without blocking on a FIFO.
    pub fn open_file(&self, rel: &RelPath) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Opens the directory `rel` (for listing it, or working inside it).
    pub fn open_dir(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }

    /// Creates the directory `rel` and any missing parents (like
    /// `mkdir -p`), and opens it. Each directory is made by its one name
    /// inside its parent's handle, and each step is looked up beneath the
    /// root again, so a link met on the way is followed only while it
    /// stays inside.
    pub fn make_dirs(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        let mut dir = self.open_dir(&RelPath(String::new()))?;
        let mut done = String::new();
        for name in rel.0.split('/').filter(|n| !n.is_empty()) {
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(name);
            dir = self.open_dir(&RelPath(done.clone()))?;
        }
        Ok(dir)
    }
}

/// The refusal for a failure to `what` the client's `path` beneath the
/// root: a way out, a loop of links, or a kernel without `openat2` are
/// told apart from plain I/O errors.
pub(super) fn refusal(what: &str, path: &str, e: io::Error) -> Refusal {
    match Errno::from_io_error(&e) {
        Some(Errno::XDEV) => Refusal::PathRefused {
            path: path.to_string(),
            why: OUTSIDE,
        },
        Some(Errno::LOOP) => Refusal::PathRefused {
            path: path.to_string(),
            why: "passes through too many symbolic links",
        },
        Some(Errno::NOSYS) => Refusal::Io(
            "file transfer needs openat2 (Linux 5.6 or later), which this server's kernel \
             lacks; the server refuses file requests rather than risk leaving --files-root"
                .into(),
        ),
        Some(Errno::NOTDIR) => {
            Refusal::Io(format!("{path}: a part of the path is not a directory"))
        }
        _ => Refusal::io(what, Path::new(path), e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    fn rel(root: &Path, path: &str) -> RelPath {
        RelPath::parse(root, path).unwrap_or_else(|e| panic!("{path:?} was refused: {e}"))
    }

    fn lexically_refused(root: &Path, path: &str) -> &'static str {
        match RelPath::parse(root, path) {
            Err(Refusal::PathRefused { why, .. }) => why,
            other => panic!("{path:?} was not refused: {other:?}"),
        }
    }

    fn refused_beneath(e: io::Error) -> &'static str {
        match refusal("open", "p", e) {
            Refusal::PathRefused { why, .. } => why,
            other => panic!("not a path refusal: {other:?}"),
        }
    }

    /// A root with `sub/a.txt`, and beside it `outside/secret.txt`.
    fn fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"inside").unwrap();
        std::fs::write(outside.join("secret.txt"), b"outside").unwrap();
        (dir, root, outside)
    }

    fn read(mut file: File) -> String {
        let mut s = String::new();
        file.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn paths_are_checked_by_their_text_first() {
        let root = Path::new("/srv/root");
        assert_eq!(rel(root, "a.txt"), RelPath("a.txt".into()));
        assert_eq!(rel(root, "./sub//new/./b"), RelPath("sub/new/b".into()));
        assert_eq!(rel(root, "/srv/root/sub/d"), RelPath("sub/d".into()));
        assert_eq!(rel(root, ""), RelPath(String::new()));
        assert_eq!(rel(root, "."), RelPath(String::new()));
        assert_eq!(lexically_refused(root, "../x"), "`..` is not allowed");
        assert_eq!(
            lexically_refused(root, "sub/../../x"),
            "`..` is not allowed"
        );
        assert_eq!(lexically_refused(root, "a\0b"), "contains a NUL byte");
        assert_eq!(
            lexically_refused(root, "/etc/passwd"),
            "absolute paths must lie inside the server's files root"
        );
        assert_eq!(
            lexically_refused(root, "/srv/rootless/x"),
            "absolute paths must lie inside the server's files root"
        );

        let deep = rel(root, "sub/new/b");
        assert_eq!(deep.split_last(), Some((RelPath("sub/new".into()), "b")));
        let top = rel(root, "b");
        assert_eq!(top.split_last(), Some((RelPath(String::new()), "b")));
        assert_eq!(rel(root, ".").split_last(), None);
    }

    #[test]
    fn links_are_followed_only_while_they_stay_beneath_the_root() {
        let (_dir, root, outside) = fixture();
        symlink("sub", root.join("in")).unwrap();
        symlink("../sub/a.txt", root.join("sub/up")).unwrap();
        symlink(&outside, root.join("out")).unwrap();
        symlink("../outside", root.join("rel_out")).unwrap();
        symlink(root.join("sub"), root.join("abs_in")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        let r = Root::open(&root).unwrap();

        assert_eq!(
            read(r.open_file(&rel(&root, "sub/a.txt")).unwrap()),
            "inside"
        );
        assert_eq!(
            read(r.open_file(&rel(&root, "in/a.txt")).unwrap()),
            "inside"
        );
        assert_eq!(read(r.open_file(&rel(&root, "sub/up")).unwrap()), "inside");
        assert!(r.metadata(&rel(&root, "in")).unwrap().is_dir());
        assert!(r.metadata(&rel(&root, "")).unwrap().is_dir());

        for path in [
            "out/secret.txt",
            "rel_out/secret.txt",
            "abs_in/a.txt",
            "out",
            "magic/etc",
        ] {
            let e = r.open_file(&rel(&root, path)).unwrap_err();
            assert_eq!(refused_beneath(e), OUTSIDE, "{path}");
        }
        let e = r.metadata(&rel(&root, "rel_out")).unwrap_err();
        assert_eq!(refused_beneath(e), OUTSIDE);
        let e = r.make_dirs(&rel(&root, "out/new/deeper")).unwrap_err();
        assert_eq!(refused_beneath(e), OUTSIDE);
        assert!(
            !outside.join("new").exists(),
            "mkdir -p went through the link"
        );
    }

    #[test]
    fn make_dirs_creates_missing_parents_inside() {
        let (_dir, root, _outside) = fixture();
        symlink("sub", root.join("in")).unwrap();
        let r = Root::open(&root).unwrap();
        r.make_dirs(&rel(&root, "in/x/y")).unwrap();
        assert!(root.join("sub/x/y").is_dir());
        r.make_dirs(&rel(&root, "in/x/y")).unwrap(); // already there: fine
        std::fs::write(root.join("file"), b"").unwrap();
        let e = r.make_dirs(&rel(&root, "file/z")).unwrap_err();
        assert!(matches!(refusal("create", "file/z", e), Refusal::Io(_)));
    }

    /// A handle taken before the directory is swapped for a link to the
    /// outside keeps naming the directory inside: what it creates lands
    /// inside, whatever the name now leads to.
    #[test]
    fn a_handle_outlives_a_swap_of_its_name() {
        let (_dir, root, outside) = fixture();
        let r = Root::open(&root).unwrap();
        let sub = r.open_dir(&rel(&root, "sub")).unwrap();
        std::fs::rename(root.join("sub"), root.join("moved")).unwrap();
        symlink(&outside, root.join("sub")).unwrap();
        rustix::fs::mkdirat(&sub, "made", Mode::from_raw_mode(0o755)).unwrap();
        assert!(root.join("moved/made").is_dir());
        assert!(!outside.join("made").exists());
        let e = r.open_dir(&rel(&root, "sub")).unwrap_err();
        assert_eq!(refused_beneath(e), OUTSIDE);
    }
}
