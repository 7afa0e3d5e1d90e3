//! A big submission does not hold SQLite's single writer for long: a small
//! write made while 100k tests are being ingested completes before they are.

mod common;

use std::time::Instant;

use common::Api;
use squadron_store::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_write_completes_during_a_100k_test_ingestion() {
    let api = Api::new(TestDb::sqlite().await).await;
    let tests: Vec<String> = (0..100_000)
        .map(|i| format!("\"suite{}/test{i}\": \"{}\"", i % 1000, if i % 100 == 0 { "fail" } else { "pass" }))
        .collect();
    let tests = format!("{{{}}}", tests.join(","));
    api.db.store.reset_write_stats();

    let (base, token) = (api.base.clone(), api.submitter.clone());
    let big = tokio::spawn(async move {
        let form = reqwest::multipart::Form::new()
            .part("tests", reqwest::multipart::Part::bytes(tests.into_bytes()).file_name("tests.json"));
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/submit/g/p/big/env"))
            .header("Authorization", format!("Token {token}"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), Instant::now())
    });
    // Wait until the ingestion is under way.
    while api.db.scalar("SELECT COUNT(*) FROM tests").await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let (status, body) = api.post_form("/api/createbuild/g/p/small", Some(&api.submitter), &[]).await;
    let small_done = Instant::now();
    assert_eq!(status, 201, "{body}");
    let ingested_when_small_was_done = api.db.scalar("SELECT COUNT(*) FROM tests").await;

    let (big_status, big_done) = big.await.unwrap();
    assert_eq!(big_status, 201);
    assert!(small_done < big_done, "the small write waited for the whole submission");
    assert!(ingested_when_small_was_done < 100_000);
    let stats = api.db.store.write_stats();
    println!(
        "small write: {:?} while the 100k submission was {ingested_when_small_was_done} tests in; \
         longest write hold: {:?} over {} write transactions",
        small_done - started,
        stats.longest_hold,
        stats.transactions
    );
}
