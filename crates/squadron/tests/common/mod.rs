//! Worker processes for the process tests: spawned, signalled, waited
//! for, and their logs kept to explain a failure.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use squadron_queue::crash_test::EXECUTION_LOG_ENV;
use squadron_store::testing::TestDb;

/// The lease of every worker here.
pub const LEASE: &str = "2s";

/// A size of these tests, larger in `scripts/queue-soak` (which sets
/// `SQUADRON_SOAK_<NAME>`).
pub fn soak(name: &str, default: u64) -> u64 {
    std::env::var(format!("SQUADRON_SOAK_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A step start, as the crash-test kind logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub task: i64,
    pub step: i32,
    pub pid: u32,
}

/// Worker processes on one database, their logs in one directory.
pub struct Workers {
    pub url: String,
    pub queue: &'static str,
    pub dir: tempfile::TempDir,
    pub spawned: usize,
    pub pids: Vec<u32>,
    /// Extra environment of every worker.
    pub env: Vec<(String, String)>,
}

impl Drop for Workers {
    /// A failed test leaves no worker behind: every worker still running
    /// (still a squadron process, so not a reused pid) is killed.
    fn drop(&mut self) {
        for pid in &self.pids {
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("squadron") && cmdline.contains(&self.url) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

impl Workers {
    pub fn new(db: &TestDb) -> Workers {
        Workers {
            url: db.url.clone(),
            queue: "core_postprocess",
            dir: tempfile::tempdir().unwrap(),
            spawned: 0,
            pids: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn execution_log(&self) -> PathBuf {
        self.dir.path().join("executions.log")
    }

    /// Starts `squadron worker` with `extra` arguments, and waits until it
    /// runs (its signal handlers are in place).
    pub fn spawn(&mut self, extra: &[&str]) -> Child {
        self.spawned += 1;
        let path = self.dir.path().join(format!("worker-{}.log", self.spawned));
        let log = File::create(&path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_squadron"))
            .args(["--database", &self.url, "--lease", LEASE, "worker", "--queues", self.queue])
            .args(extra)
            .env(EXECUTION_LOG_ENV, self.execution_log())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a worker");
        self.pids.push(child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&path).unwrap_or_default().contains("worker started") {
            assert!(Instant::now() < deadline, "the worker did not start\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    /// Every step start logged so far.
    pub fn starts(&self) -> Vec<Start> {
        let text = std::fs::read_to_string(self.execution_log()).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                (f.len() == 6 && f[0] == "start").then(|| Start {
                    task: f[1].parse().unwrap(),
                    step: f[2].parse().unwrap(),
                    pid: f[4].parse().unwrap(),
                })
            })
            .collect()
    }

    /// The last lines of every worker's log, to explain a failure.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.spawned {
            let text = std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- worker {i}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        out
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits for `child` to exit, at most `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERMs `child` and asserts it exits 0 within `within`; returns how
/// long it took.
pub fn terminate(child: &mut Child, within: Duration, workers: &Workers) -> Duration {
    let sent = Instant::now();
    signal(child, "TERM");
    let status = wait_exit(child, within);
    assert!(
        status.is_some_and(|s| s.success()),
        "a worker exits 0 within {within:?} of SIGTERM: {status:?}\n{}",
        workers.logs()
    );
    sent.elapsed()
}

/// A small deterministic random sequence (the chaos needs no more).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
