//! End-to-end transfer benchmark: REFER-to-final-NOTIFY latency through a real Asterisk with SIPp phones,
//! with the app (ari-only transfer handling) and without it (Asterisk's own, core-mode transfers).
//!
//! `cargo bench --bench transfers` (add `-- N` for another number of transfers of each kind; default 20).
//! Numbers, never pass/fail. Needs root and the lab (`scripts/lab`): it (re)starts lab nodes 3 and 4 with
//! the lab-only overlay `tests/lab/bench/` (`ARI_TRANSFER_LAB_OVERLAY`), so it never touches the nodes 1
//! and 2 of the end-to-end tests, and stops nodes 3 and 4 at the end.
//!
//! * ari-only: phones alice, bob and carol of the shipped config (`from-phones`, every leg `ari-only`); the
//!   real `ari-transfer` binary connects the calls and executes the REFERs. It is connected to nodes 3 and
//!   4, with a trunk from each to the other (the lab's endpoints `node4` on node 3 and `node3` on node 4).
//! * core: phones core-alice, core-bob and core-carol of the overlay, context `core-transfers`: calls
//!   connected by plain `Dial(PJSIP/${EXTEN})`, no Stasis, no `PJSIP_TRANSFER_HANDLING()`: Asterisk
//!   executes the REFERs itself (native blind and attended transfers). The app is not running then. Asterisk
//!   leaves the transferer's REFERring call for the phone to hang up, so that phone runs
//!   `tests/lab/bench/xfer_uac_then_bye.xml` (the e2e scenario, plus its own BYE after the final NOTIFY).
//!
//! The scenarios are the end-to-end tests' (`tests/e2e_transfer.rs`): attended = A1 (alice's consult call to
//! carol, alice's call to bob, REFER with Replaces on the call to bob), blind = B1 (alice calls bob, REFERs
//! him to carol, who answers), both on node 3; across = A3 (`tests/e2e_cross_node.rs`), the attended transfer
//! across nodes: carol is on node 4, and so is alice's consult call to her; bob and alice's call to him are
//! on node 3, where the REFER comes; the app joins bob and carol through a link leg over the trunk. There is
//! no core-mode counterpart of A3: Asterisk's own cross-node transfer needs an `external_replaces` dialplan,
//! which the lab does not have. The latency of one transfer is read from the transferring phone's SIPp
//! `-trace_msg` file: from the timestamp of the REFER it sent to that of the first NOTIFY it received with
//! `Subscription-State: terminated`. Transfers run one after another, each phone on a fresh UDP port; after
//! each one, no channel and no bridge may be left in either node (otherwise the bench reports it and stops).
//! A failed transfer is counted and reported, and the bench goes on. When an Asterisk stops answering (it
//! crashed), its logs are kept, its node is started again and the bench goes on; after 3 crashes it stops.
//! Each kind and mode starts with one warm-up transfer that is not counted.
//!
//! The app's CPU time: utime+stime of its process (`/proc/PID/stat`) before and after the counted ari-only
//! transfers of a kind, divided by their number (it covers the whole scenario: both calls set up, the
//! transfer, the hangups); also the sum of its threads' `schedstat` run times, which has ns resolution.

#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "../tests/lab/load.rs"]
mod load;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lab::{
    ari_get, consult_call, free_udp_port, scratch, wait_application_free, AppSettings, Node, Phone,
};
use load::{
    clock_ticks, command_line, cpu_of, for_each_traced, keep_node_logs, node_state, App, NodeState,
};

/// The lab nodes of this benchmark (the end-to-end tests use 1 and 2): every kind but `across` runs on the
/// first one; `across` has its consult call (and carol) on the second.
const NODES: [u16; 2] = [3, 4];
/// The lab-only Asterisk config the nodes are started with (core-mode phones and dialplan).
const OVERLAY: &str = "tests/lab/bench";
/// How long the called phones ring before they answer while the calls are set up (bob, the consulted carol).
const SETUP_RING_MS: &str = "50";
/// How long the blind-transfer target (carol) rings before it answers: part of every blind figure.
const TARGET_RING_MS: &str = "1";
/// The transferer sends its REFER this long after its call to bob is answered.
const XFER_AFTER_MS: &str = "200";
/// Attended: bob (the transferee) hangs up this long after he answered, which ends the transferred call.
const BOB_HOLD_MS: &str = "1500";
/// Blind: the target hangs up this long after it answered, which ends the transferred call.
const TARGET_HOLD_MS: &str = "300";
/// One transfer, all phones included, must be over within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// After this many Asterisk crashes (each followed by a restart of the node) the bench stops.
const MAX_CRASHES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Attended,
    Blind,
    /// attended across nodes (A3): the consult call on the second node
    Across,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Attended => "attended",
            Kind::Blind => "blind",
            Kind::Across => "across",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AriOnly,
    Core,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::AriOnly => "ari-only",
            Mode::Core => "core",
        })
    }
}

impl Mode {
    /// The endpoint (and From user) of a phone in this mode.
    fn user(self, name: &str) -> String {
        match self {
            Mode::AriOnly => name.to_owned(),
            Mode::Core => format!("core-{name}"),
        }
    }
}

/// Starts the lab nodes with the overlay (stopping any of them left running first), and stops them when
/// dropped.
struct LabNodes {
    nodes: Vec<Node>,
}

fn run_lab(args: &[&str]) -> Result<(), String> {
    load::run_lab(OVERLAY, args)
}

fn lab_nodes(command: &str) -> Result<(), String> {
    let numbers = NODES.map(|n| n.to_string());
    let mut args = vec![command];
    args.extend(numbers.iter().map(String::as_str));
    run_lab(&args)
}

impl LabNodes {
    fn start() -> Result<LabNodes, String> {
        lab_nodes("stop")?;
        let nodes = LabNodes {
            nodes: NODES.iter().map(|&n| lab::node_info(n)).collect(),
        };
        lab_nodes("start")?;
        Ok(nodes)
    }
}

impl Drop for LabNodes {
    fn drop(&mut self) {
        if let Err(e) = lab_nodes("stop") {
            eprintln!("bench: {e}");
        }
    }
}

/// The app on `nodes`, each with a trunk to every other one (the e2e tests' config: ring timeout 30 s,
/// every extension dialed as `PJSIP/{exten}` on the caller's node).
async fn start_app(dir: &Path, nodes: &[Node]) -> App {
    let nodes: Vec<&Node> = nodes.iter().collect();
    App::start(dir, &AppSettings::for_nodes(&nodes))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// From the transferring phone's trace: ms from the REFER sent to the first terminated NOTIFY received,
/// which must carry `SIP/2.0 200`.
fn refer_to_final_notify(trace: &str) -> Result<f64, String> {
    let mut messages = Vec::new();
    for_each_traced(trace.as_bytes(), |m| messages.push(m));
    let refer = messages
        .iter()
        .position(|m| m.sent && m.start_line().starts_with("REFER "))
        .ok_or("no REFER sent in the trace")?;
    let notify = messages[refer..]
        .iter()
        .find(|m| !m.sent && m.is_final_notify())
        .ok_or("no terminated NOTIFY received after the REFER")?;
    let sipfrag = notify.sipfrag();
    if !sipfrag.starts_with("SIP/2.0 200") {
        return Err(format!("final NOTIFY sipfrag {sipfrag:?}, not 200"));
    }
    Ok((notify.at - messages[refer].at) as f64 / 1000.0)
}

fn trace_of(dir: &Path, phone: &Phone) -> PathBuf {
    dir.join(format!("{}.messages.log", phone.name))
}

/// The transferring phone: alice calls bob, then REFERs the call to carol (`replaces`: the consult
/// dialog's Call-ID with '@' as %40, to-tag, from-tag). ari-only: the e2e tests' scenario, whose call the app
/// hangs up after a 200. core: `tests/lab/bench/xfer_uac_then_bye.xml`, which hangs up itself after a 200
/// (Asterisk leaves that to the phone). It is copied into the run's directory and named by its absolute
/// path there, so that the harness (which looks for scenarios in tests/sipp) writes its logs next to the
/// others'.
fn transferer(
    dir: &Path,
    node: &Node,
    mode: Mode,
    kind: Kind,
    replaces: Option<(&str, &str, &str)>,
) -> Phone {
    let (alice, bob, carol) = (mode.user("alice"), mode.user("bob"), mode.user("carol"));
    let mut args: Vec<String> = Vec::new();
    let scenario = match mode {
        Mode::AriOnly => {
            args.extend(["-key".into(), "target".into(), carol.clone()]);
            if let Some((call_id, to_tag, from_tag)) = replaces {
                for (key, value) in [
                    ("replaces_call_id", call_id),
                    ("replaces_to_tag", to_tag),
                    ("replaces_from_tag", from_tag),
                ] {
                    args.extend(["-key".into(), key.into(), value.into()]);
                }
            }
            match kind {
                Kind::Attended | Kind::Across => "xfer_uac_attended.xml".to_owned(),
                Kind::Blind => "xfer_uac_blind.xml".to_owned(),
            }
        }
        Mode::Core => {
            let query = replaces.map_or(String::new(), |(call_id, to_tag, from_tag)| {
                format!("?Replaces={call_id}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}")
            });
            let refer_to = format!("<sip:{carol}@127.0.0.1:{}{query}>", node.sip_port);
            args.extend(["-key".into(), "refer_to".into(), refer_to]);
            let copy = dir.join("xfer_uac_then_bye.xml");
            std::fs::copy(
                lab::repo().join(OVERLAY).join("xfer_uac_then_bye.xml"),
                &copy,
            )
            .unwrap();
            copy.to_str().unwrap().to_owned()
        }
    };
    args.extend(
        [
            "-set",
            "expect_status",
            "200",
            "-set",
            "xfer_after_ms",
            XFER_AFTER_MS,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Phone::start(dir, node, &scenario, &bob, &alice, free_udp_port(), &args)
}

/// A1 end to end: alice consults carol, calls bob, and REFERs bob's call with Replaces naming the consult
/// dialog. Carol and the consult call are on `consult_node`: `node` itself (A1), or another node (A3, the
/// app joins bob and carol through a trunk). Returns the latency read from the REFERring phone's trace.
async fn attended(
    node: Node,
    consult_node: Node,
    dir: PathBuf,
    kind: Kind,
    mode: Mode,
    i: usize,
) -> Result<f64, String> {
    let (alice, bob, carol) = (mode.user("alice"), mode.user("bob"), mode.user("carol"));
    let ring = ["-set", "ring_ms", SETUP_RING_MS];
    let carol_phone = Phone::callee(&dir, &consult_node, &carol, "uas_answer.xml", &ring).await;
    let bob_phone = Phone::callee(
        &dir,
        &node,
        &bob,
        "uas_answer_then_bye.xml",
        &[
            "-set",
            "ring_ms",
            SETUP_RING_MS,
            "-set",
            "hold_ms",
            BOB_HOLD_MS,
        ],
    )
    .await;
    // Call-ID bench-{kind}-{mode}-{i}-{pid}@127.0.0.1, From tag bench-{kind}-{mode}-{i}-tag; the to-tag is
    // read over the consult node's ARI (an empty one panics: a failed transfer).
    let name = format!("bench-{kind}-{mode}-{i}");
    let (consult, call_id, to_tag, from_tag) =
        consult_call(&dir, &consult_node, &name, &alice, &carol).await;
    let replaces = (call_id.as_str(), to_tag.as_str(), from_tag.as_str());
    let transferer = transferer(&dir, &node, mode, Kind::Attended, Some(replaces));
    let trace = trace_of(&dir, &transferer);
    transferer.finish().await;
    consult.expect_success().await;
    bob_phone.expect_success().await;
    carol_phone.expect_success().await;
    refer_to_final_notify(&std::fs::read_to_string(trace).unwrap_or_default())
}

/// B1 end to end: alice calls bob and REFERs him to carol, who answers, talks, and hangs up.
async fn blind(node: Node, dir: PathBuf, mode: Mode) -> Result<f64, String> {
    let (bob, carol) = (mode.user("bob"), mode.user("carol"));
    let bob_phone = Phone::callee(
        &dir,
        &node,
        &bob,
        "uas_answer.xml",
        &["-set", "ring_ms", SETUP_RING_MS],
    )
    .await;
    let carol_phone = Phone::callee(
        &dir,
        &node,
        &carol,
        "uas_answer_then_bye.xml",
        &[
            "-set",
            "ring_ms",
            TARGET_RING_MS,
            "-set",
            "hold_ms",
            TARGET_HOLD_MS,
        ],
    )
    .await;
    let transferer = transferer(&dir, &node, mode, Kind::Blind, None);
    let trace = trace_of(&dir, &transferer);
    transferer.finish().await;
    carol_phone.expect_success().await;
    bob_phone.expect_success().await;
    refer_to_final_notify(&std::fs::read_to_string(trace).unwrap_or_default())
}

/// The node stopped answering: keeps its logs (scripts/lab start rotates them), starts it again and waits
/// for the app (if any) to be connected again. Returns what the crash looked like.
async fn recover(
    node: &Node,
    root: &Path,
    app: Option<&App>,
    crash: usize,
) -> Result<String, String> {
    let kept = root.join(format!("{}-crash-{crash}", node.name));
    let last = keep_node_logs(node, &kept);
    run_lab(&["start", &node.n.to_string()])?;
    if let Some(app) = app {
        app.wait_ready().await?;
    }
    Ok(format!(
        "Asterisk stopped answering; the last line of its console: {last:?} (logs kept in {})",
        kept.display()
    ))
}

/// The outcome of one kind of transfer in one mode.
struct Batch {
    kind: Kind,
    mode: Mode,
    warmup: Result<f64, String>,
    samples: Vec<f64>,
    failures: Vec<String>,
    /// Asterisk crashes (the node was restarted and the bench went on)
    crashes: Vec<String>,
    wall: Duration,
    /// (utime+stime ticks, thread run time ns) of the app over the counted transfers (ari-only)
    cpu: Option<(u64, u64)>,
}

/// One transfer in its own task (a phone that fails panics in the harness: that is a failure, not the end
/// of the bench), then the check that nothing is left.
/// `nodes[0]` is the node of the transferring phone's call, `nodes[1]` that of the `across` consult call.
async fn one(nodes: &[Node], root: &Path, kind: Kind, mode: Mode, i: usize) -> Result<f64, String> {
    let dir = root.join(format!("{kind}-{mode}-{i:03}"));
    std::fs::create_dir_all(&dir).unwrap();
    let run_dir = dir.clone();
    let node = nodes[0].clone();
    let consult_node = match kind {
        Kind::Across => nodes[1].clone(),
        Kind::Attended | Kind::Blind => node.clone(),
    };
    let task = tokio::spawn(tokio::time::timeout(RUN_TIMEOUT, async move {
        match kind {
            Kind::Attended | Kind::Across => attended(node, consult_node, dir, kind, mode, i).await,
            Kind::Blind => blind(node, dir, mode).await,
        }
    }));
    match task.await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(format!("not over within {RUN_TIMEOUT:?}")),
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            let first = text.lines().next().unwrap_or_default();
            let first = first
                .trim_end_matches("; SIP trace:")
                .trim_end_matches("; trace:");
            Err(format!("{first} (files in {})", run_dir.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `nodes`: as for [`one`]; every one of them must be clean before and after each transfer.
async fn batch(
    nodes: &[Node],
    root: &Path,
    kind: Kind,
    mode: Mode,
    n: usize,
    app: Option<&App>,
    crashes: &mut usize,
) -> Result<Batch, (Batch, String)> {
    let mut batch = Batch {
        kind,
        mode,
        warmup: Err("not run".to_owned()),
        samples: Vec::new(),
        failures: Vec::new(),
        crashes: Vec::new(),
        wall: Duration::ZERO,
        cpu: None,
    };
    let mut cpu_before = None;
    let start = Instant::now();
    for i in 0..=n {
        if i == 1 {
            cpu_before = app.and_then(|app| cpu_of(app.pid()));
        }
        for node in nodes {
            match node_state(node, Duration::ZERO).await {
                NodeState::Clean => {}
                NodeState::Left(left) => {
                    let e = format!("before {kind} {mode} #{i}: left in {}: {left}", node.name);
                    return Err((batch, e));
                }
                NodeState::Down(e) => {
                    return Err((batch, format!("before {kind} {mode} #{i}: {e}")))
                }
            }
        }
        let result = one(nodes, root, kind, mode, i).await;
        match (&result, i) {
            (_, 0) => batch.warmup = result.clone(),
            (Ok(ms), _) => batch.samples.push(*ms),
            (Err(e), _) => batch.failures.push(format!("#{i}: {e}")),
        }
        if let Err(e) = &result {
            eprintln!("bench: {kind} {mode} #{i} failed: {e}");
        }
        for node in nodes {
            match node_state(node, Duration::from_secs(10)).await {
                NodeState::Clean => {}
                NodeState::Left(left) => {
                    let e = format!("after {kind} {mode} #{i}: left in {}: {left}", node.name);
                    return Err((batch, e));
                }
                NodeState::Down(down) => {
                    *crashes += 1;
                    eprintln!(
                        "bench: after {kind} {mode} #{i}: {down}; restarting {}",
                        node.name
                    );
                    match recover(node, root, app, *crashes).await {
                        Ok(crash) => batch.crashes.push(format!("#{i}: {crash}")),
                        Err(e) => {
                            return Err((batch, format!("after {kind} {mode} #{i}: {down}; {e}")))
                        }
                    }
                    if *crashes >= MAX_CRASHES {
                        let e = format!("{MAX_CRASHES} Asterisk crashes: giving up");
                        return Err((batch, e));
                    }
                }
            }
        }
    }
    batch.wall = start.elapsed();
    if let (Some((ticks, ns)), Some((ticks_after, ns_after))) =
        (cpu_before, app.and_then(|app| cpu_of(app.pid())))
    {
        batch.cpu = Some((ticks_after - ticks, ns_after.saturating_sub(ns)));
    }
    Ok(batch)
}

/// (median, p99 by nearest rank, min, max) in ms.
fn stats(samples: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    Some((median, sorted[rank - 1], sorted[0], sorted[n - 1]))
}

fn print_results(batches: &[Batch], n: usize, ticks_per_s: u64) {
    println!();
    println!(
        "REFER sent -> final (Subscription-State: terminated) NOTIFY received, ms, per transfer:"
    );
    println!(
        "{:<9} {:<9} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  warm-up (not counted)",
        "kind", "mode", "ok", "failed", "median", "p99", "min", "max", "mean"
    );
    for b in batches {
        let warmup = match &b.warmup {
            Ok(ms) => format!("{ms:.2}"),
            Err(e) => format!("failed: {e}"),
        };
        match stats(&b.samples) {
            Some((median, p99, min, max)) => println!(
                "{:<9} {:<9} {:>5} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {warmup}",
                b.kind.to_string(),
                b.mode.to_string(),
                b.samples.len(),
                b.failures.len(),
                median,
                p99,
                min,
                max,
                b.samples.iter().sum::<f64>() / b.samples.len() as f64,
            ),
            None => println!(
                "{:<9} {:<9} {:>5} {:>6}  (no sample)  {warmup}",
                b.kind.to_string(),
                b.mode.to_string(),
                0,
                b.failures.len()
            ),
        }
    }
    if batches.iter().any(|b| b.kind == Kind::Across) {
        println!(
            "{:<9} {:<9}  (no core-mode counterpart: Asterisk's own cross-node transfer needs an \
             external_replaces dialplan, which the lab does not have)",
            Kind::Across.to_string(),
            Mode::Core.to_string()
        );
    }
    for b in batches {
        let mut samples = b.samples.clone();
        samples.sort_by(f64::total_cmp);
        let list: Vec<String> = samples.iter().map(|s| format!("{s:.1}")).collect();
        println!("  {} {} sorted: {}", b.kind, b.mode, list.join(" "));
        for failure in &b.failures {
            println!("  {} {} FAILED {failure}", b.kind, b.mode);
        }
        for crash in &b.crashes {
            println!("  {} {} CRASH after {crash}", b.kind, b.mode);
        }
    }
    println!();
    println!("ari-transfer CPU time per transfer (ari-only runs; whole scenario: both calls, transfer, hangups):");
    if batches
        .iter()
        .any(|b| b.cpu.is_some() && !b.crashes.is_empty())
    {
        println!("  (a batch with an Asterisk crash includes the app's reconnect and re-sync)");
    }
    for b in batches {
        if let Some((ticks, ns)) = b.cpu {
            let count = (n as f64).max(1.0);
            println!(
                "{:<9} utime+stime {:>4} ticks over {n} transfers = {:.2} ms/transfer; \
                 threads' schedstat run time {:.1} ms = {:.3} ms/transfer; batch wall time {:.1} s",
                b.kind.to_string(),
                ticks,
                ticks as f64 * 1000.0 / ticks_per_s as f64 / count,
                ns as f64 / 1e6,
                ns as f64 / 1e6 / count,
                b.wall.as_secs_f64()
            );
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // A failing phone panics in the harness with its whole SIP trace; the traces stay on disk, so one line
    // is enough here.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let first = message.lines().next().unwrap_or_default();
        eprintln!("bench: panic at {location}: {first}");
    }));
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let lab_nodes = match LabNodes::start() {
        Ok(nodes) => nodes,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = bench(&lab_nodes.nodes, n).await;
    drop(lab_nodes);
    code
}

async fn bench(nodes: &[Node], n: usize) -> ExitCode {
    let node = &nodes[0];
    let root = scratch("bench-transfers");
    let (ticks_per_s, assumed) = clock_ticks();
    let info = ari_get(node, "/asterisk/info").await;
    let sipp = load::sipp_version();
    println!("ari-transfer end-to-end transfer benchmark");
    println!(
        "  date (UTC): {}; machine: {}",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S"]),
        load::machine()
    );
    println!("  load average at start: {}", load::load_average());
    println!(
        "  Asterisk {} (lab {}, SIP 127.0.0.1:{}/udp, ARI 127.0.0.1:{}), {sipp}; everything on loopback",
        info["system"]["version"].as_str().unwrap_or("?"),
        node.name,
        node.sip_port,
        node.http_port
    );
    let other = &nodes[1];
    println!(
        "  and lab {} (SIP 127.0.0.1:{}/udp, ARI 127.0.0.1:{}) for across; the app is connected to both, \
         with a trunk from each to the other",
        other.name, other.sip_port, other.http_port
    );
    println!("  {}", load::build_profile());
    println!(
        "  N = {n} counted transfers per kind and mode (+1 warm-up each), one at a time, every phone on a fresh UDP port"
    );
    println!(
        "  phones: callees ring {SETUP_RING_MS} ms during call setup; REFER {XFER_AFTER_MS} ms after the call is answered; \
         blind target rings {TARGET_RING_MS} ms before answering (included in the blind figures); \
         after a transfer the app hangs the transferer's call up (ari-only), the phone itself does (core)"
    );
    println!(
        "  kinds: attended = A1 and blind = B1 on {}; across = A3, attended across nodes: bob and alice's \
         REFERring call on {}, carol and alice's consult call on {} (ari-only: no core-mode counterpart)",
        node.name, node.name, other.name
    );
    println!(
        "  latency: SIPp -trace_msg timestamps of the transferring phone (REFER sent -> terminated NOTIFY received); p99 = nearest rank"
    );
    println!(
        "  CPU: /proc/PID/stat utime+stime, CLK_TCK {ticks_per_s}{}",
        if assumed {
            " (assumed: getconf CLK_TCK failed)"
        } else {
            " (getconf CLK_TCK)"
        }
    );
    println!("  traces: {}", root.display());

    let mut batches = Vec::new();
    let mut stopped = None;
    let mut crashes = 0;
    {
        let app = start_app(&root, nodes).await;
        for kind in [Kind::Attended, Kind::Blind, Kind::Across] {
            eprintln!("bench: {kind} ari-only x{n}");
            match batch(
                nodes,
                &root,
                kind,
                Mode::AriOnly,
                n,
                Some(&app),
                &mut crashes,
            )
            .await
            {
                Ok(b) => batches.push(b),
                Err((b, e)) => {
                    batches.push(b);
                    stopped = Some(e);
                    break;
                }
            }
        }
    }
    if stopped.is_none() {
        for node in nodes {
            wait_application_free(&node.ari_url()).await;
        }
        for kind in [Kind::Attended, Kind::Blind] {
            eprintln!("bench: {kind} core x{n}");
            match batch(nodes, &root, kind, Mode::Core, n, None, &mut crashes).await {
                Ok(b) => batches.push(b),
                Err((b, e)) => {
                    batches.push(b);
                    stopped = Some(e);
                    break;
                }
            }
        }
    }
    batches.sort_by_key(|b| (b.kind, b.mode == Mode::Core));
    print_results(&batches, n, ticks_per_s);
    println!("  load average at end: {}", load::load_average());
    match stopped {
        Some(e) => {
            println!("STOPPED: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
