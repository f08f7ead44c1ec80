//! Lab plumbing shared by the benchmarks (`benches/transfers.rs`, and the load runs to come): the app
//! binary at its default log level, `/proc` CPU figures, SIPp `-trace_msg` parsing, a node's state over
//! ARI, its logs after a crash.
//!
//! Included next to the harness (`mod lab;`) with `#[path = ".../tests/lab/load.rs"] mod load;`, so it
//! reaches it as `crate::lab`.

#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{self, free_tcp_port, wait_application_free, AppSettings, Node};
use crate::lab::{ARI_PASSWORD, ARI_USER};

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
        for (_, url, _, _) in &settings.nodes {
            wait_application_free(url).await;
        }
        let http_port = free_tcp_port();
        let config = dir.join("ari-transfer.toml");
        std::fs::write(&config, settings.toml(http_port)).map_err(|e| e.to_string())?;
        let log = dir.join("app.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_ari-transfer"))
            .args(["run", "--config"])
            .arg(&config)
            .env("ARI_PASSWORD", ARI_PASSWORD)
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
