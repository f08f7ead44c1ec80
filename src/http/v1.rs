//! The native API (P2): calls, transfers, hold. Every route takes the token in `X-Auth-Token` or
//! `Authorization: Bearer`; errors are [`super::ErrorBody`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{idempotent, parse_body, Api, Failure};
use crate::engine::api::{
    CallView, Command, Reply, Scope, TransferKind, TransferSpec, TransferView,
};

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{call_id}", get(get_call).delete(hang_up))
        .route("/v1/calls/{call_id}/hold", put(hold).delete(unhold))
        .route("/v1/transfers", post(create_transfer).get(list_transfers))
        .route(
            "/v1/transfers/{id}",
            get(get_transfer).delete(cancel_transfer),
        )
        .route("/v1/transfers/{id}/complete", put(complete_transfer))
}

/// A list of calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallList {
    pub items: Vec<CallView>,
}

/// A list of transfers: those in progress and the last ones that ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    pub items: Vec<TransferView>,
}

/// `POST /v1/transfers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The transferor's leg (a channel id or SIP Call-ID); the other party of its call is the transferee.
    pub call: String,
    /// The extension to transfer to, routed like a dialed one (or `target_call`).
    pub target: Option<String>,
    /// Instead of `target`: another call of the account (a leg's channel id or SIP Call-ID), the
    /// transferor's consultation: its other party joins the transferee, and the transferor's legs in both
    /// calls are hung up (attended only; on one node or across nodes).
    pub target_call: Option<String>,
    /// `attended` (default): the transferor consults the target first; `blind`: the transferor leaves
    /// at once.
    #[serde(default)]
    pub flow: TransferKind,
    /// Seconds the target may ring (1 to 3600; default: the configured ring timeout).
    pub timeout: Option<f64>,
    /// The music-on-hold class the transferee hears (attended).
    pub moh: Option<String>,
    /// What the transferor hears while the target rings (attended), e.g. `tone:ring`.
    pub ringback: Option<String>,
    /// The DTMF code with which the transferor cancels (attended; default `*1`).
    pub takeback_dtmf: Option<String>,
    /// Channel variables set on the target's channel (at most 20; names of letters, digits and `_`).
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// `PUT /v1/calls/{call_id}/hold`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// The music-on-hold class (default: Asterisk's default class).
    pub moh: Option<String>,
}

/// Checks the fields the engine takes as given.
pub(super) fn transfer_spec(body: TransferBody) -> Result<TransferSpec, Failure> {
    check_text("call", &body.call, 255, |c| !c.is_control())?;
    let target = match (body.target, &body.target_call) {
        (Some(target), None) => {
            check_text("target", &target, 64, |c| {
                c.is_ascii_alphanumeric() || "*#+_.-".contains(c)
            })?;
            target
        }
        (None, Some(call)) => {
            check_text("target_call", call, 255, |c| !c.is_control())?;
            if body.flow == TransferKind::Blind {
                return Err(Failure::invalid(
                    "flow",
                    "a transfer to target_call is attended",
                ));
            }
            String::new()
        }
        (Some(_), Some(_)) => {
            return Err(Failure::invalid(
                "target_call",
                "give target or target_call, not both",
            ))
        }
        (None, None) => return Err(Failure::invalid("target", "required (or target_call)")),
    };
    let timeout = match body.timeout {
        None => None,
        Some(s) if s.is_finite() && (1.0..=3600.0).contains(&s) => Some((s * 1000.0) as u64),
        Some(_) => return Err(Failure::invalid("timeout", "must be 1 to 3600 seconds")),
    };
    if let Some(moh) = &body.moh {
        check_text("moh", moh, 80, |c| {
            c.is_ascii_alphanumeric() || "_-".contains(c)
        })?;
    }
    if let Some(ringback) = &body.ringback {
        check_text("ringback", ringback, 128, |c| {
            c.is_ascii_alphanumeric() || ":_-/.,".contains(c)
        })?;
    }
    if let Some(code) = &body.takeback_dtmf {
        check_text("takeback_dtmf", code, 8, |c| "0123456789*#ABCD".contains(c))?;
    }
    if body.variables.len() > 20 {
        return Err(Failure::invalid("variables", "at most 20 variables"));
    }
    for (name, value) in &body.variables {
        let field = format!("variables.{name}");
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(Failure::invalid(
                field,
                "a variable name is letters, digits and '_'",
            ));
        }
        if value.chars().count() > 255 || value.chars().any(char::is_control) {
            return Err(Failure::invalid(
                field,
                "at most 255 characters, no control characters",
            ));
        }
    }
    Ok(TransferSpec {
        call: body.call,
        target,
        variables: body.variables.into_iter().collect(),
        target_call: body.target_call,
        kind: body.flow,
        timeout,
        moh: body.moh,
        ringback: body.ringback,
        takeback_dtmf: body.takeback_dtmf,
    })
}

/// A text field: 1 to `max` characters, each one `allowed`.
pub(super) fn check_text(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), Failure> {
    if value.is_empty() || value.chars().count() > max {
        return Err(Failure::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(Failure::invalid(
            field,
            format!("the character {bad:?} is not allowed here"),
        ));
    }
    Ok(())
}

fn scope(api: &Api, headers: &HeaderMap) -> Result<Scope, Failure> {
    api.tokens.scope(headers).ok_or_else(Failure::unauthorized)
}

/// The engine's answer as a response: `ok` is the status of a success.
fn answer(reply: Reply, ok: StatusCode) -> (StatusCode, Value) {
    let json = |value: Result<Value, serde_json::Error>| value.unwrap_or(Value::Null);
    match reply {
        Reply::Calls(items) => (ok, json(serde_json::to_value(CallList { items }))),
        Reply::Call(call) => (ok, json(serde_json::to_value(call))),
        Reply::Transfers(items) => (ok, json(serde_json::to_value(TransferList { items }))),
        Reply::Transfer(transfer) => (ok, json(serde_json::to_value(transfer))),
        Reply::Done => (StatusCode::NO_CONTENT, Value::Null),
        Reply::Error(error) => Failure::from(error).to_json(),
    }
}

fn respond((status, body): (StatusCode, Value)) -> Response {
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (status, Json(body)).into_response()
}

/// Like [`run`] for a command the token's scope already passed, once per `Idempotency-Key` on `route`.
async fn run_once(
    api: &Api,
    headers: &HeaderMap,
    (scope, route): (Scope, &str),
    command: Command,
    ok: StatusCode,
) -> Response {
    respond(
        idempotent(api, headers, &scope, route, async {
            answer(api.ask(scope.clone(), command).await, ok)
        })
        .await,
    )
}

async fn run(api: &Api, headers: &HeaderMap, command: Command, ok: StatusCode) -> Response {
    match scope(api, headers) {
        Ok(scope) => respond(answer(api.ask(scope, command).await, ok)),
        Err(failure) => failure.into_response(),
    }
}

/// The live calls of the token's account.
#[utoipa::path(get, path = "/v1/calls", tag = "calls",
    responses((status = 200, body = CallList), (status = 401, body = super::ErrorBody)))]
async fn list_calls(State(api): State<Api>, headers: HeaderMap) -> Response {
    run(&api, &headers, Command::ListCalls, StatusCode::OK).await
}

/// One call: its legs, state, node, account, hold, and the transfer in progress.
#[utoipa::path(get, path = "/v1/calls/{call_id}", tag = "calls",
    params(("call_id" = String, Path, description = "a leg's ARI channel id or SIP Call-ID")),
    responses((status = 200, body = CallView), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
async fn get_call(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    run(
        &api,
        &headers,
        Command::GetCall { call: call_id },
        StatusCode::OK,
    )
    .await
}

/// Hangs that leg up; the call goes on as after a phone's own hangup.
#[utoipa::path(delete, path = "/v1/calls/{call_id}", tag = "calls",
    params(("call_id" = String, Path, description = "a leg's ARI channel id or SIP Call-ID")),
    responses((status = 204), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
async fn hang_up(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    run(
        &api,
        &headers,
        Command::Hangup { call: call_id },
        StatusCode::NO_CONTENT,
    )
    .await
}

/// Holds that leg: it hears music on hold, and nobody hears it.
#[utoipa::path(put, path = "/v1/calls/{call_id}/hold", tag = "calls",
    params(("call_id" = String, Path, description = "a leg's ARI channel id or SIP Call-ID")),
    request_body(content = Option<HoldBody>),
    responses((status = 204), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
async fn hold(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Response {
    let scope = match scope(&api, &headers) {
        Ok(scope) => scope,
        Err(failure) => return failure.into_response(),
    };
    let body: HoldBody = if body.is_empty() {
        HoldBody::default()
    } else {
        match parse_body(&body) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        }
    };
    if let Some(moh) = &body.moh {
        if let Err(failure) = check_text("moh", moh, 80, |c| {
            c.is_ascii_alphanumeric() || "_-".contains(c)
        }) {
            return failure.into_response();
        }
    }
    let command = Command::Hold {
        call: call_id.clone(),
        moh: body.moh,
    };
    let route = format!("hold {call_id}");
    run_once(
        &api,
        &headers,
        (scope, &route),
        command,
        StatusCode::NO_CONTENT,
    )
    .await
}

/// Takes that leg off hold: the music stops and it is back in the conversation.
#[utoipa::path(delete, path = "/v1/calls/{call_id}/hold", tag = "calls",
    params(("call_id" = String, Path, description = "a leg's ARI channel id or SIP Call-ID")),
    responses((status = 204), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)))]
async fn unhold(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    run(
        &api,
        &headers,
        Command::Unhold { call: call_id },
        StatusCode::NO_CONTENT,
    )
    .await
}

/// Starts a transfer of the call the `call` leg is on.
#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", request_body = TransferBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "the same key within 10 minutes answers the first result and does nothing twice")),
    responses((status = 201, body = TransferView), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)))]
async fn create_transfer(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let scope = match scope(&api, &headers) {
        Ok(scope) => scope,
        Err(failure) => return failure.into_response(),
    };
    let spec = match parse_body(&body).and_then(transfer_spec) {
        Ok(spec) => spec,
        Err(failure) => return failure.into_response(),
    };
    let command = Command::StartTransfer(spec);
    run_once(
        &api,
        &headers,
        (scope, "transfers"),
        command,
        StatusCode::CREATED,
    )
    .await
}

/// The transfers of the token's account: in progress, and the last ones that ended.
#[utoipa::path(get, path = "/v1/transfers", tag = "transfers",
    responses((status = 200, body = TransferList), (status = 401, body = super::ErrorBody)))]
async fn list_transfers(State(api): State<Api>, headers: HeaderMap) -> Response {
    run(&api, &headers, Command::ListTransfers, StatusCode::OK).await
}

#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "the transfer's id")),
    responses((status = 200, body = TransferView), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
async fn get_transfer(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    run(&api, &headers, Command::GetTransfer { id }, StatusCode::OK).await
}

/// Cancels a transfer: the target is hung up, the transferor and the transferee are reconnected.
#[utoipa::path(delete, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "the transfer's id")),
    responses((status = 200, body = TransferView), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)))]
async fn cancel_transfer(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    run(
        &api,
        &headers,
        Command::CancelTransfer { id },
        StatusCode::OK,
    )
    .await
}

/// Completes an attended transfer: the transferee and the target are bridged and the transferor hung
/// up; while the target still rings, the target gets the transferee when it answers.
#[utoipa::path(put, path = "/v1/transfers/{id}/complete", tag = "transfers",
    params(("id" = String, Path, description = "the transfer's id")),
    responses((status = 200, body = TransferView), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 503, body = super::ErrorBody)))]
async fn complete_transfer(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let scope = match scope(&api, &headers) {
        Ok(scope) => scope,
        Err(failure) => return failure.into_response(),
    };
    let route = format!("complete {id}");
    let command = Command::CompleteTransfer { id };
    run_once(&api, &headers, (scope, &route), command, StatusCode::OK).await
}
