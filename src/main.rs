//! The `ari-transfer` command: `run` the service, or `check-config` a file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use ari_transfer::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Call routing and call transfer for Asterisk, as an ARI Stasis application"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "ari-transfer.toml")]
        config: PathBuf,
        /// How log lines are written to stderr: `text` for people, `json` (one object per line, the
        /// fields flattened) for log collectors.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and exit: 0 if it is good, 2 with the bad key named if not.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config, log_format } => run(&config, log_format),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            let codes = match &config.metaflows.default {
                Some(flows) => format!(
                    ", feature codes: {} number(s), {} pattern(s), {} endpoint set(s)",
                    flows.numbers.len(),
                    flows.patterns.len(),
                    config.metaflows.endpoints.len()
                ),
                None => String::new(),
            };
            println!(
                "{}: ok ({} node(s), {} route(s), {} account(s){codes})",
                file.display(),
                config.nodes.len(),
                config.routes.len(),
                config.accounts.len()
            );
            for node in &config.nodes {
                if let Err(note) = node.password() {
                    println!("note: {note} here; `run` will need it");
                }
            }
            if let Err(note) = config.tokens() {
                println!("note: {note} here; `run` will need it");
            }
            for hook in config.accounts.iter().flat_map(|a| &a.webhooks) {
                if let Err(note) = hook.secret() {
                    println!("note: {note} here; `run` will need it");
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path, format: LogFormat) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
        });
        ari_transfer::runtime::run(config, stop_rx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
