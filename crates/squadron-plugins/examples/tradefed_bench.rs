//! Parses a big tradefed `test_result.xml` and prints the throughput and
//! the peak memory of the process.
//!
//! ```text
//! cargo run --release -p squadron-plugins --example tradefed_bench -- FILE [BATCH]
//! cargo run --release -p squadron-plugins --example tradefed_bench -- --modules N [BATCH]
//! ```
//!
//! FILE may also be a results archive (`.tar.xz`, `.tar.gz`, `.zip`): the
//! report is then first extracted into a temporary file, and that step is
//! timed too. With `--modules N`, a report of N modules (about 500 tests
//! each) is first generated with `scripts/gen_cts_result.py`.

use std::error::Error;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use squadron_plugins::tradefed::archive::{detect_format, extract_test_result, Format, Limits};
use squadron_plugins::tradefed::results::Parser;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tradefed_bench (FILE | --modules N) [BATCH]";
    let dir = tempfile::tempdir()?;
    let (path, rest) = match args.as_slice() {
        [flag, modules, rest @ ..] if flag == "--modules" => (generate(dir.path(), modules)?, rest),
        [file, rest @ ..] => (PathBuf::from(file), rest),
        [] => return Err(usage.into()),
    };
    let batch_size = match rest {
        [] => 1000,
        [batch] => batch.parse()?,
        _ => return Err(usage.into()),
    };

    let path = extract_if_archive(&path, dir.path())?;
    let bytes = std::fs::metadata(&path)?.len();
    let started = Instant::now();
    let mut parser = Parser::new(BufReader::with_capacity(1 << 16, File::open(&path)?), "cts", batch_size);
    let mut batches = 0u64;
    let mut log_bytes = 0u64;
    while let Some(batch) = parser.next_batch()? {
        batches += 1;
        log_bytes += batch.tests.iter().map(|t| t.log.len() as u64).sum::<u64>();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let counts = parser.summary().ok_or("the parse did not finish")?;

    println!("file: {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);
    println!(
        "tests: {} (pass {}, fail {}, xfail {}, skip {}) in {} modules, {} batches of {}, {:.1} MB of logs",
        counts.tests,
        counts.pass,
        counts.fail,
        counts.xfail,
        counts.skip,
        counts.modules,
        batches,
        batch_size,
        log_bytes as f64 / 1e6
    );
    println!("time: {elapsed:.2} s");
    println!("throughput: {:.0} tests/s, {:.1} MB/s", counts.tests as f64 / elapsed, bytes as f64 / 1e6 / elapsed);
    println!("peak RSS (VmHWM): {}", peak_rss().unwrap_or_else(|| "unknown".into()));
    Ok(())
}

/// The report itself, or the report extracted from the archive at `path`
/// into `dir`.
fn extract_if_archive(path: &Path, dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let mut head = Vec::new();
    File::open(path)?.take(512).read_to_end(&mut head)?;
    if detect_format(&head) == Some(Format::Xml) {
        return Ok(path.to_owned());
    }
    let archive_bytes = std::fs::metadata(path)?.len();
    let started = Instant::now();
    let report = dir.join("extracted.xml");
    let mut output = std::io::BufWriter::new(File::create(&report)?);
    let extracted = extract_test_result(File::open(path)?, &mut output, &Limits::default())?;
    output.flush()?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "extracted {} ({:?}, {:.1} MB) from {:.1} MB in {elapsed:.2} s: {:.1} MB/s of report",
        extracted.path.unwrap_or_default(),
        extracted.format,
        extracted.size as f64 / 1e6,
        archive_bytes as f64 / 1e6,
        extracted.size as f64 / 1e6 / elapsed
    );
    Ok(report)
}

/// Writes a generated report of `modules` modules into `dir`.
fn generate(dir: &Path, modules: &str) -> Result<PathBuf, Box<dyn Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen_cts_result.py");
    let path = dir.join("test_result.xml");
    let status = Command::new("python3")
        .arg(script)
        .args(["--modules", modules, "--fail-ratio", "0.005", "--assumption-ratio", "0.002"])
        .args(["--ignored-ratio", "0.002", "--abis", "arm64-v8a,armeabi-v7a", "--seed", "1"])
        .stdout(File::create(&path)?)
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("gen_cts_result.py failed: {status}").into());
    }
    Ok(path)
}

/// The process's peak resident set size, as the kernel reports it.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}
