//! The runtime every connection of the process runs on, and waiting on it
//! from Python: with the GIL released, so other Python threads run, and
//! waking every [`SIGNAL_CHECK`] to let Python's signal handlers run, so
//! that Ctrl-C (`KeyboardInterrupt`) is seen while a command runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a wait lets Python check its signals: short enough that
/// Ctrl-C feels immediate, long enough to cost nothing.
pub const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Worker threads of the runtime: connections spend their time waiting on
/// sockets; two threads keep a fan-out of many hosts busy.
const WORKER_THREADS: usize = 2;

/// The runtime, with the process it was made in.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The process's runtime, made on first use. A process forked after that
/// (Ansible forks a worker per task) has the runtime's memory but none of
/// its threads: it makes a runtime of its own, and the inherited one is
/// never dropped (dropping it would wait for threads that do not exist).
pub fn runtime() -> PyResult<Arc<Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((made_in, runtime)) = slot.as_ref() {
        if *made_in == pid {
            return Ok(runtime.clone());
        }
    }
    if let Some((_, inherited)) = slot.take() {
        std::mem::forget(inherited);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("wiresh")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start wiresh's runtime: {e}")))?;
    let runtime = Arc::new(runtime);
    *slot = Some((pid, runtime.clone()));
    Ok(runtime)
}

/// Drives `future` to its end on the runtime, with the GIL released. When
/// a signal handler raises (Ctrl-C: `KeyboardInterrupt`), returns that
/// error at once; the future is left where it was, so the caller may
/// cancel what it does and wait on it again.
pub fn wait<F>(py: Python<'_>, runtime: &Runtime, future: &mut Pin<&mut F>) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    loop {
        let step = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, future.as_mut()).await })
        });
        if let Ok(done) = step {
            return Ok(done);
        }
        py.check_signals()?;
    }
}

/// Runs `future` on the runtime and waits for it; Ctrl-C drops it (what
/// it was doing, such as connecting, is abandoned) and raises.
pub fn run<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime()?;
    let mut future = std::pin::pin!(future);
    wait(py, &runtime, &mut future)
}
