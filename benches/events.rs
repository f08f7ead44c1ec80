//! Event delivery while transfers run: how many events per second the service delivers to 1, 10 and 100
//! SSE clients and as many webhook receivers at once, and how long an event takes from the engine's
//! decision to a client.
//!
//! `cargo bench --bench events [-- 1 10 100]` (the numbers of clients; each gets as many receivers).
//! Numbers, never pass/fail. Needs root and the lab: it runs the load benchmark's machinery
//! (`tests/lab/load.rs`: lab node 5, the release binary, SIPp phones making blind, attended and feature-code
//! transfers) for 20 s per client count, with every call in one account that has N webhook receivers
//! (in-process HTTP servers on loopback, `tests/lab/watch.rs`, each checking its signatures), while N SSE
//! clients follow `GET /v1/events` with the admin token.
//!
//! The delay is the client's arrival time minus the envelope's `timestamp`, which the app stamps (in
//! microseconds) when the engine's loop hands it the event, right after deciding it: the same machine's
//! clock on both ends. The rate is the events one client got divided by the span between the first and
//! the last event's timestamps; every client must get every event (a lost or duplicated one is counted).

#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "../tests/lab/load.rs"]
mod load;
#[path = "../tests/lab/watch.rs"]
mod watch;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use load::{LoadNode, Profile};
use serde_json::Value;
use watch::{Receiver, Stream};

const ADMIN_TOKEN: &str = "admin-token-for-the-events-bench";

/// One client's or receiver's events: their ids and delays.
struct Seen {
    ids: Vec<String>,
    delays: Vec<Duration>,
    dropped: bool,
}

fn seen<'a>(events: impl Iterator<Item = (&'a Value, SystemTime)>) -> Seen {
    let mut seen = Seen {
        ids: Vec::new(),
        delays: Vec::new(),
        dropped: false,
    };
    for (envelope, at) in events {
        if envelope["type"] == "stream.dropped" {
            seen.dropped = true;
            continue;
        }
        seen.ids
            .push(envelope["id"].as_str().unwrap_or_default().to_owned());
        if let Some(stamped) = stamp(envelope) {
            seen.delays
                .push(at.duration_since(stamped).unwrap_or_default());
        }
    }
    seen
}

fn stamp(envelope: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(envelope["timestamp"].as_str()?).ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// What N clients (or receivers) got, against every event published.
fn row(what: &str, n: usize, all: &[Seen], published: &HashSet<String>, span: Duration) -> String {
    let mut delays: Vec<Duration> = all.iter().flat_map(|s| s.delays.iter().copied()).collect();
    delays.sort();
    let per_client = all.iter().map(|s| s.ids.len()).min().unwrap_or(0);
    let missing: usize = all
        .iter()
        .map(|s| {
            let got: HashSet<&String> = s.ids.iter().collect();
            published.iter().filter(|id| !got.contains(id)).count()
        })
        .sum();
    let twice: usize = all
        .iter()
        .map(|s| s.ids.len() - s.ids.iter().collect::<HashSet<_>>().len())
        .sum();
    let dropped = all.iter().filter(|s| s.dropped).count();
    let rate = per_client as f64 / span.as_secs_f64().max(0.001);
    format!(
        "| {what} | {n} | {rate:.0} | {:.0} | {} | {} | {} | {missing} | {twice} | {dropped} |",
        rate * n as f64,
        ms(percentile(&delays, 50.0)),
        ms(percentile(&delays, 99.0)),
        ms(delays.last().copied().unwrap_or_default()),
    )
}

async fn measure(node: &LoadNode, n: usize) -> Result<Vec<String>, String> {
    let mut receivers = Vec::new();
    let mut extra = String::from(
        "[api]\nadmin_token_env = \"ADMIN_TOKEN\"\n[[accounts]]\nid = \"load\"\n\
         endpoints = [\"bcaller\", \"acaller\", \"fcaller\"]\n",
    );
    let mut env = vec![("ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
    for i in 0..n {
        let secret = watch::secret();
        let receiver = Receiver::start(&secret, 0).await;
        extra.push_str(&format!(
            "[[accounts.webhooks]]\nurl = \"{}\"\nsecret_env = \"HOOK_{i}\"\n",
            receiver.url
        ));
        env.push((format!("HOOK_{i}"), secret));
        receivers.push(receiver);
    }
    let port = lab::free_tcp_port();
    let profile = Profile {
        calls: 40,
        rate: 8.0,
        duration: Duration::from_secs(20),
        mix: [2, 1, 1],
        refer_barrier: true,
        max_connections: None,
        max_crashes: 1,
        app_extra: extra,
        app_env: env,
        http_port: Some(port),
    };
    // The clients connect as soon as the app is ready, before the first call.
    let base = format!("http://127.0.0.1:{port}");
    let clients = tokio::spawn(async move {
        lab::eventually(Duration::from_secs(60), "the app", || async {
            let ready = reqwest::get(format!("{base}/readyz")).await.ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;
        let mut streams = Vec::new();
        for _ in 0..n {
            streams.push(Stream::open(&base, ADMIN_TOKEN, "", None).await);
        }
        streams
    });
    let dir = lab::scratch(&format!("bench_events_{n}"));
    let report = load::run(node, &profile, &dir).await?;
    let streams = clients.await.map_err(|e| e.to_string())?;
    // Deliveries still on their way when the app stopped are not waited for: the app is gone.
    let streamed: Vec<Seen> = streams
        .iter()
        .map(|s| {
            let got = s.got();
            seen(got.iter().map(|g| (&g.envelope, g.at)))
        })
        .collect();
    let hooked: Vec<Seen> = receivers
        .iter()
        .map(|r| {
            let got = r.deliveries();
            assert!(got.iter().all(|d| d.signed), "a bad signature");
            seen(got.iter().map(|d| (&d.envelope, d.at)))
        })
        .collect();
    let published: HashSet<String> = streamed
        .iter()
        .chain(&hooked)
        .flat_map(|s| s.ids.iter().cloned())
        .collect();
    let stamps: Vec<SystemTime> = streams
        .first()
        .map(|s| s.got().iter().filter_map(|g| stamp(&g.envelope)).collect())
        .unwrap_or_default();
    let span = match (stamps.iter().min(), stamps.iter().max()) {
        (Some(first), Some(last)) => last.duration_since(*first).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    Ok(vec![
        row("SSE clients", n, &streamed, &published, span),
        row("webhook receivers", n, &hooked, &published, span),
        format!(
            "|  | {n} | {} events over {:.1} s; {} transfers, {} failed; app CPU {:.0} % of a core on \
             average, {:.0} % at peak; max RSS {} KiB | | | | | | | |",
            published.len(),
            span.as_secs_f64(),
            report.transfers(),
            report.failed_transfers(),
            report.app_cpu.average,
            report.app_cpu.peak,
            report.app_max_rss_kib.unwrap_or(0),
        ),
    ])
}

#[tokio::main]
async fn main() -> ExitCode {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 10, 100]
    } else {
        counts
    };
    let node = match LoadNode::start() {
        Ok(node) => node,
        Err(e) => {
            eprintln!("lab node {}: {e}", load::NODE);
            return ExitCode::FAILURE;
        }
    };
    println!("{}", load::build_profile());
    println!("{}; {}", load::machine(), load::load_average());
    println!(
        "| delivered to | N | events/s per client | events/s in all | delay p50 | p99 | max | \
         missing | twice | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        match measure(&node, n).await {
            Ok(rows) => rows.iter().for_each(|r| println!("{r}")),
            Err(e) => {
                eprintln!("{n} clients: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
