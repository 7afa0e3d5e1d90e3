//! A LAVA lab's job events (SQUAD's `listen`), followed by
//! `squadron listener`.
//!
//! Current LAVA publishes them on a websocket, `ws[s]://<host>/ws/`
//! (`lava-publisher`'s `/ws/` handler, with HTTP basic authentication of
//! the user name and token); older LAVA only on a ZeroMQ PUB socket whose
//! address the lab gives (`EVENT_SOCKET`). Both carry the same messages,
//! `[topic, uuid, datetime, username, data]`, `data` being a JSON document
//! as text. The backend setting `EVENTS` chooses: `auto` (the default:
//! the websocket, and the ZeroMQ socket when the lab has no websocket),
//! `websocket` or `zmq`.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::results::FINISHED;
use super::zmtp::Subscriber;
use super::{snippet, Api};
use crate::backend::{BackendError, LabEvent};

/// How often the websocket is pinged (SQUAD's aiohttp `heartbeat=30`).
pub const WEBSOCKET_PING_EVERY: Duration = Duration::from_secs(30);
/// How long after a ping the lab must have sent something (aiohttp's
/// half of the heartbeat).
pub const WEBSOCKET_ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// Which event stream to follow: the backend setting `EVENTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The websocket, or the ZeroMQ socket when the lab answers 404.
    Auto,
    /// The websocket only.
    Websocket,
    /// The ZeroMQ socket only.
    Zmq,
}

impl Transport {
    /// Reads the setting: absent is `auto`.
    pub fn from_setting(value: Option<&Value>) -> Result<Transport, String> {
        match value {
            None | Some(Value::Null) => Ok(Transport::Auto),
            Some(Value::String(text)) => match text.to_ascii_lowercase().as_str() {
                "auto" => Ok(Transport::Auto),
                "websocket" => Ok(Transport::Websocket),
                "zmq" => Ok(Transport::Zmq),
                _ => Err(format!("EVENTS must be auto, websocket or zmq, not {text:?}")),
            },
            Some(other) => Err(format!("EVENTS must be auto, websocket or zmq, not {other}")),
        }
    }
}

/// How a websocket session ended.
enum Websocket {
    /// The lab closed the stream.
    Ended,
    /// The lab has no websocket (404).
    Unavailable,
}

/// Where and how to follow a lab's events.
pub(super) struct Events {
    /// `ws[s]://<host>[:<port>]/ws/`.
    websocket: String,
    /// The lab's host, for an event socket bound to every address.
    host: String,
    /// `Basic <user:token>`, when the backend has a user name.
    authorization: Option<String>,
    /// How long connecting may take.
    timeout: Duration,
    transport: Transport,
}

impl Events {
    /// The events of the lab at `url` (the backend's URL, either API).
    pub(super) fn new(url: &Url, username: &str, token: &str, timeout: Duration, transport: Transport) -> Events {
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let host = url.host_str().unwrap_or_default();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let authorization = (!username.is_empty()).then(|| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{token}")))
        });
        Events {
            websocket: format!("{scheme}://{host}{port}/ws/"),
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            authorization,
            timeout,
            transport,
        }
    }

    /// Follows the lab's events until the stream ends or fails.
    pub(super) async fn listen(&self, api: &dyn Api, events: Sender<LabEvent>) -> Result<(), BackendError> {
        match self.transport {
            Transport::Zmq => self.listen_zmq(api, &events).await,
            transport => match self.listen_websocket(&events).await? {
                Websocket::Ended => Ok(()),
                Websocket::Unavailable if transport == Transport::Auto => {
                    info!(websocket = %self.websocket, "LAVA has no websocket; subscribing to its event socket");
                    self.listen_zmq(api, &events).await
                }
                Websocket::Unavailable => Err(BackendError::Permanent(format!(
                    "LAVA has no websocket at {} (404); set EVENTS to auto or zmq to use its event socket",
                    self.websocket
                ))),
            },
        }
    }

    async fn listen_websocket(&self, events: &Sender<LabEvent>) -> Result<Websocket, BackendError> {
        let url = &self.websocket;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| BackendError::Permanent(format!("cannot make a websocket request of {url}: {e}")))?;
        if let Some(authorization) = &self.authorization {
            let mut value = HeaderValue::from_str(authorization)
                .map_err(|_| BackendError::Permanent("the user name or token cannot be sent in a header".into()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let connected =
            tokio::time::timeout(self.timeout, tokio_tungstenite::connect_async(request)).await.map_err(|_| {
                BackendError::Temporary(format!("LAVA's websocket {url} did not answer within {:?}", self.timeout))
            })?;
        let mut socket = match connected {
            Ok((socket, _)) => socket,
            Err(tungstenite::Error::Http(response)) if response.status() == StatusCode::NOT_FOUND => {
                return Ok(Websocket::Unavailable)
            }
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response.body().as_deref().unwrap_or_default();
                let message = format!("LAVA's websocket {url} answered {status}: {}", snippet(body));
                return Err(
                    if status.is_client_error()
                        && status != StatusCode::REQUEST_TIMEOUT
                        && status != StatusCode::TOO_MANY_REQUESTS
                    {
                        BackendError::Permanent(message)
                    } else {
                        BackendError::Temporary(message)
                    },
                );
            }
            Err(e) => return Err(BackendError::Temporary(format!("cannot reach LAVA's websocket {url}: {e}"))),
        };
        info!(websocket = %url, "following LAVA's events");
        let mut ping = tokio::time::interval_at(Instant::now() + WEBSOCKET_PING_EVERY, WEBSOCKET_PING_EVERY);
        // When the lab must have answered the last ping.
        let mut answer_by: Option<Instant> = None;
        loop {
            let deadline = async {
                match answer_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = socket.next() => {
                    answer_by = None;
                    let text = match received {
                        None | Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(Websocket::Ended),
                        Some(Err(e)) => {
                            return Err(BackendError::Temporary(format!("LAVA's websocket {url} failed: {e}")))
                        }
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(other)) => {
                            if let Message::Binary(_) = other {
                                debug!("skipped a binary websocket message");
                            }
                            continue;
                        }
                    };
                    if !deliver(events, websocket_parts(&text)?).await {
                        return Ok(Websocket::Ended);
                    }
                }
                _ = ping.tick() => {
                    socket.send(Message::Ping(Default::default())).await.map_err(|e| {
                        BackendError::Temporary(format!("cannot ping LAVA's websocket {url}: {e}"))
                    })?;
                    answer_by.get_or_insert(Instant::now() + WEBSOCKET_ANSWER_WITHIN);
                }
                _ = deadline => {
                    return Err(BackendError::Temporary(format!(
                        "LAVA's websocket {url} did not answer a ping within {WEBSOCKET_ANSWER_WITHIN:?}"
                    )))
                }
            }
        }
    }

    async fn listen_zmq(&self, api: &dyn Api, events: &Sender<LabEvent>) -> Result<(), BackendError> {
        let socket = api.event_socket().await?.ok_or_else(|| {
            BackendError::Permanent("LAVA has no websocket and gives no event socket (EVENT_SOCKET)".into())
        })?;
        let (host, port) = endpoint(&socket, &self.host)?;
        let shown = format!("tcp://{host}:{port}");
        let connect = async { Subscriber::subscribe(TcpStream::connect((host.as_str(), port)).await?).await };
        let mut subscriber = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| {
                BackendError::Temporary(format!("LAVA's event socket {shown} did not answer within {:?}", self.timeout))
            })?
            .map_err(|e| BackendError::Temporary(format!("cannot subscribe to LAVA's event socket {shown}: {e}")))?;
        info!(event_socket = %shown, "following LAVA's events");
        loop {
            match subscriber.next().await {
                Ok(None) => return Ok(()),
                Ok(Some(parts)) => {
                    let parts = parts
                        .into_iter()
                        .map(|part| String::from_utf8(part).map_err(|_| "a part is not UTF-8".to_string()))
                        .collect();
                    if !deliver(events, parts).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(BackendError::Temporary(format!("LAVA's event socket {shown}: {e}"))),
            }
        }
    }
}

/// The host and port to connect to for LAVA's `EVENT_SOCKET`
/// (`tcp://*:5500`): an address bound to every interface is the lab's
/// host (SQUAD's `get_listener_url`).
fn endpoint(socket: &str, lab_host: &str) -> Result<(String, u16), BackendError> {
    let bad = |why: &str| BackendError::Permanent(format!("LAVA's event socket {socket:?} {why}"));
    let address = socket.strip_prefix("tcp://").ok_or_else(|| bad("is not a TCP address"))?;
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port = port.parse().map_err(|_| bad("has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if matches!(host, "*" | "" | "0.0.0.0" | "::") { lab_host } else { host };
    Ok((host.to_string(), port))
}

/// The parts of a websocket message (a JSON array of five strings); a
/// JSON object with an `error` is the lab refusing the connection
/// (`{"error": "Unknown user"}`), sent before it closes it.
fn websocket_parts(text: &str) -> Result<Result<Vec<String>, String>, BackendError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => Ok(items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                other => Err(format!("a part is not a string: {other}")),
            })
            .collect()),
        Ok(Value::Object(object)) if object.contains_key("error") => {
            let error = object.get("error").map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string));
            Err(BackendError::Permanent(format!("LAVA's websocket refused squadron: {}", error.unwrap_or_default())))
        }
        Ok(_) => Ok(Err(format!("not a JSON array: {}", snippet(text.as_bytes())))),
        Err(e) => Ok(Err(format!("not JSON ({e}): {}", snippet(text.as_bytes())))),
    }
}

/// Sends the event a message carries, if any; a malformed message is
/// logged and skipped. `false` when nobody receives events any more.
async fn deliver(events: &Sender<LabEvent>, parts: Result<Vec<String>, String>) -> bool {
    match parts.and_then(|parts| event(&parts)) {
        Ok(Some(event)) => events.send(event).await.is_ok(),
        Ok(None) => true,
        Err(problem) => {
            warn!(problem, "skipped a malformed LAVA event");
            true
        }
    }
}

/// The job event in a message `[topic, uuid, datetime, username, data]`:
/// `None` for other topics than `*.testjob`. The job is `sub_id` (a
/// multinode node) or `job`; its status is `state`, or `health` once the
/// state is `Finished`; it is over when either is one of the statuses of a
/// finished job, as a fetch decides.
fn event(parts: &[String]) -> Result<Option<LabEvent>, String> {
    let [topic, _uuid, _datetime, _username, data] = parts else {
        return Err(format!("{} parts instead of 5", parts.len()));
    };
    if !topic.ends_with(".testjob") {
        return Ok(None);
    }
    let data: Value = serde_json::from_str(data)
        .map_err(|e| format!("the data of a {topic} event is not JSON ({e}): {}", snippet(data.as_bytes())))?;
    let Value::Object(data) = data else {
        return Err(format!("the data of a {topic} event is not an object: {}", snippet(data.to_string().as_bytes())));
    };
    let id = |key: &str| match data.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let job_id = id("sub_id").or_else(|| id("job")).ok_or_else(|| format!("a {topic} event without a job"))?;
    let state = data.get("state").and_then(Value::as_str);
    let status = match state {
        Some("Finished") => data.get("health").and_then(Value::as_str).or(state),
        _ => state,
    };
    let finished = [state, status].into_iter().flatten().any(|s| FINISHED.contains(&s));
    Ok(Some(LabEvent { job_id, status: status.map(str::to_string), finished }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topic: &str, data: Value) -> Vec<String> {
        vec![
            topic.into(),
            "0b9c7a6e-1f1d-11ef-9b7b-0242ac120002".into(),
            "2024-05-31T10:00:00.123456+00:00".into(),
            "squadron".into(),
            data.to_string(),
        ]
    }

    #[test]
    fn a_testjob_event_gives_the_state_then_the_health() {
        let topic = "org.lavasoftware.testjob";
        let running = event(&parts(topic, serde_json::json!({"job": 12, "state": "Running", "health": "Unknown"})));
        assert_eq!(
            running.unwrap(),
            Some(LabEvent { job_id: "12".into(), status: Some("Running".into()), finished: false })
        );
        let over = event(&parts(topic, serde_json::json!({"job": 12, "state": "Finished", "health": "Incomplete"})));
        assert_eq!(
            over.unwrap(),
            Some(LabEvent { job_id: "12".into(), status: Some("Incomplete".into()), finished: true })
        );
        // Finished with an unknown health is over all the same.
        let odd = event(&parts(topic, serde_json::json!({"job": "12", "state": "Finished", "health": "Unknown"})));
        assert_eq!(
            odd.unwrap(),
            Some(LabEvent { job_id: "12".into(), status: Some("Unknown".into()), finished: true })
        );
        let multinode = event(&parts(topic, serde_json::json!({"job": 12, "sub_id": "12.1", "state": "Submitted"})));
        assert_eq!(multinode.unwrap().unwrap().job_id, "12.1");
        let stateless = event(&parts(topic, serde_json::json!({"job": 12}))).unwrap().unwrap();
        assert_eq!((stateless.status, stateless.finished), (None, false));
    }

    #[test]
    fn other_topics_are_ignored_and_bad_messages_are_errors() {
        let device = serde_json::json!({"device": "qemu01", "state": "Idle", "health": "Good"});
        assert_eq!(event(&parts("org.lavasoftware.device", device)), Ok(None));
        assert!(event(&parts("org.lavasoftware.testjob", serde_json::json!({"state": "Running"}))).is_err());
        assert!(event(&parts("org.lavasoftware.testjob", serde_json::json!([1]))).is_err());
        assert!(event(&["a".to_string()]).is_err());
        let mut bad = parts("org.lavasoftware.testjob", Value::Null);
        bad[4] = "{not json".into();
        assert!(event(&bad).is_err());
    }

    #[test]
    fn websocket_messages_and_refusals() {
        assert_eq!(websocket_parts(r#"["a","b","c","d","{}"]"#).unwrap().unwrap().len(), 5);
        assert!(websocket_parts(r#"["a", 1]"#).unwrap().is_err());
        assert!(websocket_parts("nope").unwrap().is_err());
        assert!(
            matches!(websocket_parts(r#"{"error": "Unknown user"}"#), Err(BackendError::Permanent(m)) if m.contains("Unknown user"))
        );
    }

    #[test]
    fn the_event_socket_address_defaults_to_the_lab_host() {
        assert_eq!(endpoint("tcp://*:5500", "lava.example.com").unwrap(), ("lava.example.com".into(), 5500));
        assert_eq!(endpoint("tcp://events.example.com:5510", "lava").unwrap(), ("events.example.com".into(), 5510));
        assert_eq!(endpoint("tcp://[::1]:5500", "lava").unwrap(), ("::1".into(), 5500));
        assert!(endpoint("ipc:///tmp/lava.events", "lava").is_err());
        assert!(endpoint("tcp://*", "lava").is_err());
    }

    #[test]
    fn the_websocket_is_next_to_the_api() {
        let url = Url::parse("https://lava.example.com:8443/api/v0.2/").unwrap();
        let events = Events::new(&url, "me", "tok", Duration::from_secs(1), Transport::Auto);
        assert_eq!(events.websocket, "wss://lava.example.com:8443/ws/");
        assert_eq!(events.authorization.as_deref(), Some("Basic bWU6dG9r"));
        let anonymous = Events::new(&Url::parse("http://[::1]/RPC2").unwrap(), "", "", Duration::ZERO, Transport::Zmq);
        assert_eq!((anonymous.websocket.as_str(), anonymous.host.as_str()), ("ws://[::1]/ws/", "::1"));
        assert_eq!(anonymous.authorization, None);
        assert_eq!(Transport::from_setting(Some(&Value::from("ZMQ"))), Ok(Transport::Zmq));
        assert!(Transport::from_setting(Some(&Value::from(3))).is_err());
    }
}
