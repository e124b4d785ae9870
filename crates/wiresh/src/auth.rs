//! The shared-secret token: where it lives, how it is created, how it is
//! compared.
//!
//! The server creates a random 256-bit token on first run in a file only its
//! owner can read; a client on the same account finds it in the same place.
//! Other machines get it copied over (or through `WIRESH_TOKEN`), the same
//! way an ssh key is.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use subtle::ConstantTimeEq;
use wiresh_proto::Secret;

/// Environment variable that overrides the wiresh home directory.
pub const HOME_ENV: &str = "WIRESH_HOME";

/// Environment variable a client may use to pass the token directly.
pub const TOKEN_ENV: &str = "WIRESH_TOKEN";

/// Name of the token file inside the wiresh home directory.
const TOKEN_FILE: &str = "token";

/// The wiresh home directory: `$WIRESH_HOME`, else `$HOME/.wiresh`.
pub fn wiresh_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".wiresh")),
        None => bail!("cannot find a home directory: set {HOME_ENV} or HOME"),
    }
}

/// The default token path, `<wiresh home>/token`.
pub fn default_token_path() -> Result<PathBuf> {
    Ok(wiresh_home()?.join(TOKEN_FILE))
}

/// Loads the server's token from `path`, creating a new random one (and its
/// directory) when the file does not exist yet.
///
/// Returns the token and whether it was just created.
pub fn load_or_create_token(path: &Path) -> Result<(Secret, bool)> {
    match read_token_file(path) {
        Ok(token) => return Ok((token, false)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let token = random_token()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create token file {}", path.display()))?;
    writeln!(file, "{}", token.expose())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write token file {}", path.display()))?;
    Ok((token, true))
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound)
}

/// Reads a token file, refusing one that other users could read.
pub fn read_token_file(path: &Path) -> Result<Secret> {
    let meta = fs::metadata(path).map_err(anyhow::Error::from)?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "token file {} is accessible by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(Secret(token.to_string()))
}

/// Where a client gets its token: an explicit file, then `WIRESH_TOKEN`,
/// then the default file the server on this account created.
pub fn client_token(token_file: Option<&Path>) -> Result<Secret> {
    if let Some(path) = token_file {
        return read_token_file(path);
    }
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        if !token.trim().is_empty() {
            return Ok(Secret(token.trim().to_string()));
        }
    }
    let path = default_token_path()?;
    read_token_file(&path).map_err(|e| {
        if is_not_found(&e) {
            anyhow::anyhow!(
                "no token found at {}: start `wiresh serve` once on this account to create it, \
                 or pass --token-file PATH or set {TOKEN_ENV}",
                path.display()
            )
        } else {
            e
        }
    })
}

/// A new random token: 32 bytes from the OS generator, hex-encoded.
fn random_token() -> Result<Secret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(Secret(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Compares a presented token with the expected one in constant time, so the
/// time taken reveals nothing about how many leading bytes matched.
pub fn token_matches(expected: &Secret, presented: &Secret) -> bool {
    expected
        .expose()
        .as_bytes()
        .ct_eq(presented.expose().as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token");
        let (t1, created) = load_or_create_token(&path).unwrap();
        assert!(created);
        assert_eq!(t1.expose().len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, created) = load_or_create_token(&path).unwrap();
        assert!(!created);
        assert!(token_matches(&t1, &t2));
    }

    #[test]
    fn refuses_world_readable_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "abc\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_token_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn compare() {
        let a = Secret("abc".into());
        assert!(token_matches(&a, &Secret("abc".into())));
        assert!(!token_matches(&a, &Secret("abd".into())));
        assert!(!token_matches(&a, &Secret("ab".into())));
    }
}
