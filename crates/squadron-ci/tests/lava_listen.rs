//! The lava backend's `listen` against fake LAVA event publishers: the
//! websocket of current labs, the ZeroMQ event socket of older ones
//! (found through either API), and what failures become.

mod common;

use std::time::Duration;

use base64::Engine;
use common::fake_lava::FakeLava;
use common::fake_lava_events::{
    device_event, message, testjob, websocket_text, FakePublisher, FakeWebsocket, EVENT_TOPIC,
};
use serde_json::json;
use squadron_ci::backend::lava::LavaLab;
use squadron_ci::backend::{Backend, BackendError, BackendRecord, LabEvent};
use tokio::sync::mpsc;

fn lab(url: &str, settings: &str) -> LavaLab {
    let record = BackendRecord {
        id: 1,
        name: "lava".into(),
        url: url.into(),
        username: "squadron".into(),
        token: "secret-token".into(),
        implementation_type: "lava".into(),
        backend_settings: Some(settings.into()),
        poll_interval: 60,
        max_fetch_attempts: 3,
        poll_enabled: true,
        listen_enabled: true,
    };
    LavaLab::new(&record, reqwest::Client::new()).expect("the lab opens")
}

/// Listens until `listen` returns; what it returned and every event sent.
async fn listen(lab: &LavaLab) -> (Result<(), BackendError>, Vec<LabEvent>) {
    let (sender, mut receiver) = mpsc::channel(100);
    let ended = tokio::time::timeout(Duration::from_secs(30), lab.listen(sender)).await.expect("listen returns");
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event);
    }
    (ended, events)
}

fn event(job_id: &str, status: &str, finished: bool) -> LabEvent {
    LabEvent { job_id: job_id.into(), status: Some(status.into()), finished }
}

/// A job going Submitted → Running → Finished/Complete, a multinode node
/// ending Incomplete, and messages to skip among them.
fn a_day_of_events() -> (Vec<Vec<String>>, Vec<LabEvent>) {
    let mut no_job = message(".testjob", "squadron", &json!({"state": "Running", "health": "Unknown"}));
    no_job[0] = format!("{EVENT_TOPIC}.testjob");
    let mut bad_data = testjob(41, None, "Running", "Unknown");
    bad_data[4] = "{\"job\": 41, \"state\": ".into();
    let messages = vec![
        testjob(41, None, "Submitted", "Unknown"),
        device_event(),
        testjob(41, None, "Running", "Unknown"),
        no_job,
        bad_data,
        vec!["org.lavasoftware.testjob".into(), "only two parts".into()],
        testjob(42, Some("42.1"), "Running", "Unknown"),
        testjob(41, None, "Finished", "Complete"),
        testjob(42, Some("42.1"), "Finished", "Incomplete"),
    ];
    let expected = vec![
        event("41", "Submitted", false),
        event("41", "Running", false),
        event("42.1", "Running", false),
        event("41", "Complete", true),
        event("42.1", "Incomplete", true),
    ];
    (messages, expected)
}

#[tokio::test]
async fn websocket_events_over_either_api() {
    let (messages, expected) = a_day_of_events();
    let mut texts: Vec<String> = messages.iter().map(|m| websocket_text(m)).collect();
    texts.insert(3, "this is not JSON".into());
    texts.insert(4, "[1, 2, 3, 4, 5]".into());
    let fake = FakeWebsocket::start(texts).await;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("squadron:secret-token"));
    for url in [fake.rest_url(), format!("http://{}/RPC2", fake.addr)] {
        let (ended, events) = listen(&lab(&url, "")).await;
        assert!(ended.is_ok(), "the stream ended: {ended:?}");
        assert_eq!(events, expected, "{url}");
    }
    let handshakes = fake.handshakes();
    assert_eq!(handshakes.len(), 2);
    for handshake in handshakes {
        assert_eq!(handshake.path, "/ws/");
        assert_eq!(handshake.authorization.as_deref(), Some(basic.as_str()));
    }
}

#[tokio::test]
async fn a_websocket_refusal_is_an_error() {
    let fake = FakeWebsocket::start(vec![r#"{"error": "Unknown user"}"#.into()]).await;
    let (ended, events) = listen(&lab(&fake.rest_url(), "")).await;
    assert!(matches!(&ended, Err(BackendError::Permanent(m)) if m.contains("Unknown user")), "{ended:?}");
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_temporary() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for settings in ["", "EVENTS: websocket", "EVENTS: zmq"] {
        let (ended, _) = listen(&lab(&format!("http://{addr}/api/v0.2/"), settings)).await;
        assert!(matches!(ended, Err(BackendError::Temporary(_))), "{settings}: {ended:?}");
    }
    // A TLS lab whose connection drops during the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = format!("https://{}/api/v0.2/", listener.local_addr().unwrap());
    let closing = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let (ended, _) = listen(&lab(&tls, "")).await;
    assert!(matches!(&ended, Err(BackendError::Temporary(m)) if m.contains("wss://")), "{ended:?}");
    closing.abort();
    // The lab answers, its event socket does not.
    let fake = FakeLava::start().await;
    fake.configure(|c| c.event_socket = Some(format!("tcp://*:{}", addr.port())));
    let (ended, _) = listen(&lab(&fake.rest_url(), "")).await;
    assert!(matches!(&ended, Err(BackendError::Temporary(m)) if m.contains("event socket")), "{ended:?}");
}

#[tokio::test]
async fn without_a_websocket_the_event_socket_is_followed() {
    let (messages, expected) = a_day_of_events();
    let publisher = FakePublisher::start(messages, Duration::from_millis(1500), false).await;
    let fake = FakeLava::start().await;
    fake.configure(|c| c.event_socket = Some(publisher.event_socket()));
    let (ended, events) = listen(&lab(&fake.rest_url(), "")).await;
    assert!(ended.is_ok(), "the publisher closed: {ended:?}");
    assert_eq!(events, expected);
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/ws/", "/api/v0.2/system/master_config/"]);
    let log = publisher.log();
    assert_eq!(log.connections, 1);
    assert_eq!(log.socket_type.as_deref(), Some("SUB"));
    assert_eq!(log.subscriptions, [b"\x01".to_vec()], "subscribed to everything");
    assert_eq!(log.pong.as_deref(), Some(&b"lava"[..]), "the publisher's ping is answered with its context");
    assert!(log.pings >= 1, "the subscriber pings every second");
}

#[tokio::test]
async fn xml_rpc_labs_give_their_event_socket_too() {
    let publisher = FakePublisher::start(vec![testjob(7, None, "Finished", "Canceled")], Duration::ZERO, false).await;
    let fake = FakeLava::start().await;
    fake.configure(|c| c.event_socket = Some(publisher.event_socket()));
    let (ended, events) = listen(&lab(&fake.rpc_url(), "EVENTS: zmq")).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(events, [event("7", "Canceled", true)]);
    let calls: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.rpc_method).collect();
    assert_eq!(calls, [Some("scheduler.get_publisher_event_socket".to_string())], "no websocket tried");
}

#[tokio::test]
async fn a_silent_event_socket_is_a_temporary_failure() {
    let publisher = FakePublisher::start(Vec::new(), Duration::ZERO, true).await;
    let fake = FakeLava::start().await;
    fake.configure(|c| c.event_socket = Some(publisher.event_socket()));
    let started = std::time::Instant::now();
    let (ended, _) = listen(&lab(&fake.rest_url(), "EVENTS: zmq")).await;
    assert!(matches!(&ended, Err(BackendError::Temporary(m)) if m.contains("silent")), "{ended:?}");
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn a_lab_without_either_stream() {
    let fake = FakeLava::start().await;
    let (ended, _) = listen(&lab(&fake.rest_url(), "EVENTS: websocket")).await;
    assert!(matches!(&ended, Err(BackendError::Permanent(m)) if m.contains("404")), "{ended:?}");
    fake.configure(|c| c.event_socket = None);
    for url in [fake.rest_url(), fake.rpc_url()] {
        let (ended, _) = listen(&lab(&url, "")).await;
        assert!(matches!(&ended, Err(BackendError::Permanent(m)) if m.contains("no event socket")), "{ended:?}");
    }
    let bad = LavaLab::new(
        &BackendRecord {
            backend_settings: Some("EVENTS: carrier-pigeon".into()),
            ..common::backend_record("lava", &fake.rest_url(), None)
        },
        reqwest::Client::new(),
    );
    assert!(matches!(bad, Err(BackendError::Permanent(m)) if m.contains("EVENTS")));
}
