//! The IO shell: owns the loop that feeds the engine and carries out what it asks.
//!
//! Inputs come from every node's websocket ([`crate::ari::stream`]), from failed requests, and from the
//! engine's own deadlines. Each goes through [`Engine::handle`] on this one task, in arrival order; the
//! outputs are ARI requests, run per call in order by [`lanes::Lanes`]. This is the only place that decides
//! concurrency; the engine never sees it.

pub mod health;
mod lanes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::ari::client::{AriClient, AriError};
use crate::ari::stream::{self, NodeSignal};
use crate::config::Config;
use crate::engine::{Engine, Input, NodeName, Output};
use crate::events::webhooks::Webhooks;
use crate::events::Hub;
use crate::http::{CommandRequest, Tokens};
use crate::metrics::Metrics;
use health::{Health, NodeHealth};
use lanes::{Failure, Lanes};

/// Runs the service until `shutdown` turns true. Fails only at start: on wrong ARI credentials (retrying
/// cannot fix them) or when the HTTP listener cannot be bound. An unreachable node is retried forever.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut clients = HashMap::new();
    for node in &config.nodes {
        let password = node.password().map_err(anyhow::Error::msg)?;
        let client = AriClient::new(
            &node.url,
            &config.app,
            &node.username,
            &password,
            node.max_connections,
        )?;
        match client.check().await {
            Ok(()) => {
                if let Ok(true) = client.application_in_use().await {
                    tracing::warn!(
                        node = %node.name,
                        app = %config.app,
                        "another client already subscribes to this Stasis application, or an \
                         earlier run left calls in it (they are taken over); Asterisk gives its events \
                         to whichever client connected last"
                    );
                }
            }
            Err(error @ AriError::Unauthorized { .. }) => bail!("node {}: {error}", node.name),
            Err(error) => tracing::error!(node = %node.name, "{error}; will keep retrying"),
        }
        clients.insert(NodeName::from(node.name.as_str()), client);
    }

    let tokens = Tokens::new(config.tokens().map_err(anyhow::Error::msg)?);
    let health = Arc::new(Health::new(config.nodes.iter().map(|n| n.name.as_str())));
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http_listen))?;
    let (command_tx, command_rx) = mpsc::channel(256);
    let account_ids = config.accounts.iter().map(|a| a.id.clone()).collect();
    let instance = instance_tag();
    let metrics = Arc::new(Metrics::new());
    let webhooks =
        Webhooks::start(&config.accounts, metrics.clone()).map_err(anyhow::Error::msg)?;
    let events = Arc::new(Hub::new(
        &instance,
        config.events_keep,
        config.events_client_buffer,
        webhooks,
    ));
    let api = crate::http::Api::new(
        health.clone(),
        tokens,
        account_ids,
        command_tx,
        events.clone(),
        metrics.clone(),
    );
    let app = crate::http::router(api);
    let mut http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = http_shutdown.changed().await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "HTTP server stopped");
        }
    });

    let (node_tx, node_rx) = mpsc::channel(4096);
    for (node, client) in &clients {
        tokio::spawn(stream::follow(
            node.clone(),
            client.clone(),
            node_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(node_tx);

    let engine = Engine::new(config.engine(instance));
    tracing::info!(nodes = clients.len(), http = %config.http_listen, "ari-transfer running");
    let shell = Shell {
        clients,
        health,
        events,
        metrics,
    };
    drive(engine, shell, node_rx, command_rx, shutdown).await;
    Ok(())
}

/// Where the engine's outputs go.
struct Shell {
    clients: HashMap<NodeName, AriClient>,
    health: Arc<Health>,
    events: Arc<Hub>,
    metrics: Arc<Metrics>,
}

/// The loop: one input at a time into the engine, its outputs out to the lanes and the event hub.
async fn drive(
    mut engine: Engine,
    shell: Shell,
    mut node_rx: mpsc::Receiver<(NodeName, NodeSignal)>,
    mut command_rx: mpsc::Receiver<CommandRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Shell {
        clients,
        health,
        events,
        metrics,
    } = shell;
    let (failure_tx, mut failure_rx) = mpsc::channel::<Failure>(1024);
    let mut lanes = Lanes::new(clients, failure_tx, metrics.clone());
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    // Far enough to never fire; used when the engine has no deadline.
    let idle = Duration::from_secs(3600);

    loop {
        let wake = engine.poll_timeout().map_or(Instant::now() + idle, |at| {
            start + Duration::from_millis(at)
        });
        let outputs = tokio::select! {
            signal = node_rx.recv() => {
                let Some((node, signal)) = signal else { return };
                // Every line the engine logs for this input carries the node.
                let span = tracing::info_span!("input", node = %node);
                let input = match signal {
                    NodeSignal::Event(event) => Input::Event { node, event },
                    NodeSignal::Synced { channels, bridges } => {
                        metrics.websocket(&node, true);
                        health.set(&node, NodeHealth { connected: true, error: None });
                        Input::NodeSynced { node, channels, bridges }
                    }
                    NodeSignal::Disconnected { reason } => {
                        metrics.websocket(&node, false);
                        health.set(&node, NodeHealth { connected: false, error: Some(reason) });
                        Input::NodeLost { node }
                    }
                };
                span.in_scope(|| engine.handle(now(), input))
            }
            Some((scope, command, reply)) = command_rx.recv() => {
                let (answer, outputs) = engine.command(now(), &scope, command);
                // The asker may have given up waiting; the engine's decision stands either way.
                let _ = reply.send(answer);
                outputs
            }
            Some(failure) = failure_rx.recv() => {
                let span = tracing::info_span!("input", node = %failure.node);
                let input = Input::RequestFailed {
                    node: failure.node,
                    call: failure.call,
                    status: failure.error.status(),
                    message: failure.error.to_string(),
                    request: failure.request,
                };
                span.in_scope(|| engine.handle(now(), input))
            }
            _ = sleep_until(wake) => engine.handle_timeout(now()),
            _ = shutdown.changed() => return,
        };
        for output in outputs {
            match output {
                Output::Ari {
                    node,
                    call,
                    request,
                } => lanes.submit(call, node, request),
                Output::CallEnded { call } => lanes.close(call),
                Output::Event(event) => {
                    metrics.event(&event, std::time::Instant::now());
                    events.publish(event);
                }
            }
        }
        metrics.calls(engine.call_count());
    }
}

/// A short random tag that makes the ids this run creates unique (across restarts and instances).
fn instance_tag() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
