//! The ARI REST client: executes [`AriRequest`]s and the few reads the runtime needs, over reqwest.

use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use super::models::{Bridge, Channel};
use super::request::{AriRequest, HttpCall, Method};

/// How long one REST request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl AriClient {
    /// `url` is the node's HTTP root (`http://127.0.0.1:8088`); `/ari` is appended.
    pub fn new(url: &Url, app: &str, user: &str, password: &str) -> anyhow::Result<AriClient> {
        let mut base = url.clone();
        base.set_path(&format!("{}/ari", url.path().trim_end_matches('/')));
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(AriClient {
            base,
            app: app.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            http,
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
        self.send(&request.to_http(&self.app)).await.map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AriError> {
        let call = HttpCall {
            method: Method::Get,
            path: path.to_owned(),
            query: vec![],
            body: None,
        };
        let response = self.send(&call).await?;
        response.json().await.map_err(|e| AriError::Body {
            request: format!("GET {path}"),
            reason: root_cause(&e),
        })
    }

    async fn send(&self, call: &HttpCall) -> Result<reqwest::Response, AriError> {
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
        let response = builder.send().await.map_err(|e| AriError::Unreachable {
            url: self.display_url(),
            reason: root_cause(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(AriError::Unauthorized {
                url: self.display_url(),
                user: self.user.clone(),
            });
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        Err(AriError::Status {
            request: format!("{method} {}", call.path),
            status: status.as_u16(),
            message,
        })
    }
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

    #[test]
    fn events_url_carries_app_and_credentials() {
        let url = Url::parse("http://127.0.0.1:8088").unwrap();
        let client = AriClient::new(&url, "ari-transfer", "u", "p w").unwrap();
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
        let client = AriClient::new(&url, "a", "u", "p").unwrap();
        assert_eq!(client.events_url().scheme(), "wss");
        assert_eq!(client.events_url().path(), "/ari/events");
    }
}
