//! API transfer latency through a real Asterisk with SIPp phones: how long an app waits between its
//! request and what the phones get.
//!
//! `cargo bench --bench api` (add `-- N` for another number of transfers; default 20). Numbers, never
//! pass/fail. Needs root and the lab (`scripts/lab`): it (re)starts lab node 3 with the shipped config
//! (the end-to-end tests use nodes 1 and 2) and stops it at the end.
//!
//! Each run: alice calls bob (the release binary connects them), then the bench
//! * `POST /v1/transfers` of alice's leg to carol (attended), and times until Asterisk starts dialing carol
//!   (the ARI `Dial` event of carol's channel: the INVITE leaves right after);
//! * once carol answered and talks with alice, `PUT /v1/transfers/{id}/complete`, and times until carol
//!   enters bob's bridge (the ARI `ChannelEnteredBridge` event: transferee and target bridged).
//!
//! The events come from a second ARI websocket the bench opens for an application of its own with
//! `subscribeAll=true`, which sees every channel's events without taking them from the app; each time runs
//! from just before the request is sent to the event's arrival at the bench (so it includes the HTTP round
//! trip to the app and the websocket delivery). Transfers run one after another; after each, no channel
//! and no bridge may be left. The app runs with its default log level (info).

#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "../tests/lab/load.rs"]
mod load;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lab::{scratch, wait_for_bridge, AppSettings, Node, Phone, ARI_PASSWORD, ARI_USER};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const NODE: u16 = 3;
const TOKEN: &str = "bench-token";
const ACCOUNTS: &str = r#"
[[accounts]]
id = "bench"
token_envs = ["BENCH_TOKEN"]
endpoints = ["alice", "bob", "carol"]
"#;

type Events = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// Waits for the first event for which `wanted` holds; the time it arrived.
async fn event(events: &mut Events, wanted: impl Fn(&Value) -> bool) -> Result<Instant, String> {
    let deadline = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            message = events.next() => {
                let Some(Ok(Message::Text(text))) = message else {
                    if message.is_none() { return Err("the bench's websocket closed".into()) }
                    continue;
                };
                let at = Instant::now();
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if wanted(&value) {
                    return Ok(at);
                }
            }
            _ = &mut deadline => return Err("no such event within 15 s".into()),
        }
    }
}

fn named(value: &Value, pointer: &str, prefix: &str) -> bool {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with(prefix))
}

/// One transfer; (POST to carol dialed, complete to carol bridged with bob), in ms.
async fn one(
    node: &Node,
    dir: &std::path::Path,
    base: &str,
    events: &mut Events,
) -> Result<(f64, f64), String> {
    let http = reqwest::Client::new();
    let bob = Phone::callee(dir, node, "bob", "uas_answer.xml", &[]).await;
    let carol = Phone::answers_then_hangs_up(dir, node, "carol", 1, 1500).await;
    let alice = Phone::caller(dir, node, "uac_talk_until_bye.xml", "bob", &[]);
    wait_for_bridge(node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    let alice_id = lab::channel_id_named(node, "PJSIP/alice-").await;
    let bob_id = lab::channel_id_named(node, "PJSIP/bob-").await;

    let sent = Instant::now();
    let response = http
        .post(format!("{base}/v1/transfers"))
        .header("X-Auth-Token", TOKEN)
        .json(&json!({"call": alice_id, "target": "carol"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 201 {
        return Err(format!("POST /v1/transfers: {}", response.status()));
    }
    let transfer: Value = response.json().await.map_err(|e| e.to_string())?;
    let dialed = event(events, |e| {
        e["type"] == "Dial" && e["dialstatus"] == "" && named(e, "/peer/name", "PJSIP/carol-")
    })
    .await?;
    let to_invite = dialed.duration_since(sent).as_secs_f64() * 1000.0;
    wait_for_bridge(node, &["PJSIP/alice-", "PJSIP/carol-"]).await;

    let id = transfer["id"].as_str().unwrap_or_default();
    let sent = Instant::now();
    let response = http
        .put(format!("{base}/v1/transfers/{id}/complete"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("PUT complete: {}", response.status()));
    }
    let bridged = event(events, |e| {
        e["type"] == "ChannelEnteredBridge"
            && named(e, "/channel/name", "PJSIP/carol-")
            && e["bridge"]["channels"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == bob_id.as_str()))
    })
    .await?;
    let to_bridged = bridged.duration_since(sent).as_secs_f64() * 1000.0;
    for phone in [alice, carol, bob] {
        phone.expect_success().await;
    }
    lab::assert_nothing_left(node).await;
    Ok((to_invite, to_bridged))
}

fn stats(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "median {:6.2} ms   p99 {:6.2} ms   min {:6.2} ms   max {:6.2} ms",
        at(0.5),
        at(0.99),
        samples[0],
        samples[samples.len() - 1]
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let node = lab::node(NODE);
    let dir = scratch("bench-api");
    let mut settings = AppSettings::for_node(&node);
    settings.extra = ACCOUNTS.to_owned();
    settings.env = vec![("BENCH_TOKEN".into(), TOKEN.into())];
    let app = match load::App::start(&dir, &settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ws = format!(
        "ws://127.0.0.1:{}/ari/events?api_key={ARI_USER}:{ARI_PASSWORD}&app=api-bench&subscribeAll=true",
        node.http_port
    );
    let (socket, _) = match tokio_tungstenite::connect_async(ws).await {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("bench: the events websocket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (_keep, mut events) = socket.split();
    let base = app.base_url();
    let (mut to_invite, mut to_bridged) = (Vec::new(), Vec::new());
    // One warm-up transfer, not counted.
    for i in 0..=n {
        let run = dir.join(format!("run-{i}"));
        std::fs::create_dir_all(&run).unwrap();
        match one(&node, &run, &base, &mut events).await {
            Ok((a, b)) if i > 0 => {
                to_invite.push(a);
                to_bridged.push(b);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!(
                    "bench: transfer {i} failed: {e} (files in {})",
                    run.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    drop(app);
    lab::stop_node(NODE);
    println!("API attended transfers on lab node {NODE}, {n} runs one after another (release build, log level info):");
    println!(
        "  POST /v1/transfers -> Asterisk dials the target:   {}",
        stats(&mut to_invite)
    );
    println!(
        "  PUT .../complete   -> transferee and target bridged: {}",
        stats(&mut to_bridged)
    );
    ExitCode::SUCCESS
}
