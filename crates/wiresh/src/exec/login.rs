//! Where and with which environment a command runs, as `ssh host command`
//! runs it: in the account's home directory, with a login's environment
//! (`HOME`, `USER`, `LOGNAME`, `SHELL`, `PATH`) rather than whatever the
//! server process was started with (its `WIRESH_*` settings, a systemd
//! unit's variables, a tester's shell).
//!
//! The account is the one the server runs as, after `--run-as` if given:
//! looked up in the user database at each start, as `sshd` does at each
//! login, so an edited shell or home takes effect without a restart.

use std::ffi::OsString;
use std::path::PathBuf;

use nix::unistd::{geteuid, User};

use crate::defaults::{LOGIN_PATH, LOGIN_PATH_ROOT};

/// Variables kept from the server's environment: they describe the host
/// (its language and time zone), not the server process, and `sshd` gets
/// them the same way from the system (PAM's `/etc/default/locale`).
fn kept_from_host(name: &str) -> bool {
    matches!(name, "LANG" | "LANGUAGE" | "TZ") || name.starts_with("LC_")
}

/// The account commands run as, as the user database names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAccount {
    /// The account's name (its uid as a number if the database has none).
    pub name: String,
    /// Its home directory, when the database names one.
    pub home: Option<PathBuf>,
    /// Its login shell; `/bin/sh` when the database names none.
    pub shell: PathBuf,
    /// Whether it is root (whose `PATH` has the `sbin` directories).
    pub root: bool,
}

impl LoginAccount {
    /// The account this process runs as.
    pub fn current() -> LoginAccount {
        let uid = geteuid();
        let user = User::from_uid(uid).ok().flatten();
        LoginAccount {
            name: user
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            home: user
                .as_ref()
                .map(|u| u.dir.clone())
                .filter(|d| !d.as_os_str().is_empty()),
            shell: user
                .map(|u| u.shell)
                .filter(|s| !s.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("/bin/sh")),
            root: uid.is_root(),
        }
    }

    /// The directory a command starts in when the client names none: the
    /// home directory, or `/` when it is missing (as `sshd` does).
    pub fn start_dir(&self) -> PathBuf {
        self.home
            .clone()
            .filter(|h| h.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    /// A login's environment for this account, with the host's locale and
    /// time zone taken from `host` (the server's environment).
    pub fn environment(
        &self,
        host: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = host
            .into_iter()
            .filter(|(k, _)| k.to_str().is_some_and(kept_from_host))
            .collect();
        let home = self.home.clone().unwrap_or_else(|| PathBuf::from("/"));
        let path = if self.root {
            LOGIN_PATH_ROOT
        } else {
            LOGIN_PATH
        };
        env.extend([
            ("HOME".into(), home.into_os_string()),
            ("USER".into(), self.name.clone().into()),
            ("LOGNAME".into(), self.name.clone().into()),
            ("SHELL".into(), self.shell.clone().into_os_string()),
            ("PATH".into(), path.into()),
        ]);
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(root: bool, home: Option<&str>) -> LoginAccount {
        LoginAccount {
            name: "alice".into(),
            home: home.map(PathBuf::from),
            shell: "/bin/bash".into(),
            root,
        }
    }

    fn get<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn a_login_gets_the_accounts_variables_and_the_hosts_locale_only() {
        let host = [
            ("WIRESH_HOME", "/srv/wiresh"),
            ("PATH", "/home/tester/.cargo/bin:/usr/bin"),
            ("HOME", "/srv/wiresh"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_TIME", "C"),
            ("TZ", "Europe/Berlin"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = account(false, Some("/home/alice")).environment(host);
        assert_eq!(get(&env, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env, "USER"), Some("alice"));
        assert_eq!(get(&env, "LOGNAME"), Some("alice"));
        assert_eq!(get(&env, "SHELL"), Some("/bin/bash"));
        assert_eq!(get(&env, "PATH"), Some(LOGIN_PATH));
        assert_eq!(get(&env, "LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get(&env, "LC_TIME"), Some("C"));
        assert_eq!(get(&env, "TZ"), Some("Europe/Berlin"));
        assert_eq!(get(&env, "WIRESH_HOME"), None);
        assert_eq!(get(&env, "NOTIFY_SOCKET"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn root_gets_the_sbin_directories_and_a_missing_home_means_the_root_directory() {
        let env = account(true, None).environment(std::iter::empty());
        assert_eq!(get(&env, "PATH"), Some(LOGIN_PATH_ROOT));
        assert_eq!(get(&env, "HOME"), Some("/"));
        let gone = account(false, Some("/nonexistent/wiresh-home"));
        assert_eq!(gone.start_dir(), PathBuf::from("/"));
        let here = tempfile::tempdir().unwrap();
        let present = account(false, here.path().to_str());
        assert_eq!(present.start_dir(), here.path());
    }

    #[test]
    fn the_current_account_is_the_user_databases() {
        let me = LoginAccount::current();
        let user = User::from_uid(geteuid())
            .unwrap()
            .expect("this test's user");
        assert_eq!(me.name, user.name);
        assert_eq!(me.root, geteuid().is_root());
    }
}
