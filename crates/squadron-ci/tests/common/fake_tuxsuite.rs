//! A fake TuxSuite (and its storage): an HTTP proxy on a loopback port
//! that answers every URL it was told about with a recorded reply, 404
//! otherwise, and records every request. A client from
//! [`FakeTuxSuite::client`] sends everything through it, so the lab's own
//! URLs (`http://testing.tuxsuite.com/…`, `http://builds.tuxbuild.com/…`)
//! are used unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// A recorded answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status.
    Json(serde_json::Value, u16),
    /// A text body with a status and content type.
    Text(String, u16, &'static str),
    /// An empty body with a status.
    Status(u16),
    /// The same with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// These replies one after the other, the last one from then on.
    Sequence(Vec<Reply>),
    /// The reply after a delay.
    Delay(Duration, Box<Reply>),
}

/// A request the fake saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `GET`, `POST`.
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Fake {
    routes: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

/// The fake, serving until the test ends.
pub struct FakeTuxSuite {
    addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

impl FakeTuxSuite {
    /// Starts a fake on a loopback port.
    pub async fn start() -> FakeTuxSuite {
        let state = Arc::new(Mutex::new(Fake::default()));
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeTuxSuite { addr, state }
    }

    /// A client whose every request goes to the fake.
    pub fn client(&self) -> reqwest::Client {
        let proxy = reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap();
        reqwest::Client::builder().proxy(proxy).build().unwrap()
    }

    /// Answers `url` with `reply` from now on.
    pub fn serve(&self, url: &str, reply: Reply) {
        self.state.lock().unwrap().routes.insert(url.to_string(), reply);
    }

    /// Forgets every reply.
    pub fn clear(&self) {
        self.state.lock().unwrap().routes.clear();
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every URL requested so far, in order.
    pub fn urls(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.url).collect()
    }

    /// Forgets the requests seen.
    pub fn forget_requests(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

async fn answer(State(state): State<Arc<Mutex<Fake>>>, request: Request) -> Response {
    let uri = request.uri();
    // Through a proxy the target is absolute; directly it is a path.
    let url = match uri.authority() {
        Some(_) => uri.to_string(),
        None => {
            let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}{uri}")
        }
    };
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).map(String::from);
    let reply = {
        let mut fake = state.lock().unwrap();
        fake.seen.push(Seen { method: request.method().to_string(), url: url.clone(), authorization });
        match fake.routes.get_mut(&url) {
            Some(Reply::Sequence(replies)) if replies.len() > 1 => Some(replies.remove(0)),
            Some(Reply::Sequence(replies)) => replies.first().cloned(),
            Some(reply) => Some(reply.clone()),
            None => None,
        }
    };
    match reply {
        Some(reply) => respond(reply).await,
        None => (StatusCode::NOT_FOUND, format!("the fake TuxSuite has nothing at {url}")).into_response(),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

async fn respond(reply: Reply) -> Response {
    let mut reply = reply;
    loop {
        return match reply {
            Reply::Json(value, code) => (status(code), axum::Json(value)).into_response(),
            Reply::Text(text, code, content_type) => {
                (status(code), [(header::CONTENT_TYPE, content_type)], Body::from(text)).into_response()
            }
            Reply::Status(code) => status(code).into_response(),
            Reply::RetryAfter(code, seconds) => {
                (status(code), [(header::RETRY_AFTER, seconds.to_string())]).into_response()
            }
            Reply::Sequence(mut replies) => {
                reply = replies.remove(0);
                continue;
            }
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
                continue;
            }
        };
    }
}
