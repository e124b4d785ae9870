//! Dropping root privileges (`wiresh serve --run-as USER`).
//!
//! A server started as root binds its ports and reads its secrets first,
//! then becomes USER for good, so that every command runs as USER.

use std::ffi::{CStr, CString};

use anyhow::{bail, Context, Result};

/// The account commands will run as.
#[derive(Debug, Clone)]
pub struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: String,
}

impl Account {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<Account> {
        let c_name = CString::new(name).context("user name contains a NUL byte")?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r writes into `pwd` and `buf`, which outlive the
        // call, and sets `result` to `&pwd` or null.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            bail!("--run-as {name}: no such user");
        }
        // SAFETY: on success pw_dir points into `buf`, NUL-terminated.
        let home = unsafe { CStr::from_ptr(pwd.pw_dir) }
            .to_string_lossy()
            .into_owned();
        Ok(Account {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        })
    }

    /// The account's user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Becomes this account for the rest of the process's life:
    /// supplementary groups, then group, then user (the order that leaves
    /// no way back), and points HOME, USER and LOGNAME at it.
    pub fn become_it(&self) -> Result<()> {
        let c_name = CString::new(self.name.as_str())?;
        // SAFETY: plain system calls on integers and a valid C string.
        // glibc applies setgid/setuid to every thread of the process.
        unsafe {
            if libc::initgroups(c_name.as_ptr(), self.gid) != 0 {
                bail!(
                    "cannot set the groups of {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            if libc::setgid(self.gid) != 0 {
                bail!(
                    "cannot switch to group {}: {}",
                    self.gid,
                    std::io::Error::last_os_error()
                );
            }
            if libc::setuid(self.uid) != 0 {
                bail!(
                    "cannot switch to user {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            // Must fail now: proof that root is gone for good.
            if self.uid != 0 && libc::setuid(0) == 0 {
                bail!("privileges could not be dropped: setuid(0) still works");
            }
        }
        // Commands inherit the environment; make it the account's.
        std::env::set_var("HOME", &self.home);
        std::env::set_var("USER", &self.name);
        std::env::set_var("LOGNAME", &self.name);
        Ok(())
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
