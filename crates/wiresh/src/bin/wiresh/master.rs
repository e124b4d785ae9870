//! `wiresh master`: start a master for a host (in the background, or the
//! foreground), list the running ones, stop one; and `--persist` on the
//! other commands, which starts one on demand (the library's
//! `wiresh::master`).

use std::io::{Read, Write};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use tokio::runtime::Runtime;
use wiresh::client::{Connection, Endpoint, Security};
use wiresh::exit;
use wiresh::master::{self, Persist, Spec, MASTERS_DIR};

use crate::args::{ConnectArgs, MasterArgs};

/// Turns `--persist` on for this process's connections, and lets hosts
/// with a `persist` setting have a master started for them.
pub fn persist(connect: &ConnectArgs) -> Result<()> {
    let program = std::env::current_exe();
    match connect.persist {
        // `--persist 0`: none started, whatever the hosts' settings say.
        Some(idle) if idle.0.is_zero() => {}
        Some(idle) => Persist {
            idle: idle.0,
            pool: master::DEFAULT_POOL,
            program: program.context("cannot find this program to start a master")?,
        }
        .apply(),
        None => {
            if let Ok(program) = program {
                master::start_masters_with(program);
            }
        }
    }
    Ok(())
}

/// A runtime for the client side of `wiresh master`.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `wiresh master`.
pub fn run(args: MasterArgs) -> Result<i32> {
    if args.background {
        return background(args.detached);
    }
    let rt = runtime()?;
    let home = wiresh::home::wiresh_home()?;
    if args.list {
        return list(&rt, &home);
    }
    let Ok(endpoint) = args.connect.endpoint_or_hosts(false)? else {
        bail!("a master serves one host; start one per host");
    };
    if args.stop {
        let stopped = rt
            .block_on(master::stop(&endpoint, &home))
            .map_err(anyhow::Error::msg)?;
        match stopped {
            true => println!("the master for {} is stopping", endpoint.target),
            false => println!("no master runs for {}", endpoint.target),
        }
        return Ok(exit::SUCCESS);
    }
    pin_on_first_use(&rt, &endpoint)?;
    // --persist, else the host's `persist` setting (as ssh -M honours
    // ControlPersist from its config), else the default.
    let idle = match args.connect.persist {
        Some(given) => given.0,
        None => endpoint
            .persist
            .filter(|d| !d.is_zero())
            .unwrap_or(master::DEFAULT_PERSIST),
    };
    anyhow::ensure!(!idle.is_zero(), "--persist 0 would stop the master at once");
    let mut spec = Spec::new(&endpoint, &home, idle, args.pool).map_err(anyhow::Error::msg)?;
    spec.recheck = args.recheck.0;
    if args.foreground {
        init_logging(Box::new(std::io::stderr()));
        let result = rt.block_on(master::run(spec, |ready| {
            print!("{}", master::client::readiness_line(ready));
            let _ = std::io::stdout().flush();
        }));
        return result.map(|()| exit::SUCCESS).map_err(Into::into);
    }
    let program = std::env::current_exe().context("cannot find this program")?;
    let started = rt.block_on(master::start(&program, &spec));
    let (_, places) = spec.places().map_err(anyhow::Error::msg)?;
    match started {
        Ok(_) => println!(
            "master for {} running: it stays {} without clients; log {}",
            endpoint.target,
            humantime::format_duration(idle),
            places.log.display()
        ),
        Err(master::StartError::Running(target)) => {
            println!("a master for {target} is running already")
        }
        Err(e) => bail!("{e}"),
    }
    Ok(exit::SUCCESS)
}

/// Connects once directly when no fingerprint is pinned for the server
/// yet: it is pinned on first use, and the user is told, as for any first
/// connection; a master only ever connects with a pin.
fn pin_on_first_use(rt: &Runtime, endpoint: &Endpoint) -> Result<()> {
    let Security::Tls(pinning) = &endpoint.security else {
        return Ok(());
    };
    if pinning.pin_for(&endpoint.target.to_string())?.is_some() {
        return Ok(());
    }
    rt.block_on(async {
        let conn = Connection::connect(endpoint).await?;
        if let Some(seen) = conn.pinned_on_first_use() {
            eprintln!(
                "wiresh: first connection to {}: pinned its fingerprint {seen} in {}",
                endpoint.target,
                pinning.known_hosts.display()
            );
        }
        conn.close().await;
        Ok(())
    })
}

/// `wiresh master --list`.
fn list(rt: &Runtime, home: &std::path::Path) -> Result<i32> {
    let masters = rt
        .block_on(master::list(home))
        .map_err(anyhow::Error::msg)?;
    if masters.is_empty() {
        println!("no master runs");
        return Ok(exit::SUCCESS);
    }
    println!("SERVER                 PID      CONNECTIONS  CLIENTS  SESSIONS  IDLE TIME  NAME");
    for m in masters {
        println!(
            "{:<22} {:<8} {:<12} {:<8} {:<9} {:<10} {}",
            m.target,
            m.pid,
            format!("{}/{}", m.connections, m.pool),
            m.clients,
            m.sessions,
            humantime::format_duration(std::time::Duration::from_secs(m.idle_secs)).to_string(),
            m.name
        );
    }
    Ok(exit::SUCCESS)
}

/// `wiresh master --background`: the settings come on stdin. The first
/// process (the launcher) starts the master in a process of its own and
/// exits, so that whoever started it need not wait for it; the master
/// (`--detached`) leaves the terminal's session, logs to its file, and
/// says on stdout when it is ready, or why not.
fn background(detached: bool) -> Result<i32> {
    let mut settings = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut settings)
        .context("reading the master's settings")?;
    if !detached {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["master", master::client::BACKGROUND_FLAG, "--detached"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the master")?;
        child.stdin.take().expect("piped").write_all(&settings)?;
        return Ok(exit::SUCCESS);
    }
    rustix::process::setsid().context("setsid")?;
    let spec: Spec = serde_json::from_slice(&settings).context("the master's settings")?;
    let (_, places) = spec.places().map_err(anyhow::Error::msg)?;
    wiresh::home::create_private_dir(&spec.home.join(MASTERS_DIR))?;
    let log = wiresh::home::append_private_file(&places.log)
        .with_context(|| format!("cannot open {}", places.log.display()))?;
    init_logging(Box::new(log));
    let rt = runtime()?;
    let result = rt.block_on(master::run(spec, |ready| {
        let mut out = std::io::stdout();
        let _ = out.write_all(master::client::readiness_line(ready).as_bytes());
        let _ = out.flush();
        // Whoever waits for the line sees the end of the pipe.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    }));
    result.map(|()| exit::SUCCESS).map_err(Into::into)
}

/// The master's log: `WIRESH_LOG` sets the level, info by default.
fn init_logging(to: Box<dyn Write + Send>) {
    let level = std::env::var("WIRESH_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(to))
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false)
        .init();
}
