//! The OpenAPI document, generated from the routes' and models' annotations (utoipa), served at
//! `/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{events, kazoo, v1};

#[derive(OpenApi)]
#[openapi(
    info(title = "ari-transfer", description = "Call transfers for Asterisk: calls, transfers, hold, events"),
    paths(
        v1::list_calls, v1::get_call, v1::hang_up, v1::hold, v1::unhold,
        v1::create_transfer, v1::list_transfers, v1::get_transfer, v1::cancel_transfer,
        v1::complete_transfer,
        kazoo::list_channels, kazoo::get_channel, kazoo::command,
        events::events, events::webhooks,
    ),
    modifiers(&Tokens),
    security(("token" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

/// Both ways of presenting a token.
struct Tokens;

impl Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
