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
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use crate::engine::{Route, Trunk};

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransfersFile {
    #[serde(default = "default_true")]
    recall_transferer: bool,
}

impl Default for TransfersFile {
    fn default() -> Self {
        TransfersFile {
            recall_transferer: true,
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
    /// The SIP trunks between nodes, for transfers across nodes.
    pub trunks: Vec<Trunk>,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub url: Url,
    pub username: String,
    pub password_env: String,
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
        Ok(Config {
            app: file.app,
            http_listen,
            nodes,
            routes,
            ring_timeout: (ring * 1000.0).round() as u64,
            recall_transferer: file.transfers.recall_transferer,
            trunks,
        })
    }
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
