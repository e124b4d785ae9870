//! The library's errors as the package's exceptions (defined in Python, in
//! `wiresh/errors.py`, so that they carry attributes and stubs): a failed
//! connection is `ConnectError`, a changed server key `FingerprintMismatch`,
//! a refused token or key `AuthenticationError`, any other refusal
//! `RemoteError` with the wire code, a broken peer `ProtocolError`, a lost
//! connection `ConnectionLost`, a local setting `ConfigError`.

use std::ffi::CString;

use pyo3::exceptions::{PyFutureWarning, PyOSError};
use pyo3::prelude::*;
use wiresh::client::transfer::TransferError;
use wiresh::client::ClientError;
use wiresh::error::SetupError;
use wiresh::reach::Resolver;
use wiresh_proto::ErrorCode;

/// The module the exception classes live in.
const MODULE: &str = "wiresh.errors";

/// An instance of the exception class `class`, made with `args`.
pub fn exception<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py
        .import(MODULE)
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// What the settings warn about (an old `hosts.toml` still read), as a
/// Python `FutureWarning` each: what `wiresh exec` prints on stderr.
pub fn warn_settings(py: Python<'_>, resolver: &Resolver) -> PyResult<()> {
    let category = py.get_type::<PyFutureWarning>();
    for warning in resolver.inventory().warnings() {
        let text = CString::new(format!("wiresh: {warning}"))
            .unwrap_or_else(|_| c"wiresh: a settings file is read for this release only".into());
        // Level 1 is `connect` or `run_many` in wiresh/__init__.py, which
        // call the extension directly; 2 is the user's line.
        PyErr::warn(py, &category, &text, 2)?;
    }
    Ok(())
}

/// A setting or a file that does not allow connecting.
pub fn setup(py: Python<'_>, e: &SetupError) -> PyErr {
    exception(py, "ConfigError", (e.to_string(),))
}

/// A failure of the client, `connecting` or once connected.
pub fn client(py: Python<'_>, e: &ClientError, connecting: bool) -> PyErr {
    let message = e.to_string();
    match e {
        ClientError::Connect { .. } => exception(py, "ConnectError", (message,)),
        ClientError::Pinning(_) => exception(py, "FingerprintMismatch", (message,)),
        ClientError::Tls(_) => exception(py, "ConnectError", (message,)),
        ClientError::Timeout(_) if connecting => exception(py, "ConnectError", (message,)),
        ClientError::Timeout(_) | ClientError::Closed(_) | ClientError::OutputClosed => {
            exception(py, "ConnectionLost", (message,))
        }
        ClientError::Remote { code, message, .. } => remote(py, *code, message),
        ClientError::Protocol(_) => exception(py, "ProtocolError", (message,)),
        // The library's second cancel: ours, for a command that did not end
        // when cancelled (Ctrl-C itself raises KeyboardInterrupt as it came).
        ClientError::Interrupted => exception(
            py,
            "ConnectionLost",
            ("the command did not end when cancelled; the connection was given up",),
        ),
        ClientError::Unsupported(_) => exception(py, "WireshError", (message,)),
    }
}

/// A refusal from the server, with its wire code.
pub fn remote(py: Python<'_>, code: ErrorCode, message: &str) -> PyErr {
    let class = match code {
        ErrorCode::AuthFailed | ErrorCode::AuthRequired | ErrorCode::RateLimited => {
            "AuthenticationError"
        }
        _ => "RemoteError",
    };
    let text = format!("server error ({code}): {message}");
    exception(py, class, (text, code.as_str()))
}

/// A failed `put` or `get`: a local file's own error as `OSError` (so
/// `FileNotFoundError` and the like), the rest as the package's errors.
pub fn transfer(py: Python<'_>, e: &TransferError) -> PyErr {
    match e {
        TransferError::Client(c) => client(py, c, false),
        TransferError::Local { path, source } => match source.raw_os_error() {
            Some(errno) => PyOSError::new_err((
                errno,
                source.to_string(),
                path.to_string_lossy().into_owned(),
            )),
            None => exception(py, "TransferError", (e.to_string(),)),
        },
        TransferError::Unsafe(_) | TransferError::Checksum(_) => {
            exception(py, "TransferError", (e.to_string(),))
        }
    }
}
