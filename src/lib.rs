//! ari-transfer: call routing and call transfer for Asterisk, as an ARI Stasis application.
//!
//! A map of the crate, in the order data flows through it:
//!
//! * [`ari`]: the ARI client. [`ari::stream`] keeps one events websocket per Asterisk node (reconnect with
//!   back-off, re-sync after every connect) and decodes events into [`ari::models`]; [`ari::client`]
//!   executes the REST requests that [`ari::request`] describes as plain data.
//! * [`engine`]: every call decision, as a pure state machine. It takes one input at a time (an event, a
//!   re-sync, a failed request, the time) and returns the requests to make. No I/O, no clock, no tasks.
//! * [`runtime`]: the IO shell. One loop feeds the engine and hands its requests to per-call lanes that run
//!   them in order against the right node.
//! * [`http`]: health and readiness endpoints, and the HTTP API (`/v1`, the Kazoo route, OpenAPI, the
//!   event stream, the web console), which parses, authenticates and hands commands to the engine
//!   through the runtime loop.
//! * [`events`]: delivers the events the engine decides ([`engine::events`]): numbered and kept for
//!   replay, streamed to SSE clients, posted to signed webhooks.
//! * [`metrics`]: the Prometheus series of `/metrics`, counted from the engine's events and the IO shell.
//! * [`config`]: the TOML file, validated once at start.
//! * [`backoff`]: reconnect delays.

pub mod ari;
pub mod backoff;
pub mod config;
pub mod engine;
pub mod events;
pub mod http;
pub mod metrics;
pub mod runtime;
