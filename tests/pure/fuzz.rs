//! Bounded fuzzing of every decoder the service feeds with network input (JSZ replies, server
//! events and advisories, API request bodies), seeded with replies captured from real servers:
//! whatever arrives, they return an error or a value, never panic, and the checks run on whatever
//! decodes. Then the HA input (peer events, state replies, stored records, with absurd numbers,
//! keys and times): whatever the validation lets through, a real fault is still raised and
//! resolved in one episode. `PROPTEST_CASES` raises the number of cases for a longer run.

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

// ---------------------------------------------------------------------------------------------
// HA input: peer events, state replies and stored records, as a peer, a forger or a damaged
// bucket may send them. Whatever arrives, the next real fault of a server is raised and resolved
// by a lone instance as usual, and no number wraps.

mod ha_input {
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};

    use nats_insights::checks::{CheckId, Evaluation, Finding, Outcome};
    use nats_insights::findings::{reconcile, TransitionKind};
    use nats_insights::ha::{
        record_of_event, validate, Action, Coordinator, Input, Ledger, PeerState,
    };
    use nats_insights::observe::GroupId;
    use nats_insights::publish::FindingEvent;
    use nats_insights::record::{Record, Stored};
    use nats_insights::timing::Timing;
    use proptest::prelude::*;

    const KEY: &str = "META_001/default/n2";

    fn wall(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn finding() -> Finding {
        Finding {
            check: CheckId::META_001,
            key: KEY.into(),
            cluster: None,
            domain: None,
            server: Some("n2".into()),
            summary: "n2 is offline".into(),
            evidence: serde_json::json!({}),
            remediation: vec![],
            fingerprint: "n2".into(),
        }
    }

    fn evaluation(faulty: bool) -> Evaluation {
        Evaluation {
            check: CheckId::META_001,
            group: GroupId::default(),
            outcome: Outcome::Ran {
                findings: if faulty { vec![finding()] } else { vec![] },
                undecided: BTreeSet::new(),
            },
        }
    }

    /// One round of a lone instance at `secs` (its clock and the wall clock alike): what it
    /// published.
    fn round(c: &mut Coordinator, faulty: bool, secs: u64) -> Vec<(TransitionKind, u64, u64)> {
        let ledger = c.ledger().clone();
        let (next, transitions) = reconcile(
            &ledger.active,
            &ledger.ended,
            &[evaluation(faulty)],
            wall(secs),
        );
        let now = Duration::from_secs(secs);
        c.handle(
            Input::Evaluated {
                next,
                transitions,
                link: true,
            },
            now,
        );
        c.handle(Input::Tick, now);
        c.actions()
            .filter_map(|a| match a {
                Action::Publish(t) if t.finding.key == KEY => Some((t.kind, t.episode, t.revision)),
                _ => None,
            })
            .collect()
    }

    /// After whatever was fed to `c` (at 5 s): healthy, faulty, healthy rounds far enough apart
    /// for any hold: the fault is raised once and resolved once, in one episode, unwrapped.
    fn a_real_fault_is_raised_and_resolved(c: &mut Coordinator) -> Result<(), TestCaseError> {
        round(c, false, 20);
        let raised = round(c, true, 40);
        prop_assert_eq!(raised.len(), 1, "raised {:?}", raised);
        prop_assert_eq!(raised[0].0, TransitionKind::Raised);
        prop_assert_eq!(raised[0].2, 1);
        let resolved = round(c, false, 60);
        prop_assert_eq!(resolved.len(), 1, "resolved {:?}", resolved);
        prop_assert_eq!(resolved[0].0, TransitionKind::Resolved);
        prop_assert_eq!(resolved[0].1, raised[0].1, "one episode");
        prop_assert!(
            raised[0].1 <= validate::NUMBER_MAX.saturating_add(validate::EPISODE_JUMP) + 1
        );
        Ok(())
    }

    fn started(stored: Ledger) -> Coordinator {
        let timing = Timing::default().ha;
        let mut c = Coordinator::new("me", timing, stored, Duration::ZERO);
        c.handle(Input::Tick, timing.sync_wait);
        c.actions().for_each(drop);
        c
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..5u64,
            Just(validate::NUMBER_MAX),
            Just(validate::NUMBER_MAX + 1),
            Just(u64::MAX / 2),
            Just(u64::MAX - 1),
            Just(u64::MAX),
            any::<u64>(),
        ]
    }

    fn time_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("2027-01-15T08:00:00Z".to_string()),
            Just("2026-12-06T20:00:00Z".to_string()),
            Just("9999-12-31T23:59:59Z".to_string()),
            Just("not a time".to_string()),
        ]
    }

    prop_compose! {
        fn forged_event()(
            kind in 0..3u8,
            episode in number(),
            revision in number(),
            key in prop_oneof![Just(KEY.to_string()), Just("META_001/default/n3".to_string()), Just("garbage".to_string()), ".{0,40}"],
            raised_at in time_text(),
            timestamp in time_text(),
            epoch in prop_oneof![Just(String::new()), Just("Epoch9".to_string()), ".{0,80}"],
        ) -> FindingEvent {
            let transition = nats_insights::findings::Transition {
                kind: [TransitionKind::Raised, TransitionKind::Updated, TransitionKind::Resolved][kind as usize],
                finding: finding(),
                episode: 1,
                epoch: String::new(),
                revision: 1,
                raised_at: wall(0),
                at: wall(0),
            };
            let mut event = FindingEvent::from_transition(&transition, "forger");
            event.episode = episode;
            event.revision = revision;
            event.finding = key;
            event.raised_at = raised_at;
            event.timestamp = timestamp;
            event.epoch = epoch;
            event
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn forged_peer_events_never_stop_a_real_fault(events in proptest::collection::vec(forged_event(), 1..6), raised_first in any::<bool>()) {
            // The clock the validation compares timestamps with: the events' own era.
            let now = humantime::parse_rfc3339("2027-01-15T08:00:00Z").expect("time");
            let mut c = started(Ledger { epoch: "Mine".into(), ..Ledger::default() });
            if raised_first {
                round(&mut c, true, 3);
            }
            for event in &events {
                let Some(record) = record_of_event(event) else { continue };
                if let Ok(record) = validate::event(record, c.ledger(), now) {
                    c.handle(Input::Event(record), Duration::from_secs(5));
                }
            }
            c.actions().for_each(drop);
            a_real_fault_is_raised_and_resolved(&mut c)?;
        }

        #[test]
        fn state_replies_of_any_shape_never_stop_a_real_fault(payload in super::bytes(), episode in number(), revision in number(), uptime in number()) {
            let now = wall(0);
            let mut c = started(Ledger { epoch: "Mine".into(), ..Ledger::default() });
            // Whatever bytes arrive, and a well-formed reply with absurd numbers.
            let mut absurd = Ledger { epoch: "Zzz".into(), ..Ledger::default() };
            absurd.fold(Record::Active(nats_insights::findings::ActiveFinding {
                finding: finding(),
                episode,
                epoch: String::new(),
                revision,
                raised_at: now,
                changed_at: now,
            }));
            absurd.ended.insert(KEY.into(), episode);
            let replies = [
                serde_json::from_slice::<PeerState>(&payload).ok(),
                Some(PeerState { instance: "peer".into(), uptime_ms: uptime, ledger: absurd, synced: true, deployment: String::new() }),
            ];
            for reply in replies.into_iter().flatten() {
                if let Ok((state, _)) = validate::peer_state(reply, now) {
                    c.handle(Input::PeerState(state), Duration::from_secs(5));
                }
            }
            c.actions().for_each(drop);
            a_real_fault_is_raised_and_resolved(&mut c)?;
        }

        #[test]
        fn stored_records_of_any_shape_never_stop_a_real_fault(payload in super::bytes(), episode in number(), revision in number(), resolved in any::<bool>()) {
            let now = wall(0);
            let mut stored = Ledger { epoch: "Mine".into(), ..Ledger::default() };
            let absurd = Stored {
                writer: "damaged".into(),
                record: if resolved {
                    Record::Resolved(nats_insights::record::ResolvedFinding { finding: finding(), episode, epoch: String::new(), revision, raised_at: now, resolved_at: now })
                } else {
                    Record::Active(nats_insights::findings::ActiveFinding { finding: finding(), episode, epoch: String::new(), revision, raised_at: now, changed_at: now })
                },
            };
            let records = [
                serde_json::from_slice::<Stored>(&payload).ok(),
                serde_json::to_vec(&absurd).ok().and_then(|b| serde_json::from_slice::<Stored>(&b).ok()),
            ];
            for stored_record in records.into_iter().flatten() {
                if let Ok(record) = validate::record(stored_record.record, now) {
                    stored.fold(record);
                }
            }
            let mut c = started(stored);
            a_real_fault_is_raised_and_resolved(&mut c)?;
        }
    }
}
