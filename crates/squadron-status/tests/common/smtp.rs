//! A real SMTP server on loopback for the email tests: `scripts/smtp_sink.py`
//! (Python's aiosmtpd) run as a child process, appending every message it
//! accepts, decoded, to a JSON-lines file.
//!
//! The Python comes from `SQUADRON_TEST_PYTHON`, or from a virtualenv in
//! `~/.cache/squadron-smtp-venv` created (from PyPI) on first use.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The running server.
pub struct SmtpSink {
    child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// A Python with aiosmtpd, set up once per test process (the tests of a
/// binary run on threads of one process, and would otherwise build the
/// same virtualenv at once).
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(set_up_python).clone()
}

fn set_up_python() -> PathBuf {
    if let Ok(python) = std::env::var("SQUADRON_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let home = PathBuf::from(std::env::var("HOME").expect("HOME is set"));
    let venv = home.join(".cache/squadron-smtp-venv");
    let python = venv.join("bin/python");
    let works = |python: &Path| {
        Command::new(python).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if works(&python) {
        return python;
    }
    // Built aside and renamed into place, so concurrent test binaries never
    // see half a virtualenv.
    let building = home.join(format!(".cache/squadron-smtp-venv.{}", std::process::id()));
    let run = |cmd: &mut Command| assert!(cmd.status().expect("runs").success(), "cannot set up aiosmtpd: {cmd:?}");
    run(Command::new("python3").arg("-m").arg("venv").arg(&building));
    run(Command::new(building.join("bin/python")).args(["-m", "pip", "install", "--quiet", "aiosmtpd"]));
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(works(&python), "no aiosmtpd in {}", venv.display());
    python
}

impl SmtpSink {
    /// Starts a server; returns once it listens.
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("messages.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smtp_sink.py");
        let mut child = Command::new(python()).arg(script).arg(&file).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("the sink prints its port");
        SmtpSink { child, file, _dir: dir, port }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages arrived (20 s at most).
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(Instant::now() < deadline, "{} message(s) after 20 s, expected {n}", messages.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
