//! Load and slowness for the meta-group checks: a flood of JetStream API requests that backs up
//! the servers' API queues (JSZ `meta_cluster.pending`), meta entries by the hundred (streams
//! and consumers created through the API), and a CPU-starved server (SIGSTOP/SIGCONT in short
//! slices: it keeps answering, slowly).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};

use super::{send_signal, Cluster, TestbedError};

/// A node starved of CPU by [`Cluster::starve`]: it is stopped (SIGSTOP) and continued
/// (SIGCONT) in turns until this is dropped, which continues it for good.
///
/// Drop it before stopping or restarting the node: it signals the process id it was started
/// with.
#[derive(Debug)]
pub struct Starved {
    pid: u32,
    stop: Arc<AtomicBool>,
    cycles: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Starved {
    /// How many stop/continue cycles ran so far.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Whatever slice the loop ended in, the node runs again.
        let _ = send_signal(self.pid, "CONT");
    }
}

impl Cluster {
    /// Starves node `i` of CPU: a thread stops it for `paused`, lets it run for `running`, and
    /// so on until the returned guard is dropped. With slices well under a second the node
    /// still answers requests (late) and its peers keep hearing from it, but it does a
    /// fraction of its work: a slow, overloaded server rather than a dead one.
    pub fn starve(
        &self,
        i: usize,
        running: Duration,
        paused: Duration,
    ) -> Result<Starved, TestbedError> {
        let pid = self.pid(i).ok_or(TestbedError::NotRunning(i))?;
        if running.is_zero() || paused.is_zero() {
            return Err(TestbedError::Invalid(
                "starve needs non-zero running and paused slices".into(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, cycles) = (stop.clone(), cycles.clone());
            // A thread of its own: the slices stay on time however busy the test's runtime is.
            std::thread::Builder::new()
                .name(format!("testbed-starve-{pid}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if send_signal(pid, "STOP").is_err() {
                            break;
                        }
                        std::thread::sleep(paused);
                        if send_signal(pid, "CONT").is_err() {
                            break;
                        }
                        cycles.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(running);
                    }
                })
                .map_err(|e| super::io_err("starting the starve thread", e))?
        };
        Ok(Starved {
            pid,
            stop,
            cycles,
            thread: Some(thread),
        })
    }
}

/// How [`Cluster::flood_js_api`] floods.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// R1 memory streams created first; every request makes the meta leader match its filter
    /// against each of their subjects, so that answering one costs about a millisecond.
    pub streams: usize,
    /// Subjects of each of those streams.
    pub subjects_per_stream: usize,
    /// Requests kept unanswered at any time: about what the leader's `pending` holds.
    pub in_flight: usize,
}

impl Default for FloodOptions {
    /// 20 streams of 500 subjects, 2,000 requests in flight. Measured on a 2-core machine with
    /// nats-server 2.15.1: the leader answers about 1,200 a second and its JSZ `pending` stays
    /// at 1,850-1,990 for as long as the flood runs (a fifth of the 10,000 the server drops
    /// its queue at), its JSZ replies come in 15-150 ms, and the queue drains 1-3 s after the
    /// stop. Creating the streams takes 7-11 s.
    fn default() -> Self {
        FloodOptions {
            streams: 20,
            subjects_per_stream: 500,
            in_flight: 2000,
        }
    }
}

/// Churns started by this process (see [`Cluster::churn_meta`]).
static CHURNS: AtomicU64 = AtomicU64::new(0);

/// Subject filter of the flood's requests: it matches none of the streams' subjects.
const FLOOD_FILTER: &str = "testbed-flood-none.x.y.z";

/// Counts of a background load once stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (with success for [`MetaChurn`]).
    pub answered: u64,
    /// Requests that failed or were answered with an error ([`MetaChurn`] only).
    pub failed: u64,
}

/// A background load started by [`Cluster::flood_js_api`] or [`Cluster::churn_meta`]; it runs
/// until [`BackgroundLoad::stop`] or until dropped.
#[derive(Debug)]
pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    task: Option<tokio::task::JoinHandle<Result<(), TestbedError>>>,
}

/// The JetStream API flood of [`Cluster::flood_js_api`].
pub type ApiFlood = BackgroundLoad;
/// The meta entries of [`Cluster::churn_meta`].
pub type MetaChurn = BackgroundLoad;

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> LoadStats {
        LoadStats {
            sent: self.sent.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

impl BackgroundLoad {
    fn spawn<F>(work: impl FnOnce(Arc<AtomicBool>, Arc<Stats>) -> F) -> BackgroundLoad
    where
        F: std::future::Future<Output = Result<(), TestbedError>> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(work(stop.clone(), stats.clone()));
        BackgroundLoad {
            stop,
            stats,
            task: Some(task),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> LoadStats {
        self.stats.snapshot()
    }

    /// Stops the load, waits for its task and returns the counts, or the error that ended it
    /// early.
    pub async fn stop(mut self) -> Result<LoadStats, TestbedError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(result) => result?,
                Err(e) => return Err(super::nats_err("the background load task", e)),
            }
        }
        Ok(self.stats.snapshot())
    }
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sends `body` to `subject` and returns the answer, or fails unless it is a JetStream API
/// success (no `error` member).
async fn api_request(
    client: &async_nats::Client,
    subject: String,
    body: String,
) -> Result<serde_json::Value, TestbedError> {
    let reply = tokio::time::timeout(
        super::REQUEST_TIMEOUT,
        client.request(subject.clone(), body.into()),
    )
    .await
    .map_err(|_| super::nats_err(format!("request {subject}"), "timed out"))?
    .map_err(|e| super::nats_err(format!("request {subject}"), e))?;
    let json = super::parse_json(&subject, &reply.payload)?;
    if json.get("error").is_some() {
        return Err(TestbedError::BadReply {
            what: subject,
            reply: json.to_string(),
        });
    }
    Ok(json)
}

impl Cluster {
    /// Floods the JetStream API through node `i` (a client of the JetStream account attached
    /// to it; attach it to the meta leader to flood the leader): `$JS.API.STREAM.NAMES`
    /// requests with a subject filter, each answered by the meta leader only, and each
    /// costing it a scan of every subject of the streams `options` has this create first.
    /// New requests are sent as answers arrive, so that `in_flight` stay unanswered: the
    /// servers' JetStream API queues back up (JSZ `meta_cluster.pending`) and stay backed up,
    /// without reaching the limit at which the server drops them.
    pub async fn flood_js_api(
        &self,
        i: usize,
        options: &FloodOptions,
    ) -> Result<ApiFlood, TestbedError> {
        let client = self.app_client(i).await?;
        let subjects = options.subjects_per_stream;
        let creates = (0..options.streams).map(|k| {
            let config = serde_json::json!({
                "name": format!("TESTBED_FLOOD_{k}"),
                "subjects": (0..subjects).map(|j| format!("testbed-flood.{k}.{j}")).collect::<Vec<_>>(),
                "num_replicas": 1,
                "storage": "memory",
            });
            api_request(
                &client,
                format!("$JS.API.STREAM.CREATE.TESTBED_FLOOD_{k}"),
                config.to_string(),
            )
        });
        // Two at a time: twenty creates of 500 subjects at once time out on a 2-core machine.
        let created: Vec<Result<serde_json::Value, TestbedError>> = futures::stream::iter(creates)
            .buffer_unordered(2)
            .collect()
            .await;
        created.into_iter().collect::<Result<Vec<_>, _>>()?;
        let in_flight = options.in_flight.max(1) as u64;
        Ok(BackgroundLoad::spawn(move |stop, stats| async move {
            let inbox = client.new_inbox();
            let mut answers = client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| super::nats_err("subscribe for the flood's answers", e))?;
            let body = serde_json::json!({ "subject": FLOOD_FILTER }).to_string();
            let (mut sent, mut answered) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                while sent - answered < in_flight {
                    client
                        .publish_with_reply(
                            "$JS.API.STREAM.NAMES",
                            format!("{inbox}.{sent}"),
                            body.clone().into(),
                        )
                        .await
                        .map_err(|e| super::nats_err("publish a flood request", e))?;
                    sent += 1;
                }
                client
                    .flush()
                    .await
                    .map_err(|e| super::nats_err("flush the flood", e))?;
                stats.sent.store(sent, Ordering::Relaxed);
                // Short waits: the stop flag is looked at even when no answer comes.
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(20), answers.next()).await
                {
                    answered += 1;
                    while let Some(Some(_)) = answers.next().now_or_never() {
                        answered += 1;
                    }
                }
                stats.answered.store(answered, Ordering::Relaxed);
            }
            let _ = answers.unsubscribe().await;
            Ok(())
        }))
    }

    /// Keeps the meta group busy through node `i` (JetStream account): `workers` R1 memory
    /// streams are created on servers other than the nodes in `off` (one placed on such a node
    /// stays there unused and another is made), then each worker updates its
    /// stream's description again and again, one request at a time. Every update is one meta
    /// entry the leader replicates; its answer comes from the stream's server, which is why
    /// that must not be a node the test slows down.
    ///
    /// Measured on a 2-core machine with nats-server 2.15.1: 2 workers make 800-1,100 entries
    /// a second; a follower starved with [`Cluster::starve`] (50 ms running, 250 ms paused)
    /// then shows in the leader's view, sampled every 200 ms, a saw-tooth with the starving's
    /// 300 ms period: 130-280 entries behind, then 50-110, then caught up (lag 0-30) in the
    /// slice it runs in: `current: true` in 5-12 of 58 samples, never in two in a row. The
    /// healthy follower, whose acknowledgements make the quorum, shows behind in 0-2 of 58 (a
    /// commit racing its acknowledgement), never in two in a row.
    pub async fn churn_meta(
        &self,
        i: usize,
        workers: usize,
        off: &[usize],
    ) -> Result<MetaChurn, TestbedError> {
        let client = self.app_client(i).await?;
        let avoid: Vec<String> = off.iter().map(|&n| self.server_name(n)).collect();
        // Names of their own per call: a second churn must not meet the first one's streams.
        let churn = CHURNS.fetch_add(1, Ordering::Relaxed);
        let config = |name: &str, revision: u64| {
            serde_json::json!({
                "name": name,
                "subjects": [format!("testbed-churn.{name}")],
                "num_replicas": 1,
                "storage": "memory",
                "description": format!("revision {revision}"),
            })
            .to_string()
        };
        let mut names = Vec::with_capacity(workers);
        for k in 0..workers {
            let mut placed = None;
            for attempt in 0..10 {
                let name = format!("TESTBED_CHURN_{churn}_{k}_{attempt}");
                let info = api_request(
                    &client,
                    format!("$JS.API.STREAM.CREATE.{name}"),
                    config(&name, 0),
                )
                .await?;
                let host = info
                    .pointer("/cluster/leader")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                if !avoid.iter().any(|a| a == host) {
                    placed = Some(name);
                    break;
                }
                // Kept, idle: R1 streams go to the server with the fewest, so a deleted one
                // would only come back to the same server.
            }
            names.push(placed.ok_or_else(|| {
                TestbedError::Invalid(format!(
                    "ten churn streams in a row were placed on {avoid:?}"
                ))
            })?);
        }
        Ok(BackgroundLoad::spawn(move |stop, stats| async move {
            let work = names.into_iter().map(|name| {
                let (client, stop, stats) = (client.clone(), stop.clone(), stats.clone());
                async move {
                    let mut revision = 0;
                    while !stop.load(Ordering::Relaxed) {
                        revision += 1;
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                        let subject = format!("$JS.API.STREAM.UPDATE.{name}");
                        // A failed update (a slow stream leader, an election) is counted, not
                        // fatal: the churn is load, not a check.
                        match api_request(&client, subject, config(&name, revision)).await {
                            Ok(_) => stats.answered.fetch_add(1, Ordering::Relaxed),
                            Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
            });
            futures::future::join_all(work).await;
            Ok(())
        }))
    }
}
