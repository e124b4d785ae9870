//! Dropping root privileges (`wiresh serve --run-as USER`).
//!
//! A server started as root binds its ports and reads its secrets first,
//! then becomes USER for good, so that every command runs as USER.

use std::ffi::CString;

use nix::unistd::{self, Uid, User};

use crate::error::SetupError;

/// The account commands will run as.
#[derive(Debug, Clone)]
pub struct Account {
    user: User,
}

impl Account {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<Account, SetupError> {
        match User::from_name(name) {
            Ok(Some(user)) => Ok(Account { user }),
            Ok(None) => Err(SetupError::Privilege(format!(
                "--run-as {name}: no such user"
            ))),
            Err(e) => Err(SetupError::Privilege(format!(
                "--run-as {name}: cannot read the user database: {e}"
            ))),
        }
    }

    /// The account's user id.
    pub fn uid(&self) -> u32 {
        self.user.uid.as_raw()
    }

    /// Its primary group id.
    pub fn gid(&self) -> u32 {
        self.user.gid.as_raw()
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.user.name
    }

    /// Becomes this account for the rest of the process's life:
    /// supplementary groups, then group, then user (the order that leaves
    /// no way back), and points HOME, USER and LOGNAME at it.
    ///
    /// nix calls the C library's setgid/setuid, which glibc applies to every
    /// thread of the process (a raw system call would change one thread).
    pub fn become_it(&self) -> Result<(), SetupError> {
        let user = &self.user;
        let failed = |what: String| move |e| SetupError::Privilege(format!("{what}: {e}"));
        let c_name = CString::new(user.name.as_str())
            .map_err(|_| SetupError::Privilege("user name contains a NUL byte".into()))?;
        unistd::initgroups(&c_name, user.gid)
            .map_err(failed(format!("cannot set the groups of {}", user.name)))?;
        unistd::setgid(user.gid).map_err(failed(format!("cannot switch to group {}", user.gid)))?;
        unistd::setuid(user.uid).map_err(failed(format!("cannot switch to user {}", user.name)))?;
        // Must fail now: proof that root is gone for good.
        if !user.uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(SetupError::Privilege(
                "privileges could not be dropped: setuid(0) still works".into(),
            ));
        }
        // Commands inherit the environment; make it the account's.
        std::env::set_var("HOME", &user.dir);
        std::env::set_var("USER", &user.name);
        std::env::set_var("LOGNAME", &user.name);
        Ok(())
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    unistd::geteuid().is_root()
}
