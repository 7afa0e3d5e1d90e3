//! Throughput and peak memory of the log parsers.
//!
//! ```text
//! cargo run --release -p squadron-plugins --example log_parser_bench -- [--build] [PATH | --size MB]
//! ```
//!
//! With a PATH, parses that file (streamed, never loaded whole). Without,
//! streams a synthetic log of `--size` MB (default 256), made in memory as
//! it is read: dmesg lines with a `cut here` warning block every 2,000 lines
//! and a KASAN report every 5,000, or with `--build` the fixture
//! `gcc_x86_64_26861563.log` over and over. Prints the input size, MB/s,
//! the number of tests and the process's peak resident memory. With
//! `--dump`, then prints every test (suite, name, kind, number of snippets,
//! SHA-256 of its log), to compare the output of two builds.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::time::Instant;

use squadron_plugins::linux_log::{parse_boot_log, parse_build_log, LogTest};

/// Produces `left` bytes, made `piece` by `piece`.
struct Generated<F> {
    next_piece: F,
    piece: Vec<u8>,
    at: usize,
    left: u64,
}

impl<F: FnMut(&mut Vec<u8>)> Read for Generated<F> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.piece.len() {
            self.piece.clear();
            self.at = 0;
            (self.next_piece)(&mut self.piece);
        }
        let n = out.len().min(self.piece.len() - self.at).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The next line of a synthetic boot log (a whole report at times).
fn dmesg(line: &mut u64, out: &mut Vec<u8>) {
    use std::io::Write;
    *line += 1;
    let n = *line;
    let time = |k: u64| format!("[{:5}.{:06}]", (n + k) / 1000, (n + k) % 1000 * 997);
    if n.is_multiple_of(2000) {
        writeln!(out, "{} ------------[ cut here ]------------", time(0)).unwrap();
        writeln!(
            out,
            "{} WARNING: CPU: 1 PID: {n} at drivers/usb/core/hub.c:{} hub_event+0x{n:x}/0x2d0",
            time(0),
            n % 97
        )
        .unwrap();
        for k in 1..12 {
            writeln!(out, "{}  hub_event+0x{:x}/0x2d0", time(0), n + k).unwrap();
        }
        writeln!(out, "{} ---[ end trace {n:016x} ]---", time(1)).unwrap();
    } else if n % 5000 == 2500 {
        writeln!(out, "{} ==================================================================", time(0)).unwrap();
        writeln!(out, "{} BUG: KASAN: slab-out-of-bounds in kmalloc_oob_right+0x190/0x3b8", time(0)).unwrap();
        writeln!(out, "{} Write of size 1 at addr {n:08x} by task kunit_try_catch/{n}", time(0)).unwrap();
        writeln!(out, "{} ==================================================================", time(1)).unwrap();
    } else {
        writeln!(out, "{} usb 1-1: new high-speed USB device number {n} using ehci-platform", time(0)).unwrap();
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut build = false;
    let mut dump = false;
    let mut size_mb: u64 = 256;
    let mut path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--build" => build = true,
            "--dump" => dump = true,
            "--size" => size_mb = args.next().ok_or("--size needs a number of MB")?.parse()?,
            _ => path = Some(arg.into()),
        }
    }
    let input: Box<dyn Read> = match &path {
        Some(path) => Box::new(File::open(path)?),
        None if build => {
            let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/squad/linux_log_parser_build/gcc_x86_64_26861563.log");
            let sample = std::fs::read(sample)?;
            let next_piece = move |out: &mut Vec<u8>| out.extend_from_slice(&sample);
            Box::new(Generated { next_piece, piece: Vec::new(), at: 0, left: size_mb * 1024 * 1024 })
        }
        None => {
            let mut line = 0;
            let next_piece = move |out: &mut Vec<u8>| dmesg(&mut line, out);
            Box::new(Generated { next_piece, piece: Vec::new(), at: 0, left: size_mb * 1024 * 1024 })
        }
    };
    let mut counted = Counted { inner: input, bytes: 0 };
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, &mut counted);
    let tests: Vec<LogTest> = if build { parse_build_log(reader)? } else { parse_boot_log(reader)? };
    let seconds = started.elapsed().as_secs_f64();
    let mb = counted.bytes as f64 / (1024.0 * 1024.0);
    println!("parser: {}", if build { "linux_log_parser_build" } else { "linux_log_parser" });
    println!("input: {mb:.1} MiB in {seconds:.2} s = {:.1} MiB/s", mb / seconds);
    println!("tests: {}", tests.len());
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
    if dump {
        use sha2::{Digest, Sha256};
        for test in &tests {
            let digest = hex::encode(Sha256::digest(test.log().as_bytes()));
            println!("{}\t{}\t{:?}\t{}\t{digest}", test.suite, test.name, test.kind, test.snippets.len());
        }
    }
    Ok(())
}
