//! `wiresh._wiresh`: the native half of the `wiresh` Python package, over
//! the library's client (one implementation of the protocol, TLS pinning,
//! tokens, keys and host settings for the CLI and Python alike).
//!
//! The Python half (`python/wiresh/`) holds the public API: `connect`,
//! `Client`, `Completed`, `run_many` and the exceptions. This crate runs
//! the connections on one tokio runtime and gives Python the results:
//! - `client`: a connection as a Python object, used by one thread at a
//!   time; `put` and `get`.
//! - `cancel`: cancelling a command so that the cancel is never lost.
//! - `command`: one command: its input fed from bytes or a file object,
//!   its output gathered (`run`) or handed over chunk by chunk (`stream`),
//!   its timeout, and Ctrl-C.
//! - `many`: one command on many hosts at once (`run_many`).
//! - `errors`: the library's errors as the package's exception classes.
//! - `waiting`: the runtime, and waiting on it with the GIL released
//!   while Ctrl-C still reaches Python.

mod cancel;
mod client;
mod command;
mod errors;
mod many;
mod waiting;

use pyo3::prelude::*;

/// The module `wiresh._wiresh`.
#[pymodule]
fn _wiresh(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<command::Stream>()?;
    m.add_function(wrap_pyfunction!(client::connect, m)?)?;
    m.add_function(wrap_pyfunction!(many::run_many, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
