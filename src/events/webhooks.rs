//! Webhook receivers (P3): each account's configured URLs get its events, signed by the Standard Webhooks
//! scheme: `webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` (Unix seconds)
//! and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//!
//! Every receiver has its own task and its own bounded queue, so a slow or failing one delays only
//! itself, never the engine or another receiver. Events go out one at a time, in order. A failed attempt
//! (no answer within the timeout, or a status other than 2xx) is retried after `retry_base`, doubling up
//! to `retry_max`, each wait with ±20 % jitter (longer if the receiver sent `Retry-After`); after
//! `attempts` attempts the receiver is *paused*: it keeps that event and tries again every `retry_max`
//! until one succeeds, and the API shows it paused. A 410 Gone disables it until the next start. While
//! a receiver cannot keep up its queue fills; an event that finds it full is dropped and counted.
//! Only the URLs of the configuration are ever called, and redirects are not followed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{Stamped, TypeFilter};
use crate::config::{AccountConfig, WebhookConfig};
use crate::engine::api::Scope;
use crate::metrics::Metrics;

/// Events a receiver may have waiting.
const QUEUE: usize = 10_000;
/// Attempts kept per receiver for the API.
const RECENT: usize = 20;

/// Every account's receivers.
pub struct Webhooks {
    receivers: Vec<Arc<Receiver>>,
}

struct Receiver {
    id: String,
    account: String,
    config: WebhookConfig,
    filter: TypeFilter,
    queue: mpsc::Sender<Arc<Stamped>>,
    status: Mutex<Status>,
    metrics: Arc<Metrics>,
}

/// A receiver, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    /// `<account>-<n>`: the account's n-th receiver in the configuration.
    pub id: String,
    pub account: String,
    pub url: String,
    /// The event types it gets (empty: all).
    pub types: Vec<String>,
    #[serde(flatten)]
    pub status: Status,
    /// Events waiting for it.
    pub queued: usize,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Status {
    /// `active`, `retrying` (an event is being retried), `paused` (an event failed every attempt; it is
    /// tried again every `retry_max`) or `disabled` (it answered 410 Gone).
    #[schema(value_type = String, example = "active")]
    pub state: &'static str,
    pub delivered: u64,
    pub failed_attempts: u64,
    /// Events dropped because its queue was full (or it is disabled).
    pub dropped: u64,
    pub last_error: Option<String>,
    /// The latest attempts, newest last.
    #[schema(value_type = Vec<Attempt>)]
    pub recent: VecDeque<Attempt>,
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The HTTP status it answered, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The key a secret signs with: `whsec_<base64>` is decoded (Standard Webhooks), anything else is used
/// as it is.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("a whsec_ secret must be base64 after its prefix: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// How long to wait before attempt `attempt + 1` (`attempt` ≥ 1 failed): `base` doubled each time up to
/// `max`, then ±20 % (`jitter` in 0..1), and at least what the receiver asked for.
pub fn backoff(
    config: &WebhookConfig,
    attempt: u32,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = config
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let wait = doubled.min(config.retry_max).mul_f64(0.8 + 0.4 * jitter);
    match retry_after {
        Some(asked) => wait.max(asked.min(config.retry_max)),
        None => wait,
    }
}

impl Webhooks {
    /// No receivers.
    pub fn none() -> Webhooks {
        Webhooks {
            receivers: Vec::new(),
        }
    }

    /// Starts a task for every receiver of `accounts`. Fails on a secret that is unset or malformed.
    pub fn start(accounts: &[AccountConfig], metrics: Arc<Metrics>) -> Result<Webhooks, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ari-transfer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))?;
        let mut receivers = Vec::new();
        for account in accounts {
            for (n, config) in account.webhooks.iter().enumerate() {
                let key = signing_key(&config.secret()?)
                    .map_err(|e| format!("webhook {}: {e}", config.url))?;
                let (queue, rx) = mpsc::channel(QUEUE);
                let receiver = Arc::new(Receiver {
                    id: format!("{}-{}", account.id, n + 1),
                    account: account.id.clone(),
                    filter: TypeFilter::new(&config.types)
                        .map_err(|t| format!("webhook {}: unknown type {t}", config.url))?,
                    config: config.clone(),
                    queue,
                    status: Mutex::new(Status {
                        state: "active",
                        ..Status::default()
                    }),
                    metrics: metrics.clone(),
                });
                tokio::spawn(deliver(receiver.clone(), client.clone(), key, rx));
                receivers.push(receiver);
            }
        }
        Ok(Webhooks { receivers })
    }

    /// Queues an event for the receivers of its account that want it; never waits.
    pub fn offer(&self, event: &Arc<Stamped>) {
        for receiver in &self.receivers {
            if event.account.as_deref() != Some(receiver.account.as_str())
                || !receiver.filter.wants(event.kind)
            {
                continue;
            }
            if receiver.queue.try_send(event.clone()).is_err() {
                receiver.dropped();
            }
        }
    }

    /// The receivers `scope` may see, with their state and recent attempts.
    pub fn views(&self, scope: &Scope) -> Vec<WebhookView> {
        self.receivers
            .iter()
            .filter(|r| match scope {
                Scope::Admin => true,
                Scope::Account(id) => **id == *r.account,
            })
            .map(|r| WebhookView {
                id: r.id.clone(),
                account: r.account.clone(),
                url: r.config.url.to_string(),
                types: r.config.types.clone(),
                status: r.status.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                queued: QUEUE - r.queue.capacity(),
            })
            .collect()
    }
}

impl Receiver {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn dropped(&self) {
        self.update(|s| s.dropped += 1);
        self.metrics.webhook_dropped(&self.account);
    }

    fn record(&self, attempt: Attempt) {
        let delivered = attempt.status.is_some_and(|c| (200..300).contains(&c));
        self.metrics.webhook_attempt(&self.account, delivered);
        self.update(|s| {
            if delivered {
                s.delivered += 1;
                s.state = "active";
            } else {
                s.failed_attempts += 1;
                s.last_error = Some(match (attempt.status, &attempt.error) {
                    (_, Some(error)) => error.clone(),
                    (Some(code), None) => format!("answered {code}"),
                    (None, None) => "no answer".into(),
                });
            }
            s.recent.push_back(attempt);
            while s.recent.len() > RECENT {
                s.recent.pop_front();
            }
        });
    }
}

/// A receiver's task: its events one at a time, each until it is delivered.
async fn deliver(
    receiver: Arc<Receiver>,
    client: reqwest::Client,
    key: Vec<u8>,
    mut rx: mpsc::Receiver<Arc<Stamped>>,
) {
    while let Some(event) = rx.recv().await {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (status, retry_after) = post(&receiver, &client, &key, &event, attempt).await;
            match status {
                Some(code) if (200..300).contains(&code) => break,
                Some(410) => {
                    receiver.update(|s| s.state = "disabled");
                    tracing::warn!(webhook = %receiver.id, "the receiver answered 410 Gone: disabled");
                    rx.close();
                    while rx.recv().await.is_some() {
                        receiver.dropped();
                    }
                    return;
                }
                _ => {}
            }
            let config = &receiver.config;
            let wait = if attempt >= config.attempts {
                if attempt == config.attempts {
                    tracing::warn!(webhook = %receiver.id, event = %event.id, "every attempt failed: the receiver is paused");
                }
                receiver.update(|s| s.state = "paused");
                config.retry_max
            } else {
                receiver.update(|s| s.state = "retrying");
                backoff(config, attempt, rand::rng().random(), retry_after)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One attempt: the status the receiver answered (`None`: none in time, or no connection) and the
/// `Retry-After` it asked for.
async fn post(
    receiver: &Receiver,
    client: &reqwest::Client,
    key: &[u8],
    event: &Stamped,
    attempt: u32,
) -> (Option<u16>, Option<Duration>) {
    let started = Instant::now();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(event.unix, |d| d.as_secs());
    let result = client
        .post(receiver.config.url.clone())
        .timeout(receiver.config.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature(key, &event.id, timestamp, &event.json),
        )
        .body(event.json.to_string())
        .send()
        .await;
    let (status, retry_after, error) = match result {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            (Some(response.status().as_u16()), retry_after, None)
        }
        Err(error) => {
            let what = if error.is_timeout() {
                "no answer in time".to_owned()
            } else {
                format!("cannot reach it: {error}")
            };
            (None, None, Some(what))
        }
    };
    receiver.record(Attempt {
        event_id: event.id.clone(),
        kind: event.kind.as_str(),
        attempt,
        status,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    (status, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            url: "http://127.0.0.1:1/hook".parse().unwrap(),
            secret_env: "UNUSED".into(),
            types: Vec::new(),
            timeout: Duration::from_secs(1),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(60),
            attempts: 8,
        }
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key("whsec_not base64!").is_err());
        assert_eq!(signing_key("plain").unwrap(), b"plain");
    }

    /// A receiver on loopback that answers `status` to everything; the number of POSTs it got.
    async fn answering(status: u16) -> (url::Url, Arc<std::sync::atomic::AtomicUsize>) {
        let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = posts.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { axum::http::StatusCode::from_u16(status).unwrap() }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), posts)
    }

    fn account(url: url::Url, secret_env: &str) -> AccountConfig {
        std::env::set_var(secret_env, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        AccountConfig {
            id: "acme".into(),
            name: "acme".into(),
            token_envs: Vec::new(),
            endpoints: Vec::new(),
            webhooks: vec![WebhookConfig {
                url,
                secret_env: secret_env.into(),
                retry_base: Duration::from_millis(10),
                retry_max: Duration::from_millis(50),
                attempts: 3,
                ..config()
            }],
        }
    }

    fn stamped(n: u64) -> Arc<Stamped> {
        Arc::new(Stamped {
            n,
            id: format!("run1-{n}"),
            kind: crate::engine::events::EventKind::CallCreated,
            account: Some("acme".into()),
            unix: 0,
            json: "{}".into(),
        })
    }

    async fn state_becomes(hooks: &Webhooks, state: &str) -> WebhookView {
        for _ in 0..200 {
            let view = hooks.views(&Scope::Admin).remove(0);
            if view.status.state == state {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never {state}: {:?}", hooks.views(&Scope::Admin));
    }

    #[tokio::test]
    async fn a_receiver_that_keeps_failing_is_paused_and_keeps_its_events() {
        let (url, posts) = answering(500).await;
        let hooks =
            Webhooks::start(&[account(url, "WEBHOOK_TEST_PAUSED")], Arc::default()).unwrap();
        hooks.offer(&stamped(1));
        hooks.offer(&stamped(2));
        let view = state_becomes(&hooks, "paused").await;
        assert!(view.status.failed_attempts >= 3, "{view:?}");
        assert_eq!(view.status.delivered, 0);
        // The first event is still being tried (every retry_max), the second waits behind it.
        assert_eq!(view.queued, 1);
        assert!(view.status.recent.iter().all(|a| a.event_id == "run1-1"));
        assert_eq!(view.status.last_error.as_deref(), Some("answered 500"));
        let before = posts.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            posts.load(std::sync::atomic::Ordering::SeqCst) > before,
            "probed again"
        );
        // Another account's scope sees none of it.
        assert!(hooks.views(&Scope::Account("globex".into())).is_empty());
    }

    #[tokio::test]
    async fn a_receiver_that_answers_410_is_disabled() {
        let (url, posts) = answering(410).await;
        let hooks = Webhooks::start(&[account(url, "WEBHOOK_TEST_GONE")], Arc::default()).unwrap();
        hooks.offer(&stamped(1));
        state_becomes(&hooks, "disabled").await;
        hooks.offer(&stamped(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hooks.views(&Scope::Admin)[0].status.dropped, 1);
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_maximum() {
        let config = config();
        let mid = |attempt| backoff(&config, attempt, 0.5, None);
        assert_eq!(
            [mid(1), mid(2), mid(3), mid(4), mid(5)],
            [5, 10, 20, 40, 60].map(Duration::from_secs)
        );
        assert_eq!(backoff(&config, 1, 0.0, None), Duration::from_secs(4));
        assert_eq!(backoff(&config, 1, 1.0, None), Duration::from_secs(6));
        assert_eq!(backoff(&config, 40, 0.5, None), Duration::from_secs(60));
        // Retry-After is honoured, up to the maximum.
        let asked = Some(Duration::from_secs(30));
        assert_eq!(backoff(&config, 1, 0.5, asked), Duration::from_secs(30));
        let too_long = Some(Duration::from_secs(3600));
        assert_eq!(backoff(&config, 1, 0.5, too_long), Duration::from_secs(60));
    }
}
