//! What the fan-out keeps for the end (`--gather`, `--diff`, `--json`) is
//! bounded per host by `--max-output` (1 MiB by default), and a disk that
//! will not keep it is said to be one (issue 19, 3): which file, which
//! directory, what to change, and exit status 74, never 130.
//!
//! The disk is real: a small tmpfs mounted for the test as the client's
//! `TMPDIR` (or as `--outdir`), filled by hosts that print more than it
//! holds (skipped, saying so, where the test may not mount).

mod common;

use std::path::Path;

use common::disk::SmallFs;
use common::fleet::Fleet;
use common::*;

/// Bytes each host prints in the disk tests.
const PER_HOST: usize = 4 * MIB;
/// Hosts in the disk tests: 64 MiB printed in all.
const HOSTS: usize = 16;
/// The client's `TMPDIR`: half of what the hosts print, twice what the
/// default `--max-output` keeps of them.
const TMPDIR_SIZE: usize = 32 * MIB;

/// The exit status of a fan-out stopped by a local disk.
const LOCAL_IO: i32 = 74;

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn max_output_cuts_what_is_kept_of_each_host_and_says_so() {
    let fleet = Fleet::start(3, &[]);
    let hosts = fleet.host_list();
    let line = "head -c 5000 /dev/zero | tr '\\0' a; echo err >&2";
    let run = |args: &[&str]| {
        let mut cmd = fleet.cli("exec", &hosts);
        cmd.args(args).args(["--", line]);
        cli_output(cmd, None)
    };

    let out = run(&["--json", "--max-output", "1K"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let lines = json_lines(&out.stdout_str());
    assert_eq!(lines.len(), 3);
    for host in &lines {
        assert_eq!(host["truncated"], true, "{host}");
        assert_eq!(host["stdout_bytes"], 5000, "the count is exact: {host}");
        assert_eq!(host["stderr_bytes"], 4, "{host}");
        assert_eq!(host["stdout"].as_str().unwrap(), "a".repeat(1024));
        assert_eq!(host["stderr"], "", "stderr came after the cap: {host}");
    }
    let err = out.stderr_str();
    assert!(
        err.contains("  output truncated at 1.00 KiB (--max-output) (3): "),
        "{err}"
    );

    let out = run(&["-b", "--max-output", "1K"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let stdout = out.stdout_str();
    assert!(stdout.contains("(3 hosts, exit 0, truncated)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}\n[wiresh: output cut after 1.00 KiB: raise --max-output to keep more]\n",
            "a".repeat(1024)
        )),
        "{stdout}"
    );

    let out = run(&["--json", "--max-output", "none"]).await;
    for host in json_lines(&out.stdout_str()) {
        assert_eq!(host["truncated"], false, "{host}");
        assert_eq!(host["stdout"].as_str().unwrap().len(), 5000);
        assert_eq!(host["stderr"], "err\n");
    }
    assert!(!out.stderr_str().contains("truncated"));
}

/// A small filesystem mounted on `dir`, or `None` (the test is skipped).
fn small_fs(dir: &Path) -> Option<SmallFs> {
    std::fs::create_dir_all(dir).unwrap();
    SmallFs::mount(dir, TMPDIR_SIZE)
}

/// Checks a run that a full disk stopped: status 74, the place named, what
/// to change said, nothing taken for a Ctrl-C or a closed stdout.
#[track_caller]
fn assert_disk_full(out: &CliOutput, place: &str, change: &[&str], what: &str) {
    let err = out.stderr_str();
    eprintln!("{what}, exit {:?}:\n{}", out.code, err.trim());
    assert_eq!(out.code, Some(LOCAL_IO), "{what}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("No space left on device") && last.contains(place),
        "{what}: the last word does not name the disk: {err}"
    );
    for word in change {
        assert!(last.contains(word), "{what}: {word} is not said: {err}");
    }
    assert!(
        !err.contains("interrupted") && !err.contains("local output closed"),
        "{what}: {err}"
    );
}

#[tokio::test]
async fn a_small_tmpdir_holds_the_capped_spool_and_a_full_one_is_named() {
    let base = tempfile::tempdir().unwrap();
    let tmpdir = base.path().join("tmp");
    let Some(fs) = small_fs(&tmpdir) else {
        return;
    };
    let fleet = Fleet::start(HOSTS, &[]);
    let hosts = fleet.host_list();
    let line = format!("head -c {PER_HOST} /dev/zero");
    let run = |args: &[&str]| {
        let mut cmd = fleet.cli("exec", &hosts);
        cmd.env("TMPDIR", &tmpdir).args(args).args(["--", &line]);
        cli_output(cmd, None)
    };

    // With the default --max-output, 16 hosts printing 64 MiB fit in 32.
    let free_before = fs.free();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, tmpdir) = (sampling.clone(), tmpdir.clone());
        std::thread::spawn(move || {
            let mut least = u64::MAX;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let fs = rustix::fs::statvfs(&tmpdir).unwrap();
                least = least.min(fs.f_bavail * fs.f_frsize);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            least
        })
    };
    let out = run(&["--json"]).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most_used = free_before.saturating_sub(sampler.join().unwrap());
    eprintln!(
        "{HOSTS} hosts printing {} MiB each: at most {} KiB of the spool seen on disk",
        PER_HOST / MIB,
        most_used / 1024
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    let lines = json_lines(&out.stdout_str());
    assert_eq!(lines.len(), HOSTS);
    for host in &lines {
        assert_eq!(host["truncated"], true, "{host}");
        assert_eq!(host["stdout_bytes"], PER_HOST, "{host}");
        assert_eq!(host["stdout"].as_str().unwrap().len(), MIB);
    }
    assert!(
        most_used <= (HOSTS * MIB + MIB) as u64,
        "the spool took {most_used} bytes"
    );

    // Without a limit they do not: the disk is named, 74.
    let tmp = tmpdir.display().to_string();
    let advice = ["TMPDIR", "--max-output", "--outdir"];
    let out = run(&["--json", "--max-output", "none"]).await;
    assert_disk_full(&out, &tmp, &advice, "--json");
    assert!(
        out.stderr_str().contains("stopped: output not kept"),
        "{}",
        out.stderr_str()
    );
    let out = run(&["-b", "--max-output", "none"]).await;
    assert_disk_full(&out, &tmp, &advice, "--gather");
    assert_eq!(fs.free(), free_before, "the spool is gone with the client");
}

#[tokio::test]
async fn a_full_outdir_names_the_file_and_stdin_that_cannot_be_kept_ends_nothing() {
    let base = tempfile::tempdir().unwrap();
    let small = base.path().join("small");
    let Some(_fs) = small_fs(&small) else {
        return;
    };
    let fleet = Fleet::start(HOSTS, &[]);
    let hosts = fleet.host_list();

    let logs = small.join("logs");
    let mut cmd = fleet.cli("exec", &hosts);
    cmd.arg("--outdir")
        .arg(&logs)
        .args(["--", &format!("head -c {PER_HOST} /dev/zero")]);
    let out = cli_output(cmd, None).await;
    let logs = logs.display().to_string();
    assert_disk_full(&out, &logs, &["--outdir"], "--outdir");
    assert!(out.stderr_str().contains(".out"), "{}", out.stderr_str());

    // Local stdin is kept for every host in TMPDIR: when it cannot be,
    // no host sees its input end early; every one is stopped.
    std::fs::remove_dir_all(&logs).unwrap();
    let mut cmd = fleet.cli("exec", &fleet.names()[..2].join(","));
    cmd.env("TMPDIR", &small).args(["--", "wc -c"]);
    let out = cli_output(cmd, Some(binary_pattern(TMPDIR_SIZE + 8 * MIB))).await;
    let tmp = small.display().to_string();
    assert_disk_full(&out, &tmp, &["TMPDIR"], "stdin");
    assert!(
        out.stderr_str().contains("cannot keep local stdin"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(
        out.stdout_str(),
        "",
        "a host took part of its input for all of it"
    );
}
