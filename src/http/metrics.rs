//! Prometheus metrics and the health verdict: turns the engine's status (the same `watch`
//! channel the micro service reads) into metrics in the text exposition format, served by the
//! listener ([`super`]) as `/metrics` and `/healthz`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::checks::{CheckId, MemberState};
use crate::observe::{GroupId, DEFAULT_GROUP_LABEL};
use crate::service::EngineStatus;
use crate::status::StoreHealth;

/// Prefix of every metric name.
pub const PREFIX: &str = "nats_insights";

/// Flags of `run` for the metrics and health endpoint.
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics, a health check on /healthz and a status
    /// page on / (e.g. `0.0.0.0:9464`; port 0 picks a free one and logs it).
    #[arg(long, env = "INSIGHTS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// TLS and basic auth for --metrics-listen from a web config file in the YAML format
    /// Prometheus exporters read (`tls_server_config`, `basic_auth_users` with bcrypt hashes).
    #[arg(
        long,
        alias = "web.config.file",
        env = "INSIGHTS_WEB_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub web_config_file: Option<PathBuf>,
}

impl MetricsArgs {
    /// The web config file's TLS and basic auth (none without `--web-config-file`); the error is
    /// one line naming the file and the problem.
    pub fn web_config(&self) -> Result<super::web::WebConfig, String> {
        match (&self.web_config_file, &self.metrics_listen) {
            (Some(path), Some(_)) => super::web::WebConfig::load(path),
            (Some(path), None) => Err(format!(
                "--web-config-file {} is for the HTTP listener: give --metrics-listen too",
                path.display()
            )),
            (None, _) => Ok(super::web::WebConfig::default()),
        }
    }
}

/// A meta group's series are labelled with its domain (`default` for the default domain): the
/// one name of a group that does not change when leadership moves between clusters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    domain: String,
    state: &'static str,
}

/// One member of a meta group, by server name (a group has a handful: the series are bounded by
/// the meta group's size, not by the number of servers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    domain: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    check: &'static str,
    severity: &'static str,
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Member states as metric label values.
const MEMBER_STATES: [&str; 3] = ["online", "offline", "unknown"];
/// Store states as metric label values.
const STORE_STATES: [&str; 3] = ["memory", "healthy", "degraded"];

/// The metric instruments and what earlier statuses said, so counters only ever grow by what is
/// new. One recorder per process; `update` is called with every status the engine publishes.
#[derive(Debug)]
pub struct Recorder {
    registry: Arc<Registry>,
    leader_changes: Counter,
    members: Family<MemberLabels, Gauge>,
    cluster_size: Family<GroupLabels, Gauge>,
    quorum_needed: Family<GroupLabels, Gauge>,
    pending: Family<GroupLabels, Gauge>,
    max_lag: Family<GroupLabels, Gauge>,
    versions: Family<GroupLabels, Gauge>,
    quorum: Family<GroupLabels, Gauge>,
    leader_present: Family<GroupLabels, Gauge>,
    unheard: Family<GroupLabels, Gauge>,
    unheard_seconds: Family<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_leader_change: Family<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    member_leader: Family<ServerLabels, Gauge>,
    member_lag: Family<ServerLabels, Gauge>,
    findings: Family<FindingLabels, Gauge>,
    poll_duration: Histogram,
    polls: Counter,
    poll_bytes: Counter,
    last_poll: Gauge<f64, std::sync::atomic::AtomicU64>,
    servers_answering: Gauge,
    malformed: Counter,
    events: Family<KindLabels, Counter>,
    store: Family<StateLabels, Gauge>,
    ha_peers: Gauge,
    alertmanager_up: Family<UrlLabels, Gauge>,
    alertmanager_alerts: Family<UrlLabels, Gauge>,
    alertmanager_sends: Family<UrlLabels, Counter>,
    alertmanager_failures: Family<UrlLabels, Counter>,
    seen: Seen,
}

/// Cumulative values of the last status folded in.
#[derive(Debug)]
struct Seen {
    polls: u64,
    malformed: u64,
    events: BTreeMap<String, u64>,
    /// Sends and failed sends by Alertmanager URL.
    alertmanager: BTreeMap<String, (u64, u64)>,
    /// Leader changes at or before this time were counted already (or predate this process).
    leader_changes_until: SystemTime,
    /// The groups (labels) of the last status.
    groups: BTreeSet<String>,
    /// Each group's members (server names) of the last status.
    members: BTreeMap<String, BTreeSet<String>>,
}

impl Recorder {
    /// A recorder with every metric registered; leader changes are counted from `since` on (those
    /// loaded from the state bucket happened before this process and are not counted).
    pub fn new(since: SystemTime) -> Recorder {
        let mut registry = Registry::with_prefix(PREFIX);
        let leader_changes = Counter::default();
        registry.register(
            "meta_leader_changes",
            "Meta leader changes seen by this process (advisories and polls, each counted once)",
            leader_changes.clone(),
        );
        let members = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "meta_members",
            "Meta group members by state (online, offline, unknown) as nats-insights judges them",
            members.clone(),
        );
        let cluster_size = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_cluster_size",
            "Members the meta group's raft layer counts (cluster_size)",
            cluster_size.clone(),
        );
        let pending = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_pending",
            "JetStream API requests pending on the meta leader (its JSZ pending; META_008)",
            pending.clone(),
        );
        let max_lag = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_max_lag",
            "The largest lag, in operations, the meta leader shows for any member (META_101)",
            max_lag.clone(),
        );
        let versions = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_versions",
            "Distinct nats-server versions the meta group's members run (META_104)",
            versions.clone(),
        );
        let quorum_needed = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_quorum_needed",
            "Members the meta group needs for quorum",
            quorum_needed.clone(),
        );
        let quorum = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_quorum",
            "1 when the members online are at least quorum_needed, else 0",
            quorum.clone(),
        );
        let leader_present = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_leader_present",
            "1 when some server reports a meta leader, else 0",
            leader_present.clone(),
        );
        let unheard = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "meta_group_unheard",
            "1 while no server of the meta group answers though others do (META_105): its other series then say nothing current, its members count as unknown",
            unheard.clone(),
        );
        let unheard_seconds =
            Family::<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "meta_group_unheard_seconds",
            "Seconds since any server of the meta group last answered, while it is unheard (0 while it answers)",
            unheard_seconds.clone(),
        );
        let last_leader_change =
            Family::<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "meta_last_leader_change_timestamp_seconds",
            "When the meta group's last leader change known to nats-insights was seen (Unix time; absent while none is known)",
            last_leader_change.clone(),
        );
        let member_leader = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "meta_member_leader",
            "1 for the meta group's member that leads, 0 for the others",
            member_leader.clone(),
        );
        let member_lag = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "meta_member_lag",
            "Operations the meta leader shows this member behind (absent without a leader's view)",
            member_lag.clone(),
        );
        let findings = Family::<FindingLabels, Gauge>::default();
        registry.register(
            "findings_active",
            "Active findings by check, severity and meta group (domain)",
            findings.clone(),
        );
        for check in CheckId::all() {
            let _ = findings.get_or_create(&FindingLabels {
                check: check.as_str(),
                severity: check.severity().as_str(),
                domain: DEFAULT_GROUP_LABEL.to_string(),
            });
        }
        let poll_duration = Histogram::new(exponential_buckets(0.005, 2.0, 10));
        registry.register_with_unit(
            "poll_duration",
            "Time one JSZ poll of every server took",
            Unit::Seconds,
            poll_duration.clone(),
        );
        let polls = Counter::default();
        registry.register("polls", "JSZ polls completed", polls.clone());
        let poll_bytes = Counter::default();
        registry.register_with_unit(
            "poll_received",
            "Bytes of the replies the JSZ polls received",
            Unit::Bytes,
            poll_bytes.clone(),
        );
        let last_poll = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "last_poll_timestamp_seconds",
            "When the last poll completed (Unix time)",
            last_poll.clone(),
        );
        let servers_answering = Gauge::default();
        registry.register(
            "servers_answering",
            "Servers that answered the last poll",
            servers_answering.clone(),
        );
        let malformed = Counter::default();
        registry.register(
            "malformed_inputs",
            "Malformed JSZ replies and events received and ignored",
            malformed.clone(),
        );
        let events = Family::<KindLabels, Counter>::default();
        registry.register(
            "meta_events",
            "Server and meta events received, by kind",
            events.clone(),
        );
        let store = Family::<StateLabels, Gauge>::default();
        registry.register(
            "store_state",
            "Where finding state is kept: 1 for the current state (memory, healthy, degraded)",
            store.clone(),
        );
        let ha_peers = Gauge::default();
        registry.register(
            "ha_peers",
            "Other instances of this deployment (HA peers) heard within the peer liveness window",
            ha_peers.clone(),
        );
        let alertmanager_up = Family::<UrlLabels, Gauge>::default();
        registry.register(
            "alertmanager_up",
            "0 while sends of alerts to this Alertmanager (--alertmanager-url) fail, else 1 (also before the first send)",
            alertmanager_up.clone(),
        );
        let alertmanager_alerts = Family::<UrlLabels, Gauge>::default();
        registry.register(
            "alertmanager_alerts",
            "Alerts (active and recently resolved) the last successful send carried",
            alertmanager_alerts.clone(),
        );
        let alertmanager_sends = Family::<UrlLabels, Counter>::default();
        registry.register(
            "alertmanager_sends",
            "Successful sends of alerts to this Alertmanager",
            alertmanager_sends.clone(),
        );
        let alertmanager_failures = Family::<UrlLabels, Counter>::default();
        registry.register(
            "alertmanager_send_failures",
            "Failed sends of alerts to this Alertmanager (each retried with backoff)",
            alertmanager_failures.clone(),
        );
        registry.register(
            "build",
            "This build of nats-insights",
            Info::new(BuildLabels {
                version: crate::VERSION,
            }),
        );
        let recorder = Recorder {
            registry: Arc::new(registry),
            leader_changes,
            members,
            cluster_size,
            quorum_needed,
            pending,
            max_lag,
            versions,
            quorum,
            leader_present,
            unheard,
            unheard_seconds,
            last_leader_change,
            member_leader,
            member_lag,
            findings,
            poll_duration,
            polls,
            poll_bytes,
            last_poll,
            servers_answering,
            malformed,
            events,
            store,
            ha_peers,
            alertmanager_up,
            alertmanager_alerts,
            alertmanager_sends,
            alertmanager_failures,
            seen: Seen {
                polls: 0,
                malformed: 0,
                events: BTreeMap::new(),
                alertmanager: BTreeMap::new(),
                leader_changes_until: since,
                groups: BTreeSet::new(),
                members: BTreeMap::new(),
            },
        };
        recorder.set_store(&StoreHealth::Memory);
        recorder
    }

    /// Drops the per-group series of groups the status no longer lists (forgotten by an
    /// operator): a retired group must not keep exporting its last state.
    fn forget_gone_groups(&mut self, status: &EngineStatus) {
        let now: BTreeSet<String> = status
            .meta_groups
            .iter()
            .map(|m| m.group.label().to_string())
            .collect();
        let gone: Vec<String> = self.seen.groups.difference(&now).cloned().collect();
        for domain in gone {
            let labels = GroupLabels {
                domain: domain.clone(),
            };
            for family in [
                &self.cluster_size,
                &self.quorum_needed,
                &self.pending,
                &self.max_lag,
                &self.versions,
                &self.quorum,
                &self.leader_present,
                &self.unheard,
            ] {
                family.remove(&labels);
            }
            self.unheard_seconds.remove(&labels);
            self.last_leader_change.remove(&labels);
            self.forget_members(&domain, &BTreeSet::new());
            for state in MEMBER_STATES {
                self.members.remove(&MemberLabels {
                    domain: domain.clone(),
                    state,
                });
            }
            if domain != DEFAULT_GROUP_LABEL {
                for check in CheckId::all() {
                    self.findings.remove(&FindingLabels {
                        check: check.as_str(),
                        severity: check.severity().as_str(),
                        domain: domain.clone(),
                    });
                }
            }
        }
        self.seen.groups = now;
    }

    /// Drops the per-member series of `domain`'s members not in `now` (removed from the group).
    fn forget_members(&mut self, domain: &str, now: &BTreeSet<String>) {
        let before = self.seen.members.remove(domain).unwrap_or_default();
        for server in before.difference(now) {
            let labels = ServerLabels {
                domain: domain.to_string(),
                server: server.clone(),
            };
            self.member_leader.remove(&labels);
            self.member_lag.remove(&labels);
        }
        if !now.is_empty() {
            self.seen.members.insert(domain.to_string(), now.clone());
        }
    }

    /// The registry to encode on each scrape (shared with the HTTP server).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Folds one engine status in.
    pub fn update(&mut self, status: &EngineStatus) {
        // Counters: only what grew since the last status.
        if status.polls > self.seen.polls {
            self.polls.inc_by(status.polls - self.seen.polls);
            // Statuses arrive once per round, so each poll's duration is normally seen; if the
            // channel coalesced two, the last one stands for both.
            self.poll_duration
                .observe(Duration::from_millis(status.last_poll_ms).as_secs_f64());
            self.poll_bytes.inc_by(status.last_poll_bytes);
            self.seen.polls = status.polls;
        }
        if status.malformed > self.seen.malformed {
            self.malformed
                .inc_by(status.malformed - self.seen.malformed);
            self.seen.malformed = status.malformed;
        }
        for (kind, count) in &status.events {
            let before = self.seen.events.get(kind).copied().unwrap_or(0);
            if *count > before {
                self.events
                    .get_or_create(&KindLabels { kind: kind.clone() })
                    .inc_by(count - before);
                self.seen.events.insert(kind.clone(), *count);
            }
        }
        let mut newest = self.seen.leader_changes_until;
        for change in &status.recent.leader_changes {
            if change.at > self.seen.leader_changes_until {
                self.leader_changes.inc();
                newest = newest.max(change.at);
            }
        }
        self.seen.leader_changes_until = newest;

        // Gauges: the current state.
        if let Some(at) = status.last_poll {
            let unix = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_poll.set(unix.as_secs_f64());
        }
        self.servers_answering
            .set(i64::try_from(status.servers_answering).unwrap_or(i64::MAX));
        // Every group seen, and the default one, has a zero for each check without findings.
        let mut groups: std::collections::BTreeSet<GroupId> =
            status.meta_groups.iter().map(|m| m.group.clone()).collect();
        groups.insert(GroupId::default());
        for group in &groups {
            for check in CheckId::all() {
                let count = status
                    .active
                    .values()
                    .filter(|a| {
                        a.finding.check == check
                            && GroupId::of(a.finding.domain.as_deref()) == *group
                    })
                    .count();
                self.findings
                    .get_or_create(&FindingLabels {
                        check: check.as_str(),
                        severity: check.severity().as_str(),
                        domain: group.label().to_string(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        for meta in &status.meta_groups {
            let labels = GroupLabels {
                domain: meta.group.label().to_string(),
            };
            let count = |state: &str| {
                meta.members
                    .iter()
                    .filter(|m| member_state(&m.state) == state)
                    .count()
            };
            for state in MEMBER_STATES {
                self.members
                    .get_or_create(&MemberLabels {
                        domain: labels.domain.clone(),
                        state,
                    })
                    .set(gauge(count(state)));
            }
            self.cluster_size
                .get_or_create(&labels)
                .set(gauge(meta.cluster_size));
            self.quorum_needed
                .get_or_create(&labels)
                .set(gauge(meta.quorum_needed));
            if let Some(pending) = meta.pending {
                self.pending
                    .get_or_create(&labels)
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            let lag = meta.members.iter().map(|m| m.lag).max().unwrap_or(0);
            self.max_lag
                .get_or_create(&labels)
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
            let versions: std::collections::BTreeSet<&str> = meta
                .members
                .iter()
                .filter_map(|m| m.version.as_deref())
                .collect();
            self.versions
                .get_or_create(&labels)
                .set(gauge(versions.len()));
            self.quorum
                .get_or_create(&labels)
                .set(i64::from(count("online") >= meta.quorum_needed));
            self.leader_present.get_or_create(&labels).set(i64::from(
                meta.leaderless_since.is_none() && meta.unheard_since.is_none(),
            ));
            self.unheard
                .get_or_create(&labels)
                .set(i64::from(meta.unheard_since.is_some()));
            let silent = meta.unheard_since.map_or(0.0, |since| {
                status
                    .last_poll
                    .and_then(|at| at.duration_since(since).ok())
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            self.unheard_seconds.get_or_create(&labels).set(silent);
            let last_change = status
                .recent
                .leader_changes
                .iter()
                .filter(|c| GroupId::of(c.domain.as_deref()) == meta.group)
                .map(|c| c.at)
                .max();
            match last_change.and_then(|at| at.duration_since(UNIX_EPOCH).ok()) {
                Some(unix) => {
                    self.last_leader_change
                        .get_or_create(&labels)
                        .set(unix.as_secs_f64());
                }
                None => {
                    self.last_leader_change.remove(&labels);
                }
            }
            let names: BTreeSet<String> = meta.members.iter().map(|m| m.name.clone()).collect();
            self.forget_members(&labels.domain, &names);
            for member in &meta.members {
                let member_labels = ServerLabels {
                    domain: labels.domain.clone(),
                    server: member.name.clone(),
                };
                self.member_leader
                    .get_or_create(&member_labels)
                    .set(i64::from(member.leader && meta.unheard_since.is_none()));
                // The lag is the leader's view: without one (no leader, group unheard, a member
                // the leader does not list) it is unknown, not zero.
                let seen_by_leader = member.leader || member.active.is_some();
                if member.current.is_some() && seen_by_leader && meta.unheard_since.is_none() {
                    self.member_lag
                        .get_or_create(&member_labels)
                        .set(i64::try_from(member.lag).unwrap_or(i64::MAX));
                } else {
                    self.member_lag.remove(&member_labels);
                }
            }
            if meta.unheard_since.is_some() {
                // The leader's figures of a group nobody hears are not current.
                self.pending.remove(&labels);
            }
        }
        self.forget_gone_groups(status);
        self.set_store(&status.store);
        self.ha_peers.set(gauge(status.ha_peers));
        for target in &status.alertmanager {
            let labels = UrlLabels {
                url: target.url.clone(),
            };
            self.alertmanager_up
                .get_or_create(&labels)
                .set(i64::from(target.state != "failing"));
            self.alertmanager_alerts
                .get_or_create(&labels)
                .set(gauge(target.alerts));
            let (sends, failures) = self
                .seen
                .alertmanager
                .get(&target.url)
                .copied()
                .unwrap_or_default();
            // Created at zero even before the first send, so a rate() has a start.
            let counter = self.alertmanager_sends.get_or_create(&labels);
            counter.inc_by(target.sends.saturating_sub(sends));
            let counter = self.alertmanager_failures.get_or_create(&labels);
            counter.inc_by(target.failures.saturating_sub(failures));
            self.seen
                .alertmanager
                .insert(target.url.clone(), (target.sends, target.failures));
        }
    }

    fn set_store(&self, health: &StoreHealth) {
        let current = match health {
            StoreHealth::Memory => "memory",
            StoreHealth::Healthy { .. } => "healthy",
            StoreHealth::Degraded { .. } => "degraded",
        };
        for state in STORE_STATES {
            self.store
                .get_or_create(&StateLabels { state })
                .set(i64::from(state == current));
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn member_state(state: &MemberState) -> &'static str {
    match state {
        MemberState::Online => "online",
        MemberState::Offline(_) => "offline",
        MemberState::Unknown => "unknown",
    }
}

/// Encodes the registry in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    text
}

/// Whether the engine is healthy for `/healthz`: a poll completed within three poll intervals
/// (at least 5 s). The reason is the response body.
pub fn health(
    status: &EngineStatus,
    poll_interval: Duration,
    now: SystemTime,
) -> Result<String, String> {
    let limit = (poll_interval * 3).max(Duration::from_secs(5));
    match status.last_poll {
        None => Err("no poll has completed yet".to_string()),
        Some(at) => {
            let age = now.duration_since(at).unwrap_or_default();
            if age <= limit {
                Ok(format!(
                    "ok: last poll {:.1} s ago, {} servers answering",
                    age.as_secs_f64(),
                    status.servers_answering
                ))
            } else {
                Err(format!(
                    "the last poll completed {:.1} s ago (more than {:.1} s){}",
                    age.as_secs_f64(),
                    limit.as_secs_f64(),
                    status
                        .skipped
                        .as_deref()
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_config_flag_takes_the_exporters_spelling_and_needs_the_listener() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["nats-insights", "run"];
            argv.extend(extra);
            match crate::cli::Cli::try_parse_from(argv)
                .expect("parses")
                .command
            {
                crate::cli::Command::Run(args) => args.metrics,
                _ => panic!("not run"),
            }
        };
        for flag in ["--web-config-file", "--web.config.file"] {
            let args = parse(&[
                "--metrics-listen",
                "127.0.0.1:0",
                flag,
                "/nonexistent/web.yml",
            ]);
            assert_eq!(
                args.web_config_file,
                Some(PathBuf::from("/nonexistent/web.yml"))
            );
            let error = args.web_config().expect_err("missing file");
            assert!(error.contains("/nonexistent/web.yml"), "{error}");
        }
        let error = parse(&["--web-config-file", "/etc/web.yml"])
            .web_config()
            .expect_err("no listener");
        assert!(error.contains("--metrics-listen"), "{error}");
        assert!(parse(&[]).web_config().expect("none").tls.is_none());
    }
    use crate::history::{ChangeSource, LeaderChange};

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn an_unheard_group_exports_unknown_members_and_a_forgotten_one_nothing() {
        let mut history = crate::history::History::default();
        for name in ["e1", "e2", "e3"] {
            history.servers.insert(
                name.to_string(),
                crate::history::ServerRecord {
                    server_id: name.to_string(),
                    last_answered: UNIX_EPOCH + Duration::from_secs(100),
                    cluster: Some("edge".into()),
                    version: None,
                    restarted_at: None,
                    missed: 0,
                },
            );
        }
        let edge = GroupId::of(Some("edge"));
        let meta = crate::checks::assess_unheard(&edge, &history, UNIX_EPOCH).expect("known");
        let mut recorder = Recorder::new(UNIX_EPOCH);
        let mut status = EngineStatus {
            meta_groups: vec![meta],
            last_poll: Some(UNIX_EPOCH + Duration::from_secs(107)),
            ..EngineStatus::default()
        };
        recorder.update(&status);
        let text = encode(&recorder.registry());
        for (series, value) in [
            ("nats_insights_meta_group_unheard{domain=\"edge\"}", "1"),
            (
                "nats_insights_meta_group_unheard_seconds{domain=\"edge\"}",
                "7.0",
            ),
            ("nats_insights_meta_leader_present{domain=\"edge\"}", "0"),
            ("nats_insights_meta_quorum{domain=\"edge\"}", "0"),
            (
                "nats_insights_meta_members{domain=\"edge\",state=\"unknown\"}",
                "3",
            ),
            (
                "nats_insights_meta_members{domain=\"edge\",state=\"online\"}",
                "0",
            ),
        ] {
            assert_eq!(
                line(&text, series),
                Some(format!("{series} {value}").as_str()),
                "{text}"
            );
        }
        status.meta_groups.clear();
        recorder.update(&status);
        let text = encode(&recorder.registry());
        assert!(!text.contains("domain=\"edge\""), "{text}");
    }

    #[test]
    fn each_member_has_its_leadership_and_lag_and_the_group_its_last_leader_change() {
        let mut history = crate::history::History::default();
        for name in ["e1", "e2", "e3"] {
            history.servers.insert(
                name.to_string(),
                crate::history::ServerRecord {
                    server_id: name.to_string(),
                    last_answered: UNIX_EPOCH + Duration::from_secs(100),
                    cluster: Some("edge".into()),
                    version: None,
                    restarted_at: None,
                    missed: 0,
                },
            );
        }
        let edge = GroupId::of(Some("edge"));
        let mut meta = crate::checks::assess_unheard(&edge, &history, UNIX_EPOCH).expect("known");
        meta.unheard_since = None;
        meta.leader = Some("e1".into());
        for member in &mut meta.members {
            member.current = Some(member.name != "e3");
            member.leader = member.name == "e1";
            // e3 is not in the leader's list: its lag is unknown.
            member.active = (member.name == "e2").then_some(Duration::from_millis(300));
            member.lag = if member.name == "e2" { 5 } else { 0 };
        }
        let mut recorder = Recorder::new(UNIX_EPOCH);
        let mut status = EngineStatus {
            meta_groups: vec![meta.clone()],
            last_poll: Some(UNIX_EPOCH + Duration::from_secs(107)),
            ha_peers: 1,
            ..EngineStatus::default()
        };
        status.recent.leader_changes = vec![LeaderChange {
            at: UNIX_EPOCH + Duration::from_secs(90),
            from: Some("e2".into()),
            to: "e1".into(),
            source: ChangeSource::Poll,
            server_at: None,
            domain: Some("edge".into()),
        }];
        recorder.update(&status);
        let text = encode(&recorder.registry());
        for (series, value) in [
            (
                r#"nats_insights_meta_member_leader{domain="edge",server="e1"}"#,
                "1",
            ),
            (
                r#"nats_insights_meta_member_leader{domain="edge",server="e3"}"#,
                "0",
            ),
            (
                r#"nats_insights_meta_member_lag{domain="edge",server="e1"}"#,
                "0",
            ),
            (
                r#"nats_insights_meta_member_lag{domain="edge",server="e2"}"#,
                "5",
            ),
            (
                r#"nats_insights_meta_last_leader_change_timestamp_seconds{domain="edge"}"#,
                "90.0",
            ),
            ("nats_insights_ha_peers", "1"),
        ] {
            assert_eq!(
                line(&text, &format!("{series} ")),
                Some(format!("{series} {value}").as_str()),
                "{text}"
            );
        }
        assert!(
            !text.contains(r#"member_lag{domain="edge",server="e3"}"#),
            "{text}"
        );
        // A member removed from the group loses its series; a forgotten group all of them.
        meta.members.retain(|m| m.name != "e3");
        status.meta_groups = vec![meta];
        recorder.update(&status);
        let text = encode(&recorder.registry());
        assert!(!text.contains(r#"server="e3""#), "{text}");
        assert!(text.contains(r#"server="e2""#), "{text}");
        status.meta_groups.clear();
        recorder.update(&status);
        let text = encode(&recorder.registry());
        assert!(!text.contains("domain=\"edge\""), "{text}");
    }

    #[test]
    fn each_alertmanager_has_its_state_and_counters_of_sends() {
        let mut recorder = Recorder::new(SystemTime::now());
        let target = crate::alertmanager::parse_target("http://am:9093", None).expect("URL");
        let mut health = crate::status::AlertmanagerHealth::pending(&target.endpoint);
        let mut status = EngineStatus::default();
        for (state, sends, failures) in [("ok", 2, 0), ("failing", 2, 3), ("ok", 5, 3)] {
            health.state = state;
            health.sends = sends;
            health.failures = failures;
            health.alerts = 1;
            status.alertmanager = vec![health.clone()];
            recorder.update(&status);
        }
        let text = encode(&recorder.registry());
        let url = r#"{url="http://am:9093/api/v2/alerts"}"#;
        for (name, value) in [
            ("nats_insights_alertmanager_up", "1"),
            ("nats_insights_alertmanager_alerts", "1"),
            ("nats_insights_alertmanager_sends_total", "5"),
            ("nats_insights_alertmanager_send_failures_total", "3"),
        ] {
            assert_eq!(
                line(&text, &format!("{name}{url}")),
                Some(format!("{name}{url} {value}").as_str()),
                "{text}"
            );
        }
    }

    #[test]
    fn counters_grow_by_what_is_new_and_findings_start_at_zero() {
        let start = SystemTime::now();
        let mut recorder = Recorder::new(start);
        let text = encode(&recorder.registry());
        assert_eq!(
            line(
                &text,
                "nats_insights_findings_active{check=\"META_006\",severity=\"critical\",domain=\"default\"}"
            ),
            Some("nats_insights_findings_active{check=\"META_006\",severity=\"critical\",domain=\"default\"} 0")
        );
        assert!(
            line(&text, "nats_insights_meta_members").is_none(),
            "{text}"
        );
        assert!(text.contains("nats_insights_store_state{state=\"memory\"} 1"));
        assert!(text.contains("nats_insights_build_info{version="));

        let change = |secs: i64| LeaderChange {
            at: if secs < 0 {
                start - Duration::from_secs(secs.unsigned_abs())
            } else {
                start + Duration::from_secs(secs.unsigned_abs())
            },
            from: Some("a".into()),
            to: "b".into(),
            source: ChangeSource::Poll,
            server_at: None,
            domain: None,
        };
        let mut status = EngineStatus {
            polls: 3,
            last_poll_ms: 20,
            malformed: 2,
            ..EngineStatus::default()
        };
        status.events.insert("shutdown".into(), 1);
        // One change before this process started (loaded from the bucket), one after.
        status.recent.leader_changes = vec![change(-60), change(1)];
        recorder.update(&status);
        recorder.update(&status); // the same status again changes nothing
        status.polls = 4;
        status.malformed = 3;
        status.recent.leader_changes.push(change(2));
        recorder.update(&status);
        let text = encode(&recorder.registry());
        for expected in [
            "nats_insights_polls_total 4",
            "nats_insights_malformed_inputs_total 3",
            "nats_insights_meta_events_total{kind=\"shutdown\"} 1",
            "nats_insights_meta_leader_changes_total 2",
            "nats_insights_poll_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
    }

    #[test]
    fn health_needs_a_recent_poll() {
        let now = SystemTime::now();
        let mut status = EngineStatus::default();
        assert!(health(&status, Duration::from_secs(1), now).is_err());
        status.last_poll = Some(now - Duration::from_secs(2));
        assert!(health(&status, Duration::from_secs(1), now).is_ok());
        status.last_poll = Some(now - Duration::from_secs(6));
        status.skipped = Some("disconnected from NATS; reconnecting".into());
        let reason = health(&status, Duration::from_secs(1), now).expect_err("stale");
        assert!(reason.contains("disconnected"), "{reason}");
        // Longer intervals allow three of them.
        assert!(health(&status, Duration::from_secs(10), now).is_ok());
    }
}
