//! A TCP proxy between the app and a node's ARI that can hold back one request of the app.
//!
//! Some scenarios happen in the few milliseconds between a request of the app and its execution (A5: a
//! party hangs up while the attended move is on its way). No phone timing hits that window, so a test
//! arms the proxy with [`AriProxy::hold`]: the next request whose request line contains the given pieces
//! waits in the proxy, the phone hangs up, and the test releases the request once the app has reacted.
//! Everything else (other requests, the events websocket) passes through untouched.
//!
//! The app speaks HTTP/1.1 without pipelining, so on each connection a request starts at the beginning
//! of a read that follows the previous response; the proxy looks at the first line of every read only.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Node;

/// An armed hold: which request to stop, whom to tell, and what to wait for.
struct Trap {
    pieces: Vec<String>,
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

type SharedTrap = Arc<Mutex<Option<Trap>>>;

/// The proxy: give the app [`AriProxy::url`] as the node's ARI URL.
pub struct AriProxy {
    pub url: String,
    trap: SharedTrap,
    accept: JoinHandle<()>,
}

/// A request the proxy holds (or will hold once it comes). Dropping it releases the request.
pub struct HeldRequest {
    arrived: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl AriProxy {
    pub async fn start(node: &Node) -> AriProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = format!("127.0.0.1:{}", node.http_port);
        let trap = SharedTrap::default();
        let accept = tokio::spawn(accept(listener, upstream, Arc::clone(&trap)));
        AriProxy { url, trap, accept }
    }

    /// Holds the next request whose request line contains every one of `pieces` (e.g. `/addChannel?` and a
    /// channel id), until the returned [`HeldRequest`] is released or dropped.
    pub fn hold(&self, pieces: &[&str]) -> HeldRequest {
        let (arrived_tx, arrived) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let trap = Trap {
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
            arrived: arrived_tx,
            release: release_rx,
        };
        *self.trap.lock().unwrap() = Some(trap);
        HeldRequest { arrived, release }
    }
}

impl Drop for AriProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl HeldRequest {
    /// Waits until the request reached the proxy (and is held there).
    pub async fn arrived(&mut self) {
        let within = std::time::Duration::from_secs(20);
        tokio::time::timeout(within, &mut self.arrived)
            .await
            .expect("the request to hold did not come")
            .expect("the proxy went away");
    }

    /// Lets the request go on to Asterisk.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

async fn accept(listener: TcpListener, upstream: String, trap: SharedTrap) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(&upstream).await else {
            continue;
        };
        let (client_read, mut client_write) = client.into_split();
        let (mut server_read, server_write) = server.into_split();
        tokio::spawn(forward_requests(
            client_read,
            server_write,
            Arc::clone(&trap),
        ));
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        });
    }
}

/// Copies the app's bytes to Asterisk, stopping at a read that starts the request the trap is armed for.
async fn forward_requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, trap: SharedTrap) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        if let Some(release) = spring(&trap, chunk) {
            // Released or dropped: either way the request goes on.
            let _ = release.await;
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The trap's release signal, if `chunk` starts the request it is armed for (the trap is then disarmed).
fn spring(trap: &SharedTrap, chunk: &[u8]) -> Option<oneshot::Receiver<()>> {
    let first_line = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let mut trap = trap.lock().unwrap();
    let armed = trap.as_ref()?;
    if !armed.pieces.iter().all(|p| first_line.contains(p.as_str())) {
        return None;
    }
    let Trap {
        arrived, release, ..
    } = trap.take()?;
    let _ = arrived.send(());
    Some(release)
}
