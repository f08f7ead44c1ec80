//! The end-to-end test harness: a real Asterisk from the lab (`scripts/lab`), the real `ari-transfer`
//! binary, and SIPp phones.
//!
//! Tests of one binary run one at a time ([`serial`]): they share the Asterisk node, and each ends by
//! checking that nothing of the app is left in it. Every SIPp phone gets its own UDP ports, because Asterisk
//! keeps retransmitting to a port for ~32 s after a failed test.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::{sleep, Instant};

pub mod proxy;

/// The lab phones' channel names begin with these (`PJSIP/alice-0000002a`).
pub const ALICE: &str = "PJSIP/alice-";
pub const BOB: &str = "PJSIP/bob-";
pub const CAROL: &str = "PJSIP/carol-";

pub const ARI_USER: &str = "ari-transfer";
pub const ARI_PASSWORD: &str = "ari-transfer-dev";

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Holds the lab for one test.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test's files (config, SIPp traces).
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("ari-transfer-tests").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free UDP port on loopback for a phone's SIP (SIPp picks its own free media ports).
pub fn free_udp_port() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        if port % 2 == 0 && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Asterisk instance of the lab.
#[derive(Debug, Clone)]
pub struct Node {
    pub n: u16,
    pub name: String,
    pub sip_port: u16,
    pub http_port: u16,
}

impl Node {
    pub fn ari_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

fn lab(args: &[&str]) {
    let status = std::process::Command::new("bash")
        .arg(repo().join("scripts/lab"))
        .args(args)
        .status()
        .expect("run scripts/lab");
    assert!(status.success(), "scripts/lab {args:?} failed");
}

/// Node `n`, (re)started fresh the first time a test binary asks for it, so that nothing an earlier run
/// left in it can disturb this one.
pub fn node(n: u16) -> Node {
    static STARTED: StdMutex<Vec<u16>> = StdMutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if !started.contains(&n) {
        lab(&["stop", &n.to_string()]);
        lab(&["start", &n.to_string()]);
        started.push(n);
    }
    node_info(n)
}

/// Lab node `n`'s ports and name (without starting it).
pub fn node_info(n: u16) -> Node {
    Node {
        n,
        name: format!("node{n}"),
        sip_port: 5060 + 100 * (n - 1),
        http_port: 8088 + 100 * (n - 1),
    }
}

/// What an Asterisk CLI command prints on node `node`.
pub fn cli(node: &Node, command: &str) -> String {
    let output = std::process::Command::new("bash")
        .arg(repo().join("scripts/lab"))
        .args(["cli", &node.n.to_string(), command])
        .output()
        .expect("run scripts/lab cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The format Asterisk writes to a channel (`core show channel`): `gsm` while it plays the lab's music on
/// hold, `slin` while it plays a tone, the call's codec (`ulaw`) otherwise.
pub fn write_format(node: &Node, channel_name: &str) -> String {
    cli(node, &format!("core show channel {channel_name}"))
        .lines()
        .find_map(|l| l.trim().strip_prefix("WriteFormat:"))
        .map(|f| f.trim().to_owned())
        .unwrap_or_default()
}

/// The name of the channel whose name starts with `prefix` (e.g. `PJSIP/bob-`), waiting for it.
pub async fn channel_named(node: &Node, prefix: &str) -> String {
    channel_field(node, prefix, "name").await
}

/// The id of the channel whose name starts with `prefix`, waiting for it.
pub async fn channel_id_named(node: &Node, prefix: &str) -> String {
    channel_field(node, prefix, "id").await
}

async fn channel_field(node: &Node, prefix: &str, field: &str) -> String {
    let what = format!("a channel named {prefix}...");
    eventually(Duration::from_secs(10), &what, || async {
        let channels = ari_get(node, "/channels").await;
        channels.as_array()?.iter().find_map(|c| {
            let name = c["name"].as_str()?;
            name.starts_with(prefix)
                .then(|| c[field].as_str().map(str::to_owned))
                .flatten()
        })
    })
    .await
}

/// Asserts that the app's `/metrics` (at `base`, `http://127.0.0.1:PORT`) has each of `lines`.
pub async fn assert_metrics(base: &str, lines: &[&str]) {
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("the app answers /metrics")
        .text()
        .await
        .unwrap_or_default();
    for line in lines {
        assert!(metrics.contains(line), "no {line} in /metrics:\n{metrics}");
    }
}

/// Waits until the channel named `prefix`... is ringing: its phone answered the INVITE with 180, so a
/// CANCEL from now on reaches a phone that saw the call.
pub async fn ringing(node: &Node, prefix: &str) {
    in_state(node, prefix, "Ringing").await
}

/// Waits until the channel named `prefix`... is in `state` (`Ringing`, `Up`) in Asterisk.
pub async fn in_state(node: &Node, prefix: &str, state: &str) {
    let what = format!("{prefix}... to be {state}");
    eventually(Duration::from_secs(10), &what, || async {
        let channels = ari_get(node, "/channels").await;
        channels
            .as_array()?
            .iter()
            .any(|c| {
                c["name"].as_str().is_some_and(|n| n.starts_with(prefix)) && c["state"] == state
            })
            .then_some(())
    })
    .await
}

/// Waits until Asterisk writes `format` to the channel named `prefix`... (see [`write_format`]).
pub async fn wait_for_write_format(node: &Node, prefix: &str, format: &str) {
    let name = channel_named(node, prefix).await;
    let what = format!("{name} to be written {format}");
    eventually(Duration::from_secs(10), &what, || async {
        (write_format(node, &name) == format).then_some(())
    })
    .await
}

/// SIGKILLs node `n` (a crash), and starts it again.
pub fn kill_node(n: u16) {
    lab(&["kill", &n.to_string()]);
}

pub fn start_node(n: u16) {
    lab(&["start", &n.to_string()]);
}

pub fn stop_node(n: u16) {
    lab(&["stop", &n.to_string()]);
}

/// `GET /ari{path}` on a node.
pub async fn ari_get(node: &Node, path: &str) -> Value {
    let url = format!("{}/ari{path}", node.ari_url());
    let response = reqwest::Client::new()
        .get(&url)
        .basic_auth(ARI_USER, Some(ARI_PASSWORD))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Polls `probe` every 50 ms until it gives a value or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// A channel variable (or function, e.g. `CHANNEL(pjsip,local_tag)`) of a channel.
pub async fn ari_variable(node: &Node, channel: &str, variable: &str) -> String {
    let value = ari_get(
        node,
        &format!("/channels/{channel}/variable?variable={variable}"),
    )
    .await;
    value["value"].as_str().unwrap_or_default().to_owned()
}

/// The id of the channel whose SIP Call-ID is `call_id`.
pub async fn channel_with_call_id(node: &Node, call_id: &str) -> String {
    let what = format!("a channel with Call-ID {call_id}");
    eventually(Duration::from_secs(10), &what, || async {
        let channels = ari_get(node, "/channels").await;
        channels
            .as_array()?
            .iter()
            .find(|c| c["protocol_id"] == call_id)
            .and_then(|c| c["id"].as_str().map(str::to_owned))
    })
    .await
}

/// The names of the channels in each bridge of the node.
pub async fn bridges_by_channel_name(node: &Node) -> Vec<Vec<String>> {
    let channels = ari_get(node, "/channels").await;
    let name_of = |id: &str| {
        channels
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| format!("<gone {id}>"))
    };
    let bridges = ari_get(node, "/bridges").await;
    bridges
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mut names: Vec<String> = b["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| name_of(id.as_str().unwrap()))
                .collect();
            names.sort();
            names
        })
        .collect()
}

/// Waits until a bridge holds exactly channels whose names start with `prefixes` (e.g. `PJSIP/alice-`).
pub async fn wait_for_bridge(node: &Node, prefixes: &[&str]) -> Vec<String> {
    let mut wanted: Vec<&str> = prefixes.to_vec();
    wanted.sort();
    eventually(
        Duration::from_secs(10),
        &format!("a bridge of {wanted:?}"),
        || async {
            bridges_by_channel_name(node)
                .await
                .into_iter()
                .find(|names| {
                    names.len() == wanted.len()
                        && names
                            .iter()
                            .zip(&wanted)
                            .all(|(name, prefix)| name.starts_with(prefix))
                })
        },
    )
    .await
}

/// `parties` (channel name prefixes) talk in one bridge, and `listener` hears the call again, no music
/// and no tone (its write format is the call's codec, `ulaw`).
pub async fn talking(node: &Node, parties: &[&str], listener: &str) {
    wait_for_bridge(node, parties).await;
    wait_for_write_format(node, listener, "ulaw").await;
}

/// The end of a test: every phone's scenario passed (each got the BYE it expects or sent its own), and
/// nothing is left in the node.
pub async fn ends(node: &Node, phones: Vec<Phone>) {
    for phone in phones {
        phone.expect_success().await;
    }
    assert_nothing_left(node).await;
}

/// After a test: no channel and no bridge is left in the node (allowing a few seconds for hangups).
pub async fn assert_nothing_left(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channels = ari_get(node, "/channels").await;
        let bridges = ari_get(node, "/bridges").await;
        let clean =
            channels.as_array().unwrap().is_empty() && bridges.as_array().unwrap().is_empty();
        if clean {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind in {}: channels {channels} bridges {bridges}",
            node.name
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no client subscribes the `ari-transfer` application on the node at `url`.
pub async fn wait_application_free(url: &str) {
    let what = format!("the Stasis application to be free on {url}");
    eventually(Duration::from_secs(10), &what, || async {
        let response = reqwest::Client::new()
            .get(format!("{url}/ari/applications/ari-transfer"))
            .basic_auth(ARI_USER, Some(ARI_PASSWORD))
            .send()
            .await
            .ok()?;
        (response.status() == 404).then_some(())
    })
    .await
}

/// Settings of the app under test.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub ring_timeout_secs: f64,
    /// `transfers.recall_transferer` (B6).
    pub recall_transferer: bool,
    /// `transfers.refer_barrier`: off only to reproduce Asterisk's REFER race (the load benchmark).
    pub refer_barrier: bool,
    /// The node list as (name, url, username, password env var).
    pub nodes: Vec<(String, String, String, String)>,
    /// `[[routes]]` as (match, dial), in order.
    pub routes: Vec<(String, String)>,
    /// Whether each node gets a trunk to every other one (the lab's endpoint `nodeM` reaches node M).
    pub trunks: bool,
    /// `nodes[].max_connections` of every node, if not the default.
    pub max_connections: Option<usize>,
    /// More of the config file, appended as it is (e.g. a `[metaflows]` table).
    pub extra: String,
    /// More environment variables for the app (e.g. API tokens).
    pub env: Vec<(String, String)>,
    /// `run --log-format json` instead of text.
    pub json_logs: bool,
}

impl AppSettings {
    pub fn for_node(node: &Node) -> AppSettings {
        AppSettings::for_nodes(&[node])
    }

    /// The app on several nodes, each with a trunk to every other one.
    pub fn for_nodes(nodes: &[&Node]) -> AppSettings {
        AppSettings {
            ring_timeout_secs: 30.0,
            recall_transferer: true,
            refer_barrier: true,
            nodes: nodes
                .iter()
                .map(|node| {
                    (
                        node.name.clone(),
                        node.ari_url(),
                        ARI_USER.to_owned(),
                        "ARI_PASSWORD".to_owned(),
                    )
                })
                .collect(),
            routes: vec![("[a-z]+".to_owned(), "PJSIP/{exten}".to_owned())],
            trunks: nodes.len() > 1,
            max_connections: None,
            extra: String::new(),
            env: Vec::new(),
            json_logs: false,
        }
    }

    /// The config file of these settings, the app's HTTP server on `http_port`.
    pub fn toml(&self, http_port: u16) -> String {
        let mut text = format!(
            "app = \"ari-transfer\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [timeouts]\nring = {}\n\
             [transfers]\nrecall_transferer = {}\nrefer_barrier = {}\n",
            self.ring_timeout_secs, self.recall_transferer, self.refer_barrier
        );
        for (pattern, dial) in &self.routes {
            text.push_str(&format!(
                "[[routes]]\nmatch = {pattern:?}\ndial = {dial:?}\n"
            ));
        }
        for (name, url, user, env) in &self.nodes {
            text.push_str(&format!(
                "[[nodes]]\nname = \"{name}\"\nurl = \"{url}\"\nusername = \"{user}\"\npassword_env = \"{env}\"\n"
            ));
            if let Some(max) = self.max_connections {
                text.push_str(&format!("max_connections = {max}\n"));
            }
            if self.trunks {
                let peers: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|(peer, ..)| peer)
                    .filter(|peer| *peer != name)
                    .map(|peer| format!("{peer} = \"{peer}\""))
                    .collect();
                text.push_str(&format!("trunks = {{ {} }}\n", peers.join(", ")));
            }
        }
        text.push_str(&self.extra);
        text
    }
}

/// The `ari-transfer` binary, running with a generated config. Killed on drop, and waited for, so that
/// the next test's app is the only one connected to the node.
pub struct App {
    child: std::process::Child,
    pub http_port: u16,
    pub stderr_path: PathBuf,
}

impl App {
    /// Starts the app and waits until `/readyz` says every node is connected. An app of an earlier test
    /// must be gone from Asterisk first: the late close of its websocket would unregister this one's
    /// application.
    pub async fn start(dir: &Path, settings: &AppSettings) -> App {
        for (_, url, _, _) in &settings.nodes {
            wait_application_free(url).await;
        }
        let app = App::spawn(dir, settings, ARI_PASSWORD);
        app.wait_ready(true).await;
        app
    }

    /// Starts the app after an earlier run was killed while its calls were up: their channels keep the
    /// Stasis application registered, so it cannot be waited for to be free; a moment lets Asterisk see
    /// the killed run's websocket close first.
    pub async fn take_over(dir: &Path, settings: &AppSettings) -> App {
        sleep(Duration::from_millis(500)).await;
        let app = App::spawn(dir, settings, ARI_PASSWORD);
        app.wait_ready(true).await;
        app
    }

    /// Starts the app without waiting for it.
    pub fn spawn(dir: &Path, settings: &AppSettings, password: &str) -> App {
        std::fs::create_dir_all(dir).unwrap();
        let http_port = free_tcp_port();
        let config = dir.join("ari-transfer.toml");
        std::fs::write(&config, settings.toml(http_port)).unwrap();
        let stderr_path = dir.join("app.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let format = if settings.json_logs { "json" } else { "text" };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ari-transfer"))
            .args(["run", "--log-format", format, "--config"])
            .arg(&config)
            .env("ARI_PASSWORD", password)
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,ari_transfer=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ari-transfer");
        App {
            child,
            http_port,
            stderr_path,
        }
    }

    pub async fn readyz(&self) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let response = reqwest::get(&url).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Waits until `/readyz` reports `ready`.
    pub async fn wait_ready(&self, ready: bool) {
        let what = format!("/readyz ready={ready}; app log:\n{}", self.log());
        eventually(Duration::from_secs(15), &what, || async {
            let (status, body) = self.readyz().await?;
            (body["ready"] == ready && (status == 200) == ready).then_some(())
        })
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the app did not exit");
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SIPp phone running one scenario of `tests/sipp/`.
pub struct Phone {
    child: Child,
    pub name: String,
    pub port: u16,
    trace: PathBuf,
    log: PathBuf,
}

impl Phone {
    /// Starts `scenario` as user `from`, calling (or registering as) `service`, on its own ports.
    /// `extra` are more SIPp arguments, such as `-set hold_ms 2000`.
    pub fn start(
        dir: &Path,
        node: &Node,
        scenario: &str,
        service: &str,
        from: &str,
        port: u16,
        extra: &[&str],
    ) -> Phone {
        let name = format!("{}-{}", scenario.trim_end_matches(".xml"), port);
        let trace = dir.join(format!("{name}.messages.log"));
        let errors = dir.join(format!("{name}.errors.log"));
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new("sipp");
        command
            .arg(format!("127.0.0.1:{}", node.sip_port))
            .arg("-sf")
            .arg(repo().join("tests/sipp").join(scenario))
            .args(["-s", service, "-key", "from", from])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
            .args(["-trace_msg", "-message_file"])
            .arg(&trace)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .args(["-trace_logs", "-log_file"])
            .arg(&log);
        command.args(extra);
        // SIPp's own complaints (a message it could not send, a bad scenario) go to stderr.
        let stderr = std::fs::File::create(dir.join(format!("{name}.stderr")))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sipp (is the sip-tester package installed? run scripts/lab install)");
        Phone {
            child,
            name,
            port,
            trace,
            log,
        }
    }

    /// A phone registered as `user` on its own port, then running `scenario` there (it receives calls).
    pub async fn callee(
        dir: &Path,
        node: &Node,
        user: &str,
        scenario: &str,
        extra: &[&str],
    ) -> Phone {
        let port = free_udp_port();
        Phone::register(dir, node, user, port).await;
        Phone::start(dir, node, scenario, user, user, port, extra)
    }

    /// A phone registered as `user` that answers after ringing `ring_ms` (0: the scenario's 300 ms),
    /// talks for `hold_ms`, and hangs up.
    pub async fn answers_then_hangs_up(
        dir: &Path,
        node: &Node,
        user: &str,
        ring_ms: u32,
        hold_ms: u32,
    ) -> Phone {
        let (ring, hold) = (ring_ms.to_string(), hold_ms.to_string());
        let args = ["-set", "ring_ms", &ring, "-set", "hold_ms", &hold];
        Phone::callee(dir, node, user, "uas_answer_then_bye.xml", &args).await
    }

    /// Alice's phone running `scenario`, calling `exten`.
    pub fn caller(dir: &Path, node: &Node, scenario: &str, exten: &str, extra: &[&str]) -> Phone {
        Phone::start(dir, node, scenario, exten, "alice", free_udp_port(), extra)
    }

    /// alice calling bob (`dtmf_uac.xml`): she presses `digits` (RFC 4733) 3 s after the answer and hangs
    /// up `hangup_after_ms` after them (0: she waits for the network's BYE).
    pub fn presses(dir: &Path, node: &Node, digits: &str, hangup_after_ms: u32) -> Phone {
        let hangup = hangup_after_ms.to_string();
        let args = [
            "-set",
            "digits",
            digits,
            "-set",
            "dtmf_after_ms",
            "3000",
            "-set",
            "hangup_after_ms",
            &hangup,
        ];
        Phone::caller(dir, node, "dtmf_uac.xml", "bob", &args)
    }

    /// alice's phone calling bob and transferring him blind to `target` (`xfer_uac_blind.xml`); its final
    /// NOTIFY must say `status`. `extra` are more SIPp arguments (e.g. `-set talk_after_ms 2000`).
    pub fn blind_transferer(
        dir: &Path,
        node: &Node,
        target: &str,
        status: &str,
        extra: &[&str],
    ) -> Phone {
        let mut args = vec!["-key", "target", target, "-set", "expect_status", status];
        args.extend(extra);
        Phone::caller(dir, node, "xfer_uac_blind.xml", "bob", &args)
    }

    /// Registers `user` with a contact on `port`, so that Asterisk can dial `PJSIP/user` to that port.
    pub async fn register(dir: &Path, node: &Node, user: &str, port: u16) {
        Phone::start(dir, node, "register.xml", user, user, port, &[])
            .expect_success()
            .await;
    }

    /// Waits for the scenario to end and asserts it passed: every message it expects came, in order.
    pub async fn expect_success(self) {
        self.finish().await;
    }

    /// Like `expect_success`, and returns the NOTIFYs the phone received.
    pub async fn finish(mut self) -> Vec<String> {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not finish; trace:\n{}",
                    self.name,
                    self.trace_text()
                )
            })
            .unwrap();
        assert!(
            status.success(),
            "{} failed ({status}); log: {:?}; SIPp said: {}; SIP trace:\n{}",
            self.name,
            self.logged(),
            self.complaints(),
            self.trace_text()
        );
        self.notifies()
    }

    /// The lines the scenario logged (`<log>` actions), such as `NOTIFY sipfrag 100 active`.
    pub fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The sipfrag status and subscription state of every NOTIFY the phone received, in order.
    pub fn notifies(&self) -> Vec<String> {
        self.logged()
            .iter()
            .filter_map(|l| l.split("NOTIFY sipfrag ").nth(1))
            .map(|s| s.trim().to_owned())
            .collect()
    }

    /// Waits until the scenario logged a line containing `text`.
    pub async fn wait_logged(&self, text: &str) {
        let what = format!("{} to log {text:?}", self.name);
        eventually(Duration::from_secs(20), &what, || async {
            self.logged().iter().any(|l| l.contains(text)).then_some(())
        })
        .await
    }

    /// The SIP messages the phone sent and received so far.
    pub fn trace_text(&self) -> String {
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }

    /// What SIPp wrote to stderr and its error log (a timeout, a message it did not expect).
    fn complaints(&self) -> String {
        let read = |suffix: &str| {
            let path = self.trace.with_file_name(format!("{}{suffix}", self.name));
            std::fs::read_to_string(path).unwrap_or_default()
        };
        format!("{}{}", read(".stderr"), read(".errors.log"))
    }
}

/// The `From:` header of the first INVITE a phone received: who it was shown as calling.
pub fn invite_from(phone: &Phone) -> String {
    let trace = phone.trace_text();
    let invite = trace
        .find("\nINVITE sip:")
        .map(|at| &trace[at..])
        .unwrap_or_default();
    invite
        .lines()
        .find(|l| l.starts_with("From:"))
        .unwrap_or_default()
        .to_owned()
}

/// What a transferring phone hears: NOTIFY 100 at once, then the outcome.
pub fn notified(status: u16) -> Vec<String> {
    vec!["100 active".to_owned(), format!("{status} terminated")]
}

/// `-key`s for an attended REFER whose Replaces names the given dialog, expecting `status`.
pub fn replaces<'a>(
    target: &'a str,
    (call_id, to_tag, from_tag): (&'a str, &'a str, &'a str),
    status: &'a str,
) -> Vec<&'a str> {
    vec![
        "-key",
        "target",
        target,
        "-key",
        "replaces_call_id",
        call_id,
        "-key",
        "replaces_to_tag",
        to_tag,
        "-key",
        "replaces_from_tag",
        from_tag,
        "-set",
        "expect_status",
        status,
    ]
}

/// The transferer `from`'s consult call to `to` on `node`, with a Call-ID and From tag the test chose;
/// returns the phone and the Replaces parameters naming its dialog: (Call-ID with '@' escaped, to-tag,
/// from-tag).
pub async fn consult_call(
    dir: &Path,
    node: &Node,
    name: &str,
    from: &str,
    to: &str,
) -> (Phone, String, String, String) {
    let call_id = format!("{name}-{}@127.0.0.1", std::process::id());
    let from_tag = format!("{name}-tag");
    let consult = Phone::start(
        dir,
        node,
        "xfer_uac_consult.xml",
        to,
        from,
        free_udp_port(),
        &["-key", "from_tag", &from_tag, "-cid_str", &call_id],
    );
    wait_for_bridge(node, &[&format!("PJSIP/{from}-"), &format!("PJSIP/{to}-")]).await;
    let channel = channel_with_call_id(node, &call_id).await;
    let to_tag = ari_variable(node, &channel, "CHANNEL(pjsip,local_tag)").await;
    assert!(!to_tag.is_empty());
    (consult, call_id.replace('@', "%40"), to_tag, from_tag)
}
