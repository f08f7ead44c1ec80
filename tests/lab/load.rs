//! Load runs through a real Asterisk (lab node 5) and the real `ari-transfer` binary, shared by the load
//! benchmark (`benches/load.rs`) and its end-to-end test (`tests/e2e_load.rs`), plus the lab plumbing the
//! transfer benchmark (`benches/transfers.rs`) shares: the app binary at its default log level, `/proc`
//! CPU figures, SIPp `-trace_msg` parsing, a node's state over ARI, its logs after a crash.
//!
//! Included next to the harness (`mod lab;`) with `#[path = ".../tests/lab/load.rs"] mod load;`, so it
//! reaches it as `crate::lab`.
//!
//! A run ([`run`]): node 5 is (re)started with the overlay `tests/lab/load/` (one endpoint per role and
//! transfer kind, each with a static contact: see its `pjsip.conf`) and its RTP range widened to
//! [`RTP_START`]-[`RTP_END`] (see [`widen_rtp`]); the app (the binary of the build profile) connects to
//! it; one SIPp UAS process per called role (`tests/lab/load/uas.xml`) answers every call to its endpoint;
//! one SIPp UAC process per transfer kind generates that kind's calls with SIPp's own `-r`/`-m`/`-l`, at
//! its share of the rate:
//!
//! * blind: `tests/sipp/xfer_uac_blind.xml` (B1): bcaller calls bxferee, REFERs him to btarget, who
//!   answers, talks and hangs up;
//! * attended: `tests/lab/load/attended_uac.xml` (A1), both of the transferer's dialogs in one SIPp call:
//!   acaller consults aconsult, calls axferee, REFERs axferee's call with Replaces naming the consult
//!   dialog; aconsult talks on with axferee and hangs up;
//! * feature: `tests/sipp/dtmf_uac.xml` (D1, D2): fcaller calls fxferee, presses `*271` (RFC 4733), talks
//!   with ftarget once ftarget answered and hangs up, which joins fxferee and ftarget; ftarget hangs up.
//!
//! Each transfer scenario lives about `calls / rate` seconds (half before the transfer, half after), so
//! that about `calls` of them are in flight at once. Counts come from the SIPp processes' `-trace_stat`
//! files (calls created, successful, failed, by reason), REFER outcomes and REFER-to-final-NOTIFY
//! latencies from the transferring phones' `-trace_msg` files (read line by line), CPU from `/proc`.
//! A run watches node 5: when its Asterisk is gone or ARI stops answering, it keeps the node's logs,
//! prints their tail (and `dmesg`'s segfault lines), restarts the node and goes on, up to a limit.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{self, free_tcp_port, free_udp_port, wait_application_free, AppSettings, Node};
use crate::lab::{ARI_PASSWORD, ARI_USER};

// ------------------------------------------------------------------------------------------------
// lab plumbing (also used by benches/transfers.rs)
// ------------------------------------------------------------------------------------------------

/// How the benchmark binary, and so the `ari-transfer` binary it runs, was built; for the report.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "build profile: debug (unoptimized); the ari-transfer binary is built with it; app log level \
         info (its default)"
    } else {
        "build profile: optimized (cargo bench: the bench profile, which inherits release); the \
         ari-transfer binary is built with it; app log level info (its default)"
    }
}

/// `scripts/lab ARGS`, with `overlay` (a directory of extra Asterisk config, relative to the repo) applied
/// to the nodes it starts (`ARI_TRANSFER_LAB_OVERLAY`).
pub fn run_lab(overlay: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(lab::repo().join("scripts/lab"))
        .args(args)
        .env("ARI_TRANSFER_LAB_OVERLAY", lab::repo().join(overlay))
        .status()
        .map_err(|e| format!("run scripts/lab: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("scripts/lab {args:?} failed ({status})"))
    }
}

/// The lab's per-node directories (`scripts/lab`'s `ARI_TRANSFER_LAB`).
pub fn lab_dir() -> PathBuf {
    std::env::var("ARI_TRANSFER_LAB")
        .unwrap_or_else(|_| "/tmp/ari-transfer-lab".into())
        .into()
}

/// The PID of the node's Asterisk while it runs (from the lab's pid file; a zombie counts as gone).
pub fn asterisk_pid(node: &Node) -> Option<u32> {
    let dir = lab_dir().join(&node.name);
    let pid: u32 = std::fs::read_to_string(dir.join("lab.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = dir.join("etc/asterisk.conf");
    if !String::from_utf8_lossy(&cmdline).contains(conf.to_str()?) {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(pid)
}

/// Copies the node's Asterisk logs (`console.log`, `messages`) into `into` (`scripts/lab start` starts
/// them afresh), and returns the last line of its console.
pub fn keep_node_logs(node: &Node, into: &Path) -> String {
    let log_dir = lab_dir().join(&node.name).join("log");
    let console = std::fs::read_to_string(log_dir.join("console.log")).unwrap_or_default();
    let _ = std::fs::create_dir_all(into);
    for file in ["console.log", "messages"] {
        let _ = std::fs::copy(log_dir.join(file), into.join(file));
    }
    console
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(empty)")
        .trim()
        .to_owned()
}

/// The WARNING and ERROR lines of an Asterisk `messages` log, grouped by what they say (timestamp,
/// thread and call ids dropped, digits as N), most frequent first.
pub fn log_problems(messages: &str) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in messages.lines() {
        let Some((_, rest)) = line.split_once("] ") else {
            continue;
        };
        let Some((tag, text)) = rest.split_once(' ') else {
            continue;
        };
        let level = tag.split('[').next().unwrap_or_default();
        if level != "WARNING" && level != "ERROR" {
            continue;
        }
        let mut key = format!("{level} ");
        let mut digits = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                if !digits {
                    key.push('N');
                }
                digits = true;
            } else {
                key.push(c);
                digits = false;
            }
        }
        *counts.entry(key).or_default() += 1;
    }
    let mut problems: Vec<(String, usize)> = counts.into_iter().collect();
    problems.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    problems
}

/// `GET /ari{path}` on the node, an error (instead of a panic) when it does not answer within 5 s.
pub async fn ari_try_get(node: &Node, path: &str) -> Result<Value, String> {
    let url = format!("{}/ari{path}", node.ari_url());
    let response = reqwest::Client::new()
        .get(&url)
        .basic_auth(ARI_USER, Some(ARI_PASSWORD))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    response.json().await.map_err(|e| format!("GET {url}: {e}"))
}

pub enum NodeState {
    Clean,
    /// channel names and bridge ids still there
    Left(String),
    /// ARI does not answer (Asterisk crashed)
    Down(String),
}

/// Whether the node is clean, allowing `within` for hangups to finish.
pub async fn node_state(node: &Node, within: Duration) -> NodeState {
    let deadline = Instant::now() + within;
    loop {
        let (channels, bridges) = match (
            ari_try_get(node, "/channels").await,
            ari_try_get(node, "/bridges").await,
        ) {
            (Ok(channels), Ok(bridges)) => (channels, bridges),
            (Err(e), _) | (_, Err(e)) => return NodeState::Down(e),
        };
        let channels = channels.as_array().cloned().unwrap_or_default();
        let bridges = bridges.as_array().cloned().unwrap_or_default();
        if channels.is_empty() && bridges.is_empty() {
            return NodeState::Clean;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = channels
                .iter()
                .map(|c| format!("{} ({})", c["name"], c["state"]))
                .collect();
            let bridges: Vec<String> = bridges
                .iter()
                .map(|b| format!("{} {} {}", b["id"], b["bridge_class"], b["channels"]))
                .collect();
            return NodeState::Left(format!("channels {names:?}, bridges {bridges:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `ari-transfer` binary of this build profile at its default log level (info), killed and waited
/// for on drop.
pub struct App {
    child: Child,
    log: PathBuf,
    readyz: String,
}

impl App {
    /// Starts the app with `settings` once no earlier app holds the Stasis application on its nodes, and
    /// waits until it is ready.
    pub async fn start(dir: &Path, settings: &AppSettings) -> Result<App, String> {
        App::start_on(dir, settings, None).await
    }

    /// [`App::start`] with the HTTP listener on `port` (default: a free one).
    pub async fn start_on(
        dir: &Path,
        settings: &AppSettings,
        port: Option<u16>,
    ) -> Result<App, String> {
        for (_, url, _, _) in &settings.nodes {
            wait_application_free(url).await;
        }
        let http_port = port.unwrap_or_else(free_tcp_port);
        let config = dir.join("ari-transfer.toml");
        std::fs::write(&config, settings.toml(http_port)).map_err(|e| e.to_string())?;
        let log = dir.join("app.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_ari-transfer"))
            .args(["run", "--config"])
            .arg(&config)
            .env("ARI_PASSWORD", ARI_PASSWORD)
            .envs(settings.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn ari-transfer: {e}"))?;
        let app = App {
            child,
            log,
            readyz: format!("http://127.0.0.1:{http_port}/readyz"),
        };
        app.wait_ready().await?;
        Ok(app)
    }

    /// The app's HTTP root (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        self.readyz.trim_end_matches("/readyz").to_owned()
    }

    /// Waits until `/readyz` answers 200 (every node connected and synced).
    pub async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(&self.readyz).await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "ari-transfer not ready within 30 s; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the app ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of a live process so far: (utime+stime in clock ticks, sum of its live threads' run time in
/// ns).
pub fn cpu_of(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name in parentheses: state is field 3, utime 14, stime 15
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let mut ns = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some((ticks, ns))
}

/// The peak resident set size of a live process (`VmHWM`), in KiB.
pub fn max_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The whole machine's CPU time so far from `/proc/stat`, in clock ticks: (busy, total) over all cores
/// (busy = total minus idle and iowait).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Clock ticks per second, and whether it was assumed.
pub fn clock_ticks() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .map_or((100, true), |t| (t, false))
}

/// What a command prints, trimmed ("" if it cannot run).
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// "N CPUs (nproc), <model>; kernel <release>".
pub fn machine() -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    format!(
        "{} CPUs (nproc), {cpu_model}; kernel {}",
        command_line("nproc", &[]),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

/// SIPp's version line, e.g. "SIPp v3.6.1-SCTP-PCAP-RTPSTREAM.".
pub fn sipp_version() -> String {
    command_line("sipp", &["-v"])
        .lines()
        .find(|l| l.contains("SIPp v"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Microseconds since 1970 of a SIPp trace timestamp `YYYY-MM-DD HH:MM:SS.micro` (local time; only
/// differences matter).
pub fn parse_stamp(stamp: &str) -> Option<i64> {
    let (date, time) = stamp.trim().split_once(' ')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, micro) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    // days from civil (proleptic Gregorian), Howard Hinnant's algorithm
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let micro: i64 = format!("{micro:0<6}")[..6].parse().ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micro)
}

/// One message of a SIPp `-trace_msg` file.
pub struct Traced {
    /// µs, see [`parse_stamp`]
    pub at: i64,
    pub sent: bool,
    pub lines: Vec<String>,
}

impl Traced {
    pub fn start_line(&self) -> &str {
        self.lines
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// A NOTIFY's sipfrag status line (`SIP/2.0 200 OK`), "" if none.
    pub fn sipfrag(&self) -> &str {
        self.lines
            .iter()
            .find(|l| l.starts_with("SIP/2.0 "))
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// A NOTIFY whose `Subscription-State` is terminated (the final one of a REFER).
    pub fn is_final_notify(&self) -> bool {
        self.start_line().starts_with("NOTIFY ")
            && self
                .header("Subscription-State")
                .is_some_and(|s| s.to_ascii_lowercase().starts_with("terminated"))
    }
}

/// Calls `each` with every message of a SIPp `-trace_msg` file, in order, reading it line by line (a
/// load run's traces are large).
pub fn for_each_traced(trace: impl BufRead, mut each: impl FnMut(Traced)) {
    let mut current: Option<Traced> = None;
    let mut lines = trace.lines().map_while(Result::ok);
    while let Some(line) = lines.next() {
        if let Some(stamp) = line.strip_prefix("-----") {
            if let Some(at) = parse_stamp(stamp.trim_start_matches('-')) {
                if let Some(done) = current.take() {
                    each(done);
                }
                let direction = lines.next().unwrap_or_default();
                current = Some(Traced {
                    at,
                    sent: direction.contains("message sent"),
                    lines: Vec::new(),
                });
                continue;
            }
        }
        if let Some(message) = current.as_mut() {
            message.lines.push(line);
        }
    }
    if let Some(done) = current {
        each(done);
    }
}

/// The nearest-rank `q` quantile (0 < q <= 1) of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

// ------------------------------------------------------------------------------------------------
// the load run
// ------------------------------------------------------------------------------------------------

/// The lab node of the load runs (the e2e tests use 1 and 2, the transfer benchmark 3 and 4).
pub const NODE: u16 = 5;
/// The Asterisk overlay of the load runs: the load endpoints, each with its UAS process's port.
pub const OVERLAY: &str = "tests/lab/load";
/// Node 5's RTP range during a load run (the lab gives every node 1000 ports, 500 channels).
pub const RTP_START: u16 = 20000;
pub const RTP_END: u16 = 29999;
/// The feature codes of the app ([metaflows]).
const METAFLOWS: &str = include_str!("load/metaflows.toml");
/// The feature-code target's extension (routed to ftarget), and what the transferor presses.
const FEATURE_EXTEN: &str = "71";
const FEATURE_DIGITS: &str = "*271";
/// How long the transferees and the consulted party ring before they answer.
const RING_MS: u64 = 100;
/// How long the blind and feature-code targets ring: part of every blind latency figure.
const TARGET_RING_MS: u64 = 10;
/// The feature-code transferor hangs up this long after its last digit: after the digit timeout (1 s)
/// the target is dialed, rings and answers, so the transferor usually talks to it first (D2); if it
/// answers later, the transferor left while it rang (D3), which completes the transfer on the answer too.
const FEATURE_HANGUP_AFTER_MS: u64 = 2500;
/// The attended transferer's main Call-ID: no '@' (it goes unescaped into the Replaces), and a leading 0
/// that tells its BYE from the consult dialog's (Call-ID `1///...`; see attended_uac.xml).
const ATTENDED_CALL_ID: &str = "0-%u-%p";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Blind,
    Attended,
    Feature,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Blind, Kind::Attended, Kind::Feature];

    fn index(self) -> usize {
        self as usize
    }

    /// The transferring phone, the transferee, the target or consulted party (endpoints of the overlay).
    fn endpoints(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Blind => ("bcaller", "bxferee", "btarget"),
            Kind::Attended => ("acaller", "axferee", "aconsult"),
            Kind::Feature => ("fcaller", "fxferee", "ftarget"),
        }
    }

    /// What the third party is called.
    fn other_role(self) -> &'static str {
        match self {
            Kind::Attended => "consulted",
            Kind::Blind | Kind::Feature => "target",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Blind => "blind",
            Kind::Attended => "attended",
            Kind::Feature => "feature",
        })
    }
}

/// What a load run does.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Transfer scenarios in flight at once: each lives `calls / rate` seconds.
    pub calls: u32,
    /// Transfers started per second, all kinds together.
    pub rate: f64,
    /// How long new transfers are started.
    pub duration: Duration,
    /// Weights of blind, attended and feature-code transfers.
    pub mix: [u32; 3],
    /// `transfers.refer_barrier` of the app.
    pub refer_barrier: bool,
    /// `nodes[].max_connections` of the app, if not its default.
    pub max_connections: Option<usize>,
    /// After this many Asterisk crashes (each followed by a restart of the node) the run stops.
    pub max_crashes: u32,
    /// More of the app's config file (e.g. accounts and webhooks), and environment variables for it.
    pub app_extra: String,
    pub app_env: Vec<(String, String)>,
    /// The app's HTTP port (default: a free one), for clients that connect while the run goes.
    pub http_port: Option<u16>,
}

/// The phones' timing of a profile, in ms.
#[derive(Debug, Clone, Copy)]
struct Timings {
    /// a transfer scenario's life, first INVITE to last BYE
    life: u64,
    /// blind and attended: the REFER this long after the (main) call is answered
    xfer_after: u64,
    /// the blind target talks this long after it answered, then hangs up
    target_hold: u64,
    /// the consulted party talks this long after it answered (before and after the transfer)
    consult_hold: u64,
    /// the attended transferee hangs up after this only if nobody did before (a failed transfer)
    attended_xferee_hold: u64,
    /// feature: the digits this long after the call is answered
    dtmf_after: u64,
    /// the feature-code target talks this long after it answered
    feature_target_hold: u64,
    /// SIPp's per-recv timeout: a phone that waits longer for a message fails its call (and hangs up)
    recv_timeout: u64,
}

impl Profile {
    fn weight(&self) -> u32 {
        self.mix.iter().sum()
    }

    /// Transfers of `kind` per second.
    pub fn rate_of(&self, kind: Kind) -> f64 {
        self.rate * f64::from(self.mix[kind.index()]) / f64::from(self.weight().max(1))
    }

    /// Transfers of `kind` the run starts (SIPp `-m`).
    pub fn count_of(&self, kind: Kind) -> u64 {
        (self.rate_of(kind) * self.duration.as_secs_f64()).round() as u64
    }

    /// `kind`'s share of the concurrent calls, SIPp's `-l` for its transferring phones.
    fn limit_of(&self, kind: Kind) -> u64 {
        let share =
            f64::from(self.calls) * f64::from(self.mix[kind.index()]) / f64::from(self.weight());
        (share.ceil() as u64).max(1)
    }

    pub fn kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.count_of(*k) > 0)
            .collect()
    }

    fn timings(&self) -> Timings {
        let life = (f64::from(self.calls) / self.rate * 1000.0).round() as u64;
        let half = life / 2;
        let xfer_after = half.max(500);
        let after = (life - half).max(1000);
        Timings {
            life,
            xfer_after,
            target_hold: after,
            consult_hold: xfer_after + after,
            attended_xferee_hold: xfer_after + after + 10_000,
            dtmf_after: half.saturating_sub(2200).max(500),
            feature_target_hold: (life - half).max(4000),
            recv_timeout: life + 30_000,
        }
    }

    /// The checks of the profile, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.calls == 0 || self.rate.is_nan() || self.rate <= 0.0 || self.duration.is_zero() {
            return Err("--calls, --rate and --duration must be positive".into());
        }
        if self.weight() == 0 {
            return Err("--mix needs a positive weight".into());
        }
        if self.kinds().is_empty() {
            return Err("the profile starts no transfer (rate x duration too small)".into());
        }
        Ok(())
    }
}

/// Calls of one SIPp process, from its `-trace_stat` file.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub created: u64,
    pub ok: u64,
    pub failed: u64,
    /// still up when the process ended
    pub current: u64,
    /// failure reasons with a count (`FailedUnexpectedMessage` ...)
    pub reasons: Vec<(String, u64)>,
}

impl Counts {
    /// The last line of a SIPp statistics file (`-trace_stat -stf`), its header being the first.
    fn read(path: &Path) -> Result<Counts, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().ok_or("empty stat file")?.split(';').collect();
        let last: Vec<&str> = lines
            .next_back()
            .ok_or("no stat line")?
            .split(';')
            .collect();
        let field = |name: &str| -> u64 {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let reasons = header
            .iter()
            .filter(|h| h.starts_with("Failed") && h.ends_with("(C)") && **h != "FailedCall(C)")
            .map(|h| (h.trim_end_matches("(C)").to_owned(), field(h)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Ok(Counts {
            created: field("TotalCallCreated"),
            ok: field("SuccessfulCall(C)"),
            failed: field("FailedCall(C)"),
            current: field("CurrentCall"),
            reasons,
        })
    }
}

/// What became of the REFERs of one transferring phone, from its `-trace_msg` file.
#[derive(Debug, Clone, Default)]
pub struct Refers {
    pub sent: u64,
    pub ok: u64,
    /// final NOTIFYs with another status than 200, by sipfrag status line
    pub failed: BTreeMap<String, u64>,
    /// REFERs answered with an error (no subscription, so no NOTIFY), by status line: e.g. a 481 from an
    /// Asterisk restarted after a crash, which does not know the dialog
    pub rejected: BTreeMap<String, u64>,
    /// REFERs accepted (or not answered at all) whose call got no terminated NOTIFY
    pub no_final: u64,
    /// REFER sent to final NOTIFY received, ms, of the 200 ones
    pub latencies_ms: Vec<f64>,
}

/// What the trace shows of one call's REFER.
enum Outcome {
    Pending,
    /// an error response to the REFER
    Rejected(String),
    /// the terminated NOTIFY: when, and its sipfrag
    Final(i64, String),
}

impl Refers {
    /// Per SIP call (the Call-ID up to "///" stripped, as SIPp does: the attended transferer's two
    /// dialogs are one call): the first REFER sent, then an error response to it or the first
    /// terminated NOTIFY received.
    fn read(trace: &Path) -> Result<Refers, String> {
        let file =
            std::fs::File::open(trace).map_err(|e| format!("open {}: {e}", trace.display()))?;
        // call -> (REFER sent at, outcome)
        let mut calls: HashMap<String, (i64, Outcome)> = HashMap::new();
        for_each_traced(BufReader::new(file), |m| {
            let Some(call_id) = m.header("Call-ID") else {
                return;
            };
            let call = call_id.rsplit("///").next().unwrap_or(call_id).to_owned();
            if m.sent {
                if m.start_line().starts_with("REFER ") {
                    calls.entry(call).or_insert((m.at, Outcome::Pending));
                }
                return;
            }
            let Some((_, outcome @ Outcome::Pending)) = calls.get_mut(&call) else {
                return;
            };
            let status = m.start_line();
            let error_response = status
                .strip_prefix("SIP/2.0 ")
                .and_then(|s| s.get(..3)?.parse::<u16>().ok())
                .is_some_and(|code| code >= 300)
                && m.header("CSeq").is_some_and(|c| c.ends_with("REFER"));
            if error_response {
                *outcome = Outcome::Rejected(status.trim().to_owned());
            } else if m.is_final_notify() {
                *outcome = Outcome::Final(m.at, m.sipfrag().to_owned());
            }
        });
        let mut refers = Refers::default();
        for (refer_at, outcome) in calls.into_values() {
            refers.sent += 1;
            match outcome {
                Outcome::Final(at, frag) if frag.starts_with("SIP/2.0 200") => {
                    refers.ok += 1;
                    refers.latencies_ms.push((at - refer_at) as f64 / 1000.0);
                }
                Outcome::Final(_, frag) => *refers.failed.entry(frag).or_default() += 1,
                Outcome::Rejected(status) => *refers.rejected.entry(status).or_default() += 1,
                Outcome::Pending => refers.no_final += 1,
            }
        }
        refers.latencies_ms.sort_by(f64::total_cmp);
        Ok(refers)
    }
}

/// One kind's figures.
#[derive(Debug, Clone)]
pub struct KindReport {
    pub kind: Kind,
    pub rate: f64,
    pub planned: u64,
    /// the transferring phone's SIPp calls
    pub caller: Counts,
    /// (role, endpoint, calls) of the called phones
    pub called: Vec<(&'static str, &'static str, Counts)>,
    /// blind and attended: from the transferring phone's trace
    pub refers: Option<Refers>,
    /// feature: digits pressed (`DTMF done 1` lines of the transferor's log)
    pub pressed: u64,
}

impl KindReport {
    pub fn transfers(&self) -> u64 {
        self.refers.as_ref().map_or(self.pressed, |r| r.sent)
    }

    /// REFERs told 200; feature codes: target calls that talked their whole time and hung up themselves
    /// (the app neither dropped them nor left them: the transferor was gone by then, so they talked to
    /// the transferee).
    pub fn transfers_ok(&self) -> u64 {
        match &self.refers {
            Some(r) => r.ok,
            None => self.called.get(1).map_or(0, |(_, _, c)| c.ok),
        }
    }

    pub fn transfers_failed(&self) -> u64 {
        match &self.refers {
            Some(r) => r.failed.values().chain(r.rejected.values()).sum(),
            None => self.pressed.saturating_sub(self.transfers_ok()),
        }
    }

    pub fn no_final_notify(&self) -> u64 {
        self.refers.as_ref().map_or(0, |r| r.no_final)
    }

    pub fn failed_calls(&self) -> u64 {
        self.caller.failed + self.called.iter().map(|(_, _, c)| c.failed).sum::<u64>()
    }
}

/// CPU of one process (or a group) over the load phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// utime+stime, s
    pub seconds: f64,
    /// % of one core, averaged over the load phase
    pub average: f64,
    /// % of one core, the busiest 5 s window
    pub peak: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub profile: Profile,
    pub dir: PathBuf,
    pub kinds: Vec<KindReport>,
    /// one line per Asterisk crash (the node was restarted)
    pub crashes: Vec<String>,
    /// why the run stopped early
    pub stopped: Option<String>,
    pub channels_left: Vec<String>,
    pub bridges_left: Vec<String>,
    /// WARNING and ERROR lines of the run's Asterisk logs (every node process of the run), grouped
    pub asterisk_problems: Vec<(String, usize)>,
    pub peak_channels: usize,
    pub peak_bridges: usize,
    pub asterisk_pid_before: Option<u32>,
    pub asterisk_pid_after: Option<u32>,
    /// first transferring phone started to the node clean (or the settle time over)
    pub load_wall: Duration,
    pub app_cpu: Cpu,
    pub app_max_rss_kib: Option<u64>,
    pub asterisk_cpu: Cpu,
    pub asterisk_max_rss_kib: Option<u64>,
    pub sipp_cpu: Cpu,
    /// the SIPp process that used the most CPU, and its % of a core on average
    pub sipp_busiest: Option<(String, f64)>,
    /// % of all cores together
    pub machine_busy: Cpu,
    pub cores: usize,
    pub ticks_per_s: u64,
}

impl Report {
    pub fn failed_calls(&self) -> u64 {
        self.kinds.iter().map(KindReport::failed_calls).sum()
    }

    pub fn transfers(&self) -> u64 {
        self.kinds.iter().map(KindReport::transfers).sum()
    }

    pub fn failed_transfers(&self) -> u64 {
        self.kinds.iter().map(KindReport::transfers_failed).sum()
    }

    pub fn refers_sent(&self) -> u64 {
        self.kinds
            .iter()
            .filter_map(|k| k.refers.as_ref())
            .map(|r| r.sent)
            .sum()
    }

    pub fn refers_ok(&self) -> u64 {
        self.kinds
            .iter()
            .filter_map(|k| k.refers.as_ref())
            .map(|r| r.ok)
            .sum()
    }

    pub fn no_final_notify(&self) -> u64 {
        self.kinds.iter().map(KindReport::no_final_notify).sum()
    }

    /// Which process runs out of CPU first, from the averages and the busiest windows.
    pub fn saturation(&self) -> String {
        let mut parts = [
            ("Asterisk", self.asterisk_cpu),
            ("ari-transfer", self.app_cpu),
            ("SIPp (all phones)", self.sipp_cpu),
        ];
        parts.sort_by(|a, b| b.1.average.total_cmp(&a.1.average));
        let shares: Vec<String> = parts
            .iter()
            .map(|(name, cpu)| {
                format!(
                    "{name} {:.0}% of a core (busiest 5 s: {:.0}%)",
                    cpu.average, cpu.peak
                )
            })
            .collect();
        let (first, cpu) = parts[0];
        let machine = self.machine_busy;
        let ours = self.asterisk_cpu.average + self.app_cpu.average + self.sipp_cpu.average;
        let others = (machine.average * self.cores as f64 - ours).max(0.0);
        let verdict = if machine.peak >= 90.0 && others > ours {
            format!(
                "the machine ({} cores) was saturated at times ({:.0}% busy in its busiest 5 s), mostly by \
                 other processes ({others:.0}% of a core on average against this run's {ours:.0}%); of this \
                 run, {first} is the busiest",
                self.cores, machine.peak
            )
        } else if machine.peak >= 90.0 {
            format!(
                "the machine ({} cores) is the limit: {:.0}% busy on average, {:.0}% in its busiest 5 s; \
                 the largest share is {first}'s",
                self.cores, machine.average, machine.peak
            )
        } else if cpu.peak >= 90.0 {
            format!("{first} first: it used a whole core in its busiest 5 s")
        } else {
            format!(
                "nothing saturates at this load; {first} is the busiest and would be first \
                 (machine {:.0}% busy, busiest 5 s {:.0}%)",
                machine.average, machine.peak
            )
        };
        format!(
            "{verdict}. {}; everything else on the machine {others:.0}% of a core",
            shares.join(", ")
        )
    }
}

fn rss(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.profile;
        let t = p.timings();
        writeln!(
            f,
            "profile: {} concurrent, {} transfers/s for {} s, mix blind:attended:feature {}:{}:{}, \
             refer_barrier = {}, each scenario ~{:.1} s",
            p.calls,
            p.rate,
            p.duration.as_secs(),
            p.mix[0],
            p.mix[1],
            p.mix[2],
            p.refer_barrier,
            t.life as f64 / 1000.0
        )?;
        writeln!(
            f,
            "{:<9} {:>6} {:>7} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>8} | {:>8} {:>8} {:>8} {:>8}",
            "kind",
            "rate/s",
            "planned",
            "calls",
            "ok",
            "failed",
            "xfers",
            "ok",
            "failed",
            "no-final",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        )?;
        for k in &self.kinds {
            let lat = k
                .refers
                .as_ref()
                .map(|r| &r.latencies_ms[..])
                .unwrap_or(&[]);
            let q = |q: f64| quantile(lat, q).map_or("-".to_owned(), |v| format!("{v:.1}"));
            writeln!(
                f,
                "{:<9} {:>6.2} {:>7} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>8} | {:>8} {:>8} {:>8} {:>8}",
                k.kind.to_string(),
                k.rate,
                k.planned,
                k.caller.created,
                k.caller.ok,
                k.caller.failed,
                k.transfers(),
                k.transfers_ok(),
                k.transfers_failed(),
                if k.refers.is_some() {
                    k.no_final_notify().to_string()
                } else {
                    "-".to_owned()
                },
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            )?;
        }
        let all: Vec<f64> = {
            let mut v: Vec<f64> = self
                .kinds
                .iter()
                .filter_map(|k| k.refers.as_ref())
                .flat_map(|r| r.latencies_ms.iter().copied())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        if !all.is_empty() {
            let q = |q: f64| quantile(&all, q).map_or("-".to_owned(), |v| format!("{v:.1}"));
            writeln!(
                f,
                "REFER sent -> final NOTIFY received, all {} REFERs told 200: p50 {} ms, p90 {} ms, p99 {} ms, \
                 p99.9 {} ms, max {} ms",
                all.len(),
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                q(1.0)
            )?;
        }
        for k in &self.kinds {
            let mut line = format!("  {}: called phones:", k.kind);
            for (role, endpoint, c) in &k.called {
                line.push_str(&format!(
                    " {role} ({endpoint}) {} calls, {} ok, {} failed",
                    c.created, c.ok, c.failed
                ));
                if c.current > 0 {
                    line.push_str(&format!(", {} still up at the end", c.current));
                }
                line.push(';');
            }
            writeln!(f, "{}", line.trim_end_matches(';'))?;
            let mut reasons: Vec<String> = Vec::new();
            for (who, c) in std::iter::once(("transferring phone", &k.caller))
                .chain(k.called.iter().map(|(role, _, c)| (*role, c)))
            {
                for (reason, n) in &c.reasons {
                    reasons.push(format!("{who} {reason} {n}"));
                }
            }
            if !reasons.is_empty() {
                writeln!(f, "    SIPp failure reasons: {}", reasons.join(", "))?;
            }
            if let Some(r) = &k.refers {
                let list = |m: &BTreeMap<String, u64>| -> String {
                    let items: Vec<String> = m.iter().map(|(s, n)| format!("{s:?} x{n}")).collect();
                    items.join(", ")
                };
                if !r.failed.is_empty() {
                    writeln!(f, "    final NOTIFYs other than 200: {}", list(&r.failed))?;
                }
                if !r.rejected.is_empty() {
                    writeln!(
                        f,
                        "    REFERs answered with an error (counted as failed): {}",
                        list(&r.rejected)
                    )?;
                }
            }
        }
        writeln!(
            f,
            "Asterisk crashes: {}{}",
            self.crashes.len(),
            if self.crashes.is_empty() {
                ""
            } else {
                " (node restarted after each)"
            }
        )?;
        for crash in &self.crashes {
            writeln!(f, "  {crash}")?;
        }
        writeln!(
            f,
            "left in Asterisk after the settle time: {} channels, {} bridges{}",
            self.channels_left.len(),
            self.bridges_left.len(),
            if self.channels_left.is_empty() && self.bridges_left.is_empty() {
                String::new()
            } else {
                format!(
                    " (channels {:?}; bridges {:?})",
                    truncated(&self.channels_left),
                    truncated(&self.bridges_left)
                )
            }
        )?;
        let (warnings, errors) = self
            .asterisk_problems
            .iter()
            .fold((0, 0), |(w, e), (key, n)| {
                if key.starts_with("ERROR") {
                    (w, e + n)
                } else {
                    (w + n, e)
                }
            });
        writeln!(
            f,
            "Asterisk's log (messages of every node process of the run): {warnings} WARNING and {errors} \
             ERROR lines{}",
            if self.asterisk_problems.is_empty() { "" } else { "; the most frequent:" }
        )?;
        for (problem, n) in self.asterisk_problems.iter().take(6) {
            writeln!(f, "  {n:>5} x {problem}")?;
        }
        writeln!(
            f,
            "peak in Asterisk (ARI, every 5 s): {} channels, {} bridges; Asterisk pid before {} after {}",
            self.peak_channels,
            self.peak_bridges,
            self.asterisk_pid_before.map_or("-".into(), |p| p.to_string()),
            self.asterisk_pid_after.map_or("gone".into(), |p| p.to_string()),
        )?;
        let transfers = self.transfers().max(1) as f64;
        let cpu = |c: Cpu| {
            format!(
                "{:.1} s CPU ({:.1} ms per transfer) = {:.1}% of a core on average, {:.1}% in the \
                 busiest 5 s",
                c.seconds,
                c.seconds * 1000.0 / transfers,
                c.average,
                c.peak
            )
        };
        writeln!(
            f,
            "CPU over the load phase ({:.1} s: first transfer started to the node clean):",
            self.load_wall.as_secs_f64()
        )?;
        writeln!(
            f,
            "  ari-transfer {}; max RSS (VmHWM) {}",
            cpu(self.app_cpu),
            rss(self.app_max_rss_kib)
        )?;
        writeln!(
            f,
            "  Asterisk     {}; max RSS {}",
            cpu(self.asterisk_cpu),
            rss(self.asterisk_max_rss_kib)
        )?;
        writeln!(
            f,
            "  SIPp (all)   {}{}",
            cpu(self.sipp_cpu),
            self.sipp_busiest
                .as_ref()
                .map(|(name, share)| format!(
                    "; the busiest process: {name}, {share:.1}% of a core"
                ))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "  machine      {:.1}% of its {} cores busy on average, {:.1}% in the busiest 5 s",
            self.machine_busy.average, self.cores, self.machine_busy.peak
        )?;
        writeln!(f, "saturates first: {}", self.saturation())?;
        if let Some(stopped) = &self.stopped {
            writeln!(f, "STOPPED EARLY: {stopped}")?;
        }
        write!(
            f,
            "files (SIPp traces, stats, logs): {}",
            self.dir.display()
        )
    }
}

fn truncated(list: &[String]) -> Vec<&str> {
    list.iter().take(10).map(String::as_str).collect()
}

/// How the run measured its numbers (for the bench's header).
pub fn method(profile: &Profile) -> Vec<String> {
    let t = profile.timings();
    vec![
        format!(
            "lab node {NODE} (overlay {OVERLAY}, RTP {RTP_START}-{RTP_END}); one SIPp UAS per called role, one \
             SIPp UAC per transfer kind generating its share of the rate (-r, -m = rate x duration, -l = its share \
             of the concurrent calls); transferees and the consulted party ring {RING_MS} ms, the blind and \
             feature-code targets {TARGET_RING_MS} ms (part of the blind latency)"
        ),
        format!(
            "timing: each transfer scenario lives ~{} ms; blind/attended REFER {} ms after the answer, the blind \
             target talks {} ms, the consulted party {} ms from its answer; feature digits {FEATURE_DIGITS} {} ms \
             after the answer, the transferor hangs up {FEATURE_HANGUP_AFTER_MS} ms after its last digit, the target \
             talks {} ms; SIPp recv timeout {} ms",
            t.life,
            t.xfer_after,
            t.target_hold,
            t.consult_hold,
            t.dtmf_after,
            t.feature_target_hold,
            t.recv_timeout
        ),
        "calls: the transferring phones' SIPp calls (-trace_stat: created, successful, failed); a call fails on \
         any unexpected message, timeout, or a final NOTIFY other than 200"
            .to_owned(),
        "xfers: REFERs sent (blind, attended; ok = final NOTIFY sipfrag 200, failed = another status or the \
         REFER answered with an error, no-final = no terminated NOTIFY otherwise), or feature codes pressed \
         (ok = the target talked its whole time and hung up itself, after the transferor had left)"
            .to_owned(),
        "latency: REFER sent -> terminated NOTIFY received, from the transferring phone's -trace_msg timestamps \
         (REFERs told 200 only); p = nearest rank"
            .to_owned(),
        "CPU: utime+stime from /proc/PID/stat sampled every second (Asterisk: every process of the run, across \
         restarts; SIPp: all nine processes); machine: /proc/stat"
            .to_owned(),
    ]
}

/// One SIPp process of a run.
struct Sipp {
    name: String,
    child: Child,
    stat: PathBuf,
    trace: Option<PathBuf>,
    log: Option<PathBuf>,
    out: PathBuf,
}

impl Sipp {
    /// SIPp on `port` towards the node, `args` naming the scenario (`-sf`) and its settings; a
    /// transferring phone (`uac`) also traces its messages and `<log>` lines.
    fn spawn(
        dir: &Path,
        name: &str,
        node: &Node,
        port: u16,
        recv_timeout: u64,
        uac: bool,
        args: &[String],
    ) -> Result<Sipp, String> {
        let stat = dir.join(format!("{name}.stat.csv"));
        let out = dir.join(format!("{name}.out"));
        let (trace, log) = if uac {
            (
                Some(dir.join(format!("{name}.messages.log"))),
                Some(dir.join(format!("{name}.log"))),
            )
        } else {
            (None, None)
        };
        let mut command = Command::new("sipp");
        command
            .arg(format!("127.0.0.1:{}", node.sip_port))
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
            .args(["-recv_timeout", &recv_timeout.to_string()])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .args(["-trace_err", "-error_file"])
            .arg(dir.join(format!("{name}.errors.log")));
        if let (Some(trace), Some(log)) = (&trace, &log) {
            command
                .args(["-trace_msg", "-message_file"])
                .arg(trace)
                .args(["-trace_logs", "-log_file"])
                .arg(log);
        }
        command.args(args);
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "spawn sipp (is the sip-tester package installed? scripts/lab install): {e}"
                )
            })?;
        Ok(Sipp {
            name: name.to_owned(),
            child,
            stat,
            trace,
            log,
            out,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGUSR1: SIPp starts no new call and exits once its calls are over; SIGTERM: at once (both dump
    /// the statistics).
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status();
    }

    /// Asks it to finish (SIGUSR1) and waits up to `within`, then ends it (SIGTERM, then SIGKILL).
    async fn finish(&mut self, within: Duration) {
        if self.running() {
            self.signal("-USR1");
        }
        let deadline = Instant::now() + within;
        while self.running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.running() {
            self.signal("-TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail_of_output(&self) -> String {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node 5, (re)started with the load overlay and a wide RTP range; stopped when dropped.
pub struct LoadNode {
    pub node: Node,
}

impl LoadNode {
    pub fn start() -> Result<LoadNode, String> {
        let node = lab::node_info(NODE);
        run_lab(OVERLAY, &["stop", &NODE.to_string()])?;
        let started = LoadNode { node };
        started.restart()?;
        Ok(started)
    }

    /// Starts the node (stopping a hung one first) and widens its RTP range.
    fn restart(&self) -> Result<(), String> {
        run_lab(OVERLAY, &["stop", &NODE.to_string()])?;
        run_lab(OVERLAY, &["start", &NODE.to_string()])?;
        widen_rtp(&self.node)
    }

    pub fn pid(&self) -> Option<u32> {
        asterisk_pid(&self.node)
    }
}

impl Drop for LoadNode {
    fn drop(&mut self) {
        if let Err(e) = run_lab(OVERLAY, &["stop", &NODE.to_string()]) {
            eprintln!("load: {e}");
        }
    }
}

/// Gives the running node the RTP range [`RTP_START`]-[`RTP_END`]: an overlay cannot (res_rtp_asterisk
/// reads the first `rtpstart`/`rtpend` of rtp.conf's [general], the lab's, and an #included `[general](+)`
/// only adds keys), so the node's rendered rtp.conf is rewritten and res_rtp_asterisk reloaded. The lab
/// renders the file afresh at every start.
pub fn widen_rtp(node: &Node) -> Result<(), String> {
    let path = lab_dir().join(&node.name).join("etc/rtp.conf");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or_default().trim();
            match key {
                "rtpstart" if line.contains('=') => format!("rtpstart = {RTP_START}"),
                "rtpend" if line.contains('=') => format!("rtpend = {RTP_END}"),
                _ => line.to_owned(),
            }
        })
        .collect();
    std::fs::write(&path, rewritten.join("\n") + "\n")
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    lab::cli(node, "module reload res_rtp_asterisk.so");
    let settings = lab::cli(node, "rtp show settings");
    let port = |label: &str| {
        settings
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().parse::<u16>().ok())
    };
    if port("Port start:") == Some(RTP_START) && port("Port end:") == Some(RTP_END) {
        Ok(())
    } else {
        Err(format!(
            "{}: RTP range not widened to {RTP_START}-{RTP_END}: {settings}",
            node.name
        ))
    }
}

/// The port of an endpoint's static contact in the overlay's pjsip.conf (`contact = sip:NAME@127.0.0.1:PORT`).
fn contact_port(endpoint: &str) -> Result<u16, String> {
    let path = lab::repo().join(OVERLAY).join("pjsip.conf");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let prefix = format!("sip:{endpoint}@127.0.0.1:");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("contact"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .find_map(|l| l.trim().strip_prefix(&prefix)?.parse().ok())
        .ok_or_else(|| format!("no contact for {endpoint} in {}", path.display()))
}

/// The app's settings for a run on `node`.
pub fn app_settings(node: &Node, profile: &Profile) -> AppSettings {
    let mut settings = AppSettings::for_node(node);
    settings.refer_barrier = profile.refer_barrier;
    settings.max_connections = profile.max_connections;
    settings
        .routes
        .insert(0, (FEATURE_EXTEN.to_owned(), "PJSIP/ftarget".to_owned()));
    settings.extra = format!("{METAFLOWS}{}", profile.app_extra);
    settings.env = profile.app_env.clone();
    settings
}

/// CPU tick counters of processes, each the last value seen (an exited process keeps its last one).
/// Per process: (the first value seen, the last).
#[derive(Default)]
struct Ticks(HashMap<u32, (u64, u64)>);

impl Ticks {
    fn sample(&mut self, pid: u32) {
        if let Some((ticks, _)) = cpu_of(pid) {
            self.0.entry(pid).or_insert((ticks, ticks)).1 = ticks;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().map(|(_, last)| last).sum()
    }

    /// The process that used the most since it was first seen, and its ticks.
    fn busiest(&self) -> Option<(u32, u64)> {
        self.0
            .iter()
            .map(|(pid, (first, last))| (*pid, last - first))
            .max_by_key(|(_, ticks)| *ticks)
    }
}

/// Per-second samples of the run: (elapsed s, app, Asterisk, SIPp, machine busy ticks).
#[derive(Default)]
struct Samples {
    at: Vec<f64>,
    app: Vec<u64>,
    asterisk: Vec<u64>,
    sipp: Vec<u64>,
    machine: Vec<(u64, u64)>,
}

impl Samples {
    /// (seconds, average %, busiest 5 s %) of one series, in % of one core.
    fn cpu(&self, series: &[u64], ticks_per_s: u64) -> Cpu {
        let (Some(first), Some(last)) = (series.first(), series.last()) else {
            return Cpu::default();
        };
        let wall = self.at.last().copied().unwrap_or(0.0) - self.at[0];
        let seconds = (last - first) as f64 / ticks_per_s as f64;
        let mut peak: f64 = 0.0;
        for i in 0..series.len() {
            if let Some(j) = (i..series.len()).find(|&j| self.at[j] - self.at[i] >= 5.0) {
                let s = (series[j] - series[i]) as f64 / ticks_per_s as f64;
                peak = peak.max(100.0 * s / (self.at[j] - self.at[i]));
            }
        }
        Cpu {
            seconds,
            average: if wall > 0.0 {
                100.0 * seconds / wall
            } else {
                0.0
            },
            peak,
        }
    }

    /// The machine's busy share of all its cores.
    fn machine(&self) -> Cpu {
        let (Some(first), Some(last)) = (self.machine.first(), self.machine.last()) else {
            return Cpu::default();
        };
        let share = |a: (u64, u64), b: (u64, u64)| {
            let total = b.1.saturating_sub(a.1);
            if total == 0 {
                0.0
            } else {
                100.0 * (b.0 - a.0) as f64 / total as f64
            }
        };
        let mut peak: f64 = 0.0;
        for i in 0..self.machine.len() {
            if let Some(j) = (i..self.machine.len()).find(|&j| self.at[j] - self.at[i] >= 5.0) {
                peak = peak.max(share(self.machine[i], self.machine[j]));
            }
        }
        Cpu {
            seconds: 0.0,
            average: share(*first, *last),
            peak,
        }
    }
}

/// A running load: the node, the app, the phones, what was measured so far.
struct Run<'a> {
    node: &'a LoadNode,
    app: App,
    dir: PathBuf,
    profile: Profile,
    uas: Vec<Sipp>,
    uac: Vec<(Kind, Sipp)>,
    asterisk_pid: Option<u32>,
    crashes: Vec<String>,
    ari_failures: u32,
    start: Instant,
    samples: Samples,
    app_ticks: Ticks,
    asterisk_ticks: Ticks,
    sipp_ticks: Ticks,
    peak_channels: usize,
    peak_bridges: usize,
    last_census: Option<Instant>,
    asterisk_max_rss_kib: Option<u64>,
    /// lines of `dmesg` already looked at
    dmesg_seen: usize,
}

impl Run<'_> {
    /// One sample: CPU of every process, Asterisk still there, every 5 s the channels and bridges.
    /// Returns an error when Asterisk is gone or ARI has not answered three times in a row.
    async fn sample(&mut self) -> Result<(), String> {
        self.app_ticks.sample(self.app.pid());
        if let Some(pid) = self.asterisk_pid {
            self.asterisk_ticks.sample(pid);
            if let Some(kib) = max_rss_kib(pid) {
                self.asterisk_max_rss_kib = Some(self.asterisk_max_rss_kib.unwrap_or(0).max(kib));
            }
        }
        for sipp in self.uas.iter().chain(self.uac.iter().map(|(_, s)| s)) {
            self.sipp_ticks.sample(sipp.pid());
        }
        self.samples.at.push(self.start.elapsed().as_secs_f64());
        self.samples.app.push(self.app_ticks.total());
        self.samples.asterisk.push(self.asterisk_ticks.total());
        self.samples.sipp.push(self.sipp_ticks.total());
        self.samples.machine.push(machine_ticks().unwrap_or((0, 0)));

        let pid = self.node.pid();
        if pid.is_none() || pid != self.asterisk_pid {
            return Err(format!(
                "Asterisk (pid {}) is gone",
                self.asterisk_pid.map_or("?".into(), |p| p.to_string())
            ));
        }
        let census_due = self
            .last_census
            .map_or(true, |at| at.elapsed() >= Duration::from_secs(5));
        let probe = if census_due {
            self.last_census = Some(Instant::now());
            match (
                ari_try_get(&self.node.node, "/channels").await,
                ari_try_get(&self.node.node, "/bridges").await,
            ) {
                (Ok(channels), Ok(bridges)) => {
                    let count = |v: &Value| v.as_array().map_or(0, Vec::len);
                    self.peak_channels = self.peak_channels.max(count(&channels));
                    self.peak_bridges = self.peak_bridges.max(count(&bridges));
                    Ok(())
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            ari_try_get(&self.node.node, "/asterisk/ping")
                .await
                .map(|_| ())
        };
        match probe {
            Ok(()) => self.ari_failures = 0,
            Err(e) => {
                self.ari_failures += 1;
                if self.ari_failures >= 3 {
                    return Err(format!("ARI did not answer 3 times in a row: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Asterisk crashed (or hangs): keeps its logs, shows what it left, restarts the node and waits for
    /// the app to be connected again.
    async fn recover(&mut self, why: &str) -> Result<(), String> {
        let n = self.crashes.len() + 1;
        let kept = self.dir.join(format!("{}-crash-{n}", self.node.node.name));
        let last = keep_node_logs(&self.node.node, &kept);
        let at = self.start.elapsed().as_secs_f64();
        eprintln!(
            "load: {at:.1} s: {why}; Asterisk logs kept in {}",
            kept.display()
        );
        let messages = std::fs::read_to_string(kept.join("messages")).unwrap_or_default();
        let tail: Vec<&str> = messages.lines().collect();
        eprintln!("load: the tail of its log:");
        for line in &tail[tail.len().saturating_sub(15)..] {
            eprintln!("    {line}");
        }
        eprintln!("load: its console's last line: {last}");
        // the kernel's lines since the last look (the whole buffer if it wrapped)
        let dmesg = command_line("dmesg", &[]);
        let lines: Vec<&str> = dmesg.lines().collect();
        let new = lines.get(self.dmesg_seen..).unwrap_or(&lines[..]);
        self.dmesg_seen = lines.len();
        let segfaults: Vec<String> = new
            .iter()
            .filter(|l| l.contains("segfault") && l.contains("asterisk"))
            .map(|l| (*l).to_owned())
            .collect();
        for line in segfaults.iter().rev().take(3).rev() {
            eprintln!("load: dmesg: {line}");
        }
        self.crashes.push(format!(
            "#{n} at {at:.1} s: {why}; last console line {last:?}{}; logs in {}",
            segfaults
                .last()
                .map(|l| format!("; dmesg: {}", l.trim()))
                .unwrap_or_default(),
            kept.display()
        ));
        self.node.restart()?;
        self.asterisk_pid = self.node.pid();
        self.ari_failures = 0;
        self.app.wait_ready().await?;
        eprintln!(
            "load: node restarted (pid {}), the app is connected again",
            self.asterisk_pid.map_or("?".into(), |p| p.to_string())
        );
        Ok(())
    }

    /// One step of the run: a sample, and a restart of the node if its Asterisk is gone. An error when
    /// the run must stop: the crash limit reached, or the node or the app not back.
    async fn tick(&mut self) -> Result<(), String> {
        if let Some(status) = self.app.exited() {
            return Err(format!(
                "ari-transfer exited ({status}) after {:.1} s; its log: {}",
                self.start.elapsed().as_secs_f64(),
                self.app.log_path().display()
            ));
        }
        if let Err(why) = self.sample().await {
            self.recover(&why).await?;
            if self.crashes.len() >= self.profile.max_crashes as usize {
                return Err(format!(
                    "{} Asterisk crashes (the limit): the run stopped there",
                    self.crashes.len()
                ));
            }
        }
        Ok(())
    }
}

/// Runs `profile` on the started node, writing every file under `dir`. An error means the setup is
/// broken (the app does not start, a phone cannot bind its port); transfers that fail, and Asterisk
/// crashes, are in the report.
pub async fn run(node: &LoadNode, profile: &Profile, dir: &Path) -> Result<Report, String> {
    profile.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let timings = profile.timings();
    let app = App::start_on(dir, &app_settings(&node.node, profile), profile.http_port).await?;
    let (ticks_per_s, _) = clock_ticks();
    let load_dir = lab::repo().join(OVERLAY);
    let sipp_dir = lab::repo().join("tests/sipp");
    let kinds = profile.kinds();

    // the called phones, one process per role (every numeric setting given: SIPp logs each unset one
    // it converts, per call)
    let mut uas = Vec::new();
    for &kind in &kinds {
        let (_, xferee, other) = kind.endpoints();
        let (xferee_hold, other_hold, other_ring) = match kind {
            Kind::Blind => (0, timings.target_hold, TARGET_RING_MS),
            Kind::Attended => (timings.attended_xferee_hold, timings.consult_hold, RING_MS),
            Kind::Feature => (0, timings.feature_target_hold, TARGET_RING_MS),
        };
        for (endpoint, ring, hold, early_bye_fails) in [
            (xferee, RING_MS, xferee_hold, 0),
            (other, other_ring, other_hold, 1),
        ] {
            let args = SippArgs::new(&load_dir.join("uas.xml"))?
                .flag("-s", endpoint)
                .set("ring_ms", ring)
                .set("hold_ms", hold)
                .set("early_bye_fails", early_bye_fails);
            let port = contact_port(endpoint)?;
            uas.push(Sipp::spawn(
                dir,
                endpoint,
                &node.node,
                port,
                timings.recv_timeout,
                false,
                &args.0,
            )?);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for phone in &mut uas {
        if !phone.running() {
            return Err(format!(
                "the SIPp phone {} ended at once (its port taken?): {}",
                phone.name,
                phone.tail_of_output()
            ));
        }
    }

    let mut run = Run {
        node,
        app,
        dir: dir.to_owned(),
        profile: profile.clone(),
        uas,
        uac: Vec::new(),
        asterisk_pid: node.pid(),
        crashes: Vec::new(),
        ari_failures: 0,
        start: Instant::now(),
        samples: Samples::default(),
        app_ticks: Ticks::default(),
        asterisk_ticks: Ticks::default(),
        sipp_ticks: Ticks::default(),
        peak_channels: 0,
        peak_bridges: 0,
        last_census: None,
        asterisk_max_rss_kib: None,
        dmesg_seen: command_line("dmesg", &[]).lines().count(),
    };
    let asterisk_pid_before = run.asterisk_pid;
    run.sample().await?;

    // the transferring phones, one process per kind, at its share of the rate
    for &kind in &kinds {
        let (caller, xferee, other) = kind.endpoints();
        let args = match kind {
            Kind::Blind => SippArgs::new(&sipp_dir.join("xfer_uac_blind.xml"))?
                .flag("-s", xferee)
                .key("from", caller)
                .key("target", other)
                .set("expect_status", 200)
                .set("xfer_after_ms", timings.xfer_after)
                .set("talk_after_ms", 1000),
            Kind::Attended => SippArgs::new(&load_dir.join("attended_uac.xml"))?
                .flag("-cid_str", ATTENDED_CALL_ID)
                .key("from", caller)
                .key("xferee", xferee)
                .key("consult", other)
                .set("expect_status", 200)
                .set("xfer_after_ms", timings.xfer_after),
            Kind::Feature => SippArgs::new(&sipp_dir.join("dtmf_uac.xml"))?
                .flag("-s", xferee)
                .key("from", caller)
                .set("digits", FEATURE_DIGITS)
                .set("dtmf_after_ms", timings.dtmf_after)
                .set("digit_gap_ms", 300)
                .set("digits2_after_ms", 1000)
                .set("hangup_after_ms", FEATURE_HANGUP_AFTER_MS),
        }
        .flag("-r", format!("{:.4}", profile.rate_of(kind)))
        .flag("-m", profile.count_of(kind))
        .flag("-l", profile.limit_of(kind));
        let phone = Sipp::spawn(
            dir,
            &format!("{kind}-{caller}"),
            &node.node,
            free_udp_port(),
            timings.recv_timeout,
            true,
            &args.0,
        )?;
        run.uac.push((kind, phone));
    }

    // the load: until every transferring phone is done (its last call over)
    let deadline = Instant::now()
        + profile.duration
        + Duration::from_millis(timings.recv_timeout * 2 + 60_000);
    let mut stopped = None;
    loop {
        if let Err(e) = run.tick().await {
            stopped = Some(e);
            break;
        }
        if run.uac.iter_mut().all(|(_, phone)| !phone.running()) {
            break;
        }
        if Instant::now() >= deadline {
            stopped = Some("the transferring phones did not finish in time".into());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (_, phone) in &mut run.uac {
        phone.finish(Duration::from_secs(2)).await;
    }
    // the calls after their transfers: until the node is clean, or the settle time is over
    if stopped.is_none() {
        let deadline = Instant::now() + Duration::from_millis(timings.life + 30_000);
        loop {
            if let Err(e) = run.tick().await {
                stopped = Some(e);
                break;
            }
            let clean = matches!(
                node_state(&node.node, Duration::ZERO).await,
                NodeState::Clean
            );
            if clean || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let load_wall = run.start.elapsed();
    let _ = run.sample().await;

    // what is left, then the phones' end
    let (channels_left, bridges_left) = leftovers(&node.node).await;
    let kept = dir.join(format!("{}-end", node.node.name));
    keep_node_logs(&node.node, &kept);
    let mut logs = vec![kept];
    logs.extend((1..=run.crashes.len()).map(|n| dir.join(format!("{}-crash-{n}", node.node.name))));
    let messages: Vec<String> = logs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("messages")).unwrap_or_default())
        .collect();
    let asterisk_problems = log_problems(&messages.join("\n"));
    let app_max_rss_kib = max_rss_kib(run.app.pid());
    for phone in &mut run.uas {
        phone.finish(Duration::from_secs(10)).await;
    }

    let mut reports = Vec::new();
    for &kind in &kinds {
        let (_, xferee, other) = kind.endpoints();
        let caller = run
            .uac
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
            .ok_or("no transferring phone")?;
        let mut called = Vec::new();
        for (role, endpoint) in [("transferee", xferee), (kind.other_role(), other)] {
            let phone = run
                .uas
                .iter()
                .find(|s| s.name == endpoint)
                .ok_or("no called phone")?;
            called.push((role, endpoint, Counts::read(&phone.stat)?));
        }
        let log = caller.log.as_ref().ok_or("no log")?;
        let trace = caller.trace.as_ref().ok_or("no trace")?;
        reports.push(KindReport {
            kind,
            rate: profile.rate_of(kind),
            planned: profile.count_of(kind),
            caller: Counts::read(&caller.stat)?,
            called,
            refers: match kind {
                Kind::Blind | Kind::Attended => Some(Refers::read(trace)?),
                Kind::Feature => None,
            },
            pressed: std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("DTMF done 1"))
                .count() as u64,
        });
    }
    Ok(Report {
        profile: profile.clone(),
        dir: dir.to_owned(),
        kinds: reports,
        crashes: run.crashes.clone(),
        stopped,
        channels_left,
        bridges_left,
        asterisk_problems,
        peak_channels: run.peak_channels,
        peak_bridges: run.peak_bridges,
        asterisk_pid_before,
        asterisk_pid_after: node.pid(),
        load_wall,
        app_cpu: run.samples.cpu(&run.samples.app, ticks_per_s),
        app_max_rss_kib,
        asterisk_cpu: run.samples.cpu(&run.samples.asterisk, ticks_per_s),
        asterisk_max_rss_kib: run.asterisk_max_rss_kib,
        sipp_cpu: run.samples.cpu(&run.samples.sipp, ticks_per_s),
        sipp_busiest: run.sipp_ticks.busiest().and_then(|(pid, ticks)| {
            let name = run
                .uas
                .iter()
                .chain(run.uac.iter().map(|(_, s)| s))
                .find(|s| s.pid() == pid)?
                .name
                .clone();
            let wall = load_wall.as_secs_f64().max(0.001);
            Some((name, 100.0 * ticks as f64 / ticks_per_s as f64 / wall))
        }),
        machine_busy: run.samples.machine(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        ticks_per_s,
    })
}

/// A SIPp command line's scenario and settings.
struct SippArgs(Vec<String>);

impl SippArgs {
    fn new(scenario: &Path) -> Result<SippArgs, String> {
        let path = scenario
            .to_str()
            .ok_or_else(|| format!("not UTF-8: {}", scenario.display()))?;
        Ok(SippArgs(vec!["-sf".into(), path.into()]))
    }

    fn flag(mut self, flag: &str, value: impl fmt::Display) -> SippArgs {
        self.0.extend([flag.to_owned(), value.to_string()]);
        self
    }

    /// `-key NAME VALUE`: `[NAME]` in the scenario.
    fn key(mut self, name: &str, value: &str) -> SippArgs {
        self.0.extend(["-key".into(), name.into(), value.into()]);
        self
    }

    /// `-set NAME VALUE`: the scenario's global variable `NAME`.
    fn set(mut self, name: &str, value: impl fmt::Display) -> SippArgs {
        self.0
            .extend(["-set".into(), name.into(), value.to_string()]);
        self
    }
}

/// The channel names and bridge ids in the node ("?" lists when ARI does not answer).
async fn leftovers(node: &Node) -> (Vec<String>, Vec<String>) {
    let list = |v: Result<Value, String>, field: &str| match v {
        Ok(v) => v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c[field].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        Err(e) => vec![format!("? ({e})")],
    };
    (
        list(ari_try_get(node, "/channels").await, "name"),
        list(ari_try_get(node, "/bridges").await, "id"),
    )
}
