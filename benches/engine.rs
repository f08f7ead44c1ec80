//! Engine benchmark: events per second through the engine alone, and memory per tracked call.
//!
//! `cargo bench --bench engine` (add `-- 200000` for another number of calls). It prints its figures and how
//! they were measured; it asserts nothing about speed.
//!
//! * Throughput: N calls, each living through a full blind transfer: the caller enters, the callee is dialed
//!   and answers, the caller's phone REFERs to carol, carol answers, then carol and the callee hang up
//!   (9 events a call). Wall time of `Engine::handle` over all of them, single thread.
//! * Memory: N calls left connected; heap bytes still allocated (counted by a wrapping global allocator)
//!   divided by N.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use ari_transfer::ari::models::Event;
use ari_transfer::engine::{Engine, EngineConfig, Input, Route};
use serde_json::{json, Value};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn new_engine() -> Engine {
    Engine::new(EngineConfig {
        app: "ari-transfer".into(),
        instance: "bench".into(),
        routes: vec![Route::new("[a-z]+", "PJSIP/{exten}").unwrap()],
        ring_timeout: 30_000,
        recall_transferer: true,
        trunks: Vec::new(),
        metaflows: Default::default(),
        refer_barrier: true,
        accounts: Default::default(),
    })
}

fn channel(id: &str, state: &str) -> Value {
    json!({"id": id, "name": format!("PJSIP/{id}"), "state": state, "protocol_id": format!("{id}@bench"),
           "dialplan": {"context": "from-phones", "exten": "bob", "priority": 1}})
}

fn input(value: Value) -> Input {
    let event: Event = serde_json::from_value(value).unwrap();
    Input::Event {
        node: "node1".into(),
        event,
    }
}

/// The events of call `i`, up to connected (`full` = false) or through a blind transfer and hangup.
/// Ids follow the engine's own numbering: call i is key 2i-1, its transfer key 2i.
fn call_events(i: u64, full: bool) -> Vec<Input> {
    let caller = format!("caller{i}");
    let key = if full { 2 * i - 1 } else { i };
    let callee = format!("bench-{key}-b");
    let mut events = vec![
        input(json!({"type": "StasisStart", "args": [], "channel": channel(&caller, "Ring")})),
        input(
            json!({"type": "StasisStart", "args": ["dialed"], "channel": channel(&callee, "Down")}),
        ),
        input(json!({"type": "ChannelStateChange", "channel": channel(&callee, "Up")})),
    ];
    if full {
        let target = format!("bench-{}-t", key + 1);
        events.extend([
            input(json!({"type": "ChannelTransfer", "refer_to": {"requested_destination": {"destination": "carol"}},
                         "referred_by": {"source_channel": channel(&caller, "Up")}})),
            input(json!({"type": "StasisStart", "args": ["dialed"], "channel": channel(&target, "Down")})),
            input(json!({"type": "ChannelStateChange", "channel": channel(&target, "Up")})),
            input(json!({"type": "StasisEnd", "channel": channel(&caller, "Up")})),
            input(json!({"type": "StasisEnd", "channel": channel(&target, "Up")})),
            input(json!({"type": "StasisEnd", "channel": channel(&callee, "Up")})),
        ]);
    }
    events
}

fn main() {
    let calls: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);

    // Throughput. Events are decoded before the clock starts: this measures the engine, not serde.
    let events: Vec<Input> = (1..=calls).flat_map(|i| call_events(i, true)).collect();
    let count = events.len();
    let mut engine = new_engine();
    let mut requests = 0usize;
    let start = Instant::now();
    for (n, event) in events.into_iter().enumerate() {
        requests += engine.handle(n as u64, event).len();
    }
    let elapsed = start.elapsed();
    assert_eq!(engine.call_count(), 0, "every call ended");
    println!(
        "throughput: {count} events ({calls} calls through a blind transfer) in {:.3} s = {:.0} events/s, \
         {:.2} µs/event, {requests} outputs",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );

    // Memory per tracked call.
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut engine = new_engine();
    let events: Vec<Input> = (1..=calls).flat_map(|i| call_events(i, false)).collect();
    for (n, event) in events.into_iter().enumerate() {
        drop(engine.handle(n as u64, event));
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    assert_eq!(engine.call_count() as u64, calls);
    println!(
        "memory: {calls} connected calls hold {:.1} MiB of heap = {} bytes per call \
         (live heap bytes counted by a wrapping allocator, before the engine and after its events are gone)",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) / calls as isize
    );
}
