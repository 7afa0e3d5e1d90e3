//! The tradefed plugin's core on real and generated reports: SQUAD's
//! naming and results, counts of the report body, archive extraction and
//! its limits, resumption from every cursor, and bad input.

use std::fs::File;
use std::io::{BufReader, Cursor as Bytes, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use squadron_core::results::TestStatus;
use squadron_plugins::tradefed::archive::{extract_members, extract_test_result, ArchiveError, Format, Limits, Member};
use squadron_plugins::tradefed::results::{
    Batch, Counts, Cursor, DeclaredSummary, ParseError, ParseErrorKind, Parser, ResultHeader, TradefedTest,
};

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tradefed").join(path)
}

fn json(path: &str) -> Value {
    serde_json::from_reader(File::open(testdata(path)).unwrap()).unwrap()
}

/// Every report fixture, with the action its suites are named after.
const REPORTS: &[(&str, &str)] = &[
    ("inline/test_result-with-failures.xml", "cts"),
    ("squad-linaro-plugins/test_result.xml", "cts-lkft"),
    ("squad-integration/test_result.xml", "cts-lkft"),
    ("aosp-vts/vts-result-1.xml", "vts"),
    ("aosp-vts/vts-result-2.xml", "vts"),
];

/// A whole parse: its batches, totals and header.
struct Parsed {
    batches: Vec<Batch>,
    counts: Counts,
    header: Option<ResultHeader>,
}

impl Parsed {
    fn tests(&self) -> Vec<TradefedTest> {
        self.batches.iter().flat_map(|b| b.tests.iter().cloned()).collect()
    }

    fn find(&self, suite: &str, name: &str) -> TradefedTest {
        self.tests()
            .into_iter()
            .find(|t| t.suite == suite && t.name == name)
            .unwrap_or_else(|| panic!("no test {suite} / {name}"))
    }
}

fn run<R: std::io::BufRead>(mut parser: Parser<R>) -> Result<Parsed, ParseError> {
    let mut batches = Vec::new();
    while let Some(batch) = parser.next_batch()? {
        batches.push(batch);
    }
    let counts = *parser.summary().expect("a finished parse has a summary");
    Ok(Parsed { batches, counts, header: parser.header().cloned() })
}

fn parse_file(path: &Path, action: &str, batch_size: usize) -> Parsed {
    run(Parser::new(BufReader::new(File::open(path).unwrap()), action, batch_size)).unwrap()
}

fn parse_bytes(bytes: &[u8], action: &str, batch_size: usize) -> Result<Parsed, ParseError> {
    run(Parser::new(bytes, action, batch_size))
}

/// A parser resumed from `cursor` on a freshly opened file.
fn resumed(path: &Path, cursor: &Cursor, action: &str, batch_size: usize) -> Parser<BufReader<File>> {
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(cursor.byte_offset)).unwrap();
    Parser::resume(BufReader::new(file), cursor.clone(), action, batch_size)
}

fn status(result: &str) -> TestStatus {
    match result {
        "pass" => TestStatus::Pass,
        "fail" => TestStatus::Fail,
        "ASSUMPTION_FAILURE" => TestStatus::Xfail,
        other => panic!("unexpected result {other}"),
    }
}

fn attributes(value: &Value) -> Vec<(String, String)> {
    value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
}

fn declared(value: &Value) -> DeclaredSummary {
    let count = |key: &str| value.get(key).map(|v| v.as_str().unwrap().parse().unwrap());
    DeclaredSummary {
        pass: count("pass"),
        failed: count("failed"),
        modules_done: count("modules_done"),
        modules_total: count("modules_total"),
    }
}

#[test]
fn hand_made_report_gives_what_squads_plugin_tests_expect() {
    let expected = json("inline/test_result-with-failures.expected.json");
    let expected = &expected["plugin_expectations_transcribed_from_test_code"];
    let parsed = parse_file(&testdata("inline/test_result-with-failures.xml"), "cts", 100);

    let mut want = Vec::new();
    for (suite, cases) in expected["test_extract_results_correctly"]["suites"].as_object().unwrap() {
        for case in cases.as_array().unwrap() {
            assert_eq!(case["suite"], suite.as_str());
            let tests = case.get("tests").or(case.get("tests_sorted_by_name")).unwrap();
            for test in tests.as_array().unwrap() {
                want.push((
                    suite.clone(),
                    format!("{}.{}", case["name"].as_str().unwrap(), test["name"].as_str().unwrap()),
                    status(test["result"].as_str().unwrap()),
                    test.get("log").map_or("", |l| l.as_str().unwrap()).to_owned(),
                ));
            }
        }
    }
    let mut got = parsed.tests();
    got.sort_by(|a, b| (&a.suite, &a.name).cmp(&(&b.suite, &b.name)));
    want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let projected: Vec<_> = got.iter().map(|t| (t.suite.clone(), t.name.clone(), t.status, t.log.clone())).collect();
    assert_eq!(projected, want);

    let issue = &expected["test_extract_results_correctly"]["known_issue_created"];
    let xfails: Vec<_> = got.iter().filter_map(TradefedTest::known_issue_title).collect();
    assert_eq!(xfails, [issue["title"].as_str().unwrap()]);
    let xfail = got.iter().find(|t| t.status == TestStatus::Xfail).unwrap();
    assert_eq!(format!("{}/{}", xfail.suite, xfail.name), issue["test_name"].as_str().unwrap());
    assert_eq!(xfail.result(), Some(false));
    assert_eq!(got.iter().filter(|t| t.result() == Some(true)).count(), 6);
}

/// The independent ElementTree counts of a fixture agree with the parse.
fn check_summary(parsed: &Parsed, summary: &Value, action: &str) {
    let header = parsed.header.as_ref().unwrap();
    assert_eq!(header.attributes, attributes(&summary["root_attributes"]));
    assert_eq!(header.summary, Some(declared(&summary["summary_element"])));
    assert_eq!(header.attribute("suite_name"), Some("CTS"));

    let modules = summary["modules"].as_array().unwrap();
    assert_eq!(parsed.counts.modules, modules.len() as u64);
    let done = modules.iter().filter(|m| m["done"] == "true").count();
    assert_eq!(parsed.counts.modules_done, done as u64);
    let cases: u64 = modules.iter().map(|m| m["testcases"].as_u64().unwrap()).sum();
    assert_eq!(parsed.counts.test_cases, cases);

    let tests = parsed.tests();
    for module in modules {
        let suite = format!("{action}/{}.{}", module["abi"].as_str().unwrap(), module["name"].as_str().unwrap());
        for (result, count) in module["results"].as_object().unwrap() {
            let got = tests.iter().filter(|t| t.suite == suite && t.status == status(result)).count();
            assert_eq!(got as u64, count.as_u64().unwrap(), "{suite} {result}");
        }
    }
    let counts = &summary["result_counts"];
    let count = |key: &str| counts.get(key).map_or(0, |v| v.as_u64().unwrap());
    assert_eq!(parsed.counts.pass, count("pass"));
    assert_eq!(parsed.counts.fail, count("fail"));
    assert_eq!(parsed.counts.xfail, count("ASSUMPTION_FAILURE"));
    assert_eq!(parsed.counts.skip, 0);
    assert_eq!(parsed.counts.tests, tests.len() as u64);

    for failure in summary["non_pass_tests"].as_array().unwrap() {
        let suite = format!("{action}/{}.{}", failure["abi"].as_str().unwrap(), failure["module"].as_str().unwrap());
        let name = format!("{}.{}", failure["testcase"].as_str().unwrap(), failure["test"].as_str().unwrap());
        let test = parsed.find(&suite, &name);
        assert_eq!(test.status, status(failure["result"].as_str().unwrap()));
        assert_eq!(test.log, failure["stacktrace"].as_str().unwrap());
    }
}

#[test]
fn reports_count_their_body_not_their_summary() {
    let hand_made = parse_file(&testdata("inline/test_result-with-failures.xml"), "cts", 4);
    let summary = json("inline/test_result-with-failures.expected.json");
    check_summary(&hand_made, &summary["independent_summary"], "cts");

    let lkft = parse_file(&testdata("squad-linaro-plugins/test_result.xml"), "cts-lkft", 50);
    check_summary(&lkft, &json("squad-linaro-plugins/test_result.summary.json")["independent_summary"], "cts-lkft");
    assert_eq!(lkft.counts.tests, 515);
    let test = lkft.find("cts-lkft/arm64-v8a.CtsBionicTestCases", "DlExtTest.ExtInfoNull");
    assert_eq!((test.status, test.log.as_str()), (TestStatus::Pass, ""));

    let deqp = parse_file(&testdata("squad-integration/test_result.xml"), "cts-lkft", 1000);
    let summary = json("squad-integration/test_result.summary.json");
    check_summary(&deqp, &summary["independent_summary"], "cts-lkft");
    let squad = &summary["squad_v1_89_integration_test_expectations"];
    assert_eq!(deqp.counts.pass, squad["status.tests_pass"].as_u64().unwrap());
    assert_eq!(deqp.counts.fail, squad["status.tests_fail"].as_u64().unwrap());
    let failed = deqp.tests().into_iter().find(|t| t.status == TestStatus::Fail).unwrap();
    assert!(failed.log.contains(squad["failed_test_log_contains"].as_str().unwrap()));
    assert_eq!(deqp.header.unwrap().summary.unwrap().pass, Some(972406));
}

#[test]
fn names_match_the_atomic_result_list_of_the_same_run() {
    // result.txt lists `<abi>.<module>/<test case>.<test> <result>` for
    // the tests of the run the report came from (trimmed to the first 98).
    let listed: Vec<String> = std::fs::read_to_string(testdata("squad-linaro-plugins/result.txt"))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("tradefed-test-run "))
        .map(str::to_owned)
        .collect();
    let parsed = parse_file(&testdata("squad-linaro-plugins/test_result.xml"), "cts-lkft", 7);
    let ours: Vec<String> = parsed
        .tests()
        .iter()
        .map(|t| format!("{}/{} {}", t.suite.strip_prefix("cts-lkft/").unwrap(), t.name, t.status.as_str()))
        .collect();
    assert!(listed.len() > 90);
    assert_eq!(ours[..listed.len()], listed);
}

#[test]
fn vts_reports_give_the_rows_aosp_expects() {
    let expected = json("aosp-vts/vts-results.expected.json");
    let abi = |bitness: &str| if bitness == "64" { "arm64-v8a" } else { "armeabi-v7a" };
    let rows = |value: &Value| -> Vec<(String, String, TestStatus)> {
        value.as_array().unwrap()[1..]
            .iter()
            .map(|row| {
                let cell = |i: usize| row[i].as_str().unwrap();
                (format!("vts/{}.{}", abi(cell(0)), cell(1)), format!("{}.{}", cell(2), cell(3)), status(cell(4)))
            })
            .collect()
    };
    let ours = |parsed: &Parsed| -> Vec<(String, String, TestStatus)> {
        parsed.tests().into_iter().map(|t| (t.suite, t.name, t.status)).collect()
    };

    let first = parse_file(&testdata("aosp-vts/vts-result-1.xml"), "vts", 2);
    assert_eq!(ours(&first), rows(&expected["vts-result-1.xml"]["all_results"]));
    let summary = &expected["vts-result-1.xml"]["summary"];
    let declared = first.header.unwrap().summary.unwrap();
    assert_eq!(declared.pass, summary["pass"].as_u64());
    assert_eq!(declared.failed, summary["failed"].as_u64());
    assert_eq!(declared.modules_done, summary["modules_done"].as_u64());
    assert_eq!(declared.modules_total, summary["modules_total"].as_u64());
    assert_eq!((first.counts.pass, first.counts.fail), (1, 3));

    let second = parse_file(&testdata("aosp-vts/vts-result-2.xml"), "vts", 2);
    let all = &expected["compare vts-result-2.xml against reference vts-result-1.xml (all)"];
    assert_eq!(ours(&second), rows(all));
    assert_eq!(second.tests()[0].name, "testcase1.test1,test2");
}

#[test]
fn real_tarballs_hold_the_fixture_reports() {
    for (tarball, report, path) in [
        (
            "squad-linaro-plugins/test_output.tar.xz",
            "squad-linaro-plugins/test_result.xml",
            "output/results/2018.01.29_09.33.32/test_result.xml",
        ),
        (
            "squad-integration/tradefed-output-20220608105250.tar.xz",
            "squad-integration/test_result.xml",
            "output/results/2022.06.08_09.38.52/test_result.xml",
        ),
    ] {
        let mut xml = Vec::new();
        let extracted =
            extract_test_result(File::open(testdata(tarball)).unwrap(), &mut xml, &Limits::default()).unwrap();
        assert_eq!(extracted.format, Format::TarXz);
        assert_eq!(extracted.path.as_deref(), Some(path));
        assert_eq!(extracted.size, xml.len() as u64);
        assert_eq!(xml, std::fs::read(testdata(report)).unwrap(), "{tarball}");

        let from_tarball = parse_bytes(&xml, "cts-lkft", 100).unwrap();
        let from_file = parse_file(&testdata(report), "cts-lkft", 100);
        assert_eq!(from_tarball.batches, from_file.batches);
        assert!(from_tarball.counts.tests > 500);
    }
}

/// Interrupting after any batch and resuming from its cursor on a fresh
/// reader gives what the uninterrupted parse gives.
///
/// Checked by induction, which keeps it linear: from every cursor, the
/// next batch (tests and cursor) equals the uninterrupted next batch,
/// and the last cursor resumes to nothing with the same totals. From a
/// few cursors the whole remainder is compared as well.
fn check_resume(path: &Path, action: &str, batch_size: usize) {
    let full = parse_file(path, action, batch_size);
    let batches = &full.batches;
    let every = (batches.len() / 4).max(1);
    for (i, batch) in batches.iter().enumerate() {
        let mut parser = resumed(path, &batch.cursor, action, batch_size);
        match batches.get(i + 1) {
            Some(next) => {
                assert_eq!(parser.next_batch().unwrap().as_ref(), Some(next), "{path:?} k={batch_size} i={i}")
            }
            None => assert_eq!(parser.next_batch().unwrap(), None),
        }
        if i % every == 0 || i + 1 == batches.len() {
            let rest = run(resumed(path, &batch.cursor, action, batch_size)).unwrap();
            assert_eq!(rest.batches, batches[i + 1..], "{path:?} k={batch_size} i={i}");
            assert_eq!(rest.counts, full.counts);
            assert!(rest.header.is_none());
        }
    }
    // A short last batch ends at the end of the document.
    let last = batches.last().unwrap();
    let at_end = (last.cursor.module.as_deref(), last.cursor.test_case.as_deref()) == (None, None);
    assert_eq!(at_end, last.tests.len() < batch_size, "{path:?} k={batch_size}");
    assert_eq!(last.cursor.counts, full.counts);
}

#[test]
fn resuming_from_any_cursor_continues_exactly() {
    for (report, action) in REPORTS {
        for batch_size in [1, 3, 7] {
            check_resume(&testdata(report), action, batch_size);
        }
    }
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_change_nothing() {
    let xml = std::fs::read_to_string(testdata(REPORT)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_result.xml");
    std::fs::write(&path, format!("\u{feff}{}", xml.replace('\n', "\r\n"))).unwrap();
    let windows = parse_file(&path, "cts", 2);
    let unix = parse_file(&testdata(REPORT), "cts", 2);
    assert_eq!(windows.tests(), unix.tests());
    assert_eq!(windows.counts, unix.counts);
    assert!(windows.batches[0].cursor.byte_offset > unix.batches[0].cursor.byte_offset);
    for batch_size in [1, 3] {
        check_resume(&path, "cts", batch_size);
    }
}

#[test]
fn cursors_survive_serialization() {
    let path = testdata("inline/test_result-with-failures.xml");
    let full = parse_file(&path, "cts", 3);
    let cursor: Cursor = serde_json::from_str(&serde_json::to_string(&full.batches[1].cursor).unwrap()).unwrap();
    assert_eq!(cursor, full.batches[1].cursor);
    assert_eq!(cursor.module.as_deref(), Some("module_bar"));
    assert_eq!(cursor.abi.as_deref(), Some("arm64-v8a"));
    assert_eq!(cursor.test_case.as_deref(), Some("TestCaseFoo"));
    let rest = run(resumed(&path, &cursor, "cts", 3)).unwrap();
    assert_eq!(rest.batches, full.batches[2..]);
}

/// Runs scripts/gen_cts_result.py; returns the report's path and the
/// generator's description of it.
fn generate(dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gen_cts_result.py");
    let path = dir.join("test_result.xml");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(File::create(&path).unwrap())
        .stderr(Stdio::piped())
        .output()
        .expect("python3 runs scripts/gen_cts_result.py");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (path, serde_json::from_slice(&output.stderr).unwrap())
}

#[test]
fn a_generated_report_of_50k_tests_counts_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, described) = generate(
        dir.path(),
        &[
            "--modules",
            "40",
            "--testcases",
            "50",
            "--tests",
            "25",
            "--fail-ratio",
            "0.01",
            "--assumption-ratio",
            "0.005",
            "--ignored-ratio",
            "0.01",
            "--not-done-ratio",
            "0.1",
            "--abis",
            "arm64-v8a,armeabi-v7a",
            "--seed",
            "5",
        ],
    );
    let parsed = parse_file(&path, "cts", 1000);
    let results = &described["results"];
    let count = |key: &str| results.get(key).map_or(0, |v| v.as_u64().unwrap());
    let counts = parsed.counts;
    assert_eq!(counts.tests, described["tests"].as_u64().unwrap());
    assert!(counts.tests > 40_000, "{}", counts.tests);
    assert_eq!(counts.pass, count("pass"));
    assert_eq!(counts.fail, count("fail"));
    assert_eq!(counts.xfail, count("ASSUMPTION_FAILURE"));
    assert_eq!(counts.skip, count("IGNORED"));
    assert_eq!(counts.modules, described["modules"].as_u64().unwrap());
    assert_eq!(counts.modules_done, described["modules_done"].as_u64().unwrap());
    let header = parsed.header.as_ref().unwrap();
    assert_eq!(header.summary.unwrap().pass, described["summary_element"]["pass"].as_u64());
    assert_eq!(header.summary.unwrap().failed, described["summary_element"]["failed"].as_u64());
    for failure in described["first_non_pass_tests"].as_array().unwrap() {
        let suite = format!("cts/{}.{}", failure["abi"].as_str().unwrap(), failure["module"].as_str().unwrap());
        let name = format!("{}.{}", failure["testcase"].as_str().unwrap(), failure["test"].as_str().unwrap());
        let test = parsed.find(&suite, &name);
        assert_eq!(test.status, status(failure["result"].as_str().unwrap()));
        assert!(!test.log.is_empty());
    }
    check_resume(&path, "cts", 1000);
    check_resume(&path, "cts", 4999);
}

// ---------------------------------------------------------------- archives

const REPORT: &str = "inline/test_result-with-failures.xml";

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn tar_gz_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar_of(entries)).unwrap();
    encoder.finish().unwrap()
}

fn tar_xz_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
    encoder.write_all(&tar_of(entries)).unwrap();
    encoder.finish().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Bytes::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    for (path, data) in entries {
        writer.start_file(*path, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

type Builder = fn(&[(&str, &[u8])]) -> Vec<u8>;
const ARCHIVERS: &[(Format, Builder)] =
    &[(Format::Zip, zip_of), (Format::TarGz, tar_gz_of), (Format::TarXz, tar_xz_of)];

fn extract(
    archive: &[u8],
    limits: &Limits,
) -> Result<(Vec<u8>, squadron_plugins::tradefed::archive::Extracted), ArchiveError> {
    let mut out = Vec::new();
    let extracted = extract_test_result(Bytes::new(archive), &mut out, limits)?;
    Ok((out, extracted))
}

#[test]
fn every_archive_format_yields_the_report() {
    let xml = std::fs::read(testdata(REPORT)).unwrap();
    let entries: &[(&str, &[u8])] = &[
        ("output/logs/host_log.txt", b"log line\n"),
        ("output/results/2024/test_result_failures.html", b"<html/>"),
        ("output/results/2024/test_result.xml.bak", b"not this one"),
        ("output/results/2024/test_result.xml", &xml),
        ("output/results/2025/test_result.xml", b"<Result/>"),
    ];
    for (format, build) in ARCHIVERS {
        let (out, extracted) = extract(&build(entries), &Limits::default()).unwrap();
        assert_eq!(extracted.format, *format);
        assert_eq!(extracted.path.as_deref(), Some("output/results/2024/test_result.xml"));
        assert_eq!((out.len() as u64, &out), (extracted.size, &xml));
    }
    let (out, extracted) = extract(&xml, &Limits::default()).unwrap();
    assert_eq!((extracted.format, extracted.path, out), (Format::Xml, None, xml.clone()));
    let with_bom = [b"\xEF\xBB\xBF\n".as_slice(), &xml].concat();
    assert_eq!(extract(&with_bom, &Limits::default()).unwrap().1.format, Format::Xml);
}

/// The members `extract_members` hands over, with their content.
fn members(archive: &[u8], wanted: &[Member], limits: &Limits) -> Result<Vec<(Member, Vec<u8>)>, ArchiveError> {
    let mut kept = Vec::new();
    extract_members(Bytes::new(archive), wanted, limits, &mut |member, copy| {
        let mut content = Vec::new();
        copy(&mut content)?;
        kept.push((member, content));
        Ok(())
    })?;
    Ok(kept)
}

#[test]
fn companion_files_are_found_before_and_after_the_report() {
    let entries: &[(&str, &[u8])] = &[
        ("output/tradefed-stdout.txt", b"stdout"),
        ("output/results/1/compatibility_result.xsl", b"xsl"),
        ("output/results/1/test_result.xml", b"<Result/>"),
        ("output/results/1/logo.png", b"png"),
        ("output/results/2/compatibility_result.xsl", b"second xsl"),
        ("output/tradefed-logcat.txt.gz", b"not this"),
        ("output/tradefed-logcat.txt", b"logcat"),
        ("output/results/1/compatibility_result.css", b"css"),
    ];
    let expected: Vec<(Member, Vec<u8>)> = [
        (Member::Stdout, "stdout"),
        (Member::Stylesheet, "xsl"),
        (Member::TestResult, "<Result/>"),
        (Member::Logo, "png"),
        (Member::Logcat, "logcat"),
        (Member::Css, "css"),
    ]
    .into_iter()
    .map(|(m, c)| (m, c.as_bytes().to_vec()))
    .collect();
    for (format, build) in ARCHIVERS {
        let archive = build(entries);
        assert_eq!(members(&archive, &Member::ALL, &Limits::default()).unwrap(), expected, "{format:?}");
        let only = members(&archive, &[Member::TestResult, Member::Logcat], &Limits::default()).unwrap();
        assert_eq!(only, [expected[2].clone(), expected[4].clone()], "{format:?}");
        // A companion over its limit is passed over; the report over its
        // own fails the extraction.
        let small = Limits { max_companion_size: 5, ..Limits::default() };
        let kept: Vec<Member> = members(&archive, &Member::ALL, &small).unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(kept, [Member::Stylesheet, Member::TestResult, Member::Logo, Member::Css], "{format:?}");
        let err = members(&archive, &Member::ALL, &Limits { max_size: 5, ..Limits::default() }).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { limit: 5 }), "{format:?}: {err:?}");
        // Once the report is taken, a rest of the archive that breaks a
        // limit only ends the search for companions.
        let few = Limits { max_entries: 4, ..Limits::default() };
        let kept = members(&archive, &Member::ALL, &few);
        if *format == Format::Zip {
            assert!(matches!(kept, Err(ArchiveError::TooManyEntries { limit: 4 })), "a zip's directory is read first");
        } else {
            let kept: Vec<Member> = kept.unwrap().into_iter().map(|(m, _)| m).collect();
            assert_eq!(kept, [Member::Stdout, Member::Stylesheet, Member::TestResult, Member::Logo], "{format:?}");
        }
    }
    // A damaged tail after the report: the report and what came before it
    // are kept; before the report it is a corrupt archive.
    let mut state = 1u64;
    let filler: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let with_filler = [&entries[..4], &[("output/filler.bin", filler.as_slice())], &entries[4..]].concat();
    for build in [tar_gz_of as Builder, tar_xz_of] {
        let archive = build(&with_filler);
        let cut = &archive[..archive.len() - 2048];
        let kept: Vec<Member> =
            members(cut, &Member::ALL, &Limits::default()).unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(kept, [Member::Stdout, Member::Stylesheet, Member::TestResult, Member::Logo]);
        assert!(members(&archive[..100], &Member::ALL, &Limits::default()).is_err());
    }
    let bare = members(b"<Result/>", &Member::ALL, &Limits::default()).unwrap();
    assert_eq!(bare, [(Member::TestResult, b"<Result/>".to_vec())], "a bare report has no companions");
    let without = members(&tar_xz_of(&entries[..2]), &Member::ALL, &Limits::default());
    assert!(matches!(without, Err(ArchiveError::NoTestResult { entries: 2 })), "{without:?}");
    // A failure of the receiver is a write error.
    let failing = extract_members(Bytes::new(zip_of(entries)), &Member::ALL, &Limits::default(), &mut |_, _| {
        Err(std::io::Error::other("disk full"))
    });
    assert!(matches!(failing, Err(ArchiveError::Write(_))), "{failing:?}");
}

#[test]
fn archives_without_a_report_are_refused() {
    let entries: &[(&str, &[u8])] =
        &[("output/tradefed-stdout.txt", b"stdout"), ("output/results/x/test_result.xml.gz", b"gz")];
    for (format, build) in ARCHIVERS {
        match extract(&build(entries), &Limits::default()) {
            Err(ArchiveError::NoTestResult { entries: 2 }) => {}
            other => panic!("{format:?}: {other:?}"),
        }
    }
    let message = extract(&zip_of(entries), &Limits::default()).unwrap_err().to_string();
    assert!(message.contains("no test_result.xml"), "{message}");
    assert!(matches!(extract(b"hello", &Limits::default()), Err(ArchiveError::UnknownFormat)));
    assert!(matches!(extract(b"", &Limits::default()), Err(ArchiveError::UnknownFormat)));
}

#[test]
fn zip_bombs_stop_at_the_limits() {
    let bomb = vec![b' '; 16 << 20];
    let entries: &[(&str, &[u8])] = &[("results/test_result.xml", &bomb)];
    let small = Limits { max_size: 1 << 20, ..Limits::default() };
    let ratio = Limits { max_ratio: 50, ..Limits::default() };
    for (format, build) in ARCHIVERS {
        let archive = build(entries);
        assert!(archive.len() < bomb.len() / 100, "{format:?} compresses");
        match extract(&archive, &small) {
            Err(err @ ArchiveError::TooLarge { limit: 1048576 }) => {
                assert!(err.to_string().contains("larger than the limit"))
            }
            other => panic!("{format:?}: {other:?}"),
        }
        match extract(&archive, &ratio) {
            Err(ArchiveError::RatioExceeded { limit: 50 }) => {}
            other => panic!("{format:?}: {other:?}"),
        }
    }
    // A huge member before the report is bounded too, though never written.
    let xml = std::fs::read(testdata(REPORT)).unwrap();
    let entries: &[(&str, &[u8])] = &[("logs/huge.txt", &bomb), ("results/test_result.xml", &xml)];
    for build in [tar_gz_of as Builder, tar_xz_of] {
        assert!(matches!(extract(&build(entries), &ratio), Err(ArchiveError::RatioExceeded { .. })));
        let lenient = Limits { max_ratio: 100_000, ..Limits::default() };
        assert_eq!(extract(&build(entries), &lenient).unwrap().0, xml);
    }
    // The bare report obeys the size limit.
    assert!(matches!(
        extract(&xml, &Limits { max_size: 100, ..Limits::default() }),
        Err(ArchiveError::TooLarge { .. })
    ));
}

#[test]
fn entry_counts_are_bounded() {
    let entries: Vec<(String, &[u8])> = (0..5).map(|i| (format!("logs/{i}.txt"), b"x".as_slice())).collect();
    let mut entries: Vec<(&str, &[u8])> = entries.iter().map(|(p, d)| (p.as_str(), *d)).collect();
    entries.push(("test_result.xml", b"<Result/>"));
    let limits = Limits { max_entries: 3, ..Limits::default() };
    for (format, build) in ARCHIVERS {
        match extract(&build(&entries), &limits) {
            Err(ArchiveError::TooManyEntries { limit: 3 }) => {}
            other => panic!("{format:?}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_archives_are_reported_as_such() {
    let tarball = std::fs::read(testdata("squad-integration/tradefed-output-20220608105250.tar.xz")).unwrap();
    for cut in [tarball.len() / 8, tarball.len() / 2] {
        let err = extract(&tarball[..cut], &Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().starts_with("corrupt archive"), "{err}");
    }
    let mut flipped = tar_gz_of(&[("test_result.xml", b"<Result/>")]);
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xFF;
    assert!(matches!(extract(&flipped, &Limits::default()), Err(ArchiveError::Corrupt(_))));
    let zip = zip_of(&[("test_result.xml", b"<Result/>")]);
    assert!(matches!(extract(&zip[..zip.len() - 10], &Limits::default()), Err(ArchiveError::Corrupt(_))));
    let mut garbage = b"PK\x03\x04".to_vec();
    garbage.extend([0u8; 100]);
    assert!(matches!(extract(&garbage, &Limits::default()), Err(ArchiveError::Corrupt(_))));
}

// --------------------------------------------------------------- bad input

fn parse_error(xml: &[u8]) -> ParseError {
    match parse_bytes(xml, "cts", 2) {
        Ok(parsed) => panic!("parsed {} tests", parsed.counts.tests),
        Err(err) => err,
    }
}

/// Whatever the cut, the parse either fails with the tests before its
/// last good cursor being a prefix of the full output, from which the
/// whole file resumes to the full output; or (cut in the trailing white
/// space) succeeds with the full output.
fn check_truncations(path: &Path, action: &str, cuts: impl Iterator<Item = usize>) {
    let xml = std::fs::read(path).unwrap();
    let full = parse_file(path, action, 2);
    let all = full.tests();
    for cut in cuts {
        let mut parser = Parser::new(&xml[..cut], action, 2);
        let mut got = Vec::new();
        let err = loop {
            match parser.next_batch() {
                Ok(Some(batch)) => got.extend(batch.tests),
                Ok(None) => break None,
                Err(err) => break Some(err),
            }
        };
        let Some(err) = err else {
            assert!(xml[cut..].iter().all(u8::is_ascii_whitespace), "cut {cut} parsed");
            assert_eq!(got, all);
            continue;
        };
        assert!(!err.to_string().is_empty());
        assert_eq!(got, all[..got.len()], "cut {cut}");
        match err.last_good {
            None => assert!(got.is_empty()),
            Some(cursor) => {
                assert_eq!(cursor.counts.tests, got.len() as u64);
                let rest = run(resumed(path, &cursor, action, 2)).unwrap();
                assert_eq!([got, rest.tests()].concat(), all, "cut {cut}");
            }
        }
    }
}

#[test]
fn truncated_reports_fail_cleanly_and_resume_from_the_last_good_cursor() {
    let path = testdata(REPORT);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    check_truncations(&path, "cts", 0..len);
    let path = testdata("squad-linaro-plugins/test_result.xml");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    check_truncations(&path, "cts-lkft", (0..len).step_by(97));

    let xml = std::fs::read(testdata(REPORT)).unwrap();
    let cut = String::from_utf8_lossy(&xml).find("</TestCase>").unwrap();
    let err = parse_error(&xml[..cut]);
    assert!(matches!(&err.kind, ParseErrorKind::Truncated(tag) if tag == "TestCase"), "{err}");
    assert_eq!(err.last_good.unwrap().counts.tests, 4);
}

#[test]
fn other_encodings_are_refused() {
    let xml = std::fs::read_to_string(testdata(REPORT)).unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(xml.encode_utf16().flat_map(u16::to_le_bytes));
    let err = parse_error(&utf16);
    assert!(matches!(&err.kind, ParseErrorKind::UnsupportedEncoding(e) if e == "UTF-16LE"), "{err}");
    assert!(err.last_good.is_none());
    let utf16be: Vec<u8> = xml.encode_utf16().flat_map(u16::to_be_bytes).collect();
    assert!(matches!(parse_error(&utf16be).kind, ParseErrorKind::UnsupportedEncoding(_)));

    let latin1 = xml.replacen("encoding='UTF-8'", "encoding='ISO-8859-1'", 1);
    let err = parse_error(latin1.as_bytes());
    assert!(matches!(&err.kind, ParseErrorKind::UnsupportedEncoding(e) if e == "ISO-8859-1"), "{err}");
    assert!(err.to_string().contains("only UTF-8"));

    // Latin-1 bytes in a document that claims UTF-8, after a few tests.
    let at = xml.find("test_bar4").unwrap();
    let mut bytes = xml.into_bytes();
    bytes[at] = 0xE9;
    let err = parse_error(&bytes);
    assert!(matches!(err.kind, ParseErrorKind::InvalidUtf8), "{err}");
    assert_eq!(err.last_good.unwrap().counts.tests, 2);
}

#[test]
fn invalid_documents_and_attributes_are_clear_errors() {
    let doc = |body: &str| format!("<?xml version='1.0' encoding='UTF-8' ?>\n<Result>\n{body}\n</Result>\n");
    let module =
        |tests: &str| doc(&format!("<Module name=\"m\" abi=\"x86\"><TestCase name=\"c\">{tests}</TestCase></Module>"));
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "no <Result>"),
        ("<testsuites/>".into(), "root element is <testsuites>"),
        (module("<Test name=\"t\"/>"), "<Test> has no result attribute"),
        (module("<Test result=\"pass\"/>"), "<Test> has no name attribute"),
        (doc("<Module abi=\"x86\"/>"), "<Module> has no name attribute"),
        (doc("<Module name=\"m\"><TestCase/></Module>"), "<TestCase> has no name attribute"),
        (doc("<Summary pass=\"many\"/>"), "invalid pass=\"many\" on <Summary>: expected a count"),
        (doc("<Module name=\"m\" done=\"yes\"/>"), "invalid done=\"yes\" on <Module>"),
        (module("<Test result=\"pass\" name=\"a&bogus;\"/>"), "invalid name=\"a&bogus;\" on <Test>"),
        (module("<Test result=\"pass\" name=\"t\"></TestCase>"), "expected </Test>, found </TestCase>"),
        (
            module("<Test result=\"fail\" name=\"t\"><Failure><StackTrace>&nope;</StackTrace></Failure></Test>"),
            "malformed XML",
        ),
        (doc("") + "<Result/>", "element <Result> after the end of <Result>"),
        (module("<Test result=\"pass\" name=\"t\" name=\"u\"/>"), "malformed XML"),
    ];
    for (xml, message) in cases {
        let err = parse_error(xml.as_bytes());
        assert!(err.to_string().contains(message), "{xml:?}: {err}");
    }
}

#[test]
fn squad_naming_rules_hold_at_the_edges() {
    let long = "é".repeat(300);
    let xml = format!(
        "<Result><Module name=\"NoAbi\" done=\"true\"><TestCase name=\"Case\">\
         <Test result=\"IGNORED\" name=\"ignored\"/>\
         <Test result=\"fail\" name=\"message&#10;only\"><Failure message=\"boom &amp;lt;1&amp;gt;&#13;\"/></Test>\
         <Test result=\"fail\" name=\"bare\"/>\
         <Test result=\"ASSUMPTION_FAILURE\" name=\"{long}\"><Failure message=\"m\"><StackTrace><![CDATA[a <b>]]>\r\n&lt;c&gt;</StackTrace></Failure></Test>\
         </TestCase></Module><Module name=\"Empty\" abi=\"x86\" done=\"false\"/></Result>"
    );
    let parsed = parse_bytes(xml.as_bytes(), "vts-lkft", 10).unwrap();
    let tests = parsed.tests();
    assert!(tests.iter().all(|t| t.suite == "vts-lkft/NoAbi"));
    assert_eq!((tests[0].status, tests[0].result()), (TestStatus::Skip, None));
    assert_eq!(tests[1].name, "Case.message\nonly");
    assert_eq!(tests[1].log, "boom &lt;1&gt;\r");
    assert_eq!((tests[2].status, tests[2].log.as_str()), (TestStatus::Fail, ""));
    assert_eq!(tests[3].name.chars().count(), 256);
    assert!(tests[3].name.starts_with("Case.éé"));
    assert_eq!(tests[3].log, "a <b>\n<c>");
    assert_eq!(
        parsed.counts,
        Counts { tests: 4, pass: 0, fail: 2, xfail: 1, skip: 1, test_cases: 1, modules: 2, modules_done: 1 }
    );
    assert!(parsed.header.unwrap().summary.is_none());

    let empty = parse_bytes(b"<Result/>", "cts", 1).unwrap();
    assert_eq!((empty.batches.len(), empty.counts), (0, Counts::default()));
}

#[test]
fn bad_cursors_are_refused() {
    let path = testdata(REPORT);
    let cursor =
        Cursor { byte_offset: 0, module: Some("m".into()), abi: None, test_case: None, counts: Counts::default() };
    let err = resumed(&path, &cursor, "cts", 1).next_batch().unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::InvalidCursor(_)), "{err}");
    assert_eq!(err.last_good.as_deref(), Some(&cursor));
}

#[test]
fn a_reader_failure_is_an_io_error() {
    struct Failing(Bytes<Vec<u8>>);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let len = buf.len().min(64);
            match self.0.read(&mut buf[..len])? {
                0 => Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone")),
                n => Ok(n),
            }
        }
    }
    let xml = std::fs::read(testdata(REPORT)).unwrap();
    let reader = BufReader::with_capacity(64, Failing(Bytes::new(xml[..2000].to_vec())));
    let err = run(Parser::new(reader, "cts", 1)).err().unwrap();
    assert!(matches!(err.kind, ParseErrorKind::Io(_)), "{err}");
}
