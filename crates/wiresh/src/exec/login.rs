//! Where and with which environment a command runs, as `ssh host command`
//! runs it: in the account's home directory, with a login's environment
//! (`HOME`, `USER`, `LOGNAME`, `SHELL`, `PATH`) rather than whatever the
//! server process was started with (its `WIRESH_*` settings, a systemd
//! unit's variables, a tester's shell).
//!
//! The account is the one the server runs as, after `--run-as` if given,
//! as the user database says, so an edited shell or home takes effect
//! without a restart, as with `sshd`'s look-up at each login. A look-up
//! opens and parses `/etc/passwd` (7.6 µs a command here, against 1.3 µs
//! to look at the file's stamp), so one is used again while that file is
//! unchanged, for [`ACCOUNT_RECHECK`] at most.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use nix::unistd::{geteuid, Uid, User};

use crate::defaults::{ACCOUNT_RECHECK, LOGIN_PATH, LOGIN_PATH_ROOT};

/// The file whose change means the account may have changed.
const USER_DATABASE: &str = "/etc/passwd";

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
    /// The account this process runs as (see the module's docs).
    pub fn current() -> LoginAccount {
        static LAST: Mutex<Option<LookedUp>> = Mutex::new(None);
        let uid = geteuid();
        let stamp = Stamp::of(Path::new(USER_DATABASE));
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        LookedUp::reuse_or(&mut last, uid, stamp, Instant::now(), || {
            LoginAccount::look_up(uid)
        })
    }

    /// Account `uid` as the user database says now.
    fn look_up(uid: Uid) -> LoginAccount {
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
    /// time zone taken from the server's environment, as it was when the
    /// server started (nothing changes them later).
    pub fn login_environment(&self) -> Vec<(OsString, OsString)> {
        static HOST: OnceLock<Vec<(OsString, OsString)>> = OnceLock::new();
        let host = HOST.get_or_init(|| {
            std::env::vars_os()
                .filter(|(k, _)| k.to_str().is_some_and(kept_from_host))
                .collect()
        });
        self.environment(host.iter().cloned())
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

/// What identifies one version of a file: a replaced file (a new inode,
/// as editors and `usermod` write it) or one written in place (a new
/// change time or size) looks different.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: i64,
}

impl Stamp {
    /// `path`'s stamp; `None` when it cannot be read (then nothing is
    /// reused).
    fn of(path: &Path) -> Option<Stamp> {
        let st = rustix::fs::stat(path).ok()?;
        Some(Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            size: st.st_size,
        })
    }
}

/// An earlier look-up, and what it was made under.
#[derive(Debug)]
struct LookedUp {
    uid: Uid,
    stamp: Stamp,
    at: Instant,
    account: LoginAccount,
}

impl LookedUp {
    /// The account `uid` in `last` if it was looked up under this `stamp`
    /// less than [`ACCOUNT_RECHECK`] before `now`; else `look_up`'s,
    /// kept in `last` for next time.
    fn reuse_or(
        last: &mut Option<LookedUp>,
        uid: Uid,
        stamp: Option<Stamp>,
        now: Instant,
        look_up: impl FnOnce() -> LoginAccount,
    ) -> LoginAccount {
        if let (Some(earlier), Some(stamp)) = (last.as_ref(), stamp) {
            let fresh = now.saturating_duration_since(earlier.at) < ACCOUNT_RECHECK;
            if earlier.uid == uid && earlier.stamp == stamp && fresh {
                return earlier.account.clone();
            }
        }
        let account = look_up();
        *last = stamp.map(|stamp| LookedUp {
            uid,
            stamp,
            at: now,
            account: account.clone(),
        });
        account
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

    #[test]
    fn a_look_up_is_used_again_only_while_the_database_and_the_account_stay_the_same() {
        let stamp = Stamp {
            dev: 1,
            ino: 2,
            ctime: (3, 4),
            mtime: (3, 4),
            size: 900,
        };
        let (me, other) = (Uid::from_raw(1000), Uid::from_raw(1001));
        let start = Instant::now();
        let mut last = None;
        let looked_up = std::cell::Cell::new(0);
        let current = |last: &mut Option<LookedUp>, uid, stamp, at| {
            LookedUp::reuse_or(last, uid, stamp, at, || {
                looked_up.set(looked_up.get() + 1);
                account(false, Some("/home/alice"))
            });
        };
        current(&mut last, me, Some(stamp), start);
        current(&mut last, me, Some(stamp), start + ACCOUNT_RECHECK / 2);
        assert_eq!(
            looked_up.get(),
            1,
            "an unchanged database is not read again"
        );
        let edited = Stamp { size: 901, ..stamp };
        current(&mut last, me, Some(edited), start + ACCOUNT_RECHECK / 2);
        assert_eq!(looked_up.get(), 2, "an edit is seen at once");
        current(&mut last, other, Some(edited), start + ACCOUNT_RECHECK / 2);
        assert_eq!(looked_up.get(), 3, "another account is looked up");
        current(&mut last, other, Some(edited), start + ACCOUNT_RECHECK * 2);
        assert_eq!(
            looked_up.get(),
            4,
            "nothing is used again past the recheck time"
        );
        current(&mut last, other, None, start + ACCOUNT_RECHECK * 2);
        current(&mut last, other, None, start + ACCOUNT_RECHECK * 2);
        assert_eq!(
            looked_up.get(),
            6,
            "without a readable database, every time"
        );
    }

    #[test]
    fn a_replaced_or_rewritten_file_has_another_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, "alice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        let first = Stamp::of(&file).expect("a stamp");
        assert_eq!(Stamp::of(&file), Some(first));
        let next = dir.path().join("passwd.new");
        std::fs::write(&next, "alice:x:1000:1000::/home/alice:/bin/bash\n").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_ne!(Stamp::of(&file), Some(first), "a new inode");
        assert_eq!(Stamp::of(&dir.path().join("absent")), None);
    }

    #[test]
    fn the_current_account_is_the_same_looked_up_again() {
        assert_eq!(LoginAccount::current(), LoginAccount::current());
        assert_eq!(LoginAccount::current(), LoginAccount::look_up(geteuid()));
    }
}
