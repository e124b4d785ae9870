//! `$WIRESH_HOME` and the private files kept in it.
//!
//! The token, the TLS key, the pinned fingerprints, the shell history and
//! the audit log are all files that only their owner may read. They are
//! created here, with their modes set at creation (never chmod-ed after, so
//! there is no moment where they are readable), and checked here when read.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::SetupError;

/// Environment variable that overrides the wiresh home directory.
pub const HOME_ENV: &str = "WIRESH_HOME";

/// The wiresh home directory: `$WIRESH_HOME`, else `$HOME/.wiresh`.
pub fn wiresh_home() -> Result<PathBuf, SetupError> {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".wiresh")),
        None => Err(SetupError::NoHome { env: HOME_ENV }),
    }
}

/// Creates `dir` and its missing parents, owner-only (mode 700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the directory a private file will live in, if it names one.
fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => create_private_dir(dir),
        None => Ok(()),
    }
}

/// Creates a new owner-only file (mode 600) for writing; fails if it exists.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    create_parent(path)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Opens an owner-only file (mode 600 when created) for appending.
pub fn append_private_file(path: &Path) -> io::Result<File> {
    create_parent(path)?;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The permission bits of a file (`what` names it in the error).
pub fn mode_of(path: &Path, what: &'static str) -> Result<u32, SetupError> {
    let meta = fs::metadata(path).map_err(|source| SetupError::File {
        action: "read",
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(meta.permissions().mode() & 0o777)
}

/// The text of a file (`what` names it in the error).
pub fn read_text(path: &Path, what: &'static str) -> Result<String, SetupError> {
    fs::read_to_string(path).map_err(|source| SetupError::File {
        action: "read",
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that group and others have no access to a secret file. A
/// secret that is not a regular file (a device such as `/dev/null`, a
/// directory) is refused for what it is: chmod would be the wrong advice.
pub fn check_private(path: &Path, what: &'static str) -> Result<(), SetupError> {
    let mode = mode_of(path, what)?;
    let kind = fs::metadata(path).map(|m| m.file_type()).ok();
    if let Some(kind) = kind.filter(|k| k.is_dir() || k.is_char_device() || k.is_block_device()) {
        return Err(SetupError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!(
                "it is {}, not a file; give the path of the {what} itself",
                if kind.is_dir() {
                    "a directory"
                } else {
                    "a device"
                }
            ),
        });
    }
    if mode & 0o077 != 0 {
        return Err(SetupError::NotPrivate {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Lowercase hex of some bytes (digests, random tokens).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        drop(create_private_file(&path).unwrap());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        assert!(create_private_file(&path).is_err(), "must not overwrite");
        check_private(&path, "secret").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = check_private(&path, "secret").unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        for not_a_file in [Path::new("/dev/null"), dir.path()] {
            let err = check_private(not_a_file, "key").unwrap_err().to_string();
            assert!(
                err.contains("not a file") && !err.contains("chmod"),
                "{err}"
            );
        }
        let log = dir.path().join("log");
        drop(append_private_file(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
