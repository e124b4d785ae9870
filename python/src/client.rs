//! A connection as a Python object: `connect()` resolves the host as the
//! CLI does (`wiresh::reach`) and authenticates; `Client` runs commands
//! and transfers one at a time. A `Client` is used from one thread at a
//! time: a second thread calling it while a command runs (or while a
//! stream is open) gets an error saying so, never a mixed-up connection.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use tokio::sync::{mpsc, oneshot};
use wiresh::client::copy::CopyFlags;
use wiresh::client::transfer::{TransferError, TransferOptions};
use wiresh::client::{Connection, Endpoint};
use wiresh::reach::{Reach, Resolver};
use wiresh_proto::Secret;

use crate::command::{self, Input, Stream};
use crate::{errors, waiting};

/// Where a client's connection is between commands.
pub enum State {
    /// Ready for the next command.
    Idle(Box<Connection>),
    /// A command or transfer has it.
    Busy,
    /// Closed, and why.
    Closed(String),
}

/// A client's connection, shared with the task that runs a command on it.
#[derive(Clone)]
pub struct Slot(Arc<Mutex<State>>);

impl Slot {
    fn new(conn: Connection) -> Slot {
        Slot(Arc::new(Mutex::new(State::Idle(Box::new(conn)))))
    }

    /// Takes the connection for a command; an error when another thread
    /// (or an open stream) has it, or when it is closed.
    fn take(&self, py: Python<'_>) -> PyResult<Connection> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, State::Busy) {
            State::Idle(conn) => Ok(*conn),
            State::Busy => Err(errors::exception(
                py,
                "WireshError",
                (
                    "this Client is busy: another thread is running a command on it, or a stream \
                  from it is still open (close it first); a Client runs one command at a time \
                  and is used from one thread at a time: make one Client per thread",
                ),
            )),
            State::Closed(why) => {
                *state = State::Closed(why.clone());
                Err(errors::exception(
                    py,
                    "ConnectionLost",
                    (format!("this Client is closed: {why}"),),
                ))
            }
        }
    }

    /// Sets the state (the connection back, or closed).
    pub fn put(&self, state: State) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

/// An authenticated connection to one wiresh server.
#[pyclass(module = "wiresh._wiresh", frozen)]
pub struct Client {
    slot: Slot,
    /// The server, as `HOST:PORT`.
    #[pyo3(get)]
    target: String,
}

/// Connects to `host` (as the CLI takes it: a name, an address,
/// `HOST:PORT`, a name from the host settings). What is not given comes
/// from the wiresh home as the CLI finds it.
#[pyfunction]
#[pyo3(signature = (host=None, *, port=None, token=None, token_file=None, key=None, fingerprint=None, plaintext=false, home=None))]
#[allow(clippy::too_many_arguments)]
pub fn connect(
    py: Python<'_>,
    host: Option<String>,
    port: Option<u16>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    key: Option<PathBuf>,
    fingerprint: Option<String>,
    plaintext: bool,
    home: Option<PathBuf>,
) -> PyResult<Client> {
    let reach = Reach {
        host,
        port,
        token: token.map(Secret),
        token_file,
        key,
        fingerprint,
        plaintext,
        home,
        ..Reach::default()
    };
    let endpoint = resolve(py, &reach)?;
    let conn = waiting::run(py, Connection::connect(&endpoint))?
        .map_err(|e| errors::client(py, &e, true))?;
    Ok(Client {
        slot: Slot::new(conn),
        target: endpoint.target.to_string(),
    })
}

/// The endpoint `reach` names, or the exception for why there is none.
pub fn resolve(py: Python<'_>, reach: &Reach) -> PyResult<Endpoint> {
    let setup = |e| errors::setup(py, &e);
    let mut resolver = Resolver::new(reach.clone()).map_err(setup)?;
    errors::warn_settings(py, &resolver)?;
    let name = resolver.the_host().map_err(setup)?;
    resolver.endpoint(&name).map_err(setup)
}

#[pymethods]
impl Client {
    /// Runs a command and waits for its end; returns `(returncode,
    /// signal, duration, timed_out, stdout, stderr)`.
    #[pyo3(signature = (command, *, input=None, env=None, cwd=None, timeout=None))]
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        py: Python<'_>,
        command: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        env: Option<BTreeMap<String, String>>,
        cwd: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<(Option<i32>, Option<i32>, f64, bool, Vec<u8>, Vec<u8>)> {
        let req = command::request(command, env, cwd, timeout)?;
        let input = Input::from_python(input)?;
        let conn = self.slot.take(py)?;
        let mut running = command::start(conn, self.slot.clone(), req, input, None)?;
        let ended = command::wait_end(py, &mut running)?;
        let (status, stdout, stderr) = command::failure(py, ended)?;
        Ok((
            status.code,
            status.signal,
            status.duration_ms as f64 / 1000.0,
            status.timed_out,
            stdout,
            stderr,
        ))
    }

    /// Starts a command and returns its output as it arrives (a `Stream`).
    #[pyo3(signature = (command, *, input=None, env=None, cwd=None, timeout=None))]
    fn stream(
        &self,
        py: Python<'_>,
        command: &Bound<'_, PyAny>,
        input: Option<&Bound<'_, PyAny>>,
        env: Option<BTreeMap<String, String>>,
        cwd: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Stream> {
        let req = command::request(command, env, cwd, timeout)?;
        let input = Input::from_python(input)?;
        let conn = self.slot.take(py)?;
        let (tx, rx) = mpsc::channel(1);
        let running = command::start(conn, self.slot.clone(), req, input, Some(tx))?;
        Ok(Stream::new(rx, running))
    }

    /// Copies local files (trees with `recursive`) to the server, as
    /// `wiresh put` does: each file checked and renamed into place.
    #[pyo3(signature = (local, remote, *, recursive=false, preserve=false, resume=false))]
    fn put(
        &self,
        py: Python<'_>,
        local: Vec<PathBuf>,
        remote: String,
        recursive: bool,
        preserve: bool,
        resume: bool,
    ) -> PyResult<()> {
        let flags = copy_flags(recursive, preserve, resume);
        self.transfer(py, move |mut conn| async move {
            let result = conn.put_paths(&local, &remote, flags, &mut ()).await;
            (conn, result)
        })
    }

    /// Copies files (trees with `recursive`) from the server, as `wiresh
    /// get` does.
    #[pyo3(signature = (remote, local, *, recursive=false, preserve=false, resume=false))]
    fn get(
        &self,
        py: Python<'_>,
        remote: Vec<String>,
        local: PathBuf,
        recursive: bool,
        preserve: bool,
        resume: bool,
    ) -> PyResult<()> {
        let flags = copy_flags(recursive, preserve, resume);
        self.transfer(py, move |mut conn| async move {
            let result = conn.get_paths(&remote, &local, flags, &mut ()).await;
            (conn, result)
        })
    }

    /// Round-trip time to the server, in seconds.
    fn ping(&self, py: Python<'_>) -> PyResult<f64> {
        let mut conn = self.slot.take(py)?;
        let (conn, result) = waiting::run(py, async move {
            let rtt = conn.ping().await;
            (conn, rtt)
        })?;
        match result {
            Ok(rtt) => {
                self.slot.put(State::Idle(Box::new(conn)));
                Ok(rtt.as_secs_f64())
            }
            Err(e) => {
                self.slot.put(State::Closed(e.to_string()));
                Err(errors::client(py, &e, false))
            }
        }
    }

    /// The server's name and version, from its greeting.
    #[getter]
    fn server(&self, py: Python<'_>) -> PyResult<String> {
        let conn = self.slot.take(py)?;
        let name = conn.hello().server.clone();
        self.slot.put(State::Idle(Box::new(conn)));
        Ok(name)
    }

    /// Closes the connection (the server sees an orderly end). Closing a
    /// closed client does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let conn = {
            let mut state = self.slot.0.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *state, State::Closed("closed by close()".into())) {
                State::Idle(conn) => Some(*conn),
                State::Busy => {
                    *state = State::Busy;
                    drop(state);
                    return Err(errors::exception(
                        py,
                        "WireshError",
                        (
                            "cannot close this Client while a command runs on it (in another \
                          thread, or an open stream)",
                        ),
                    ));
                }
                closed => {
                    *state = closed;
                    None
                }
            }
        };
        if let Some(conn) = conn {
            waiting::run(py, conn.close())?;
        }
        Ok(())
    }

    /// Whether the connection is closed (by `close()` or after an error).
    #[getter]
    fn closed(&self) -> bool {
        matches!(
            *self.slot.0.lock().unwrap_or_else(|e| e.into_inner()),
            State::Closed(_)
        )
    }
}

impl Client {
    /// Runs a transfer on the connection. The library's transfer futures
    /// are not `Send` (their progress callbacks), so each runs on a thread
    /// of its own, driven by the shared runtime. Ctrl-C abandons it (and
    /// the connection: a transfer cut short leaves it mid-request).
    fn transfer<F, Fut>(&self, py: Python<'_>, work: F) -> PyResult<()>
    where
        F: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (Connection, Result<(), TransferError>)>,
    {
        let conn = self.slot.take(py)?;
        let runtime = waiting::runtime()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel();
        let driver = runtime.clone();
        std::thread::spawn(move || {
            let outcome = driver.block_on(async move {
                tokio::select! {
                    outcome = work(conn) => Some(outcome),
                    _ = stopped => None,
                }
            });
            let _ = done.send(outcome);
        });
        let mut finished = std::pin::pin!(finished);
        let outcome = match waiting::wait(py, &runtime, &mut finished) {
            Ok(outcome) => outcome.ok().flatten(),
            Err(interrupt) => {
                let _ = stop.send(());
                self.slot
                    .put(State::Closed("a transfer was interrupted".into()));
                return Err(interrupt);
            }
        };
        let Some((conn, result)) = outcome else {
            self.slot
                .put(State::Closed("a transfer's thread failed".into()));
            return Err(command::task_lost(py));
        };
        let Err(e) = result else {
            self.slot.put(State::Idle(Box::new(conn)));
            return Ok(());
        };
        let usable = match &e {
            TransferError::Client(c) => c.connection_usable() || is_file_refusal(c),
            _ => true,
        };
        self.slot.put(match usable {
            true => State::Idle(Box::new(conn)),
            false => State::Closed(e.to_string()),
        });
        Err(errors::transfer(py, &e))
    }
}

/// A refusal about one file, after which the connection is fine.
fn is_file_refusal(e: &wiresh::client::ClientError) -> bool {
    use wiresh_proto::ErrorCode;
    matches!(
        e,
        wiresh::client::ClientError::Remote {
            code: ErrorCode::FilesDisabled
                | ErrorCode::PathRefused
                | ErrorCode::NotFound
                | ErrorCode::IoError
                | ErrorCode::ChecksumMismatch,
            ..
        }
    )
}

/// The CLI's copy flags (the library copies without a word printed).
fn copy_flags(recursive: bool, preserve: bool, resume: bool) -> CopyFlags {
    CopyFlags {
        recursive,
        options: TransferOptions { preserve, resume },
        ..CopyFlags::default()
    }
}
