//! TuxSuite over HTTP, as SQUAD's `requests` session with urllib3's
//! `Retry(total=5, backoff_factor=1, status_forcelist=[429, 500, 502, 503,
//! 504])`: failed connections, timeouts and those statuses are retried
//! with exponential backoff (honouring `Retry-After`); when the retries
//! run out the failure is temporary.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::backend::BackendError;

/// How TuxSuite is reached.
#[derive(Debug, Clone, Copy)]
pub struct HttpPolicy {
    /// How many times a failed GET is tried again (SQUAD: 5).
    pub retries: u32,
    /// The backoff factor: retry `n` waits `backoff × 2^(n-1)`, except the
    /// first, which goes at once (urllib3's rule; SQUAD: 1 s).
    pub backoff: Duration,
    /// The longest wait between two tries, `Retry-After` included.
    pub max_backoff: Duration,
    /// How long one request may take, body included (SQUAD has none).
    pub timeout: Duration,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            timeout: Duration::from_secs(60),
        }
    }
}

impl HttpPolicy {
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = if retry <= 1 { Duration::ZERO } else { self.backoff.saturating_mul(1 << (retry - 1).min(20)) };
        retry_after.unwrap_or(backoff).min(self.max_backoff)
    }
}

/// The statuses worth trying again.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// An answer, read whole.
pub(super) struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is below 400 (`requests`' `ok`).
    pub fn ok(&self) -> bool {
        self.status.as_u16() < 400
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; anything else (an HTML error page, a truncated
    /// document) is a permanent failure naming `url`.
    pub fn json(&self, url: &str) -> Result<serde_json::Value, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let text = String::from_utf8_lossy(&self.body);
            let what = if text.trim_start().starts_with('<') { "an HTML page" } else { "not valid JSON" };
            let excerpt: String = text.chars().take(120).collect();
            BackendError::Permanent(format!(
                "TuxSuite's answer from {url} ({}) is {what} ({e}): {excerpt:?}",
                self.status.as_u16()
            ))
        })
    }
}

/// The client with its policy.
pub(super) struct Http {
    client: reqwest::Client,
    policy: HttpPolicy,
}

/// `reference` resolved against `base`, as Python's `urljoin`.
pub(super) fn join(base: &str, reference: &str) -> Result<String, BackendError> {
    let base = Url::parse(base).map_err(|e| BackendError::Permanent(format!("{base:?} is not a URL: {e}")))?;
    base.join(reference)
        .map(String::from)
        .map_err(|e| BackendError::Permanent(format!("cannot join {reference:?} to {base}: {e}")))
}

impl Http {
    pub fn new(client: reqwest::Client, policy: HttpPolicy) -> Http {
        Http { client, policy }
    }

    /// GETs `url` (with `Authorization: <token>` if given), retrying as
    /// SQUAD does. Any status is returned once the retries are over,
    /// except a retryable one, which is a temporary failure.
    pub async fn get(&self, url: &str, token: Option<&str>) -> Result<Answer, BackendError> {
        let mut retry = 0;
        loop {
            let mut request = self.client.get(url).timeout(self.policy.timeout);
            if let Some(token) = token {
                let value = HeaderValue::from_str(token)
                    .map_err(|_| BackendError::Permanent("TUXSUITE_TOKEN is not a valid header value".into()))?;
                request = request.header(AUTHORIZATION, value);
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match response.bytes().await {
                        Ok(body) if !retryable(status) => return Ok(Answer { status, body: body.to_vec() }),
                        Ok(_) => (format!("TuxSuite answered {status} for {url}"), retry_after),
                        Err(e) => (format!("Can't retrieve from {url}: {e}"), None),
                    }
                }
                Err(e) => (format!("Can't retrieve from {url}: {e}"), None),
            };
            retry += 1;
            if retry > self.policy.retries {
                let (message, _) = failure;
                let tries = if self.policy.retries == 0 { String::new() } else { format!(" (after {retry} tries)") };
                return Err(BackendError::Temporary(format!("{message}{tries}")));
            }
            tracing::debug!(url, retry, error = %failure.0, "retrying a TuxSuite request");
            tokio::time::sleep(self.policy.delay(retry, failure.1)).await;
        }
    }

    /// POSTs to `url` without a body or credentials, once; whether the
    /// answer is 200.
    pub async fn post(&self, url: &str) -> Result<bool, BackendError> {
        match self.client.post(url).timeout(self.policy.timeout).send().await {
            Ok(response) => Ok(response.status() == StatusCode::OK),
            Err(e) => Err(BackendError::Temporary(format!("Can't post to {url}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_as_urllib3s() {
        let policy = HttpPolicy::default();
        let delays: Vec<u64> = (1..=5).map(|n| policy.delay(n, None).as_secs()).collect();
        assert_eq!(delays, [0, 2, 4, 8, 16]);
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))).as_secs(), 7);
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7000))).as_secs(), 120);
    }

    #[test]
    fn urls_join_as_pythons_urljoin() {
        let join = |a, b| join(a, b).unwrap();
        assert_eq!(join("http://builds.tuxbuild.com/123", "build.log"), "http://builds.tuxbuild.com/build.log");
        assert_eq!(join("http://builds.tuxbuild.com/123/", "config"), "http://builds.tuxbuild.com/123/config");
        assert_eq!(
            join("http://testing.tuxsuite.com", "groups/g/projects/p/tests/1"),
            "http://testing.tuxsuite.com/groups/g/projects/p/tests/1"
        );
        assert_eq!(join("https://tuxapi.tuxsuite.com/v1/", "groups/g"), "https://tuxapi.tuxsuite.com/v1/groups/g");
        assert_eq!(join("http://t.example/tests/1/", "logs?format=txt"), "http://t.example/tests/1/logs?format=txt");
    }
}
