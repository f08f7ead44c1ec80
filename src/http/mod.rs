//! The service's HTTP side: `/healthz`, `/readyz`, the native API under `/v1` ([`v1`]), the
//! Kazoo-compatible route under `/v2` ([`kazoo`]), the OpenAPI document ([`openapi`]), and the event
//! stream, webhook list and web console ([`events`]).
//!
//! This layer authenticates, parses and serialises; every decision about a call is the engine's. A
//! command goes to the runtime's loop ([`Commands`]) and comes back as the engine's [`Reply`].

mod auth;
mod events;
mod kazoo;
pub mod openapi;
mod v1;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

use crate::engine::api::{ApiError, Command, ErrorKind, Reply, Scope};
use crate::runtime::health::Health;

pub use auth::Tokens;

/// A command on its way to the engine, and where its answer goes.
pub type CommandRequest = (Scope, Command, oneshot::Sender<Reply>);

/// The way into the runtime's loop.
pub type Commands = mpsc::Sender<CommandRequest>;

/// The largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024;

/// How long an `Idempotency-Key` is remembered, and how many at most.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
const IDEMPOTENCY_KEPT: usize = 10_000;

/// How long a command may wait for the engine before the answer is 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Api {
    health: Arc<Health>,
    tokens: Arc<Tokens>,
    commands: Commands,
    /// Account ids that exist (the Kazoo route names one in its path).
    accounts: Arc<Vec<String>>,
    events: Arc<crate::events::Hub>,
    metrics: Arc<crate::metrics::Metrics>,
    idempotency: Arc<Mutex<HashMap<String, Remembered>>>,
}

/// A response kept for its `Idempotency-Key`; `None` while the first request is still being answered.
struct Remembered {
    at: Instant,
    response: Option<(StatusCode, Value)>,
}

impl Api {
    pub fn new(
        health: Arc<Health>,
        tokens: Tokens,
        accounts: Vec<String>,
        commands: Commands,
        events: Arc<crate::events::Hub>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Api {
        Api {
            health,
            tokens: Arc::new(tokens),
            commands,
            accounts: Arc::new(accounts),
            events,
            metrics,
            idempotency: Arc::default(),
        }
    }

    /// Sends a command to the engine and waits for its answer.
    async fn ask(&self, scope: Scope, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        let unavailable = || {
            Reply::Error(ApiError {
                kind: ErrorKind::Unavailable,
                code: "unavailable",
                message: "the service is not taking commands right now".into(),
                field: None,
            })
        };
        if self.commands.send((scope, command, tx)).await.is_err() {
            return unavailable();
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            _ => unavailable(),
        }
    }
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1::routes())
        .merge(kazoo::routes())
        .merge(events::routes())
        .route("/v1/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

async fn readyz(State(api): State<Api>) -> (StatusCode, Json<Value>) {
    let (ready, nodes) = api.health.snapshot();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "nodes": nodes })))
}

/// The Prometheus series, in the OpenMetrics text format.
async fn metrics(State(api): State<Api>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        api.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    Failure::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

async fn method_not_allowed() -> Response {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
    .into_response()
}

/// The error body of every `/v1` error (P4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code for programs (`call_not_found`, `transfer_in_progress`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A `/v1` error response.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    body: ErrorBody,
}

impl Failure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message: message.into(),
                    field: None,
                },
            },
        }
    }

    fn on(mut self, field: impl Into<String>) -> Failure {
        self.body.error.field = Some(field.into());
        self
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "invalid", message).on(field)
    }

    fn unauthorized() -> Failure {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required (X-Auth-Token, or Authorization: Bearer)",
        )
    }

    fn to_json(&self) -> (StatusCode, Value) {
        let body = serde_json::to_value(&self.body).unwrap_or(Value::Null);
        (self.status, body)
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        let status = match error.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let failure = Failure::new(status, error.code, error.message);
        match error.field {
            Some(field) => failure.on(field),
            None => failure,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A request body parsed as `T`: an empty, oversized or malformed body is a 400 naming the field serde
/// names (a missing or unknown one), never a 5xx.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    if body.is_empty() {
        return Err(Failure::invalid("body", "a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .unwrap_or("body")
            .to_owned();
        Failure::invalid(field, format!("malformed JSON: {message}"))
    })
}

/// Runs `answer` once per `Idempotency-Key` (within [`IDEMPOTENCY_TTL`], per token scope and route):
/// a repeat gets the first answer, and nothing is done twice.
async fn idempotent<F>(
    api: &Api,
    headers: &HeaderMap,
    scope: &Scope,
    route: &str,
    answer: F,
) -> (StatusCode, Value)
where
    F: std::future::Future<Output = (StatusCode, Value)>,
{
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
    else {
        return answer.await;
    };
    let slot = format!("{scope:?} {route} {key}");
    {
        let mut kept = api.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        kept.retain(|_, r| now.duration_since(r.at) < IDEMPOTENCY_TTL);
        match kept.get(&slot) {
            Some(Remembered {
                response: Some(response),
                ..
            }) => return response.clone(),
            Some(Remembered { response: None, .. }) => {
                return Failure::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still being answered",
                )
                .to_json()
            }
            None if kept.len() >= IDEMPOTENCY_KEPT => {}
            None => {
                kept.insert(
                    slot.clone(),
                    Remembered {
                        at: now,
                        response: None,
                    },
                );
            }
        }
    }
    let response = answer.await;
    let mut kept = api.idempotency.lock().unwrap_or_else(|e| e.into_inner());
    if response.0 == StatusCode::SERVICE_UNAVAILABLE {
        // Nothing was done: a retry with the same key may try again.
        kept.remove(&slot);
    } else if let Some(remembered) = kept.get_mut(&slot) {
        remembered.response = Some(response.clone());
    }
    response
}
