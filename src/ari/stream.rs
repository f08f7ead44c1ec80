//! A node's event websocket, kept open for the life of the service.
//!
//! Asterisk keeps no backlog of events while the websocket is down, so every (re)connection is followed by
//! a re-sync: the channel list is read and handed on as [`NodeSignal::Synced`] before any further event,
//! and the engine reconciles its calls with it. Lost connections are retried with a capped, jittered
//! exponential back-off; a silent connection is detected with pings.

use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{interval_at, sleep, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::AriClient;
use super::models::{Bridge, Channel, Event};
use crate::backoff::Backoff;
use crate::engine::NodeName;

/// How often the app pings Asterisk, and how long a silent connection is trusted.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// What a node's websocket reports to the runtime.
// An event is moved a handful of times on its way into the engine; boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum NodeSignal {
    /// Connected, and `channels` is the node's channel list read right after.
    Synced {
        channels: Vec<Channel>,
        bridges: Vec<Bridge>,
    },
    Event(Event),
    /// The connection failed or was lost; a reconnect follows.
    Disconnected {
        reason: String,
    },
}

/// Follows `node`'s events until `shutdown` turns true, reconnecting whenever the connection is lost.
pub async fn follow(
    node: NodeName,
    client: AriClient,
    tx: mpsc::Sender<(NodeName, NodeSignal)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            result = session(&node, &client, &tx, &mut backoff) => result,
            _ = shutdown.changed() => return,
        };
        let reason = match result {
            Ok(()) => "the websocket was closed by Asterisk".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        let delay = backoff.next_delay(rand::random());
        tracing::error!(
            node = %node,
            "{reason}; retrying in {:.1} s",
            delay.as_secs_f64()
        );
        let signal = NodeSignal::Disconnected { reason };
        if tx.send((node.clone(), signal)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection: connect, re-sync, then forward events until the connection ends.
async fn session(
    node: &NodeName,
    client: &AriClient,
    tx: &mpsc::Sender<(NodeName, NodeSignal)>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(client.events_url().as_str())
        .await
        .map_err(|e| describe_connect_error(e, client))?;
    let bridges = client.bridges().await.context("re-sync after connecting")?;
    let channels = client
        .channels()
        .await
        .context("re-sync after connecting")?;
    backoff.reset();
    tracing::info!(node = %node, url = %client.display_url(), channels = channels.len(), "events websocket connected");
    let send = |signal| tx.send((node.clone(), signal));
    send(NodeSignal::Synced { channels, bridges })
        .await
        .map_err(|_| anyhow!("runtime stopped"))?;

    let (mut sink, mut stream) = ws.split();
    // The first check comes soon after connecting: that is when a late close of an earlier connection
    // can unregister the application.
    let mut ping = interval_at(Instant::now() + Duration::from_secs(1), PING_EVERY);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            message = stream.next() => {
                let message = match message {
                    None => return Ok(()),
                    Some(message) => message.context("websocket read")?,
                };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => match Event::decode(&text) {
                        Ok(Event::Other) => {}
                        Ok(event) => send(NodeSignal::Event(event))
                            .await
                            .map_err(|_| anyhow!("runtime stopped"))?,
                        Err(error) => tracing::warn!(
                            node = %node,
                            %error,
                            event = %text.chars().take(300).collect::<String>(),
                            "skipping an event that cannot be decoded"
                        ),
                    },
                    Message::Close(_) => return Ok(()),
                    _ => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err(anyhow!("no word from Asterisk for {} s", SILENCE_LIMIT.as_secs()));
                }
                sink.send(Message::Ping(Vec::new().into())).await.context("websocket ping")?;
                // A websocket of an earlier connection that Asterisk closes late unregisters the
                // application even though this connection is up; then no event would come any more.
                if let Ok(false) = client.application_in_use().await {
                    return Err(anyhow!("Asterisk dropped the Stasis application {}; subscribing again", client.app()));
                }
            }
        }
    }
}

/// A one-line reason for a failed websocket connect, without the credentials in the URL.
fn describe_connect_error(error: tungstenite::Error, client: &AriClient) -> anyhow::Error {
    let url = client.display_url();
    match error {
        tungstenite::Error::Http(response) if response.status().as_u16() == 401 => {
            anyhow!(
                "ARI at {url} rejected the credentials of the events websocket (401 Unauthorized)"
            )
        }
        tungstenite::Error::Http(response) => {
            anyhow!(
                "ARI at {url} refused the websocket: HTTP {}",
                response.status()
            )
        }
        other => anyhow!(
            "cannot reach ARI at {url} (events websocket): {}",
            super::client::root_cause(&other)
        ),
    }
}
