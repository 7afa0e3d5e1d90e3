//! `squadron bench ingest`: submits one test run of 10k, 100k and 1M tests
//! through the real HTTP endpoint of a `squadron serve` child process, on
//! SQLite and PostgreSQL, as a first build (every name new), a repeat build
//! (names already interned, and cached by the server) and a repeat build on
//! a restarted server (names looked up in the database), and prints
//! tests/s, the server's peak RSS and its longest write hold, beside the
//! raw ceiling of the same inserts without HTTP or parsing.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use squadron_core::access::Role;
use squadron_store::projects::NewProject;
use squadron_store::{Migrations, Store};

use super::{Engines, Scratch};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Numbers of tests per submission.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Suites the tests are spread over.
    #[arg(long, default_value_t = 1000)]
    pub suites: usize,
    /// List tests suite after suite interleaved (`suite0/test0, suite1/test1, …`)
    /// instead of grouped by suite as result files are.
    #[arg(long)]
    pub interleaved: bool,
    /// Which engines to measure.
    #[arg(long, value_enum, default_value_t = Engines::Both)]
    pub engine: Engines,
    /// PostgreSQL server on which a scratch database is created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
}

/// The suite of test `i` of `tests`: suites hold consecutive tests, as in
/// result files, or take turns when `interleaved`.
fn suite_of(i: usize, tests: usize, suites: usize, interleaved: bool) -> usize {
    if interleaved {
        i % suites
    } else {
        i * suites / tests.max(1)
    }
}

/// Writes a tests document: `tests` tests over `suites` suites, every
/// hundredth failing with a 200-byte log.
fn write_tests_file(path: &Path, tests: usize, suites: usize, interleaved: bool) -> anyhow::Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let log = "Traceback: assertion failed at line 42; ".repeat(5);
    out.write_all(b"{")?;
    for i in 0..tests {
        let sep = if i == 0 { "" } else { ",\n" };
        if i % 100 == 0 {
            write!(
                out,
                "{sep}\"suite{}/test{i}\": {{\"result\": \"fail\", \"log\": \"{log}\"}}",
                suite_of(i, tests, suites, interleaved)
            )?;
        } else {
            write!(out, "{sep}\"suite{}/test{i}\": \"pass\"", suite_of(i, tests, suites, interleaved))?;
        }
    }
    out.write_all(b"}")?;
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Creates group `bench`, project `bench/p` and a submitter; returns its token.
async fn prepare(url: &str) -> anyhow::Result<(String, i64)> {
    let store = Store::open(url, Migrations::Apply).await?;
    let group = store.create_group("bench", None).await?;
    let project = store
        .create_project(NewProject { group_id: group.id, slug: "p", is_public: true, ..Default::default() })
        .await?;
    let user = store.create_user("bench", "", false).await?;
    store.set_member(group.id, user.id, Role::Submitter).await?;
    let token = store.token_for(user.id, false).await?;
    store.close().await;
    Ok((token, project.id))
}

struct Server {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(data_dir: &Path, database: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--log-format", "json", "--data-dir"])
            .arg(data_dir)
            .args(["--database", database, "serve", "--bind", "127.0.0.1:0", "--max-upload-bytes", "4294967296"])
            // The bench reads the server's info lines (its address, its
            // write holds), whatever the caller's RUST_LOG says.
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()?;
        let (sender, log) = mpsc::channel();
        let stderr = child.stderr.take().context("server stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let url = loop {
            let Ok(line) = log.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                bail!("the server did not start");
            };
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().context("address")?.to_string();
            }
        };
        Ok(Server { child, url, log })
    }

    /// Peak resident memory so far, in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        super::peak_rss_mib(self.child.id())
    }

    /// Stops the server with SIGTERM; returns its longest write hold in ms.
    fn stop(mut self) -> anyhow::Result<f64> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        let mut hold = None;
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(5)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(ms) = v["fields"]["longest_write_hold_ms"].as_f64() {
                    hold = Some(ms);
                }
            }
        }
        hold.context("the server did not report its write holds")
    }
}

/// Reads every test of a run back by following `next` from `path`;
/// returns how many were read and how long it took.
async fn read_back(http: &reqwest::Client, server: &Server, path: &str) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let mut url = Some(format!("{}{path}", server.url));
    let mut read = 0;
    /// A page, its results only counted.
    #[derive(serde::Deserialize)]
    struct Page {
        next: Option<String>,
        results: Vec<serde::de::IgnoredAny>,
    }
    while let Some(u) = url {
        let page: Page = http.get(&u).send().await?.error_for_status()?.json().await?;
        read += page.results.len();
        url = page.next;
    }
    Ok((read, started.elapsed()))
}

/// Submits a tests file; returns the new run's id and how long it took.
async fn submit(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    build: &str,
    file: &Path,
) -> anyhow::Result<(i64, Duration)> {
    let length = std::fs::metadata(file)?.len();
    let body = reqwest::Body::from(tokio::fs::File::open(file).await?);
    let part = reqwest::multipart::Part::stream_with_length(body, length).file_name("tests.json");
    let form = reqwest::multipart::Form::new().part("tests", part);
    let started = Instant::now();
    let resp = http
        .post(format!("{}/api/submit/bench/p/{build}/env", server.url))
        .header("Authorization", format!("Token {token}"))
        .multipart(form)
        .send()
        .await?;
    let elapsed = started.elapsed();
    let status = resp.status();
    let body = resp.text().await?;
    if status.as_u16() != 201 {
        bail!("submission failed with {status}: {body}");
    }
    Ok((body.trim().parse()?, elapsed))
}

fn rate(tests: usize, d: Duration) -> String {
    format!("{:>9.0}", tests as f64 / d.as_secs_f64())
}

async fn bench_engine(engine: Engines, args: &IngestArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3600)).build()?;
    let name = if engine == Engines::Sqlite { "sqlite" } else { "postgres" };
    for &size in &args.sizes {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tests.json");
        let bytes = write_tests_file(&file, size, args.suites, args.interleaved)?;

        let scratch = Scratch::new(engine, dir.path(), &args.postgres).await?;
        let (token, _) = prepare(&scratch.url).await?;
        let server = Server::start(&dir.path().join("data"), &scratch.url)?;
        let (run, first) = submit(&http, &server, &token, "first", &file).await?;
        let (_, repeat) = submit(&http, &server, &token, "repeat", &file).await?;
        let (nested, nested_time) =
            read_back(&http, &server, &format!("/api/testruns/{run}/tests/?limit=1000")).await?;
        let (filtered, filtered_time) =
            read_back(&http, &server, &format!("/api/tests/?test_run={run}&limit=1000")).await?;
        if nested != size || filtered != size {
            bail!("read back {nested} and {filtered} tests instead of {size}");
        }
        let rss = server.peak_rss_mib()?;
        let hold = server.stop()?;
        // A repeat build on a server just started: its name cache is empty,
        // so every name is looked up in the database.
        let server = Server::start(&dir.path().join("data"), &scratch.url)?;
        let (_, restarted) = submit(&http, &server, &token, "restarted", &file).await?;
        let rss = rss.max(server.peak_rss_mib()?);
        let hold = hold.max(server.stop()?);
        scratch.drop().await?;

        let scratch = Scratch::new(engine, dir.path(), &args.postgres).await?;
        let (_, project) = prepare(&scratch.url).await?;
        let store = Store::open(&scratch.url, Migrations::Require).await?;
        let raw_first =
            squadron_store::bench::raw_insert(&store, project, "first", size, args.suites, args.interleaved).await?;
        let raw_repeat =
            squadron_store::bench::raw_insert(&store, project, "repeat", size, args.suites, args.interleaved).await?;
        store.close().await;
        scratch.drop().await?;

        println!(
            "{name:<8} {size:>8} tests ({:>5.1} MB)  first {} tests/s ({:>6.2}s)  repeat {} tests/s ({:>6.2}s)  \
             repeat on a restarted server {} tests/s ({:>6.2}s)  \
             peak RSS {rss:>6.1} MiB  longest write hold {hold:>7.1} ms  |  raw ceiling: first {} repeat {} tests/s  |  \
             read back: testruns/<id>/tests/ {} tests/s, tests/?test_run= {} tests/s",
            bytes as f64 / 1e6,
            rate(size, first),
            first.as_secs_f64(),
            rate(size, repeat),
            repeat.as_secs_f64(),
            rate(size, restarted),
            restarted.as_secs_f64(),
            rate(size, raw_first),
            rate(size, raw_repeat),
            rate(size, nested_time),
            rate(size, filtered_time),
        );
    }
    Ok(())
}

/// `squadron bench ingest`.
pub async fn run(args: &IngestArgs) -> anyhow::Result<()> {
    let order = if args.interleaved { "interleaved" } else { "grouped by suite" };
    println!(
        "squadron bench ingest: {} suites ({order}), 1% failures with logs; tests/s through POST /api/submit",
        args.suites
    );
    for engine in args.engine.selected() {
        bench_engine(engine, args).await?;
    }
    Ok(())
}
