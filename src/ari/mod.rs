//! A thin, typed ARI client: event models, the REST requests as data, their execution, and the events
//! websocket with reconnect and re-sync.

pub mod client;
pub mod models;
pub mod request;
pub mod stream;
