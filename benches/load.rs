//! Load benchmark: SIPp drives N concurrent transfer scenarios at R transfers per second for D seconds,
//! blind REFERs, attended REFERs and `*2` feature-code transfers mixed, through the release binary on lab
//! node 5 (see `tests/lab/load.rs` for how the phones are wired, timed and counted).
//!
//! `cargo bench --bench load -- [--calls N] [--rate R] [--duration SECS] [--mix B:A:F] [--no-barrier]
//! [--max-connections N] [--max-crashes K]` (defaults: 60 concurrent, 6 transfers/s, 45 s, mix 2:1:1, the app's REFER barrier
//! on, 3 crashes). Numbers, never pass/fail: it exits 0 whatever the transfers did, and non-zero only when
//! the setup is broken (the node, the app or a phone does not start, or a bad argument). Needs root and
//! the lab (`scripts/lab`); it (re)starts node 5 with the overlay `tests/lab/load/` and stops it at the end.
//!
//! `--no-barrier` sets the app's `transfers.refer_barrier = false`: its first progress report on a REFER
//! then races Asterisk 22's own handling of that REFER, which is expected to crash Asterisk (in
//! res_pjsip_refer); the run counts each crash, keeps the node's logs, restarts the node and goes on, up
//! to `--max-crashes`.

#[path = "../tests/lab/mod.rs"]
mod lab;
#[path = "../tests/lab/load.rs"]
mod load;

use std::process::ExitCode;
use std::time::Duration;

use load::{LoadNode, Profile};

const USAGE: &str = "usage: cargo bench --bench load -- [--calls N] [--rate R] [--duration SECS] \
                     [--mix BLIND:ATTENDED:FEATURE] [--no-barrier] [--max-connections N] [--max-crashes K]";

fn parse(args: &[String]) -> Result<Profile, String> {
    let mut profile = Profile {
        calls: 60,
        rate: 6.0,
        duration: Duration::from_secs(45),
        mix: [2, 1, 1],
        refer_barrier: true,
        max_connections: None,
        max_crashes: 3,
        app_extra: String::new(),
        app_env: Vec::new(),
        http_port: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let bad = |name: &str, v: &str| format!("{name}: bad value {v:?}");
        match arg.as_str() {
            // cargo bench passes it to every bench binary
            "--bench" => {}
            "--calls" => {
                let v = value(arg)?;
                profile.calls = v.parse().map_err(|_| bad(arg, &v))?;
            }
            "--rate" => {
                let v = value(arg)?;
                profile.rate = v.parse().map_err(|_| bad(arg, &v))?;
            }
            "--duration" => {
                let v = value(arg)?;
                let secs: u64 = v.parse().map_err(|_| bad(arg, &v))?;
                profile.duration = Duration::from_secs(secs);
            }
            "--mix" => {
                let v = value(arg)?;
                let parts: Vec<u32> = v
                    .split(':')
                    .map(|p| p.parse().map_err(|_| bad(arg, &v)))
                    .collect::<Result<_, _>>()?;
                profile.mix = parts.try_into().map_err(|_| bad(arg, &v))?;
            }
            "--no-barrier" => profile.refer_barrier = false,
            "--max-connections" => {
                let v = value(arg)?;
                profile.max_connections = Some(v.parse().map_err(|_| bad(arg, &v))?);
            }
            "--max-crashes" => {
                let v = value(arg)?;
                profile.max_crashes = v.parse().map_err(|_| bad(arg, &v))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    profile.validate()?;
    Ok(profile)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let profile = match parse(&args) {
        Ok(profile) => profile,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let (ticks_per_s, assumed) = load::clock_ticks();
    println!("ari-transfer load benchmark");
    println!("  command: cargo bench --bench load -- {}", shown.join(" "));
    println!(
        "  date (UTC): {}; machine: {}",
        load::command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S"]),
        load::machine()
    );
    println!("  load average at start: {}", load::load_average());
    println!("  {}", load::build_profile());
    for line in load::method(&profile) {
        println!("  {line}");
    }
    println!(
        "  CLK_TCK {ticks_per_s}{}",
        if assumed { " (assumed)" } else { "" }
    );

    let node = match LoadNode::start() {
        Ok(node) => node,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let info = load::ari_try_get(&node.node, "/asterisk/info")
        .await
        .unwrap_or_default();
    println!(
        "  Asterisk {} (lab {}, SIP 127.0.0.1:{}/udp, ARI 127.0.0.1:{}), {}; everything on loopback",
        info["system"]["version"].as_str().unwrap_or("?"),
        node.node.name,
        node.node.sip_port,
        node.node.http_port,
        load::sipp_version()
    );
    let dir = lab::scratch(if profile.refer_barrier {
        "bench-load"
    } else {
        "bench-load-no-barrier"
    });
    let report = load::run(&node, &profile, &dir).await;
    drop(node);
    match report {
        Ok(report) => {
            println!();
            println!("{report}");
            println!("  load average at end: {}", load::load_average());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: the setup is broken: {e}");
            ExitCode::FAILURE
        }
    }
}
