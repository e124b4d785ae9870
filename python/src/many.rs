//! `run_many`: one command on many hosts at once, at most `fanout`
//! connections at a time, straight on the library's client (each host's
//! connection opened with the command in its first write, as `wiresh exec`
//! does). Every host gets an entry: its result, or the exception that says
//! why there is none. Ctrl-C drops every connection, which makes each
//! server kill its command, and raises `KeyboardInterrupt`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wiresh::client::{ClientError, Connection, Endpoint};
use wiresh::hostlist;
use wiresh::reach::{Reach, Resolver};
use wiresh_proto::{ExecRequest, Secret};

use crate::command::{self, Ended};
use crate::{errors, waiting};

/// What one host came to.
enum Outcome {
    /// The command ran to its end (or failed once connected).
    Ran(Ended),
    /// No connection.
    Unreachable(ClientError),
}

/// Runs `command` on every host; returns `(host, outcome)` pairs in the
/// order the hosts were given, where an outcome is the tuple `run` returns
/// or the exception of a host that failed.
#[pyfunction]
#[pyo3(signature = (hosts, command, *, fanout=64, timeout=None, env=None, cwd=None, port=None, token=None, token_file=None, key=None, fingerprint=None, plaintext=false, home=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_many(
    py: Python<'_>,
    hosts: Vec<String>,
    command: &Bound<'_, PyAny>,
    fanout: usize,
    timeout: Option<f64>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    port: Option<u16>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    key: Option<PathBuf>,
    fingerprint: Option<String>,
    plaintext: bool,
    home: Option<PathBuf>,
) -> PyResult<Vec<(String, Py<PyAny>)>> {
    if fanout == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "fanout must be 1 or more",
        ));
    }
    let req = command::request(command, env, cwd, timeout)?;
    let names = expand(py, &hosts)?;
    if fingerprint.is_some() && names.len() > 1 {
        return Err(errors::exception(
            py,
            "ConfigError",
            (format!(
                "fingerprint pins one server, but {} hosts are selected; put each host's \
                 fingerprint in the inventory ([hosts.NAME] fingerprint = \"sha256:...\")",
                names.len()
            ),),
        ));
    }
    let given = Reach {
        port,
        token: token.map(Secret),
        token_file,
        key,
        fingerprint,
        plaintext,
        home,
        ..Reach::default()
    };
    // Every host found the way `wiresh exec` finds it, the settings read once.
    let mut resolver = Resolver::new(given).map_err(|e| errors::setup(py, &e))?;
    errors::warn_settings(py, &resolver)?;
    let endpoints: Vec<PyResult<Endpoint>> = names
        .iter()
        .map(|name| resolver.endpoint(name).map_err(|e| errors::setup(py, &e)))
        .collect();
    let reachable: Vec<(usize, Endpoint)> = endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().ok().map(|e| (i, e.clone())))
        .collect();
    let mut outcomes = waiting::run(py, run_all(reachable, req, fanout))?;
    let mut results = Vec::with_capacity(names.len());
    for (i, (name, endpoint)) in names.into_iter().zip(endpoints).enumerate() {
        let value = match (endpoint, outcomes.remove(&i)) {
            (Err(e), _) => e.into_value(py).into_any(),
            (Ok(_), Some(Outcome::Ran(ended))) => ran(py, ended)?,
            (Ok(_), Some(Outcome::Unreachable(e))) => {
                errors::client(py, &e, true).into_value(py).into_any()
            }
            (Ok(_), None) => command::task_lost(py).into_value(py).into_any(),
        };
        results.push((name, value));
    }
    Ok(results)
}

/// The hosts named, host lists expanded, each once in the order given.
fn expand(py: Python<'_>, hosts: &[String]) -> PyResult<Vec<String>> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    for list in hosts {
        let expanded = hostlist::expand(list)
            .map_err(|e| errors::exception(py, "ConfigError", (format!("{list}: {e}"),)))?;
        names.extend(expanded.into_iter().filter(|n| seen.insert(n.clone())));
    }
    Ok(names)
}

/// The tuple `Client.run` returns, or the exception of a command that
/// failed once connected.
fn ran(py: Python<'_>, ended: Ended) -> PyResult<Py<PyAny>> {
    match command::failure(py, ended) {
        Ok((status, stdout, stderr)) => {
            let tuple = (
                status.code,
                status.signal,
                status.duration_ms as f64 / 1000.0,
                status.timed_out,
                PyBytes::new(py, &stdout),
                PyBytes::new(py, &stderr),
            );
            Ok(tuple.into_pyobject(py)?.into_any().unbind())
        }
        Err(e) => Ok(e.into_value(py).into_any()),
    }
}

/// Runs `req` on every endpoint, `fanout` at a time.
async fn run_all(
    endpoints: Vec<(usize, Endpoint)>,
    req: ExecRequest,
    fanout: usize,
) -> BTreeMap<usize, Outcome> {
    let slots = Arc::new(Semaphore::new(fanout));
    let mut tasks = JoinSet::new();
    for (i, endpoint) in endpoints {
        let (slots, req) = (slots.clone(), req.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            (i, one_host(&endpoint, req).await)
        });
    }
    let mut outcomes = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, outcome)) = done {
            outcomes.insert(i, outcome);
        }
    }
    outcomes
}

/// Connects (the command in the same write) and runs it to its end.
async fn one_host(endpoint: &Endpoint, req: ExecRequest) -> Outcome {
    let mut conn = match Connection::connect_running(endpoint, &req).await {
        Ok(conn) => conn,
        Err(e) => return Outcome::Unreachable(e),
    };
    let ended = command::gathered(&mut conn, req).await;
    conn.close().await;
    Outcome::Ran(ended)
}
