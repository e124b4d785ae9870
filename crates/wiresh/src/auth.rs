//! The shared-secret token: where it lives, how it is created, how it is
//! compared.
//!
//! The server creates a random 256-bit token on first run in a file only its
//! owner can read; a client on the same account finds it in the same place.
//! Other machines get it copied over (or through `WIRESH_TOKEN`), the same
//! way an ssh key is. The file holds 64 lowercase hex digits and a newline;
//! surrounding whitespace is ignored, and what goes on the wire is the
//! trimmed text.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use wiresh_proto::Secret;

use crate::error::SetupError;
use crate::home::{check_private, create_private_file, hex, wiresh_home};

/// Environment variable a client may use to pass the token directly.
pub const TOKEN_ENV: &str = "WIRESH_TOKEN";

/// Name of the token file inside the wiresh home directory.
const TOKEN_FILE: &str = "token";

/// What a token file is called in messages.
const WHAT: &str = "token file";

/// The default token path, `<wiresh home>/token`.
pub fn default_token_path() -> Result<PathBuf, SetupError> {
    Ok(wiresh_home()?.join(TOKEN_FILE))
}

/// Loads the server's token from `path`, creating a new random one (and its
/// directory) when the file does not exist yet.
///
/// Returns the token and whether it was just created.
pub fn load_or_create_token(path: &Path) -> Result<(Secret, bool), SetupError> {
    match read_token_file(path) {
        Ok(token) => return Ok((token, false)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    let failed = |action| {
        move |source| SetupError::File {
            action,
            what: WHAT,
            path: path.to_path_buf(),
            source,
        }
    };
    let token = random_token();
    let mut file = create_private_file(path).map_err(failed("create"))?;
    writeln!(file, "{}", token.expose())
        .and_then(|()| file.sync_all())
        .map_err(failed("write"))?;
    Ok((token, true))
}

fn is_not_found(e: &SetupError) -> bool {
    matches!(e, SetupError::File { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Reads a token file, refusing one that other users could read.
pub fn read_token_file(path: &Path) -> Result<Secret, SetupError> {
    check_private(path, WHAT)?;
    let text = crate::home::read_text(path, WHAT)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SetupError::Invalid {
            what: WHAT,
            path: path.to_path_buf(),
            reason: "it is empty".into(),
        });
    }
    Ok(Secret(token.to_string()))
}

/// Where a client gets its token: an explicit file, then `WIRESH_TOKEN`,
/// then the default file the server on this account created.
pub fn client_token(token_file: Option<&Path>) -> Result<Secret, SetupError> {
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
            SetupError::NoToken {
                path: path.clone(),
                env: TOKEN_ENV,
            }
        } else {
            e
        }
    })
}

/// A new random token: 32 bytes from the OS generator, hex-encoded.
fn random_token() -> Secret {
    let mut bytes = [0u8; 32];
    // Without randomness no secret can be made; nothing sensible remains.
    getrandom::fill(&mut bytes).expect("the operating system has no random number generator");
    Secret(hex(&bytes))
}

/// A short, stable, non-secret name for a token, for logs and the audit
/// log: the first 16 hex digits of its BLAKE3 hash.
pub fn token_id(token: &Secret) -> String {
    let digest = blake3::hash(token.expose().as_bytes()).to_hex();
    format!("token:{}", &digest[..16])
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn token_ids_are_short_and_stable() {
        let id = token_id(&Secret("abc".into()));
        assert_eq!(id, token_id(&Secret("abc".into())));
        assert_eq!(id.len(), "token:".len() + 16);
        assert!(!id.contains("abc"));
    }
}
