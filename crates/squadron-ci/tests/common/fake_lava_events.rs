//! LAVA's event publishers, faked on 127.0.0.1 for the listen tests: the
//! websocket of `lava-publisher` (`/ws/`) and the ZeroMQ PUB socket of
//! older labs (ZMTP 3.1, NULL security, written here from the
//! specification so that the subscriber is checked against an
//! independent peer).
//!
//! Both send what LAVA sends: `[topic, uuid, datetime, username, data]`,
//! `data` being the JSON text `lava_scheduler_app/signals.py` makes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// LAVA's default `EVENT_TOPIC`.
pub const EVENT_TOPIC: &str = "org.lavasoftware";

/// `json.dumps` of a value, as Python lays it out (`", "` and `": "`).
fn python_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> =
                map.iter().map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), python_json(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// An event message: `<EVENT_TOPIC><suffix>`, a uuid1, an ISO date, the
/// user, and `data` as JSON text.
pub fn message(suffix: &str, user: &str, data: &Value) -> Vec<String> {
    vec![
        format!("{EVENT_TOPIC}{suffix}"),
        "5d2b3c1e-1f1d-11ef-9b7b-0242ac120002".into(),
        "2024-05-31T10:00:00.123456+00:00".into(),
        user.into(),
        python_json(data),
    ]
}

/// A `.testjob` event of job `id` (`testjob_post_handler`): `sub_id` for a
/// multinode node.
pub fn testjob(id: u64, sub_id: Option<&str>, state: &str, health: &str) -> Vec<String> {
    let mut data = json!({
        "health": health,
        "state": state,
        "job": id,
        "description": "linux-next boot",
        "priority": 50,
        "submit_time": "2024-05-31T09:59:58.000001+00:00",
        "submitter": "squadron",
        "health_check": false,
    });
    if let Some(sub_id) = sub_id {
        data["sub_id"] = json!(sub_id);
    }
    if state != "Submitted" {
        data["device"] = json!("qemu01");
        data["worker"] = json!("worker01");
        data["device_type"] = json!("qemu");
        data["start_time"] = json!("2024-05-31T10:00:01.000002+00:00");
    }
    if state == "Finished" {
        data["end_time"] = json!("2024-05-31T10:04:01.000002+00:00");
    }
    message(".testjob", "squadron", &data)
}

/// A `.device` event (`device_post_handler`).
pub fn device_event() -> Vec<String> {
    let data =
        json!({"health": "Good", "state": "Idle", "device": "qemu01", "device_type": "qemu", "worker": "worker01"});
    message(".device", "lavaserver", &data)
}

/// A websocket text message as `lava-publisher` sends one (`send_json`).
pub fn websocket_text(parts: &[String]) -> String {
    python_json(&Value::Array(parts.iter().map(|p| Value::from(p.as_str())).collect()))
}

/// One websocket handshake the fake received.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The request's path.
    pub path: String,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
}

/// `lava-publisher`'s websocket: every connection gets the same text
/// messages, then a close.
pub struct FakeWebsocket {
    /// Where it listens.
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWebsocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWebsocket {
    /// Starts serving `messages` on a free port.
    pub async fn start(messages: Vec<String>) -> FakeWebsocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the fake websocket binds");
        let addr = listener.local_addr().expect("a bound address");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, messages) = (seen.clone(), messages.clone());
                tokio::spawn(async move {
                    // tungstenite's callback type; its error is a whole response.
                    #[allow(clippy::result_large_err)]
                    let record = |request: &Request, response: Response| {
                        seen.lock().unwrap().push(Handshake {
                            path: request.uri().path().to_string(),
                            authorization: request
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                        });
                        Ok(response)
                    };
                    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, record).await else { return };
                    for text in messages {
                        if socket.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                    let _ = socket.close(None).await;
                    while let Some(Ok(_)) = socket.next().await {}
                });
            }
        });
        FakeWebsocket { addr, handshakes, task }
    }

    /// A LAVA REST root on this host, as a backend URL.
    pub fn rest_url(&self) -> String {
        format!("http://{}/api/v0.2/", self.addr)
    }

    /// Every handshake so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// What the fake ZeroMQ publisher saw of its subscriber.
#[derive(Debug, Clone, Default)]
pub struct PublisherLog {
    /// Connections that completed the handshake.
    pub connections: usize,
    /// The subscriber's `Socket-Type`.
    pub socket_type: Option<String>,
    /// Its subscription messages.
    pub subscriptions: Vec<Vec<u8>>,
    /// The context of the `PONG` answering the publisher's `PING`.
    pub pong: Option<Vec<u8>>,
    /// `PING`s received from the subscriber.
    pub pings: usize,
}

/// A ZeroMQ PUB socket (ZMTP 3.1, NULL): after the handshake and the
/// subscription it pings the subscriber (context `lava`) and waits for
/// the `PONG`, sends its messages, keeps the connection for `linger`
/// (counting pings), and closes it. A `silent` one never sends anything
/// after the subscription.
pub struct FakePublisher {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<PublisherLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let flags = stream.read_u8().await?;
    let size = if flags & 0x02 != 0 { stream.read_u64().await? as usize } else { stream.read_u8().await? as usize };
    let mut body = vec![0; size];
    stream.read_exact(&mut body).await?;
    Ok((flags, body))
}

async fn write_frame(stream: &mut TcpStream, flags: u8, body: &[u8]) -> std::io::Result<()> {
    let mut frame = vec![flags, body.len() as u8];
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

impl FakePublisher {
    /// Starts publishing `messages` (multipart) on a free port.
    pub async fn start(messages: Vec<Vec<String>>, linger: Duration, silent: bool) -> FakePublisher {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the fake publisher binds");
        let addr = listener.local_addr().expect("a bound address");
        let log = Arc::new(Mutex::new(PublisherLog::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, messages) = (shared.clone(), messages.clone());
                tokio::spawn(async move {
                    let _ = publish(stream, &log, &messages, linger, silent).await;
                });
            }
        });
        FakePublisher { addr, log, task }
    }

    /// `EVENT_SOCKET` as LAVA's settings give it: bound to every address.
    pub fn event_socket(&self) -> String {
        format!("tcp://*:{}", self.addr.port())
    }

    /// What it saw.
    pub fn log(&self) -> PublisherLog {
        self.log.lock().unwrap().clone()
    }
}

async fn publish(
    mut stream: TcpStream,
    log: &Mutex<PublisherLog>,
    messages: &[Vec<String>],
    linger: Duration,
    silent: bool,
) -> std::io::Result<()> {
    let mut theirs = [0u8; 64];
    stream.read_exact(&mut theirs).await?;
    assert_eq!((theirs[0], theirs[9], theirs[10]), (0xff, 0x7f, 3), "a ZMTP 3 greeting");
    assert_eq!(&theirs[12..17], b"NULL\0");
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[8] = 1;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[11] = 1;
    greeting[12..16].copy_from_slice(b"NULL");
    stream.write_all(&greeting).await?;
    let (flags, ready) = read_frame(&mut stream).await?;
    assert_eq!(flags, 0x04, "a command");
    assert!(ready.starts_with(b"\x05READY\x0bSocket-Type"), "READY: {ready:?}");
    let socket_type = String::from_utf8_lossy(&ready[5 + 1 + 1 + 11 + 4..]).into_owned();
    write_frame(&mut stream, 0x04, b"\x05READY\x0bSocket-Type\x00\x00\x00\x03PUB").await?;
    let (flags, subscription) = read_frame(&mut stream).await?;
    assert_eq!(flags, 0, "a message");
    {
        let mut log = log.lock().unwrap();
        log.connections += 1;
        log.socket_type = Some(socket_type);
        log.subscriptions.push(subscription);
    }
    if silent {
        // Read (and ignore) whatever comes, never answering.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
        return Ok(());
    }
    write_frame(&mut stream, 0x04, b"\x04PING\x00\x64lava").await?;
    loop {
        let (flags, body) = read_frame(&mut stream).await?;
        if flags == 0x04 && body.starts_with(b"\x04PONG") {
            log.lock().unwrap().pong = Some(body[5..].to_vec());
            break;
        }
        if flags == 0x04 && body.starts_with(b"\x04PING") {
            log.lock().unwrap().pings += 1;
        }
    }
    for message in messages {
        for (n, part) in message.iter().enumerate() {
            let flags = if n + 1 < message.len() { 0x01 } else { 0 };
            if part.len() > 255 {
                let mut frame = vec![flags | 0x02];
                frame.extend((part.len() as u64).to_be_bytes());
                frame.extend_from_slice(part.as_bytes());
                stream.write_all(&frame).await?;
            } else {
                write_frame(&mut stream, flags, part.as_bytes()).await?;
            }
        }
    }
    let counting = async {
        while let Ok((flags, body)) = read_frame(&mut stream).await {
            if flags == 0x04 && body.starts_with(b"\x04PING") {
                log.lock().unwrap().pings += 1;
            }
        }
    };
    let _ = tokio::time::timeout(linger, counting).await;
    Ok(())
}
