//! `GET /v1/events` (the event stream, server-sent events), `GET /v1/webhooks` (the account's receivers
//! and their latest attempts), and `GET /console` (the web console, P5).
//!
//! The stream: each event as `id:` (its id), `event:` (its type) and `data:` (the JSON envelope), for the
//! token's account (the admin token: every account). `?types=transfer.*,hold.ok` filters; `Last-Event-ID`
//! (or `?last_event_id=`) replays what was kept after that event first. The token may be given as
//! `?token=` since a browser's `EventSource` cannot send headers. A comment line every 15 s keeps
//! proxies from closing an idle stream. A client that falls too far behind gets a last event,
//! `stream.dropped`, and the stream ends: reconnecting with the last id it saw loses nothing that is
//! still kept.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::ToSchema;

use super::{Api, Failure};
use crate::engine::api::Scope;
use crate::events::webhooks::WebhookView;
use crate::events::{Stamped, TypeFilter};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/webhooks", get(webhooks))
        .route("/console", get(console))
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    types: Option<String>,
    last_event_id: Option<String>,
}

/// A list of webhook receivers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// The scope of the header's token, or of `?token=`.
fn scope(api: &Api, headers: &HeaderMap, token: Option<&str>) -> Result<Scope, Failure> {
    api.tokens
        .scope(headers)
        .or_else(|| token.and_then(|t| api.tokens.scope_of(t)))
        .ok_or_else(Failure::unauthorized)
}

/// The account's events, as server-sent events.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        ("types" = Option<String>, Query, description = "comma-separated event types; `transfer.*` is a prefix"),
        ("token" = Option<String>, Query, description = "the token, for clients that cannot send headers"),
        ("last_event_id" = Option<String>, Query, description = "as the Last-Event-ID header: replay after this event"),
    ),
    responses(
        (status = 200, description = "the event stream (text/event-stream)", content_type = "text/event-stream"),
        (status = 400, description = "an unknown event type", body = super::ErrorBody),
        (status = 401, description = "no valid token", body = super::ErrorBody),
    ),
    security(("token" = []))
)]
pub async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Response {
    let scope = match scope(&api, &headers, query.token.as_deref()) {
        Ok(scope) => scope,
        Err(failure) => return failure.into_response(),
    };
    let names: Vec<&str> = query.types.as_deref().unwrap_or("").split(',').collect();
    let filter = match TypeFilter::new(&names) {
        Ok(filter) => filter,
        Err(name) => {
            let message = format!("'{name}' is no event type");
            return Failure::invalid("types", message).into_response();
        }
    };
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    let (replay, live) = api.events.subscribe(last_id.as_deref());
    let wanted = move |event: &Arc<Stamped>| event.visible_to(&scope) && filter.wants(event.kind);
    let replay = stream::iter(replay.into_iter().map(Ok));
    let events = replay
        .chain(follow(live))
        .filter(move |event| std::future::ready(event.as_ref().map_or(true, &wanted)))
        .map(|event| Ok::<_, Infallible>(sse(event)));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Told to proxies (nginx) that would otherwise buffer the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        "no".parse().expect("a valid header value"),
    );
    response
}

/// The live events, until the client lags behind what the hub keeps for it: then `Err(missed)` once,
/// and the end.
fn follow(
    live: broadcast::Receiver<Arc<Stamped>>,
) -> impl Stream<Item = Result<Arc<Stamped>, u64>> {
    stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        match live.recv().await {
            Ok(event) => Some((Ok(event), Some(live))),
            Err(RecvError::Lagged(missed)) => Some((Err(missed), None)),
            Err(RecvError::Closed) => None,
        }
    })
}

fn sse(event: Result<Arc<Stamped>, u64>) -> SseEvent {
    match event {
        Ok(event) => SseEvent::default()
            .id(event.id.clone())
            .event(event.kind.as_str())
            .data(&*event.json),
        Err(missed) => {
            let reason = json!({
                "type": "stream.dropped",
                "data": {
                    "reason": "the client fell too far behind",
                    "missed": missed,
                },
            });
            SseEvent::default()
                .event("stream.dropped")
                .data(reason.to_string())
        }
    }
}

/// The account's webhook receivers: their state (`active`, `retrying`, `paused`, `disabled`), counts and
/// latest attempts.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "events",
    responses(
        (status = 200, description = "the receivers", body = WebhookList),
        (status = 401, description = "no valid token", body = super::ErrorBody),
    ),
    security(("token" = []))
)]
pub async fn webhooks(State(api): State<Api>, headers: HeaderMap) -> Response {
    match scope(&api, &headers, None) {
        Ok(scope) => {
            let items = api.events.webhooks().views(&scope);
            Json(WebhookList { items }).into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

/// The web console: one page, its script and style inside; it signs in with a token and uses the API.
async fn console() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("console.html")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::{Event, EventKind};
    use crate::events::{webhooks::Webhooks, Hub};

    #[tokio::test]
    async fn a_client_that_falls_behind_gets_a_last_event_and_the_end() {
        let hub = Hub::new("run1", 100, 2, Webhooks::none());
        let (_, live) = hub.subscribe(None);
        for _ in 0..5 {
            hub.publish(Event {
                kind: EventKind::CallCreated,
                account: None,
                data: json!({"call_id": "c1", "seq": 1}),
            });
        }
        let got: Vec<Result<u64, u64>> = follow(live).map(|e| e.map(|e| e.n)).collect().await;
        // Only 2 could wait for it: it missed 3, is told so, and the stream ends (the hub lives on).
        assert_eq!(got, [Err(3)]);
        let last = format!("{:?}", sse(Err(3)));
        assert!(last.contains("stream.dropped"), "{last}");
    }
}
