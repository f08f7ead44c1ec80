//! A TCP proxy between the app and a node's ARI that can hold back one request of the app.
//!
//! Some scenarios happen in the few milliseconds between a request of the app and its execution (A5: a
//! party hangs up while the attended move is on its way). No phone timing hits that window, so a test
//! arms the proxy with [`AriProxy::hold`]: the next request whose request line contains the given pieces
//! waits in the proxy, the phone hangs up, and the test releases the request once the app has reacted.
//! Everything else (other requests, the events websocket) passes through untouched.
//!
//! For the fault matrix (`tests/e2e_faults.rs`) it can also answer matching requests itself with an error
//! status ([`AriProxy::fail`]), pass them on late ([`AriProxy::delay`]), and cut the events websocket
//! ([`AriProxy::drop_events`]): the app reconnects, through the proxy, as it would to a restarted node.
//!
//! The app speaks HTTP/1.1 without pipelining, so on each connection a request starts at the beginning
//! of a read that follows the previous response; the proxy looks at the first line of every read only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What the proxy does to the requests whose request line contains every one of `pieces`.
#[derive(Debug, Clone)]
enum Fault {
    /// Answers them with this status itself, `times` times.
    Status {
        pieces: Vec<String>,
        status: u16,
        times: usize,
    },
    /// Passes them on after this long, `times` times.
    Delay {
        pieces: Vec<String>,
        by: Duration,
        times: usize,
    },
}

/// The faults armed, and every connection (to cut the events websockets).
#[derive(Default)]
struct Faults {
    armed: Vec<Fault>,
    connections: Vec<Arc<Connection>>,
    /// Requests answered or delayed so far.
    sprung: usize,
}

/// One connection through the proxy: whether it is an events websocket, and how to cut it.
#[derive(Default)]
struct Connection {
    events: std::sync::atomic::AtomicBool,
    cut: tokio::sync::Notify,
}

type SharedFaults = Arc<Mutex<Faults>>;

/// What to do with one request.
enum Action {
    Pass,
    Answer(u16),
    Delay(Duration),
}

impl Faults {
    fn action(&mut self, first_line: &str) -> Action {
        let matching = |pieces: &[String]| pieces.iter().all(|p| first_line.contains(p.as_str()));
        for fault in &mut self.armed {
            match fault {
                Fault::Status {
                    pieces,
                    status,
                    times,
                } if *times > 0 && matching(pieces) => {
                    *times -= 1;
                    self.sprung += 1;
                    return Action::Answer(*status);
                }
                Fault::Delay { pieces, by, times } if *times > 0 && matching(pieces) => {
                    *times -= 1;
                    self.sprung += 1;
                    return Action::Delay(*by);
                }
                _ => {}
            }
        }
        Action::Pass
    }
}

/// The proxy: give the app [`AriProxy::url`] as the node's ARI URL.
pub struct AriProxy {
    pub url: String,
    trap: SharedTrap,
    faults: SharedFaults,
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
        let faults = SharedFaults::default();
        let shared = (Arc::clone(&trap), Arc::clone(&faults));
        let accept = tokio::spawn(accept(listener, upstream, shared));
        AriProxy {
            url,
            trap,
            faults,
            accept,
        }
    }

    /// Answers the next `times` requests whose request line contains every one of `pieces` with
    /// `status` itself; they never reach Asterisk.
    pub fn fail(&self, pieces: &[&str], status: u16, times: usize) {
        let pieces = pieces.iter().map(|p| p.to_string()).collect();
        let fault = Fault::Status {
            pieces,
            status,
            times,
        };
        self.faults.lock().unwrap().armed.push(fault);
    }

    /// Passes the next `times` matching requests on to Asterisk `by` late.
    pub fn delay(&self, pieces: &[&str], by: Duration, times: usize) {
        let pieces = pieces.iter().map(|p| p.to_string()).collect();
        let fault = Fault::Delay { pieces, by, times };
        self.faults.lock().unwrap().armed.push(fault);
    }

    /// How many requests the faults have answered or delayed.
    pub fn sprung(&self) -> usize {
        self.faults.lock().unwrap().sprung
    }

    /// Cuts every events websocket open through the proxy (both directions at once); how many it cut.
    pub fn drop_events(&self) -> usize {
        let mut faults = self.faults.lock().unwrap();
        let (events, others): (Vec<_>, Vec<_>) = std::mem::take(&mut faults.connections)
            .into_iter()
            .partition(|c| c.events.load(std::sync::atomic::Ordering::SeqCst));
        faults.connections = others;
        for connection in &events {
            connection.cut.notify_waiters();
        }
        events.len()
    }

    /// Cuts every events websocket and refuses new ones (503) until [`AriProxy::heal`]: a gap in which the
    /// app hears nothing from the node (its REST requests still pass); how many it cut.
    pub fn cut_events(&self) -> usize {
        self.fail(&["GET /ari/events"], 503, usize::MAX);
        self.drop_events()
    }

    /// Disarms every fault: the requests from now on pass.
    pub fn heal(&self) {
        self.faults.lock().unwrap().armed.clear();
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

async fn accept(
    listener: TcpListener,
    upstream: String,
    (trap, faults): (SharedTrap, SharedFaults),
) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(&upstream).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (mut server_read, server_write) = server.into_split();
        // Written by the responses from Asterisk and by the proxy's own error answers.
        let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
        let connection = Arc::new(Connection::default());
        faults
            .lock()
            .unwrap()
            .connections
            .push(Arc::clone(&connection));
        let down_write = Arc::clone(&client_write);
        let down_cut = Arc::clone(&connection);
        tokio::spawn(async move {
            let copy = async {
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0
                        || down_write
                            .lock()
                            .await
                            .write_all(&buffer[..n])
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                let _ = down_write.lock().await.shutdown().await;
            };
            tokio::select! {
                _ = copy => {}
                _ = down_cut.cut.notified() => {}
            }
        });
        let shared = (Arc::clone(&trap), Arc::clone(&faults));
        tokio::spawn(async move {
            let forward =
                forward_requests(client_read, server_write, client_write, shared, &connection);
            tokio::select! {
                _ = forward => {}
                _ = connection.cut.notified() => {}
            }
        });
    }
}

/// Copies the app's bytes to Asterisk, stopping at a read that starts the request the trap is armed for,
/// and answering, or delaying, the requests a fault names.
async fn forward_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    back: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    (trap, faults): (SharedTrap, SharedFaults),
    connection: &Connection,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut first = true;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        let first_line = chunk.split(|&b| b == b'\n').next().unwrap_or_default();
        let first_line = String::from_utf8_lossy(first_line).into_owned();
        if first && first_line.contains("/ari/events") {
            // This connection is an events websocket: the proxy may cut it.
            connection
                .events
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        first = false;
        if let Some(release) = spring(&trap, chunk) {
            // Released or dropped: either way the request goes on.
            let _ = release.await;
        }
        let action = faults.lock().unwrap().action(&first_line);
        match action {
            Action::Answer(status) => {
                let body = r#"{"message":"proxy fault"}"#;
                let answer = format!(
                    "HTTP/1.1 {status} Fault\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if back
                    .lock()
                    .await
                    .write_all(answer.as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Action::Delay(by) => tokio::time::sleep(by).await,
            Action::Pass => {}
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
