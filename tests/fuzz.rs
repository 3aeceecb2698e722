//! Bounded fuzzing of every decoder the service feeds with network input (JSZ replies, server
//! events and advisories, API request bodies), seeded with replies captured from real servers:
//! whatever arrives, they return an error or a value, never panic, and the checks run on whatever
//! decodes. `PROPTEST_CASES` raises the number of cases for a longer run.

use std::time::{Duration, SystemTime};

use nats_insights::checks::{evaluate_all, Thresholds};
use nats_insights::history::History;
use nats_insights::observe::events::{decode_event, EVENT_SUBJECTS};
use nats_insights::observe::jsz::decode_reply;
use nats_insights::observe::{Snapshot, Via};
use nats_insights::service::api::{handle, Context, Endpoint};
use nats_insights::service::{EngineStatus, Instance};
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            // Each JSZ reply and event payload on its own, as it travels on the wire.
            match value {
                serde_json::Value::Array(items) => {
                    out.extend(items.iter().map(|i| serde_json::to_vec(i).expect("encode")))
                }
                other => out.push(serde_json::to_vec(&other["payload"]).expect("encode")),
            }
        }
    }
    out
}

/// A real payload, mangled: truncated, a byte replaced, or a value swapped for another type.
fn mangled() -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus();
    (0..seeds.len(), any::<usize>(), any::<u8>(), 0..4u8).prop_map(move |(i, at, byte, how)| {
        let mut payload = seeds[i].clone();
        let at = at % payload.len().max(1);
        match how {
            0 => payload.truncate(at),
            1 => {
                if let Some(b) = payload.get_mut(at) {
                    *b = byte;
                }
            }
            2 => {
                // Replace a value after some ':' with a value of another type.
                if let Some(pos) = payload[at..].iter().position(|b| *b == b':') {
                    let start = at + pos + 1;
                    let replacement: &[u8] = match byte % 5 {
                        0 => b"null",
                        1 => b"[1,{}]",
                        2 => b"\"text\"",
                        3 => b"-1e999",
                        _ => b"{\"x\":true}",
                    };
                    payload.splice(start..start, replacement.iter().copied());
                }
            }
            _ => payload.extend(std::iter::repeat_n(byte, at % 64)),
        }
        payload
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mangled()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn jsz_decoding_never_panics_and_checks_run_on_what_decodes(payloads in proptest::collection::vec(bytes(), 1..4)) {
        let replies: Vec<_> = payloads.iter().filter_map(|p| decode_reply(p).ok()).map(|r| (r, Via::Gather)).collect();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let snapshot = Snapshot::from_replies(at, replies, &[]);
        let mut history = History::default();
        history.record_snapshot(&snapshot, &Thresholds::default(), at);
        let _ = evaluate_all(&snapshot, &history, &Thresholds::default(), at);
    }

    #[test]
    fn event_decoding_never_panics(payload in bytes(), which in 0..EVENT_SUBJECTS.len()) {
        let subject = EVENT_SUBJECTS[which].replace('*', "ID").replace('>', "X");
        if let Ok(event) = decode_event(&subject, &payload, SystemTime::UNIX_EPOCH) {
            let mut history = History::default();
            history.record_event(&event);
        }
    }

    #[test]
    fn api_requests_never_panic(payload in bytes(), which in 0..5usize) {
        let endpoint = [Endpoint::Status, Endpoint::Findings, Endpoint::Checks, Endpoint::History, Endpoint::Explain][which];
        let status = EngineStatus::default();
        let instance = Instance { id: "i".into(), started: SystemTime::UNIX_EPOCH };
        let ctx = Context { status: &status, instance: &instance, thresholds: &Thresholds::default(), now: SystemTime::UNIX_EPOCH };
        let _ = handle(endpoint, &payload, ctx);
    }
}
