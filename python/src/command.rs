//! One command on a connection, as a task on the runtime: its input fed
//! from bytes or a binary file object (read in pieces, never all at once:
//! the protocol's window holds it back), its output gathered for `run` or
//! handed over chunk by chunk for `stream`, its timeout, and cancelling it
//! on Ctrl-C. The task owns the connection while the command runs and
//! gives it back to its `Client` at the end (or marks it closed when the
//! command's end left it unusable).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tokio::sync::{mpsc, oneshot};
use wiresh::client::{ClientError, Connection, Output};
use wiresh_proto::{ExecRequest, ExitStatus};

use crate::cancel::Canceller;
use crate::client::{Slot, State};
use crate::{errors, waiting};

/// Input is read and sent in pieces of this size.
const INPUT_PIECE: usize = 256 * 1024;

/// Pieces of input read ahead of what the server has taken.
const INPUT_QUEUE: usize = 4;

/// Output chunks held for a `stream` consumer that has not asked yet:
/// beyond these the client stops reading and the server waits.
const CHUNK_QUEUE: usize = 8;

/// How long the server may be late with a command's end after its
/// `timeout` before the client cancels it itself, and again after that
/// before it gives up on the connection.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// How long a command cancelled by Ctrl-C may take to report its end
/// before the connection is abandoned.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// What a command reads on its standard input.
pub enum Input {
    /// Nothing: its stdin is empty.
    Nothing,
    /// These bytes.
    Bytes(Bytes),
    /// A binary file object, read with `read(n)` until it returns `b""`.
    File(Py<PyAny>),
}

impl Input {
    /// `bytes`, `bytearray` or a binary file object (anything with `read`).
    pub fn from_python(value: Option<&Bound<'_, PyAny>>) -> PyResult<Input> {
        let Some(value) = value.filter(|v| !v.is_none()) else {
            return Ok(Input::Nothing);
        };
        if let Ok(bytes) = value.extract::<PyBackedBytes>() {
            return Ok(Input::Bytes(Bytes::from_owner(bytes)));
        }
        if value.hasattr("read")? {
            return Ok(Input::File(value.clone().unbind()));
        }
        Err(PyTypeError::new_err(format!(
            "input must be bytes, str or a binary file object, not {}",
            value.get_type().name()?
        )))
    }
}

/// How a command ended, as its task reports it.
pub struct Ended {
    /// Its exit status, or why there is none.
    pub result: Result<ExitStatus, ClientError>,
    /// Whether the client cancelled it itself after its timeout (the
    /// server did not end it in time).
    pub timed_out_here: bool,
    /// Its output, when gathered (`run`).
    pub stdout: Vec<u8>,
    /// Its error output, when gathered.
    pub stderr: Vec<u8>,
    /// The error the input file raised, if it did.
    pub input_error: Option<PyErr>,
}

impl Ended {
    /// Whether the command was killed for running out of time.
    pub fn timed_out(&self) -> bool {
        self.timed_out_here || self.result.as_ref().is_ok_and(|s| s.timed_out)
    }
}

/// Where output goes while the command runs.
enum Sink {
    /// Kept, and handed over with [`Ended`].
    Gather,
    /// Sent on, chunk by chunk, while someone listens.
    Chunks(mpsc::Sender<Output>),
}

/// A command started on the runtime.
pub struct Running {
    /// Cancels it (its exit status still arrives; see [`crate::cancel`]).
    pub cancel: Arc<Canceller>,
    /// Its end.
    pub ended: oneshot::Receiver<Ended>,
}

/// The request for `command`: a string for the remote shell, a list for
/// an argv run without one.
pub fn request(
    command: &Bound<'_, PyAny>,
    env: Option<std::collections::BTreeMap<String, String>>,
    cwd: Option<String>,
    timeout: Option<f64>,
) -> PyResult<ExecRequest> {
    let mut req = if let Ok(line) = command.extract::<String>() {
        ExecRequest::shell(line)
    } else if let Ok(argv) = command.extract::<Vec<String>>() {
        if argv.is_empty() {
            return Err(PyTypeError::new_err("the command's argv is empty"));
        }
        ExecRequest::argv(argv)
    } else {
        return Err(PyTypeError::new_err(
            "command must be a string (run by the remote shell) or a list of strings (argv)",
        ));
    };
    req.env = env.unwrap_or_default();
    req.cwd = cwd;
    req.timeout_ms = timeout.map(timeout_ms).transpose()?;
    Ok(req)
}

/// A timeout in seconds as the protocol's milliseconds (at least one).
fn timeout_ms(seconds: f64) -> PyResult<u64> {
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, not {seconds}"
        )));
    }
    Ok(((seconds * 1000.0).ceil() as u64).max(1))
}

/// Starts `req` on `conn` with `input`; output is gathered, or sent to
/// `chunks` when given. The connection goes back to `slot` at the end.
pub fn start(
    conn: Connection,
    slot: Slot,
    req: ExecRequest,
    input: Input,
    chunks: Option<mpsc::Sender<Output>>,
) -> PyResult<Running> {
    let runtime = waiting::runtime()?;
    let cancel = Arc::new(Canceller::new());
    let input_error = Arc::new(Mutex::new(None));
    let stdin = feed(&runtime, input, cancel.clone(), input_error.clone());
    let sink = chunks.map_or(Sink::Gather, Sink::Chunks);
    let (done, ended) = oneshot::channel();
    let controls = cancel.clone();
    runtime.spawn(async move {
        let mut conn = conn;
        let mut ended = drive(&mut conn, req, stdin, controls, sink).await;
        ended.input_error = input_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        give_back(conn, &slot, &ended.result);
        let _ = done.send(ended);
    });
    Ok(Running { cancel, ended })
}

/// Puts the connection back in its slot, or closes it and says why the
/// client cannot use it any more.
fn give_back(conn: Connection, slot: &Slot, result: &Result<ExitStatus, ClientError>) {
    let next = match result {
        Ok(_) => State::Idle(Box::new(conn)),
        Err(e) if e.connection_usable() => State::Idle(Box::new(conn)),
        Err(e) => {
            drop(conn);
            State::Closed(format!("the connection was given up after an error: {e}"))
        }
    };
    slot.put(next);
}

/// Runs `req` on `conn` without input, its output gathered (`run_many`).
pub async fn gathered(conn: &mut Connection, req: ExecRequest) -> Ended {
    drive(conn, req, None, Arc::new(Canceller::new()), Sink::Gather).await
}

/// Runs the command: output to the sink, the client's own timeout
/// backstop and the cancel watchdog (see [`crate::cancel`]), until its end.
async fn drive(
    conn: &mut Connection,
    req: ExecRequest,
    stdin: Option<mpsc::Receiver<Bytes>>,
    cancel: Arc<Canceller>,
    sink: Sink,
) -> Ended {
    let (tx, mut rx) = mpsc::channel::<Output>(CHUNK_QUEUE);
    let limit = req.timeout_ms.map(Duration::from_millis);
    let canceller = cancel.clone();
    let mut timed_out_here = false;
    let timed_out = &mut timed_out_here;
    let run = async move {
        let tx = tx;
        let sender = canceller.clone();
        let cancelled = move || {
            let sender = sender.clone();
            async move { sender.next().await }
        };
        let run = conn.run(req, stdin, &tx, cancelled);
        tokio::pin!(run);
        let backstop = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit + TIMEOUT_GRACE).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut run => return result,
            _ = backstop => *timed_out = true,
            _ = canceller.overdue() => {}
        }
        // The server did not end the command in time (or never saw the
        // cancel): another cancel, and the library gives the connection up.
        canceller.cancel();
        canceller.cancel();
        match tokio::time::timeout(TIMEOUT_GRACE, &mut run).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(format!(
                "the command did not end when cancelled (limit {limit:?})"
            ))),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let gather = async {
        let mut listener = match &sink {
            Sink::Chunks(tx) => Some(tx),
            Sink::Gather => None,
        };
        while let Some(output) = rx.recv().await {
            match (&sink, output) {
                (Sink::Gather, Output::Stdout(b)) => stdout.extend_from_slice(&b),
                (Sink::Gather, Output::Stderr(b)) => stderr.extend_from_slice(&b),
                (Sink::Chunks(_), output) => {
                    // A consumer that went away wants nothing more: the
                    // command is cancelled, the rest of its output dropped.
                    if let Some(tx) = listener {
                        if tx.send(output).await.is_err() {
                            listener = None;
                        }
                    }
                }
            }
        }
    };
    let (result, ()) = tokio::join!(run, gather);
    Ended {
        result,
        timed_out_here,
        stdout,
        stderr,
        input_error: None,
    }
}

/// Starts sending `input`, returning the command's stdin (none for no
/// input). A file is read by a thread of its own, which needs the GIL for
/// each piece; an error it raises cancels the command and is kept in
/// `failed`.
fn feed(
    runtime: &tokio::runtime::Runtime,
    input: Input,
    cancel: Arc<Canceller>,
    failed: Arc<Mutex<Option<PyErr>>>,
) -> Option<mpsc::Receiver<Bytes>> {
    let (tx, rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    match input {
        Input::Nothing => return None,
        Input::Bytes(mut bytes) => {
            runtime.spawn(async move {
                while !bytes.is_empty() {
                    let piece = bytes.split_to(INPUT_PIECE.min(bytes.len()));
                    if tx.send(piece).await.is_err() {
                        return;
                    }
                }
            });
        }
        Input::File(file) => {
            std::thread::spawn(move || loop {
                match Python::attach(|py| read_piece(file.bind(py))) {
                    Ok(Some(piece)) => {
                        if tx.blocking_send(piece).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        cancel.cancel();
                        return;
                    }
                }
            });
        }
    }
    Some(rx)
}

/// The next piece of a file object; `None` at its end.
fn read_piece(file: &Bound<'_, PyAny>) -> PyResult<Option<Bytes>> {
    let data = file.call_method1("read", (INPUT_PIECE,))?;
    if data.is_none() {
        return Err(PyTypeError::new_err(
            "the input file returned None from read(): it is non-blocking; give a blocking file",
        ));
    }
    let piece: PyBackedBytes = data.extract().map_err(|_| {
        PyTypeError::new_err("the input file must be opened in binary mode (read() returned text)")
    })?;
    Ok((!piece.is_empty()).then(|| Bytes::from_owner(piece)))
}

/// Waits for a running command's end. Ctrl-C cancels the command, waits a
/// moment for its end (a second Ctrl-C abandons the connection), then
/// raises `KeyboardInterrupt`.
pub fn wait_end(py: Python<'_>, running: &mut Running) -> PyResult<Ended> {
    let runtime = waiting::runtime()?;
    let mut ended = std::pin::pin!(&mut running.ended);
    match waiting::wait(py, &runtime, &mut ended) {
        Ok(end) => end.map_err(|_| task_lost(py)),
        Err(interrupt) => {
            running.cancel.cancel();
            // A timer needs the runtime's context to be made in.
            let _context = runtime.enter();
            let mut bounded = std::pin::pin!(tokio::time::timeout(INTERRUPT_GRACE, ended));
            if waiting::wait(py, &runtime, &mut bounded).is_err() {
                running.cancel.cancel();
            }
            Err(interrupt)
        }
    }
}

/// The error for a command task that vanished without reporting its end.
pub fn task_lost(py: Python<'_>) -> PyErr {
    errors::exception(
        py,
        "ConnectionLost",
        ("the command's task ended without reporting its end",),
    )
}

/// The error for a command that did not end normally, after `ended`: the
/// input file's own error first.
pub fn failure(py: Python<'_>, ended: Ended) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), PyErr> {
    if let Some(e) = ended.input_error {
        return Err(e);
    }
    let timed_out = ended.timed_out_here;
    match ended.result {
        Ok(mut status) => {
            status.timed_out |= timed_out;
            Ok((status, ended.stdout, ended.stderr))
        }
        // The server did not stop it in time; the client gave the
        // connection up, which stopped it: still the timeout that fired.
        Err(_) if timed_out => Ok((
            ExitStatus {
                timed_out: true,
                ..ExitStatus::default()
            },
            ended.stdout,
            ended.stderr,
        )),
        Err(e) => Err(errors::client(py, &e, false)),
    }
}

/// A command's output as it arrives, for `Client.stream`: an iterator of
/// `(stream, bytes)` pairs; once it is exhausted the command has ended and
/// `returncode`, `signal`, `duration` and `timed_out` hold its status.
#[pyclass(module = "wiresh._wiresh")]
pub struct Stream {
    chunks: Option<mpsc::Receiver<Output>>,
    running: Option<Running>,
    status: Option<ExitStatus>,
}

impl Stream {
    /// A stream over a command started with `chunks` as its sink.
    pub fn new(chunks: mpsc::Receiver<Output>, running: Running) -> Stream {
        Stream {
            chunks: Some(chunks),
            running: Some(running),
            status: None,
        }
    }

    /// Collects the end once the output is over; raises what went wrong.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        let ended = wait_end(py, &mut running)?;
        let (status, _, _) = failure(py, ended)?;
        self.status = Some(status);
        Ok(())
    }

    /// Stops listening: the command is cancelled and its output dropped;
    /// waits (briefly, Ctrl-C still works) for the connection to be back.
    fn abandon(&mut self, py: Python<'_>) -> PyResult<()> {
        self.chunks = None;
        if let Some(running) = &self.running {
            running.cancel.cancel();
            self.finish(py).or_else(|e| {
                match e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    true => Err(e),
                    false => Ok(()),
                }
            })?;
        }
        Ok(())
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<(&'static str, Py<PyBytes>)>> {
        let Some(mut chunks) = self.chunks.take() else {
            return Ok(None);
        };
        let runtime = waiting::runtime()?;
        let next = {
            let mut recv = std::pin::pin!(chunks.recv());
            waiting::wait(py, &runtime, &mut recv)
        };
        match next {
            Ok(Some(output)) => {
                self.chunks = Some(chunks);
                let (name, bytes) = match output {
                    Output::Stdout(b) => ("stdout", b),
                    Output::Stderr(b) => ("stderr", b),
                };
                Ok(Some((name, PyBytes::new(py, &bytes).unbind())))
            }
            Ok(None) => {
                self.finish(py)?;
                Ok(None)
            }
            Err(interrupt) => {
                drop(chunks);
                if let Some(mut running) = self.running.take() {
                    let _ = wait_end_after_cancel(py, &mut running);
                }
                Err(interrupt)
            }
        }
    }

    /// Cancels the command if it is still running and drops the rest of
    /// its output; the `Client` can run the next command afterwards.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.abandon(py)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.abandon(py)?;
        Ok(false)
    }

    /// The exit code, once the command has ended normally (else `None`).
    #[getter]
    fn returncode(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| match (s.code, s.signal) {
            (Some(code), _) => Some(code),
            (None, Some(signal)) => Some(-signal),
            (None, None) => None,
        })
    }

    /// The signal that killed the command, if one did.
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.status.as_ref().and_then(|s| s.signal)
    }

    /// How long the command ran, in seconds (measured by the server).
    #[getter]
    fn duration(&self) -> Option<f64> {
        self.status.as_ref().map(|s| s.duration_ms as f64 / 1000.0)
    }

    /// Whether the command was killed because its `timeout` expired.
    #[getter]
    fn timed_out(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.timed_out)
    }

    /// Whether the command has ended and its status is known.
    #[getter]
    fn done(&self) -> bool {
        self.status.is_some()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Dropped unfinished: the task cancels the command, drops its
        // output and gives the connection back on its own.
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
    }
}

/// After Ctrl-C during a stream: cancels, waits a moment for the end.
fn wait_end_after_cancel(py: Python<'_>, running: &mut Running) -> PyResult<()> {
    running.cancel.cancel();
    let runtime = waiting::runtime()?;
    let _context = runtime.enter();
    let mut bounded = std::pin::pin!(tokio::time::timeout(INTERRUPT_GRACE, &mut running.ended));
    if waiting::wait(py, &runtime, &mut bounded).is_err() {
        running.cancel.cancel();
    }
    Ok(())
}
