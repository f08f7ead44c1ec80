//! The configuration file (TOML), validated once at start. Every error names the file and the key (or the
//! line) at fault, on one line. Secrets are not in the file: each node names the environment variable that
//! holds its ARI password.
//!
//! ```toml
//! app = "ari-transfer"                 # the Stasis application name
//!
//! [http]
//! listen = "127.0.0.1:8080"            # health and readiness endpoints
//!
//! [[nodes]]
//! name = "node1"
//! url = "http://127.0.0.1:8088"        # the node's HTTP root; /ari is appended
//! username = "ari-transfer"
//! password_env = "ARI_PASSWORD"        # default
//! trunks = { node2 = "node2" }         # per other node: this node's PJSIP endpoint that reaches it (A3)
//! max_connections = 20                 # ARI requests in flight at once (Asterisk's sessionlimit is 100)
//!
//! [[routes]]                           # tried in order; the pattern must match the whole extension
//! match = "[a-z]+|\\d+"
//! dial = "PJSIP/{exten}"               # {exten}, or capture groups {1}, {2}...
//!
//! [timeouts]
//! ring = 30                            # seconds a dialed party may ring
//!
//! [transfers]
//! recall_transferer = true             # B6: call the transferer back if the target fails after it left
//! refer_barrier = true                 # wait until Asterisk is done with a REFER before reporting on it
//!
//! [metaflows]                          # in-call feature codes (D1-D7); none without this table
//! binding_key = "*"
//! digit_timeout = 1.5                  # seconds after the last digit, then the code is looked up
//! listen_on = "both"                   # "a" (the caller's leg), "b" (the callee's), "both"
//! [[metaflows.patterns]]
//! match = '2(\d+)'                     # *2 + extension
//! module = "transfer"                  # options: takeback_dtmf, complete_dtmf, threeway_dtmf, swap_dtmf,
//!                                      # moh, ringback, target_timeout, recall_retries, recall_delay
//! [[metaflows.numbers]]
//! number = "9"                         # *9
//! module = "resume"
//! [metaflows.endpoints.alice]          # calls from alice use this set instead (same keys)
//!
//! [api]
//! admin_token_env = "ARI_TRANSFER_ADMIN_TOKEN"  # optional: a token that sees every account
//! account_variable = "ARI_TRANSFER_ACCOUNT"     # the channel variable that names a call's account
//!
//! [[accounts]]                         # who may use the HTTP API, and on which calls
//! id = "acme"
//! name = "Acme Ltd"
//! token_envs = ["ACME_TOKEN"]          # each names an environment variable holding one token
//! endpoints = ["alice", "bob"]         # calls from or to these PJSIP endpoints are the account's
//! [accounts.metaflows]                 # the account's feature codes (same keys as [metaflows])
//! [[accounts.webhooks]]                # each receives the account's events (Standard Webhooks)
//! url = "https://hooks.example.com/ari" # http or https only
//! secret_env = "ACME_WEBHOOK_SECRET"   # the signing secret (whsec_<base64>, or any string)
//! types = ["transfer.*", "hold.ok"]    # optional: only these event types (a trailing * is a prefix)
//! timeout = 10                         # seconds per attempt
//! retry_base = 5                       # seconds before the first retry; doubles each time, with jitter
//! retry_max = 3600                     # the longest wait between two attempts
//! attempts = 8                         # attempts per event before the receiver is paused
//!
//! [events]
//! keep = 10000                         # events kept for Last-Event-ID replay (and the console)
//! client_buffer = 1024                 # events an SSE client may lag behind before it is dropped
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use regex::{Regex, RegexSet};

use crate::engine::metaflow::{ListenOn, Metaflows, Module, Pattern, TransferFlow};
use crate::engine::{MetaflowConfig, Route, Trunk};

/// A configuration error, displayed as one line: `FILE: KEY: what is wrong`.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_app")]
    app: String,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    nodes: Vec<NodeFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    timeouts: TimeoutsFile,
    #[serde(default)]
    transfers: TransfersFile,
    metaflows: Option<MetaflowsFile>,
    #[serde(default)]
    api: ApiFile,
    #[serde(default)]
    accounts: Vec<AccountFile>,
    #[serde(default)]
    events: EventsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsFile {
    #[serde(default = "default_keep")]
    keep: usize,
    #[serde(default = "default_client_buffer")]
    client_buffer: usize,
}

impl Default for EventsFile {
    fn default() -> Self {
        EventsFile {
            keep: default_keep(),
            client_buffer: default_client_buffer(),
        }
    }
}

fn default_keep() -> usize {
    10_000
}

fn default_client_buffer() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    secret_env: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default = "default_webhook_timeout")]
    timeout: f64,
    #[serde(default = "default_retry_base")]
    retry_base: f64,
    #[serde(default = "default_retry_max")]
    retry_max: f64,
    #[serde(default = "default_attempts")]
    attempts: u32,
}

fn default_webhook_timeout() -> f64 {
    10.0
}

fn default_retry_base() -> f64 {
    5.0
}

fn default_retry_max() -> f64 {
    3600.0
}

fn default_attempts() -> u32 {
    8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    admin_token_env: Option<String>,
    #[serde(default = "default_account_variable")]
    account_variable: String,
}

impl Default for ApiFile {
    fn default() -> Self {
        ApiFile {
            admin_token_env: None,
            account_variable: default_account_variable(),
        }
    }
}

fn default_account_variable() -> String {
    "ARI_TRANSFER_ACCOUNT".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    token_envs: Vec<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    metaflows: Option<MetaflowsFile>,
    #[serde(default)]
    webhooks: Vec<WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaflowsFile {
    #[serde(default = "default_binding_key")]
    binding_key: String,
    #[serde(default = "default_digit_timeout")]
    digit_timeout: f64,
    #[serde(default = "default_listen_on")]
    listen_on: ListenOnFile,
    #[serde(default)]
    numbers: Vec<NumberFile>,
    #[serde(default)]
    patterns: Vec<PatternFile>,
    /// Per endpoint, a set used instead of this one (only at the top level).
    #[serde(default)]
    endpoints: BTreeMap<String, MetaflowsFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ListenOnFile {
    A,
    B,
    Both,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberFile {
    number: String,
    #[serde(flatten)]
    module: ModuleFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(flatten)]
    module: ModuleFile,
}

/// A module name and its options (all optional; only `transfer` has any).
#[derive(Debug, Deserialize)]
struct ModuleFile {
    module: String,
    takeback_dtmf: Option<String>,
    complete_dtmf: Option<String>,
    threeway_dtmf: Option<String>,
    swap_dtmf: Option<String>,
    moh: Option<String>,
    ringback: Option<String>,
    target_timeout: Option<f64>,
    recall_retries: Option<u32>,
    recall_delay: Option<f64>,
}

fn default_binding_key() -> String {
    "*".to_owned()
}
fn default_digit_timeout() -> f64 {
    1.5
}
fn default_listen_on() -> ListenOnFile {
    ListenOnFile::Both
}

/// The characters a phone can send as DTMF.
const DTMF: &str = "0123456789*#ABCD";

fn is_dtmf(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| DTMF.contains(c))
}

/// Seconds from the file, as milliseconds, if within (0, max].
fn millis(seconds: f64, max: f64) -> Option<u64> {
    (seconds.is_finite() && seconds > 0.0 && seconds <= max)
        .then(|| (seconds * 1000.0).round() as u64)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransfersFile {
    #[serde(default = "default_true")]
    recall_transferer: bool,
    #[serde(default = "default_true")]
    refer_barrier: bool,
}

impl Default for TransfersFile {
    fn default() -> Self {
        TransfersFile {
            recall_transferer: true,
            refer_barrier: true,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default = "default_listen")]
    listen: String,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    name: String,
    url: String,
    username: String,
    #[serde(default = "default_password_env")]
    password_env: String,
    #[serde(default)]
    trunks: BTreeMap<String, String>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(rename = "match")]
    pattern: String,
    dial: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsFile {
    #[serde(default = "default_ring")]
    ring: f64,
}

impl Default for TimeoutsFile {
    fn default() -> Self {
        TimeoutsFile {
            ring: default_ring(),
        }
    }
}

fn default_app() -> String {
    "ari-transfer".to_owned()
}
fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_password_env() -> String {
    "ARI_PASSWORD".to_owned()
}
fn default_ring() -> f64 {
    30.0
}
/// Well under Asterisk's default `sessionlimit` (100 HTTP sessions, shared with every other ARI and AMI
/// client of that Asterisk).
fn default_max_connections() -> usize {
    20
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub app: String,
    pub http_listen: SocketAddr,
    pub nodes: Vec<NodeConfig>,
    pub routes: Vec<Route>,
    /// Milliseconds.
    pub ring_timeout: u64,
    /// A blind transfer whose target fails after the transferer hung up calls the transferer back.
    pub recall_transferer: bool,
    /// Before its first progress report on a REFER, the engine waits until Asterisk has finished handling
    /// that REFER (an Asterisk 22 crash otherwise; see the README's "Asterisk's REFER race").
    pub refer_barrier: bool,
    /// The SIP trunks between nodes, for transfers across nodes.
    pub trunks: Vec<Trunk>,
    /// In-call feature codes.
    pub metaflows: MetaflowConfig,
    /// Who may use the HTTP API, and which calls are whose.
    pub accounts: Vec<AccountConfig>,
    /// The environment variable holding the admin token, if there is one.
    pub admin_token_env: Option<String>,
    /// The channel variable the dialplan sets to name a call's account.
    pub account_variable: String,
    /// How many events are kept for replay.
    pub events_keep: usize,
    /// How far an SSE client may lag behind before it is dropped.
    pub events_client_buffer: usize,
}

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: String,
    pub name: String,
    /// Environment variables, each holding one of the account's API tokens.
    pub token_envs: Vec<String>,
    /// PJSIP endpoint names: a call from or to one of them is the account's.
    pub endpoints: Vec<String>,
    pub webhooks: Vec<WebhookConfig>,
}

/// A receiver of an account's events.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: Url,
    /// The environment variable holding the signing secret.
    pub secret_env: String,
    /// Event types it wants (`transfer.*` is a prefix); empty: all.
    pub types: Vec<String>,
    pub timeout: std::time::Duration,
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
    pub attempts: u32,
}

impl WebhookConfig {
    /// The signing secret, read from the environment.
    pub fn secret(&self) -> Result<String, String> {
        match std::env::var(&self.secret_env) {
            Ok(secret) if !secret.is_empty() => Ok(secret),
            _ => Err(format!(
                "webhook {}: the environment variable {} (its signing secret) is not set",
                self.url, self.secret_env
            )),
        }
    }
}

/// Every API token, read from the environment: a token and the account it opens (`None`: the admin token).
pub type Tokens = Vec<(String, Option<String>)>;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub url: Url,
    pub username: String,
    pub password_env: String,
    /// At most this many ARI requests to the node in flight at once (so as many HTTP sessions).
    pub max_connections: usize,
}

impl NodeConfig {
    /// The ARI password, read from the environment variable the node names.
    pub fn password(&self) -> Result<String, String> {
        std::env::var(&self.password_env).map_err(|_| {
            format!(
                "node {}: the environment variable {} (its ARI password) is not set",
                self.name, self.password_env
            )
        })
    }
}

impl Config {
    /// The API tokens, read from the environment variables the configuration names. A variable that is
    /// unset or empty is an error naming its key: a service that silently has no token would lock its
    /// users out.
    pub fn tokens(&self) -> Result<Tokens, String> {
        let read = |key: String, var: &str| match std::env::var(var) {
            Ok(token) if !token.is_empty() => Ok(token),
            _ => Err(format!("{key}: the environment variable {var} is not set")),
        };
        let mut tokens = Vec::new();
        if let Some(var) = &self.admin_token_env {
            tokens.push((read("api.admin_token_env".into(), var)?, None));
        }
        for (i, account) in self.accounts.iter().enumerate() {
            for (j, var) in account.token_envs.iter().enumerate() {
                let token = read(format!("accounts[{i}].token_envs[{j}]"), var)?;
                tokens.push((token, Some(account.id.clone())));
            }
        }
        Ok(tokens)
    }

    /// What the engine needs of the configuration; `instance` tags the ids this run creates.
    pub fn engine(&self, instance: String) -> crate::engine::EngineConfig {
        crate::engine::EngineConfig {
            app: self.app.clone(),
            instance,
            routes: self.routes.clone(),
            ring_timeout: self.ring_timeout,
            recall_transferer: self.recall_transferer,
            trunks: self.trunks.clone(),
            metaflows: self.metaflows.clone(),
            refer_barrier: self.refer_barrier,
            accounts: crate::engine::Accounts {
                ids: self.accounts.iter().map(|a| a.id.clone()).collect(),
                endpoints: self
                    .accounts
                    .iter()
                    .flat_map(|a| a.endpoints.iter().map(|e| (e.clone(), a.id.clone())))
                    .collect(),
                variable: self.account_variable.clone(),
            },
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            ConfigError {
                origin: match line {
                    Some(line) => format!("{origin}:{line}"),
                    None => origin.to_owned(),
                },
                key: String::new(),
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        let err = |key: String, message: String| ConfigError {
            origin: origin.to_owned(),
            key,
            message,
        };

        if file.app.is_empty() {
            return Err(err("app".into(), "must not be empty".into()));
        }
        let http_listen = file.http.listen.parse().map_err(|_| {
            err(
                "http.listen".into(),
                format!(
                    "'{}' is not an address like 127.0.0.1:8080",
                    file.http.listen
                ),
            )
        })?;
        if file.nodes.is_empty() {
            return Err(err(
                "nodes".into(),
                "at least one [[nodes]] entry is required".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut nodes = Vec::new();
        let mut trunks = Vec::new();
        for (i, node) in file.nodes.into_iter().enumerate() {
            let key = |field: &str| format!("nodes[{i}].{field}");
            if node.name.is_empty()
                || !node
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(key("name"), "use letters, digits, '-' and '_'".into()));
            }
            if !names.insert(node.name.clone()) {
                return Err(err(key("name"), format!("'{}' is used twice", node.name)));
            }
            let url = Url::parse(&node.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| err(key("url"), format!("'{}' is not an http(s) URL", node.url)))?;
            if node.username.is_empty() {
                return Err(err(key("username"), "must not be empty".into()));
            }
            if node.password_env.is_empty() {
                return Err(err(
                    key("password_env"),
                    "must name an environment variable".into(),
                ));
            }
            if !(1..=100).contains(&node.max_connections) {
                return Err(err(
                    key("max_connections"),
                    "must be between 1 and 100 (Asterisk's default sessionlimit is 100)".into(),
                ));
            }
            for (peer, endpoint) in &node.trunks {
                let valid = !endpoint.is_empty()
                    && endpoint
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    return Err(err(
                        format!("nodes[{i}].trunks.{peer}"),
                        format!("'{endpoint}' is not a PJSIP endpoint name"),
                    ));
                }
                trunks.push(Trunk {
                    node: node.name.as_str().into(),
                    peer: peer.as_str().into(),
                    endpoint: endpoint.clone(),
                });
            }
            nodes.push(NodeConfig {
                name: node.name,
                url,
                username: node.username,
                password_env: node.password_env,
                max_connections: node.max_connections,
            });
        }
        for (i, node) in nodes.iter().enumerate() {
            for trunk in trunks.iter().filter(|t| *t.node == *node.name) {
                if *trunk.peer == *node.name || !names.contains(&*trunk.peer) {
                    return Err(err(
                        format!("nodes[{i}].trunks.{}", trunk.peer),
                        "must name another configured node".into(),
                    ));
                }
            }
        }
        let mut routes = Vec::new();
        for (i, route) in file.routes.iter().enumerate() {
            let parsed = Route::new(&route.pattern, &route.dial).map_err(|e| {
                let field = match e {
                    crate::engine::RouteError::Pattern(_) => "match",
                    _ => "dial",
                };
                err(format!("routes[{i}].{field}"), e.to_string())
            })?;
            routes.push(parsed);
        }
        let ring = file.timeouts.ring;
        if !(ring.is_finite() && ring > 0.0 && ring <= 3600.0) {
            return Err(err(
                "timeouts.ring".into(),
                "must be between 0 and 3600 seconds".into(),
            ));
        }
        let (accounts, account_metaflows) =
            accounts(&file.accounts, &file.api).map_err(|(key, message)| err(key, message))?;
        for (field, value) in [
            ("keep", file.events.keep),
            ("client_buffer", file.events.client_buffer),
        ] {
            if !(1..=1_000_000).contains(&value) {
                let message = "must be between 1 and 1000000".into();
                return Err(err(format!("events.{field}"), message));
            }
        }
        let mut metaflows = match &file.metaflows {
            None => MetaflowConfig::default(),
            Some(flows) => metaflow_config(flows).map_err(|(key, message)| err(key, message))?,
        };
        metaflows.accounts = account_metaflows;
        Ok(Config {
            app: file.app,
            http_listen,
            nodes,
            routes,
            ring_timeout: (ring * 1000.0).round() as u64,
            recall_transferer: file.transfers.recall_transferer,
            refer_barrier: file.transfers.refer_barrier,
            trunks,
            metaflows,
            accounts,
            admin_token_env: file.api.admin_token_env,
            account_variable: file.api.account_variable,
            events_keep: file.events.keep,
            events_client_buffer: file.events.client_buffer,
        })
    }
}

type KeyError = (String, String);

/// Whether `name` is a plain identifier: letters, digits, '-', '_' (and '.' where `dot`).
fn is_identifier(name: &str, dot: bool) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dot && c == '.'))
}

/// Feature codes by account id.
type AccountMetaflows = HashMap<String, std::sync::Arc<Metaflows>>;

/// The accounts, validated, and the feature codes of those that have their own.
fn accounts(
    files: &[AccountFile],
    api: &ApiFile,
) -> Result<(Vec<AccountConfig>, AccountMetaflows), KeyError> {
    let env_name = |key: String, var: &str| {
        if is_identifier(var, false) {
            Ok(())
        } else {
            Err((key, format!("'{var}' is not an environment variable name")))
        }
    };
    if let Some(var) = &api.admin_token_env {
        env_name("api.admin_token_env".into(), var)?;
    }
    if !is_identifier(&api.account_variable, false) {
        let message = format!("'{}' is not a channel variable name", api.account_variable);
        return Err(("api.account_variable".into(), message));
    }
    let mut accounts: Vec<AccountConfig> = Vec::new();
    let mut metaflows = HashMap::new();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        let key = |field: &str| format!("accounts[{i}].{field}");
        if !is_identifier(&file.id, false) {
            return Err((key("id"), "use letters, digits, '-' and '_'".into()));
        }
        if accounts.iter().any(|a| a.id == file.id) {
            return Err((key("id"), format!("'{}' is used twice", file.id)));
        }
        for (j, var) in file.token_envs.iter().enumerate() {
            env_name(key(&format!("token_envs[{j}]")), var)?;
        }
        for (j, endpoint) in file.endpoints.iter().enumerate() {
            if !is_identifier(endpoint, true) {
                let message = format!("'{endpoint}' is not a PJSIP endpoint name");
                return Err((key(&format!("endpoints[{j}]")), message));
            }
            if let Some(other) = owner.insert(endpoint, &file.id) {
                let message = format!("'{endpoint}' belongs to account '{other}' already");
                return Err((key(&format!("endpoints[{j}]")), message));
            }
        }
        if let Some(flows) = &file.metaflows {
            if !flows.endpoints.is_empty() {
                let message = "per-endpoint sets go in [metaflows.endpoints]".into();
                return Err((key("metaflows.endpoints"), message));
            }
            let set = self::metaflows(flows, &key("metaflows"))?;
            metaflows.insert(file.id.clone(), std::sync::Arc::new(set));
        }
        accounts.push(AccountConfig {
            id: file.id.clone(),
            name: if file.name.is_empty() {
                file.id.clone()
            } else {
                file.name.clone()
            },
            token_envs: file.token_envs.clone(),
            endpoints: file.endpoints.clone(),
            webhooks: file
                .webhooks
                .iter()
                .enumerate()
                .map(|(j, hook)| webhook(hook, &key(&format!("webhooks[{j}]"))))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok((accounts, metaflows))
}

/// A webhook receiver, validated: an http(s) URL, a secret's variable, sane timings.
fn webhook(file: &WebhookFile, key: &str) -> Result<WebhookConfig, KeyError> {
    let at = |field: &str| format!("{key}.{field}");
    let url = Url::parse(&file.url).map_err(|e| (at("url"), format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err((at("url"), "must be an http:// or https:// URL".into()));
    }
    if !is_identifier(&file.secret_env, false) {
        let message = format!("'{}' is not an environment variable name", file.secret_env);
        return Err((at("secret_env"), message));
    }
    for (j, kind) in file.types.iter().enumerate() {
        let known = match kind.strip_suffix('*') {
            Some(prefix) => crate::engine::events::EventKind::ALL
                .iter()
                .any(|k| k.as_str().starts_with(prefix)),
            None => crate::engine::events::EventKind::named(kind).is_some(),
        };
        if !known {
            let message = format!("'{kind}' is no event type (see the README's event list)");
            return Err((at(&format!("types[{j}]")), message));
        }
    }
    let seconds = |field: &str, value: f64, max: f64| {
        if value.is_finite() && value > 0.0 && value <= max {
            Ok(std::time::Duration::from_secs_f64(value))
        } else {
            Err((at(field), format!("must be between 0 and {max} seconds")))
        }
    };
    let retry_base = seconds("retry_base", file.retry_base, 86_400.0)?;
    let retry_max = seconds("retry_max", file.retry_max, 86_400.0)?;
    if retry_max < retry_base {
        return Err((at("retry_max"), "must not be less than retry_base".into()));
    }
    if !(1..=100).contains(&file.attempts) {
        return Err((at("attempts"), "must be between 1 and 100".into()));
    }
    Ok(WebhookConfig {
        url,
        secret_env: file.secret_env.clone(),
        types: file.types.clone(),
        timeout: seconds("timeout", file.timeout, 300.0)?,
        retry_base,
        retry_max,
        attempts: file.attempts,
    })
}

/// The default set and the per-endpoint ones.
fn metaflow_config(file: &MetaflowsFile) -> Result<MetaflowConfig, KeyError> {
    let mut endpoints = HashMap::new();
    for (endpoint, flows) in &file.endpoints {
        let key = format!("metaflows.endpoints.{endpoint}");
        if !flows.endpoints.is_empty() {
            return Err((
                format!("{key}.endpoints"),
                "only allowed in [metaflows]".into(),
            ));
        }
        endpoints.insert(
            endpoint.clone(),
            std::sync::Arc::new(metaflows(flows, &key)?),
        );
    }
    Ok(MetaflowConfig {
        default: Some(std::sync::Arc::new(metaflows(file, "metaflows")?)),
        endpoints,
        accounts: HashMap::new(),
    })
}

/// One set of feature codes, validated: `key` is where it is in the file.
fn metaflows(file: &MetaflowsFile, key: &str) -> Result<Metaflows, KeyError> {
    let binding_key = match file.binding_key.chars().collect::<Vec<_>>()[..] {
        [c] if DTMF.contains(c) => c,
        _ => {
            let message = "must be one DTMF character (0-9, *, #, A-D)".into();
            return Err((format!("{key}.binding_key"), message));
        }
    };
    let digit_timeout = millis(file.digit_timeout, 10.0).ok_or_else(|| {
        let message = "must be between 0 and 10 seconds".into();
        (format!("{key}.digit_timeout"), message)
    })?;
    let mut numbers: Vec<(String, Module)> = Vec::new();
    for (i, number) in file.numbers.iter().enumerate() {
        let at = format!("{key}.numbers[{i}]");
        if !is_dtmf(&number.number) {
            return Err((
                format!("{at}.number"),
                "must be DTMF digits (0-9, *, #, A-D)".into(),
            ));
        }
        if numbers.iter().any(|(n, _)| *n == number.number) {
            return Err((
                format!("{at}.number"),
                format!("'{}' is used twice", number.number),
            ));
        }
        numbers.push((number.number.clone(), module(&number.module, &at)?));
    }
    let mut patterns = Vec::new();
    for (i, pattern) in file.patterns.iter().enumerate() {
        let at = format!("{key}.patterns[{i}]");
        let regex = Regex::new(&format!("^(?:{})$", pattern.pattern)).map_err(|e| {
            (
                format!("{at}.match"),
                format!(
                    "invalid regular expression: {}",
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            )
        })?;
        patterns.push(Pattern {
            regex,
            module: module(&pattern.module, &at)?,
        });
    }
    check_overlaps(&numbers, &patterns, key)?;
    Ok(Metaflows {
        binding_key,
        digit_timeout,
        listen_on: match file.listen_on {
            ListenOnFile::A => ListenOn::A,
            ListenOnFile::B => ListenOn::B,
            ListenOnFile::Both => ListenOn::Both,
        },
        numbers,
        patterns,
    })
}

/// Two codes must never match the same digits: a number that a pattern also matches, or two patterns
/// that match a common string (searched over every DTMF string up to 5 digits long).
fn check_overlaps(
    numbers: &[(String, Module)],
    patterns: &[Pattern],
    key: &str,
) -> Result<(), KeyError> {
    let set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
        .map_err(|e| (key.to_owned(), e.to_string()))?;
    for (i, (number, _)) in numbers.iter().enumerate() {
        if let Some(j) = set.matches(number).iter().next() {
            let message = format!("patterns[{j}] also matches '{number}'");
            return Err((format!("{key}.numbers[{i}].number"), message));
        }
    }
    if patterns.len() < 2 {
        return Ok(());
    }
    let alphabet: Vec<char> = "0123456789*#".chars().collect();
    let mut strings = vec![String::new()];
    for _ in 0..5 {
        let longer: Vec<String> = strings
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        for digits in &longer {
            let matched: Vec<usize> = set.matches(digits).iter().collect();
            if let [first, second, ..] = matched[..] {
                let message = format!(
                    "matches the same digits as patterns[{first}] (for example '{digits}')"
                );
                return Err((format!("{key}.patterns[{second}].match"), message));
            }
        }
        strings = longer;
    }
    Ok(())
}

/// A module with its options; `key` is where it is.
fn module(file: &ModuleFile, key: &str) -> Result<Module, KeyError> {
    let options_set = file.takeback_dtmf.is_some()
        || file.complete_dtmf.is_some()
        || file.threeway_dtmf.is_some()
        || file.swap_dtmf.is_some()
        || file.moh.is_some()
        || file.ringback.is_some()
        || file.target_timeout.is_some()
        || file.recall_retries.is_some()
        || file.recall_delay.is_some();
    match file.module.as_str() {
        "resume" if options_set => {
            Err((key.to_owned(), "the resume module takes no options".into()))
        }
        "resume" => Ok(Module::Resume),
        "transfer" => transfer_flow(file, key).map(Module::Transfer),
        other => Err((
            format!("{key}.module"),
            format!("unknown module '{other}': use transfer or resume"),
        )),
    }
}

fn transfer_flow(file: &ModuleFile, key: &str) -> Result<TransferFlow, KeyError> {
    let code = |value: &Option<String>, field: &str, default: &str| {
        let code = value.clone().unwrap_or_else(|| default.to_owned());
        if is_dtmf(&code) {
            Ok(code)
        } else {
            Err((
                format!("{key}.{field}"),
                "must be DTMF digits (0-9, *, #, A-D)".to_owned(),
            ))
        }
    };
    let defaults = TransferFlow::default();
    let seconds = |value: Option<f64>, field: &str, default: u64| match value {
        None => Ok(default),
        Some(0.0) if field == "recall_delay" => Ok(0),
        Some(seconds) => millis(seconds, 3600.0).ok_or_else(|| {
            (
                format!("{key}.{field}"),
                "must be between 0 and 3600 seconds".to_owned(),
            )
        }),
    };
    let flow = TransferFlow {
        takeback_dtmf: code(
            &file.takeback_dtmf,
            "takeback_dtmf",
            &defaults.takeback_dtmf,
        )?,
        complete_dtmf: code(
            &file.complete_dtmf,
            "complete_dtmf",
            &defaults.complete_dtmf,
        )?,
        threeway_dtmf: code(
            &file.threeway_dtmf,
            "threeway_dtmf",
            &defaults.threeway_dtmf,
        )?,
        swap_dtmf: code(&file.swap_dtmf, "swap_dtmf", &defaults.swap_dtmf)?,
        moh: file.moh.clone().filter(|m| !m.is_empty()),
        ringback: file.ringback.clone().unwrap_or(defaults.ringback),
        target_timeout: seconds(
            file.target_timeout,
            "target_timeout",
            defaults.target_timeout,
        )?,
        recall_retries: match file.recall_retries.unwrap_or(defaults.recall_retries) {
            n @ 0..=10 => n,
            _ => {
                return Err((
                    format!("{key}.recall_retries"),
                    "must be 0 to 10".to_owned(),
                ))
            }
        },
        recall_delay: seconds(file.recall_delay, "recall_delay", defaults.recall_delay)?,
    };
    let codes = [
        ("takeback_dtmf", &flow.takeback_dtmf),
        ("complete_dtmf", &flow.complete_dtmf),
        ("threeway_dtmf", &flow.threeway_dtmf),
        ("swap_dtmf", &flow.swap_dtmf),
    ];
    for (i, (field, code)) in codes.iter().enumerate() {
        if let Some((other, _)) = codes[..i].iter().find(|(_, c)| c == code) {
            return Err((
                format!("{key}.{field}"),
                format!("'{code}' is also {other}"),
            ));
        }
    }
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
app = "ari-transfer"
[[nodes]]
name = "node1"
url = "http://127.0.0.1:8088"
username = "ari-transfer"
[[routes]]
match = "(\\d+)"
dial = "PJSIP/{1}"
[timeouts]
ring = 2.5
"#;

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let config = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(config.app, "ari-transfer");
        assert_eq!(config.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.nodes[0].password_env, "ARI_PASSWORD");
        assert_eq!(config.ring_timeout, 2500);
        assert!(config.recall_transferer);
        assert!(config.refer_barrier);
        assert_eq!(config.nodes[0].max_connections, 20);
        assert_eq!(
            config.routes[0].dial_string("42").as_deref(),
            Some("PJSIP/42")
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = GOOD.replace("username =", "usernme =");
        let message = error_of(&text);
        assert!(
            message.starts_with("test.toml:6: unknown field `usernme`"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn semantic_errors_name_the_key() {
        assert!(error_of(&GOOD.replace("(\\\\d+)", "(\\\\d+"))
            .starts_with("test.toml: routes[0].match: invalid regular expression"));
        assert!(error_of(&GOOD.replace("{1}", "{2}"))
            .starts_with("test.toml: routes[0].dial: unknown placeholder {2}"));
        assert_eq!(
            error_of(&GOOD.replace("http://127.0.0.1:8088", "127.0.0.1:8088")),
            "test.toml: nodes[0].url: '127.0.0.1:8088' is not an http(s) URL"
        );
        assert_eq!(
            error_of(&GOOD.replace("ring = 2.5", "ring = -1")),
            "test.toml: timeouts.ring: must be between 0 and 3600 seconds"
        );
        assert_eq!(
            error_of(&GOOD.replace("username =", "max_connections = 0\nusername =")),
            "test.toml: nodes[0].max_connections: must be between 1 and 100 (Asterisk's default \
             sessionlimit is 100)"
        );
        assert_eq!(
            error_of("app = \"x\"\n"),
            "test.toml: nodes: at least one [[nodes]] entry is required"
        );
    }

    #[test]
    fn duplicate_node_names_are_refused() {
        let text = format!(
            "{GOOD}\n[[nodes]]\nname = \"node1\"\nurl = \"http://h:1\"\nusername = \"u\"\n"
        );
        assert_eq!(
            error_of(&text),
            "test.toml: nodes[1].name: 'node1' is used twice"
        );
    }

    #[test]
    fn accounts_own_endpoints_and_name_their_token_variables() {
        let accounts = r#"
[api]
admin_token_env = "ADMIN_TOKEN_FOR_TEST"
[[accounts]]
id = "acme"
token_envs = ["ACME_TOKEN_FOR_TEST"]
endpoints = ["alice", "bob"]
[accounts.metaflows]
[[accounts.metaflows.numbers]]
number = "9"
module = "resume"
[[accounts]]
id = "globex"
name = "Globex"
endpoints = ["carol"]
"#;
        let config = Config::parse(&format!("{GOOD}{accounts}"), "test.toml").unwrap();
        assert_eq!(config.accounts.len(), 2);
        assert_eq!(config.accounts[0].name, "acme");
        assert_eq!(config.accounts[1].endpoints, ["carol"]);
        assert!(config.metaflows.accounts.contains_key("acme"));
        assert_eq!(config.account_variable, "ARI_TRANSFER_ACCOUNT");
        // The tokens come from the environment; an unset variable is named by its key.
        assert_eq!(
            config.tokens().unwrap_err(),
            "api.admin_token_env: the environment variable ADMIN_TOKEN_FOR_TEST is not set"
        );
        let twice = accounts.replace("[\"carol\"]", "[\"bob\"]");
        assert_eq!(
            error_of(&format!("{GOOD}{twice}")),
            "test.toml: accounts[1].endpoints[0]: 'bob' belongs to account 'acme' already"
        );
        let bad_env = accounts.replace("ACME_TOKEN_FOR_TEST", "ACME TOKEN");
        assert_eq!(
            error_of(&format!("{GOOD}{bad_env}")),
            "test.toml: accounts[0].token_envs[0]: 'ACME TOKEN' is not an environment variable name"
        );
        let same_id = accounts.replace("id = \"globex\"", "id = \"acme\"");
        assert_eq!(
            error_of(&format!("{GOOD}{same_id}")),
            "test.toml: accounts[1].id: 'acme' is used twice"
        );
    }

    #[test]
    fn webhooks_are_http_urls_with_a_secret_variable_and_known_types() {
        let hooks = r#"
[events]
keep = 500
[[accounts]]
id = "acme"
[[accounts.webhooks]]
url = "https://hooks.example.com/ari"
secret_env = "ACME_HOOK_SECRET"
types = ["transfer.*", "hold.ok"]
retry_base = 0.2
"#;
        let config = Config::parse(&format!("{GOOD}{hooks}"), "test.toml").unwrap();
        let hook = &config.accounts[0].webhooks[0];
        assert_eq!(hook.url.as_str(), "https://hooks.example.com/ari");
        assert_eq!(hook.retry_base, std::time::Duration::from_millis(200));
        assert_eq!((hook.attempts, config.events_keep), (8, 500));
        let cases = [
            (
                "https://hooks.example.com/ari",
                "file:///etc/passwd",
                "accounts[0].webhooks[0].url: must be an http:// or https:// URL",
            ),
            (
                "\"hold.ok\"",
                "\"hold.maybe\"",
                "accounts[0].webhooks[0].types[1]: 'hold.maybe' is no event type (see the README's event list)",
            ),
            (
                "retry_base = 0.2",
                "retry_base = 0",
                "accounts[0].webhooks[0].retry_base: must be between 0 and 86400 seconds",
            ),
            (
                "keep = 500",
                "keep = 0",
                "events.keep: must be between 1 and 1000000",
            ),
        ];
        for (from, to, error) in cases {
            let text = format!("{GOOD}{}", hooks.replace(from, to));
            assert_eq!(error_of(&text), format!("test.toml: {error}"));
        }
    }

    #[test]
    fn trunks_name_other_nodes_and_endpoints() {
        let two = format!(
            "{GOOD}\n[[nodes]]\nname = \"node2\"\nurl = \"http://h:1\"\nusername = \"u\"\n"
        );
        let with = |trunks: &str| two.replace("[[routes]]", &format!("{trunks}\n[[routes]]"));
        let config = Config::parse(&with("trunks = { node2 = \"to-node2\" }"), "t").unwrap();
        assert_eq!(
            config.trunks,
            vec![Trunk {
                node: "node1".into(),
                peer: "node2".into(),
                endpoint: "to-node2".into()
            }]
        );
        assert_eq!(
            Config::parse(&with("trunks = { node3 = \"x\" }"), "t")
                .unwrap_err()
                .to_string(),
            "t: nodes[0].trunks.node3: must name another configured node"
        );
        assert_eq!(
            Config::parse(&with("trunks = { node2 = \"a b\" }"), "t")
                .unwrap_err()
                .to_string(),
            "t: nodes[0].trunks.node2: 'a b' is not a PJSIP endpoint name"
        );
    }

    const FLOWS: &str = include_str!("../tests/fixtures/metaflows.toml");

    #[test]
    fn metaflows_parse_with_defaults_and_per_endpoint_sets() {
        let text = format!("{GOOD}{FLOWS}[metaflows.endpoints.alice]\nbinding_key = \"#\"\n");
        let config = Config::parse(&text, "t").unwrap();
        let flows = config.metaflows.default.as_deref().unwrap();
        assert_eq!(flows.binding_key, '*');
        assert_eq!(flows.digit_timeout, 1000);
        assert_eq!(flows.listen_on, ListenOn::A);
        let matched = flows.lookup("2201").unwrap();
        assert_eq!(matched.capture, "201");
        let Module::Transfer(flow) = matched.module else {
            panic!("not a transfer");
        };
        assert_eq!(
            (
                flow.takeback_dtmf.as_str(),
                flow.moh.as_deref(),
                flow.target_timeout
            ),
            ("*1", Some("default"), 4_000)
        );
        assert_eq!(flows.lookup("9").map(|m| m.module), Some(Module::Resume));
        assert_eq!(config.metaflows.endpoints["alice"].binding_key, '#');
        // Without [metaflows], calls have no feature codes.
        assert!(Config::parse(GOOD, "t")
            .unwrap()
            .metaflows
            .default
            .is_none());
    }

    #[test]
    fn bad_metaflows_are_refused_with_the_key_named() {
        let with = |old: &str, new: &str| error_of(&format!("{GOOD}{}", FLOWS.replace(old, new)));
        assert_eq!(
            with("'2(\\d+)'", "'2(\\d+'"),
            "test.toml: metaflows.patterns[0].match: invalid regular expression: error: unclosed group"
        );
        assert_eq!(
            with("\"transfer\"", "\"park\""),
            "test.toml: metaflows.patterns[0].module: unknown module 'park': use transfer or resume"
        );
        let overlap =
            FLOWS.to_owned() + "[[metaflows.patterns]]\nmatch = '22\\d'\nmodule = \"resume\"\n";
        assert_eq!(
            error_of(&format!("{GOOD}{overlap}")),
            "test.toml: metaflows.patterns[1].match: matches the same digits as patterns[0] (for example '220')"
        );
        assert_eq!(
            with("number = \"9\"", "number = \"25\""),
            "test.toml: metaflows.numbers[0].number: patterns[0] also matches '25'"
        );
        assert_eq!(
            with("moh = \"default\"", "takeback_dtmf = \"*2\""),
            "test.toml: metaflows.patterns[0].complete_dtmf: '*2' is also takeback_dtmf"
        );
        assert_eq!(
            with("listen_on = \"a\"", "binding_key = \"**\""),
            "test.toml: metaflows.binding_key: must be one DTMF character (0-9, *, #, A-D)"
        );
        assert!(with("moh = \"default\"", "mho = \"default\"").contains("unknown field `mho`"));
        assert!(with("listen_on = \"a\"", "listen_on = \"c\"").contains("unknown variant `c`"));
    }

    #[test]
    fn a_missing_password_variable_is_named() {
        let config = Config::parse(
            &GOOD.replace(
                "[[routes]]",
                "password_env = \"ARI_TEST_UNSET_VAR\"\n[[routes]]",
            ),
            "t",
        )
        .unwrap();
        assert_eq!(
            config.nodes[0].password().unwrap_err(),
            "node node1: the environment variable ARI_TEST_UNSET_VAR (its ARI password) is not set"
        );
    }
}
