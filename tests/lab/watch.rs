//! Watching the app's events from outside, as an app would: an SSE client of `GET /v1/events`, and a
//! real HTTP webhook receiver that checks every signature itself (HMAC-SHA256 by the Standard Webhooks
//! scheme, computed here, not with the app's code).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

/// One event as a client got it: the SSE `id:` and `event:` fields, and the envelope from `data:`.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub kind: String,
    pub envelope: Value,
    /// When it arrived here.
    pub at: SystemTime,
}

impl Got {
    pub fn data(&self) -> &Value {
        &self.envelope["data"]
    }
}

/// An SSE client, reading in the background until it is dropped (or [`Stream::close`]d).
pub struct Stream {
    got: Arc<Mutex<Vec<Got>>>,
    task: JoinHandle<()>,
}

impl Stream {
    /// Opens `GET {base}/v1/events{query}` with `token`, and `Last-Event-ID: last_id` if given; returns
    /// once the app answered 200.
    pub async fn open(base: &str, token: &str, query: &str, last_id: Option<&str>) -> Stream {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/events{query}"))
            .header("X-Auth-Token", token);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id);
        }
        let mut response = request.send().await.expect("the app answers");
        assert_eq!(response.status(), 200, "GET /v1/events");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(got) = parse(&block) {
                        sink.lock().unwrap().push(got);
                    }
                }
            }
        });
        Stream { got, task }
    }

    /// Everything got so far.
    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was got (at most 20 s); returns it.
    pub async fn until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        wait_for(what, || {
            let got = self.got();
            done(&got).then_some(got)
        })
        .await
    }

    pub fn close(self) {
        self.task.abort();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One SSE block (`id:`, `event:`, `data:` lines); comments (keep-alives) give nothing.
fn parse(block: &str) -> Option<Got> {
    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim_start().to_owned();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        return None;
    }
    let envelope = serde_json::from_str(&data).expect("every event's data is JSON");
    let at = SystemTime::now();
    Some(Got {
        id,
        kind,
        envelope,
        at,
    })
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// What a webhook receiver got: each POST's `webhook-id`, whether its signature was right, and the
/// envelope, and the status it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub signed: bool,
    pub envelope: Value,
    pub answered: u16,
    /// When it arrived here.
    pub at: SystemTime,
}

/// A webhook receiver on a loopback port: it answers 500 to its first `fail_first` POSTs, then 200.
pub struct Receiver {
    pub url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// `secret` is the `whsec_...` secret the app signs with.
    pub async fn start(secret: &str, fail_first: usize) -> Receiver {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let sink = deliveries.clone();
        let hook = move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            let key = key.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
                let expected = format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
                );
                let signed = header("webhook-signature")
                    .split(' ')
                    .any(|s| s == expected);
                let mut deliveries = sink.lock().unwrap();
                let answered = if deliveries.len() < fail_first {
                    500
                } else {
                    200
                };
                deliveries.push(Delivery {
                    webhook_id: id,
                    signed,
                    envelope: serde_json::from_str(&body).unwrap_or(Value::Null),
                    answered,
                    at: SystemTime::now(),
                });
                axum::http::StatusCode::from_u16(answered).unwrap()
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(hook));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            deliveries,
            task,
        }
    }

    /// Every POST so far, in the order they came.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// The events it accepted (answered 200), in order.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.answered == 200)
            .collect()
    }

    /// Waits until `done` holds for the accepted deliveries (at most 20 s); returns them.
    pub async fn until(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        wait_for(what, || {
            let accepted = self.accepted();
            done(&accepted).then_some(accepted)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh Standard Webhooks secret.
pub fn secret() -> String {
    let bytes: Vec<u8> = (0..24).map(|_| rand::random::<u8>()).collect();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
