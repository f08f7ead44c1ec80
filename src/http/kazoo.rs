//! The Kazoo-compatible route (P1): `POST /v2/accounts/{account_id}/channels/{call_id}` with Kazoo's
//! envelope, and `GET` of the account's channels with Kazoo's field names. Unlike Kazoo, the transfer
//! honours `takeback_dtmf` and answers the transfer's id.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::v1::{check_text, transfer_spec, TransferBody};
use super::{parse_body, Api, Failure};
use crate::engine::api::{CallView, Command, ErrorKind, Reply, Scope, TransferKind};

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v2/accounts/{account_id}/channels", get(list_channels))
        .route(
            "/v2/accounts/{account_id}/channels/{call_id}",
            get(get_channel).post(command),
        )
}

/// The request envelope.
#[derive(Debug, Deserialize, ToSchema)]
pub struct KazooRequest {
    pub data: KazooCommand,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct KazooCommand {
    /// `transfer` or `hangup`.
    pub action: String,
    /// The extension to transfer to (`transfer`).
    pub target: Option<String>,
    /// The code with which the transferor takes the transferee back (default `*1`).
    pub takeback_dtmf: Option<String>,
    /// The music-on-hold class the transferee hears.
    pub moh: Option<String>,
    /// `attended` (default) or `blind`.
    #[serde(rename = "transfer-type")]
    pub transfer_type: Option<String>,
}

/// A channel, with Kazoo's field names.
#[derive(Debug, Serialize, ToSchema)]
pub struct KazooChannel {
    pub uuid: String,
    pub answered: bool,
    pub other_leg: Option<String>,
    /// `inbound` for the caller's leg, `outbound` for a dialed one.
    pub direction: String,
    pub destination: String,
    pub account_id: Option<String>,
    pub node: String,
}

/// Kazoo's envelope around an answer: `status` is `success` or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KazooEnvelope {
    #[schema(value_type = Object)]
    pub data: Value,
    pub status: String,
    pub request_id: String,
    /// On errors: the HTTP status, as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On errors: Kazoo's short message (`invalid data`, `bad_identifier`, `invalid_credentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn success(status: StatusCode, data: Value) -> Response {
    let body = KazooEnvelope {
        data,
        status: "success".into(),
        request_id: request_id(),
        error: None,
        message: None,
    };
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: &str, data: Value) -> Response {
    let body = KazooEnvelope {
        data,
        status: "error".into(),
        request_id: request_id(),
        error: Some(status.as_u16().to_string()),
        message: Some(message.into()),
    };
    (status, Json(body)).into_response()
}

fn bad_identifier() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "bad_identifier",
        json!({"message": "bad identifier"}),
    )
}

/// A `/v1` failure in Kazoo's shapes: a field's error as `{"data":{field:{rule:{"message"}}}}`.
fn from_failure(failure: Failure) -> Response {
    let detail = failure.body.error;
    match failure.status {
        StatusCode::BAD_REQUEST => {
            let rule = if detail.message.contains("missing field")
                || detail.message.contains("required")
            {
                "required"
            } else {
                "invalid"
            };
            let field = detail.field.unwrap_or_else(|| "data".into());
            let data = json!({ field: { rule: { "message": detail.message } } });
            error(StatusCode::BAD_REQUEST, "invalid data", data)
        }
        StatusCode::NOT_FOUND => bad_identifier(),
        StatusCode::UNAUTHORIZED => error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            json!({"message": "invalid credentials"}),
        ),
        status => error(status, &detail.code, json!({ "message": detail.message })),
    }
}

/// The engine scope for an account in the path: the token must be that account's, or the admin's.
fn scope(api: &Api, headers: &HeaderMap, account: &str) -> Result<Scope, Failure> {
    let Some(scope) = api.tokens.scope(headers) else {
        return Err(Failure::unauthorized());
    };
    let allowed = match &scope {
        Scope::Admin => api.accounts.iter().any(|a| a == account),
        Scope::Account(id) => **id == *account,
    };
    if !allowed {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "bad_identifier",
            "bad identifier",
        ));
    }
    Ok(Scope::Account(account.into()))
}

fn channels(call: &CallView) -> Vec<KazooChannel> {
    let parties: Vec<&str> = call
        .legs
        .iter()
        .take(2)
        .map(|l| l.channel.as_str())
        .collect();
    call.legs
        .iter()
        .enumerate()
        .map(|(i, leg)| KazooChannel {
            uuid: leg.channel.clone(),
            answered: call.state != "dialing",
            other_leg: match i {
                0 | 1 => parties.get(1 - i).map(|p| (*p).to_owned()),
                _ => None,
            },
            direction: if leg.role == "caller" {
                "inbound"
            } else {
                "outbound"
            }
            .into(),
            destination: call.destination.clone(),
            account_id: call.account.clone(),
            node: call.node.clone(),
        })
        .collect()
}

/// The account's channels, every leg of every call.
#[utoipa::path(get, path = "/v2/accounts/{account_id}/channels", tag = "kazoo",
    params(("account_id" = String, Path, description = "the account's id")),
    responses((status = 200, body = KazooEnvelope), (status = 401, body = KazooEnvelope),
        (status = 404, body = KazooEnvelope)))]
async fn list_channels(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> Response {
    let scope = match scope(&api, &headers, &account) {
        Ok(scope) => scope,
        Err(failure) => return from_failure(failure),
    };
    match api.ask(scope, Command::ListCalls).await {
        Reply::Calls(calls) => {
            let all: Vec<KazooChannel> = calls.iter().flat_map(channels).collect();
            success(StatusCode::OK, json!(all))
        }
        Reply::Error(e) => from_failure(e.into()),
        _ => success(StatusCode::OK, json!([])),
    }
}

/// One channel (a leg, by its channel id or SIP Call-ID).
#[utoipa::path(get, path = "/v2/accounts/{account_id}/channels/{call_id}", tag = "kazoo",
    params(("account_id" = String, Path, description = "the account's id"),
        ("call_id" = String, Path, description = "a leg's ARI channel id or SIP Call-ID")),
    responses((status = 200, body = KazooEnvelope), (status = 401, body = KazooEnvelope),
        (status = 404, body = KazooEnvelope)))]
async fn get_channel(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((account, call_id)): Path<(String, String)>,
) -> Response {
    let scope = match scope(&api, &headers, &account) {
        Ok(scope) => scope,
        Err(failure) => return from_failure(failure),
    };
    match api
        .ask(
            scope,
            Command::GetCall {
                call: call_id.clone(),
            },
        )
        .await
    {
        Reply::Call(call) => {
            let legs = channels(&call);
            let leg = legs
                .into_iter()
                .find(|c| c.uuid == call_id)
                .or_else(|| channels(&call).into_iter().next());
            success(StatusCode::OK, json!(leg))
        }
        Reply::Error(e) => from_failure(e.into()),
        _ => bad_identifier(),
    }
}

/// `transfer` (attended by default, `"transfer-type":"blind"` for blind) or `hangup` of the leg
/// `call_id`, the transferor; the other party of its call is the transferee.
#[utoipa::path(post, path = "/v2/accounts/{account_id}/channels/{call_id}", tag = "kazoo",
    params(("account_id" = String, Path, description = "the account's id"),
        ("call_id" = String, Path, description = "the transferor's leg: ARI channel id or SIP Call-ID")),
    request_body = KazooRequest,
    responses((status = 202, body = KazooEnvelope), (status = 400, body = KazooEnvelope),
        (status = 401, body = KazooEnvelope), (status = 404, body = KazooEnvelope),
        (status = 409, body = KazooEnvelope), (status = 422, body = KazooEnvelope),
        (status = 503, body = KazooEnvelope)))]
async fn command(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((account, call_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let scope = match scope(&api, &headers, &account) {
        Ok(scope) => scope,
        Err(failure) => return from_failure(failure),
    };
    let request: KazooRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(failure) => return from_failure(failure),
    };
    let data = request.data;
    match data.action.as_str() {
        "hangup" => match api.ask(scope, Command::Hangup { call: call_id }).await {
            Reply::Error(e) => from_failure(e.into()),
            _ => success(StatusCode::ACCEPTED, json!({"message": "hangup initiated"})),
        },
        "transfer" => {
            let Some(target) = data.target else {
                let failure = Failure::invalid("target", "required: the extension to transfer to");
                return from_failure(failure);
            };
            let flow = match data.transfer_type.as_deref() {
                None | Some("attended") => TransferKind::Attended,
                Some("blind") => TransferKind::Blind,
                Some(_) => {
                    let failure = Failure::invalid("transfer-type", "must be attended or blind");
                    return from_failure(failure);
                }
            };
            if let Err(failure) = check_text("call_id", &call_id, 255, |c| !c.is_control()) {
                return from_failure(failure);
            }
            let body = TransferBody {
                call: call_id,
                target: Some(target),
                target_call: None,
                flow,
                timeout: None,
                moh: data.moh,
                ringback: None,
                takeback_dtmf: data.takeback_dtmf,
                variables: Default::default(),
            };
            let spec = match transfer_spec(body) {
                Ok(spec) => spec,
                Err(failure) => return from_failure(failure),
            };
            match api.ask(scope, Command::StartTransfer(spec)).await {
                Reply::Transfer(transfer) => success(
                    StatusCode::ACCEPTED,
                    json!({"message": "transfer initiated", "transfer_id": transfer.id}),
                ),
                Reply::Error(e) if e.kind == ErrorKind::NotFound => bad_identifier(),
                Reply::Error(e) => from_failure(e.into()),
                _ => bad_identifier(),
            }
        }
        other => from_failure(Failure::invalid(
            "action",
            format!("unknown action '{other}': use transfer or hangup"),
        )),
    }
}
