//! The ARI REST client: executes [`AriRequest`]s and the few reads the runtime needs, over reqwest.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use super::models::{Bridge, Channel};
use super::request::{AriRequest, HttpCall, Method};

/// How long one REST request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The pauses before each new attempt at a request whose connection failed (see [`AriClient::send`]).
const RECONNECT_PAUSES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];

/// A failed ARI request, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum AriError {
    /// No HTTP answer at all (connection refused, timeout, DNS).
    #[error("cannot reach ARI at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// 401: the user or password is wrong. Retrying does not help.
    #[error("ARI at {url} rejected the credentials of user '{user}' (401 Unauthorized)")]
    Unauthorized { url: String, user: String },
    /// Any other non-2xx answer.
    #[error("{request} answered {status}: {message}")]
    Status {
        request: String,
        status: u16,
        message: String,
    },
    #[error("{request}: unreadable answer: {reason}")]
    Body { request: String, reason: String },
}

impl AriError {
    /// The HTTP status Asterisk answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AriError::Status { status, .. } => Some(*status),
            AriError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

/// A REST client bound to one Asterisk node and one Stasis application.
#[derive(Clone)]
pub struct AriClient {
    /// `http://host:port/ari`
    base: Url,
    app: String,
    user: String,
    password: String,
    http: reqwest::Client,
    /// One permit per request in flight: at most `max_connections` HTTP sessions to the node.
    permits: Arc<Semaphore>,
}

impl AriClient {
    /// `url` is the node's HTTP root (`http://127.0.0.1:8088`); `/ari` is appended. At most
    /// `max_connections` requests are in flight at once (the others wait their turn), so a burst never
    /// opens more HTTP sessions than that (Asterisk refuses those beyond its `sessionlimit`).
    pub fn new(
        url: &Url,
        app: &str,
        user: &str,
        password: &str,
        max_connections: usize,
    ) -> anyhow::Result<AriClient> {
        let mut base = url.clone();
        base.set_path(&format!("{}/ari", url.path().trim_end_matches('/')));
        let max_connections = max_connections.max(1);
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(max_connections)
            .build()?;
        Ok(AriClient {
            base,
            app: app.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            http,
            permits: Arc::new(Semaphore::new(max_connections)),
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// The events websocket URL: `ws(s)://host:port/ari/events?app=...&api_key=user:password`.
    pub fn events_url(&self) -> Url {
        let mut url = self.base.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Both schemes are special in the URL standard, so this cannot fail.
        let _ = url.set_scheme(scheme);
        url.set_path(&format!("{}/events", self.base.path()));
        url.query_pairs_mut()
            .append_pair("app", &self.app)
            .append_pair("api_key", &format!("{}:{}", self.user, self.password))
            .append_pair("subscribeAll", "false");
        url
    }

    /// The node's HTTP root, for messages.
    pub fn display_url(&self) -> String {
        let mut url = self.base.clone();
        url.set_path("");
        url.to_string().trim_end_matches('/').to_owned()
    }

    /// `GET /asterisk/info`: proves the node is reachable and the credentials are right.
    pub async fn check(&self) -> Result<(), AriError> {
        self.get::<serde_json::Value>("/asterisk/info")
            .await
            .map(drop)
    }

    /// Whether another client already subscribes to this Stasis application on the node. Asterisk would
    /// move the application's events to whichever websocket subscribed last, without telling the other.
    pub async fn application_in_use(&self) -> Result<bool, AriError> {
        match self
            .get::<serde_json::Value>(&format!("/applications/{}", self.app))
            .await
        {
            Ok(_) => Ok(true),
            Err(AriError::Status { status: 404, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub async fn channels(&self) -> Result<Vec<Channel>, AriError> {
        self.get("/channels").await
    }

    pub async fn bridges(&self) -> Result<Vec<Bridge>, AriError> {
        self.get("/bridges").await
    }

    pub async fn execute(&self, request: &AriRequest) -> Result<(), AriError> {
        let call = request.to_http(&self.app);
        self.send(&call, request.safe_to_repeat()).await.map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AriError> {
        let call = HttpCall {
            method: Method::Get,
            path: path.to_owned(),
            query: vec![],
            body: None,
        };
        let body = self.send(&call, true).await?;
        serde_json::from_slice(&body).map_err(|e| AriError::Body {
            request: format!("GET {path}"),
            reason: e.to_string(),
        })
    }

    /// Makes one request, waiting for a free connection first, and returns the body of its answer (read
    /// whole, so that the connection goes back to the pool). A request that failed because its connection
    /// could not be opened (nothing was sent) is made again after a pause, twice at most; so is one whose
    /// connection closed without an answer, if `repeatable` (its effect is the same made twice). A timeout
    /// is never repeated: Asterisk may still be working on it.
    async fn send(&self, call: &HttpCall, repeatable: bool) -> Result<Vec<u8>, AriError> {
        // The semaphore is never closed, so a permit always comes.
        let _permit = self.permits.acquire().await.ok();
        let mut pauses = RECONNECT_PAUSES.iter();
        loop {
            match self.send_once(call).await {
                Err(Attempt::Connection(error)) => {
                    let again = !error.is_timeout() && (error.is_connect() || repeatable);
                    match pauses.next().filter(|_| again) {
                        Some(pause) => {
                            tracing::debug!(path = %call.path, error = %root_cause(&error), "ARI connection failed; trying again");
                            tokio::time::sleep(*pause).await;
                        }
                        None => {
                            return Err(AriError::Unreachable {
                                url: self.display_url(),
                                reason: root_cause(&error),
                            })
                        }
                    }
                }
                Err(Attempt::Answered(error)) => return Err(error),
                Ok(body) => return Ok(body),
            }
        }
    }

    async fn send_once(&self, call: &HttpCall) -> Result<Vec<u8>, Attempt> {
        let url = format!("{}{}", self.base, call.path);
        let method = match call.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.user, Some(&self.password))
            .query(&call.query);
        if let Some(body) = &call.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(Attempt::Connection)?;
        let status = response.status();
        let body = response.bytes().await.map_err(Attempt::Connection)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Attempt::Answered(AriError::Unauthorized {
                url: self.display_url(),
                user: self.user.clone(),
            }));
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        Err(Attempt::Answered(AriError::Status {
            request: format!("{method} {}", call.path),
            status: status.as_u16(),
            message,
        }))
    }
}

/// How one attempt at a request failed.
enum Attempt {
    /// No answer: the connection could not be opened, closed, or timed out.
    Connection(reqwest::Error),
    /// Asterisk answered, with an error.
    Answered(AriError),
}

/// The innermost cause of an error, which is the readable part of reqwest's nested errors
/// ("Connection refused (os error 111)" rather than "error sending request").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A small HTTP/1.1 server on loopback standing in for Asterisk's: it answers every request 204 after
    /// `delay` on a kept-alive connection, except that it closes each of the first `close_first`
    /// connections right after reading a request, without an answer. It counts requests and the most
    /// connections it had open at once.
    struct Server {
        url: Url,
        requests: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    async fn serve(delay: Duration, close_first: usize) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (counted, most) = (requests.clone(), peak.clone());
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted += 1;
                let close = accepted <= close_first;
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now_open, Ordering::SeqCst);
                let (open, counted) = (open.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            counted.fetch_add(1, Ordering::SeqCst);
                            if close {
                                open.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                            if socket.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            url,
            requests,
            peak,
        }
    }

    fn hangup(n: usize) -> AriRequest {
        AriRequest::Hangup {
            channel: format!("c{n}"),
            cause: crate::ari::request::HangupCause::NORMAL_CLEARING,
        }
    }

    #[tokio::test]
    async fn a_burst_larger_than_the_connection_bound_succeeds_within_it() {
        let server = serve(Duration::from_millis(20), 0).await;
        let client = AriClient::new(&server.url, "app", "u", "p", 4).unwrap();
        let burst = (0..40).map(|n| {
            let client = client.clone();
            async move { client.execute(&hangup(n)).await }
        });
        let results = futures_util::future::join_all(burst).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(server.requests.load(Ordering::SeqCst), 40);
        let peak = server.peak.load(Ordering::SeqCst);
        assert!((1..=4).contains(&peak), "{peak} connections open at once");
    }

    #[tokio::test]
    async fn a_repeatable_request_whose_connection_closed_is_made_again() {
        let server = serve(Duration::ZERO, 1).await;
        let client = AriClient::new(&server.url, "app", "u", "p", 4).unwrap();
        client.execute(&hangup(1)).await.unwrap();
        assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_that_must_not_be_made_twice_fails_when_its_connection_closed() {
        let server = serve(Duration::ZERO, 1).await;
        let client = AriClient::new(&server.url, "app", "u", "p", 4).unwrap();
        let digits = AriRequest::SendDtmf {
            channel: "c".into(),
            dtmf: "5".into(),
        };
        let error = client.execute(&digits).await.unwrap_err();
        assert!(matches!(error, AriError::Unreachable { .. }), "{error}");
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn events_url_carries_app_and_credentials() {
        let url = Url::parse("http://127.0.0.1:8088").unwrap();
        let client = AriClient::new(&url, "ari-transfer", "u", "p w", 1).unwrap();
        let events = client.events_url();
        assert_eq!(events.scheme(), "ws");
        assert_eq!(events.path(), "/ari/events");
        let pairs: Vec<(String, String)> = events.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("app".into(), "ari-transfer".into())));
        assert!(pairs.contains(&("api_key".into(), "u:p w".into())));
        assert_eq!(client.display_url(), "http://127.0.0.1:8088");
    }

    #[test]
    fn https_nodes_get_a_secure_websocket() {
        let url = Url::parse("https://pbx.example:8089/").unwrap();
        let client = AriClient::new(&url, "a", "u", "p", 1).unwrap();
        assert_eq!(client.events_url().scheme(), "wss");
        assert_eq!(client.events_url().path(), "/ari/events");
    }
}
