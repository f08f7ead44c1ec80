//! The engine fed arbitrary sequences of inputs: ARI events built from real captures with channels from a
//! small pool (and the channels the engine itself creates), re-syncs that keep any subset of them, node
//! losses, failed requests (any request the engine issued, any status), time passing, and API commands.
//! After each input: no panic, every request names a node the engine knows, and no call is left once
//! every channel is gone: at the end every channel is destroyed and the time runs on, and then no call,
//! no deadline may be left.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use ari_transfer::ari::models::{Bridge, Channel};
use ari_transfer::ari::request::AriRequest;
use ari_transfer::config::Config;
use ari_transfer::engine::api::{Command, Scope, TransferKind, TransferSpec};
use ari_transfer::engine::{Engine, EngineConfig, Input, Output};

const CONFIG: &str = r#"
[[nodes]]
name = "node1"
url = "http://127.0.0.1:8088"
username = "ari-transfer"
[[nodes]]
name = "node2"
url = "http://127.0.0.1:8188"
username = "ari-transfer"
trunks = { node1 = "node1" }
[[routes]]
match = "[a-z]+|\\d+"
dial = "PJSIP/{exten}"
[timeouts]
ring = 5
[metaflows]
digit_timeout = 1
[[metaflows.numbers]]
number = "9"
module = "resume"
[[metaflows.patterns]]
match = '2(\d+)'
module = "transfer"
[[accounts]]
id = "acme"
endpoints = ["alice", "bob"]
"#;

const NODES: [&str; 2] = ["node1", "node2"];
const PHONES: [&str; 4] = ["alice", "bob", "carol", "dave"];
const EXTENS: [&str; 4] = ["bob", "carol", "201", "nobody"];

#[derive(Arbitrary, Debug)]
enum Step {
    Start {
        channel: u8,
        dialed: bool,
        exten: u8,
    },
    State {
        channel: u8,
        up: bool,
    },
    Hangup {
        channel: u8,
        cause: u8,
    },
    Destroyed {
        channel: u8,
        cause: u8,
    },
    StasisEnd {
        channel: u8,
    },
    Dtmf {
        channel: u8,
        digit: u8,
    },
    Bridge {
        channel: u8,
        bridge: u8,
        entered: bool,
    },
    Blind {
        channel: u8,
        exten: u8,
    },
    Attended {
        channel: u8,
        replaced: u8,
        resolved: bool,
    },
    Reported {
        channel: u8,
    },
    Hold {
        channel: u8,
        hold: bool,
    },
    Dial {
        channel: u8,
        status: u8,
    },
    Fail {
        request: u8,
        status: Option<u16>,
    },
    Resync {
        node: bool,
        keep: u32,
    },
    Lost {
        node: bool,
    },
    Time {
        ms: u16,
    },
    Api {
        what: u8,
        channel: u8,
        exten: u8,
    },
}

/// What the run knows: channels (by node) and bridges it has seen, and the requests the engine made.
struct World {
    engine: Engine,
    now: u64,
    channels: Vec<(usize, String)>,
    bridges: Vec<(usize, String)>,
    requests: Vec<Output>,
}

impl World {
    fn channel(&self, i: u8) -> (usize, String) {
        self.channels[i as usize % self.channels.len()].clone()
    }

    fn snapshot(&self, id: &str, node: usize) -> Value {
        let n: usize = id.bytes().map(usize::from).sum();
        let phone = PHONES[n % PHONES.len()];
        json!({
            "id": id,
            "name": format!("PJSIP/{phone}-{:08x}", n),
            "state": "Up",
            "protocol_id": format!("{id}@{}", NODES[node]),
            "caller": {"name": phone, "number": phone},
            "connected": {"name": "", "number": ""},
            "dialplan": {"context": "from-phones", "exten": "bob", "priority": 1},
        })
    }

    fn feed(&mut self, input: Input) {
        let out = self.engine.handle(self.now, input);
        self.take(out);
    }

    fn event(&mut self, node: usize, event: Value) {
        if let Ok(event) = serde_json::from_value(event) {
            self.feed(Input::Event {
                node: NODES[node].into(),
                event,
            });
        }
    }

    fn take(&mut self, out: Vec<Output>) {
        for output in &out {
            if let Output::Ari { node, request, .. } = output {
                assert!(NODES.contains(&node.as_ref()), "a request to {node}");
                let i = NODES.iter().position(|n| *n == node.as_ref()).unwrap_or(0);
                match request {
                    AriRequest::CreateChannel { channel, .. } => {
                        self.channels.push((i, channel.clone()));
                    }
                    AriRequest::CreateBridge { bridge, .. } => {
                        self.bridges.push((i, bridge.clone()))
                    }
                    _ => {}
                }
            }
        }
        self.requests
            .extend(out.into_iter().filter(|o| matches!(o, Output::Ari { .. })));
        let excess = self.requests.len().saturating_sub(64);
        self.requests.drain(..excess);
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Start {
                channel,
                dialed,
                exten,
            } => {
                let (node, id) = self.channel(channel);
                let args = if dialed {
                    vec!["dialed".to_owned()]
                } else {
                    vec![EXTENS[exten as usize % 4].to_owned()]
                };
                let snapshot = self.snapshot(&id, node);
                self.event(
                    node,
                    json!({"type": "StasisStart", "args": args, "channel": snapshot}),
                );
            }
            Step::State { channel, up } => {
                let (node, id) = self.channel(channel);
                let mut snapshot = self.snapshot(&id, node);
                snapshot["state"] = json!(if up { "Up" } else { "Ringing" });
                self.event(
                    node,
                    json!({"type": "ChannelStateChange", "channel": snapshot}),
                );
            }
            Step::Hangup { channel, cause } => {
                let (node, id) = self.channel(channel);
                let snapshot = self.snapshot(&id, node);
                self.event(
                    node,
                    json!({"type": "ChannelHangupRequest", "cause": cause, "channel": snapshot}),
                );
            }
            Step::Destroyed { channel, cause } => {
                let (node, id) = self.channel(channel);
                self.destroy(node, &id, cause);
            }
            Step::StasisEnd { channel } => {
                let (node, id) = self.channel(channel);
                let snapshot = self.snapshot(&id, node);
                self.event(node, json!({"type": "StasisEnd", "channel": snapshot}));
            }
            Step::Dtmf { channel, digit } => {
                let (node, id) = self.channel(channel);
                let digit = ["*", "2", "0", "1", "9", "#"][digit as usize % 6];
                let snapshot = self.snapshot(&id, node);
                self.event(node, json!({"type": "ChannelDtmfReceived", "digit": digit, "duration_ms": 100, "channel": snapshot}));
            }
            Step::Bridge {
                channel,
                bridge,
                entered,
            } => {
                if self.bridges.is_empty() {
                    return;
                }
                let (node, id) = self.channel(channel);
                let (_, bridge) = self.bridges[bridge as usize % self.bridges.len()].clone();
                let kind = if entered {
                    "ChannelEnteredBridge"
                } else {
                    "ChannelLeftBridge"
                };
                let snapshot = self.snapshot(&id, node);
                self.event(node, json!({"type": kind, "bridge": {"id": bridge, "channels": []}, "channel": snapshot}));
            }
            Step::Blind { channel, exten } => {
                let (node, id) = self.channel(channel);
                let refer = self.refer(node, &id, EXTENS[exten as usize % 4], None);
                self.event(node, refer);
            }
            Step::Attended {
                channel,
                replaced,
                resolved,
            } => {
                let (node, id) = self.channel(channel);
                let (other_node, other) = self.channel(replaced);
                let replaced = (other_node, other, resolved);
                let refer = self.refer(node, &id, "carol", Some(replaced));
                self.event(node, refer);
            }
            Step::Reported { channel } => {
                let (node, id) = self.channel(channel);
                let mut refer = self.refer(node, &id, "carol", None);
                refer["state"] = json!("channel_answered");
                self.event(node, refer);
            }
            Step::Hold { channel, hold } => {
                let (node, id) = self.channel(channel);
                let kind = if hold { "ChannelHold" } else { "ChannelUnhold" };
                let snapshot = self.snapshot(&id, node);
                self.event(node, json!({"type": kind, "channel": snapshot}));
            }
            Step::Dial { channel, status } => {
                let (node, id) = self.channel(channel);
                let status = [
                    "ANSWER",
                    "BUSY",
                    "NOANSWER",
                    "CONGESTION",
                    "CHANUNAVAIL",
                    "",
                ][status as usize % 6];
                let snapshot = self.snapshot(&id, node);
                self.event(
                    node,
                    json!({"type": "Dial", "dialstatus": status, "peer": snapshot}),
                );
            }
            Step::Fail { request, status } => {
                if self.requests.is_empty() {
                    return;
                }
                let failed = self.requests[request as usize % self.requests.len()].clone();
                if let Output::Ari {
                    node,
                    call,
                    request,
                } = failed
                {
                    self.feed(Input::RequestFailed {
                        node,
                        call,
                        request,
                        status,
                        message: "fuzz".into(),
                    });
                }
            }
            Step::Resync { node, keep } => {
                let node = usize::from(node);
                let channels: Vec<Channel> = self
                    .channels
                    .iter()
                    .enumerate()
                    .filter(|(i, (n, _))| *n == node && keep & (1 << (i % 32)) != 0)
                    .filter_map(|(_, (n, id))| serde_json::from_value(self.snapshot(id, *n)).ok())
                    .collect();
                let bridges: Vec<Bridge> = self
                    .bridges
                    .iter()
                    .filter(|(n, _)| *n == node)
                    .filter_map(|(_, id)| {
                        serde_json::from_value(json!({"id": id, "channels": []})).ok()
                    })
                    .collect();
                self.feed(Input::NodeSynced {
                    node: NODES[node].into(),
                    channels,
                    bridges,
                });
            }
            Step::Lost { node } => self.feed(Input::NodeLost {
                node: NODES[usize::from(node)].into(),
            }),
            Step::Time { ms } => {
                self.now += u64::from(ms) * 4;
                let out = self.engine.handle_timeout(self.now);
                self.take(out);
            }
            Step::Api {
                what,
                channel,
                exten,
            } => {
                let (_, call) = self.channel(channel);
                let target = EXTENS[exten as usize % 4].to_owned();
                let command = match what % 8 {
                    0 => Command::ListCalls,
                    1 => Command::Hold { call, moh: None },
                    2 => Command::Unhold { call },
                    3 => Command::Hangup { call },
                    4 => Command::StartTransfer(TransferSpec {
                        call,
                        target,
                        ..TransferSpec::default()
                    }),
                    5 => Command::StartTransfer(TransferSpec {
                        call,
                        target,
                        kind: TransferKind::Blind,
                        ..TransferSpec::default()
                    }),
                    6 => Command::CancelTransfer {
                        id: format!("fuzz-x{exten}"),
                    },
                    _ => Command::CompleteTransfer {
                        id: format!("fuzz-x{exten}"),
                    },
                };
                let (_, out) = self.engine.command(self.now, &Scope::Admin, command);
                self.take(out);
            }
        }
    }

    fn refer(
        &self,
        node: usize,
        source: &str,
        destination: &str,
        replaces: Option<(usize, String, bool)>,
    ) -> Value {
        let mut requested = json!({"destination": destination});
        let mut refer = json!({
            "type": "ChannelTransfer",
            "referred_by": {"source_channel": self.snapshot(source, node)},
            "refer_to": {"requested_destination": requested.clone()},
        });
        if let Some((other_node, replaced, resolved)) = replaces {
            requested["protocol_id"] = json!(format!("{replaced}@{}", NODES[other_node]));
            requested["additional_protocol_params"] = json!([
                {"parameter_name": "from", "parameter_value": "tag-a"},
                {"parameter_name": "to", "parameter_value": "tag-b"}
            ]);
            refer["refer_to"]["requested_destination"] = requested;
            if resolved {
                refer["refer_to"]["destination_channel"] = self.snapshot(&replaced, other_node);
            }
        }
        refer
    }

    fn destroy(&mut self, node: usize, id: &str, cause: u8) {
        let snapshot = self.snapshot(id, node);
        self.event(node, json!({"type": "ChannelDestroyed", "cause": cause, "cause_txt": "", "channel": snapshot}));
    }
}

static ENGINE_CONFIG: OnceLock<EngineConfig> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let config = ENGINE_CONFIG.get_or_init(|| {
        let config = Config::parse(CONFIG, "fuzz.toml").expect("the fuzz config is valid");
        config.engine("fz".into())
    });
    let mut world = World {
        engine: Engine::new(config.clone()),
        now: 0,
        channels: (0..4).map(|i| (i % 2, format!("in{i}"))).collect(),
        bridges: Vec::new(),
        requests: Vec::new(),
    };
    let mut bytes = Unstructured::new(data);
    let mut steps = 0;
    while let Ok(step) = Step::arbitrary(&mut bytes) {
        world.step(step);
        steps += 1;
        if steps > 200 {
            break;
        }
    }
    // Everyone hangs up, the network says so, and time runs out: nothing may be left.
    let every: HashSet<(usize, String)> = world.channels.iter().cloned().collect();
    for (node, id) in every {
        world.destroy(node, &id, 16);
    }
    for _ in 0..10 {
        world.now += 600_000;
        let out = world.engine.handle_timeout(world.now);
        world.take(out);
    }
    assert_eq!(
        world.engine.call_count(),
        0,
        "a call outlived every channel"
    );
});
