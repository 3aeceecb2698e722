//! Connections: a pinned link to every meta member, however the service was given its servers.
//! One URL (a Kubernetes Service, a load balancer) gives one connection, and a partitioned old
//! leader is then never asked for its own view. The members' own client addresses are found in
//! the servers' INFO `connect_urls`, else (servers that do not advertise) in their monitoring
//! data over the system account (VARZ: name and client port; ROUTEZ: the address peers reach a
//! server at), and a pinned link is opened to each member that has none. A link counts for the
//! member whose name its server gives after connecting, never for the one its address was meant
//! for. Discovery runs in a task of its own (connecting may take seconds); the engine only asks
//! for it and takes what it found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::Client;
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::task::JoinHandle;

use super::events::log_direct_event;
use super::{ConnectArgs, LinkDrops};

use crate::status::{LinkHealth, LinkSource};
use crate::timing::DISCOVERY;

/// Scatter-gather of every server's general information (name, id, client host and port).
pub const PING_VARZ: &str = "$SYS.REQ.SERVER.PING.VARZ";

/// Subject that reaches one server's routes.
pub fn direct_routez_subject(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.ROUTEZ")
}

// The discovery timers, with their relations asserted, are in `timing` (`DISCOVERY`).
const DISCOVERY_GAP: Duration = DISCOVERY.gap;
const RETRY_AFTER: Duration = DISCOVERY.retry_after;
const RETRY_MAX: Duration = DISCOVERY.retry_max;
/// Pinned links opened by discovery at most: beyond, members are said to have none.
pub const MAX_DISCOVERED_LINKS: usize = 128;
const CONNECT_TIMEOUT: Duration = DISCOVERY.connect;
const VARZ_WAIT: Duration = DISCOVERY.varz_wait;
const ROUTEZ_TIMEOUT: Duration = DISCOVERY.routez_timeout;

/// `nats://host:port`, the host bracketed when it is an IPv6 address.
fn url_of(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("nats://[{host}]:{port}")
    } else {
        format!("nats://{host}:{port}")
    }
}

/// A `connect_urls` entry (`host:port`) as a URL.
fn url_of_advertised(entry: &str) -> String {
    if entry.contains("://") {
        entry.to_string()
    } else {
        format!("nats://{entry}")
    }
}

/// True for a listen address that names no host (every interface).
fn unspecified(host: &str) -> bool {
    matches!(host.trim(), "" | "0.0.0.0" | "::" | "[::]")
}

/// What a server says of itself in VARZ (the parts discovery reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarzSeen {
    /// Server name.
    pub name: String,
    /// Server id (of its current process).
    pub id: String,
    /// Host its client port listens on (`0.0.0.0`: every address).
    pub host: String,
    /// Client port.
    pub port: u16,
}

#[derive(Deserialize)]
struct Envelope<T> {
    server: EnvelopeServer,
    data: Option<T>,
}

#[derive(Deserialize)]
struct EnvelopeServer {
    name: String,
    id: String,
}

#[derive(Deserialize)]
struct VarzData {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: u16,
}

#[derive(Deserialize)]
struct RoutezData {
    #[serde(default)]
    routes: Vec<RouteData>,
}

#[derive(Deserialize)]
struct RouteData {
    #[serde(default)]
    remote_name: String,
    #[serde(default)]
    remote_id: String,
    #[serde(default)]
    ip: String,
}

/// Decodes one VARZ reply (`None`: malformed, or no client port).
pub fn decode_varz(payload: &[u8]) -> Option<VarzSeen> {
    let reply: Envelope<VarzData> = serde_json::from_slice(payload).ok()?;
    let data = reply.data?;
    (data.port != 0 && !reply.server.name.is_empty()).then_some(VarzSeen {
        name: reply.server.name,
        id: reply.server.id,
        host: data.host,
        port: data.port,
    })
}

/// Decodes one ROUTEZ reply into (server name or id, address) pairs: the address each route's
/// remote server was reached at, or connected from (`None`: malformed).
pub fn decode_routez(payload: &[u8]) -> Option<Vec<(String, String)>> {
    let reply: Envelope<RoutezData> = serde_json::from_slice(payload).ok()?;
    let data = reply.data?;
    let mut seen = Vec::new();
    for route in data.routes {
        if route.ip.is_empty() || unspecified(&route.ip) {
            continue;
        }
        for who in [route.remote_name, route.remote_id] {
            if !who.is_empty() {
                seen.push((who, route.ip.clone()));
            }
        }
    }
    Some(seen)
}

/// Each server's client URL from its VARZ, and for one that listens on every address, its port
/// at the addresses its peers' routes show for it (`routes`: name or id → address), else at the
/// hosts of `fallback` (the given URLs' hosts). Only for the servers named in `wanted`.
pub fn addresses(
    varz: &[VarzSeen],
    routes: &[(String, String)],
    fallback: &[String],
    wanted: &BTreeSet<String>,
) -> BTreeMap<String, Vec<(String, LinkSource)>> {
    let mut found: BTreeMap<String, Vec<(String, LinkSource)>> = BTreeMap::new();
    for server in varz.iter().filter(|v| wanted.contains(&v.name)) {
        let urls = found.entry(server.name.clone()).or_default();
        let mut add = |url: String, source| {
            if !urls.iter().any(|(u, _)| *u == url) {
                urls.push((url, source));
            }
        };
        if !unspecified(&server.host) {
            add(url_of(&server.host, server.port), LinkSource::Varz);
            continue;
        }
        let mut seen_at: Vec<&str> = routes
            .iter()
            .filter(|(who, _)| *who == server.name || *who == server.id)
            .map(|(_, ip)| ip.as_str())
            .collect();
        seen_at.sort_unstable();
        seen_at.dedup();
        for ip in seen_at {
            add(url_of(ip, server.port), LinkSource::Routez);
        }
        for host in fallback {
            add(url_of(host, server.port), LinkSource::Varz);
        }
    }
    found.retain(|_, urls| !urls.is_empty());
    found
}

/// The host of a URL (`nats://user:pw@host:4222` → `host`).
fn host_of(url: &str) -> Option<String> {
    let (rest, _) = super::split_credentials(url);
    let rest = rest.split_once("://").map_or(rest.as_str(), |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// When a member looked for `tries` times, last at `at`, is looked for again (while it
/// answers): `RETRY_AFTER`, doubling with each try up to `RETRY_MAX`.
fn retry_at(at: Instant, tries: u32) -> Instant {
    let wait = RETRY_AFTER.saturating_mul(1 << tries.saturating_sub(1).min(8));
    at + wait.min(RETRY_MAX)
}

/// Whether a discovery is due: never while one runs; at once the first time; then at most once
/// per `DISCOVERY_GAP`, when a member without a link was never looked for, or one looked for
/// before answers now and its retry time (`retry_at`) has come.
pub fn due(
    unlinked: &BTreeSet<String>,
    answering: &BTreeSet<String>,
    tried: &BTreeMap<String, (Instant, u32)>,
    last_run: Option<Instant>,
    now: Instant,
) -> bool {
    if unlinked.is_empty() {
        return false;
    }
    if last_run.is_some_and(|at| now.saturating_duration_since(at) < DISCOVERY_GAP) {
        return false;
    }
    unlinked.iter().any(|name| match tried.get(name) {
        None => true,
        Some((at, tries)) => answering.contains(name) && now >= retry_at(*at, *tries),
    })
}

/// Opens pinned links with the flags of the given URLs (credentials, TLS, inbox prefix), each
/// reporting its drops like the given ones.
#[derive(Clone)]
pub struct Opener {
    args: Option<ConnectArgs>,
    name: String,
    drops: LinkDrops,
    next: Arc<AtomicUsize>,
}

impl Opener {
    /// For `args` (resolved), naming connections after `name`; link indexes start at `first`.
    pub(super) fn new(args: &ConnectArgs, name: &str, drops: &LinkDrops, first: usize) -> Opener {
        Opener {
            args: Some(args.clone()),
            name: name.to_string(),
            drops: drops.clone(),
            next: Arc::new(AtomicUsize::new(first)),
        }
    }

    /// One that opens nothing (discovery off).
    pub fn none() -> Opener {
        Opener {
            args: None,
            name: String::new(),
            drops: LinkDrops::default(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The given URLs' hosts.
    fn given_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .args
            .iter()
            .flat_map(|a| a.servers.iter())
            .filter_map(|u| host_of(u))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// A pinned link to `url`: never to another server (no discovered servers), reconnecting to
    /// it forever once connected; fails when it cannot connect now.
    async fn open(&self, url: &str) -> Result<(usize, Client), String> {
        let args = self.args.as_ref().ok_or("discovery is off")?;
        let link = self.next.fetch_add(1, Ordering::Relaxed);
        // The URL comes from a server, not from the operator: it holds no credentials.
        let label = format!("{} direct {}", self.name, super::redact_url(url));
        let drops = self.drops.clone();
        let options = args
            .options()
            .await
            .map_err(|e| e.to_string())?
            .name(&label)
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .ignore_discovered_servers()
            .event_callback(move |event| {
                let label = label.clone();
                let drops = drops.clone();
                async move { log_direct_event(&label, link, &drops, event) }
            });
        let connect = options.connect(url);
        match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), connect).await {
            Ok(Ok(client)) => Ok((link, client)),
            Ok(Err(error)) => Err(format!("{}: {error}", super::redact_url(url))),
            Err(_) => Err(format!("{}: timed out", super::redact_url(url))),
        }
    }
}

/// One pinned link.
struct Link {
    index: usize,
    client: Client,
    url: String,
    source: LinkSource,
}

/// What one discovery found.
#[derive(Default)]
struct Found {
    links: Vec<(String, Link)>,
    /// Members it found no link to, and why.
    unreachable: BTreeMap<String, String>,
    /// Malformed VARZ and ROUTEZ replies.
    malformed: u64,
}

/// The pinned links (given and discovered) and the discovery of the missing ones.
pub struct Links {
    links: Vec<Link>,
    opener: Opener,
    running: Option<JoinHandle<Found>>,
    last_run: Option<Instant>,
    tried: BTreeMap<String, (Instant, u32)>,
    unreachable: BTreeMap<String, String>,
    /// Members said (once) to have no link.
    warned: BTreeSet<String>,
    /// Malformed replies discovery received, not yet taken into STATUS.
    malformed: u64,
}

impl Links {
    /// The links to the given URLs (`given`, in the order of their drop indexes) and what opens
    /// more.
    pub fn new(given: Vec<Client>, given_urls: &[String], opener: Opener) -> Links {
        let links = given
            .into_iter()
            .enumerate()
            .map(|(index, client)| Link {
                index,
                client,
                url: given_urls
                    .get(index)
                    .map(|u| super::redact_url(u))
                    .unwrap_or_default(),
                source: LinkSource::Given,
            })
            .collect();
        Links {
            links,
            opener,
            running: None,
            last_run: None,
            tried: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            warned: BTreeSet::new(),
            malformed: 0,
        }
    }

    /// The malformed replies discovery received since the last call (counted in STATUS).
    pub fn take_malformed(&mut self) -> u64 {
        std::mem::take(&mut self.malformed)
    }

    /// Every pinned link's connection.
    pub fn clients(&self) -> Vec<Client> {
        self.links.iter().map(|l| l.client.clone()).collect()
    }

    /// The link `index` names in its drops.
    pub fn client(&self, index: usize) -> Option<&Client> {
        self.links
            .iter()
            .find(|l| l.index == index)
            .map(|l| &l.client)
    }

    /// The server a link reached (its last one, while it reconnects; empty before it connected).
    fn server_of(link: &Link) -> String {
        link.client.server_info().server_name
    }

    fn linked(&self) -> BTreeSet<String> {
        self.links
            .iter()
            .map(Self::server_of)
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// Takes what a finished discovery found, then starts another when one is due for the
    /// `members` without a link (`answering`: the servers that answered the last poll).
    /// Never waits: discovery runs in a task of its own.
    pub fn maintain(
        &mut self,
        main: &Client,
        members: &BTreeSet<String>,
        answering: &BTreeSet<String>,
    ) {
        if self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(Ok(found)) = self.running.take().and_then(|r| r.now_or_never()) {
                self.take(found);
            }
        }
        self.warn_unreachable(members);
        if self.running.is_some() || self.opener.args.is_none() {
            return;
        }
        let linked = self.linked();
        let unlinked: BTreeSet<String> = members.difference(&linked).cloned().collect();
        let now = Instant::now();
        if !due(&unlinked, answering, &self.tried, self.last_run, now) {
            return;
        }
        let room = MAX_DISCOVERED_LINKS.saturating_sub(
            self.links
                .iter()
                .filter(|l| l.source != LinkSource::Given)
                .count(),
        );
        if room == 0 {
            for name in &unlinked {
                self.unreachable.entry(name.clone()).or_insert_with(|| {
                    format!("more than {MAX_DISCOVERED_LINKS} members: no more links are opened")
                });
            }
            self.warn_unreachable(members);
            return;
        }
        self.last_run = Some(now);
        for name in &unlinked {
            let tries = self.tried.get(name).map_or(0, |(_, tries)| *tries);
            self.tried.insert(name.clone(), (now, tries + 1));
        }
        let wanted: BTreeSet<String> = unlinked.into_iter().take(room).collect();
        tracing::debug!(?wanted, "looking for the members' own addresses");
        let used: BTreeSet<String> = self.links.iter().map(|l| l.url.clone()).collect();
        self.running = Some(tokio::spawn(discover(
            main.clone(),
            self.opener.clone(),
            wanted,
            used,
        )));
    }

    fn take(&mut self, found: Found) {
        self.malformed += found.malformed;
        let mut linked = self.linked();
        for (name, link) in found.links {
            if !linked.insert(name.clone()) {
                // A given link connected meanwhile.
                tokio::spawn(async move { link.client.drain().await });
                continue;
            }
            tracing::info!(server = %name, url = %link.url, source = ?link.source, "pinned link opened to a meta member");
            self.unreachable.remove(&name);
            self.warned.remove(&name);
            self.links.push(link);
        }
        for (name, why) in found.unreachable {
            if !linked.contains(&name) {
                self.unreachable.insert(name, why);
            }
        }
    }

    /// Says once for each member that it cannot be reached directly.
    fn warn_unreachable(&mut self, members: &BTreeSet<String>) {
        let linked = self.linked();
        for (name, why) in &self.unreachable {
            if members.contains(name) && !linked.contains(name) && self.warned.insert(name.clone())
            {
                tracing::warn!(server = %name, reason = %why, "no direct link to this meta member: partition detection is degraded for it (its own view is not seen when its routes are cut)");
            }
        }
    }

    /// Every member's link, for STATUS.
    pub fn health(&self, members: &BTreeSet<String>) -> Vec<LinkHealth> {
        members
            .iter()
            .map(|name| {
                let link = self.links.iter().find(|l| Self::server_of(l) == *name);
                match link {
                    Some(link) => LinkHealth {
                        server: name.clone(),
                        direct: true,
                        connected: Some(link.client.connection_state() == State::Connected),
                        source: Some(link.source),
                        url: Some(link.url.clone()),
                        reason: None,
                    },
                    None => LinkHealth {
                        server: name.clone(),
                        direct: false,
                        connected: None,
                        source: None,
                        url: None,
                        reason: Some(self.unreachable.get(name).cloned().unwrap_or_else(|| {
                            match self.opener.args {
                                Some(_) => "its address is being looked for".to_string(),
                                None => "discovery is off".to_string(),
                            }
                        })),
                    },
                }
            })
            .collect()
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}

/// Finds a pinned link to each of `wanted`: first at the addresses the servers advertise (INFO
/// `connect_urls`), then, for the rest, at those VARZ and ROUTEZ give. `used`: the addresses of
/// the links already open.
async fn discover(
    main: Client,
    opener: Opener,
    wanted: BTreeSet<String>,
    used: BTreeSet<String>,
) -> Found {
    let mut found = Found::default();
    let mut missing = wanted;
    let mut tried_urls = used;
    let advertised: Vec<String> = main
        .server_info()
        .connect_urls
        .iter()
        .map(|u| url_of_advertised(u))
        .filter(|u| !tried_urls.contains(u))
        .collect();
    let mut errors: Vec<String> = Vec::new();
    connect_all(
        &opener,
        advertised
            .into_iter()
            .map(|u| (u, LinkSource::ConnectUrls))
            .collect(),
        &mut missing,
        &mut tried_urls,
        &mut found,
        &mut errors,
    )
    .await;
    if missing.is_empty() {
        return found;
    }
    let varz = gather_varz(&main, &missing, &mut found.malformed).await;
    let routes = match varz
        .iter()
        .any(|v| missing.contains(&v.name) && unspecified(&v.host))
    {
        true => gather_routes(&main, &varz, &mut found.malformed).await,
        false => Vec::new(),
    };
    let by_member = addresses(&varz, &routes, &opener.given_hosts(), &missing);
    let candidates: Vec<(String, LinkSource)> = by_member
        .values()
        .flatten()
        .filter(|(u, _)| !tried_urls.contains(u))
        .cloned()
        .collect();
    connect_all(
        &opener,
        candidates,
        &mut missing,
        &mut tried_urls,
        &mut found,
        &mut errors,
    )
    .await;
    let seen_in_varz: BTreeSet<&str> = varz.iter().map(|v| v.name.as_str()).collect();
    for name in missing {
        let why = if !seen_in_varz.contains(name.as_str()) {
            format!(
                "no address found: not reached at the advertised connect_urls, and it did not \
                 answer {PING_VARZ} (down, or the user may not publish it)"
            )
        } else if !by_member.contains_key(&name) {
            "no address found: it listens on every address and no route shows where".to_string()
        } else {
            let mine: Vec<&String> = by_member
                .get(&name)
                .into_iter()
                .flatten()
                .map(|(u, _)| u)
                .flat_map(|u| errors.iter().filter(move |e| e.starts_with(u.as_str())))
                .collect();
            match mine.is_empty() {
                true => "its addresses reached another server".to_string(),
                false => format!(
                    "cannot connect: {}",
                    mine.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        };
        found.unreachable.insert(name, why);
    }
    found
}

/// Connects to each candidate at once; keeps a link whose server is one of `missing` (the first
/// for each), closes the others.
async fn connect_all(
    opener: &Opener,
    candidates: Vec<(String, LinkSource)>,
    missing: &mut BTreeSet<String>,
    tried_urls: &mut BTreeSet<String>,
    found: &mut Found,
    errors: &mut Vec<String>,
) {
    let candidates: Vec<(String, LinkSource)> = candidates
        .into_iter()
        .filter(|(u, _)| tried_urls.insert(u.clone()))
        .collect();
    let opened = join_all(candidates.iter().map(|(url, _)| opener.open(url))).await;
    for ((url, source), opened) in candidates.into_iter().zip(opened) {
        match opened {
            Ok((index, client)) => {
                let name = client.server_info().server_name;
                if missing.remove(&name) {
                    let link = Link {
                        index,
                        client,
                        url,
                        source,
                    };
                    found.links.push((name, link));
                } else {
                    // Another server than one missing a link (a load balancer, an address of a
                    // server already linked): not a pinned link for anyone.
                    tokio::spawn(async move { client.drain().await });
                }
            }
            Err(error) => errors.push(error),
        }
    }
}

/// Every server's VARZ through the main connection, until each of `missing` answered (or
/// `VARZ_WAIT` passed: one that is down never does).
async fn gather_varz(
    main: &Client,
    missing: &BTreeSet<String>,
    malformed: &mut u64,
) -> Vec<VarzSeen> {
    let inbox = main.new_inbox();
    let Ok(mut replies) = main.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if main
        .publish_with_reply(PING_VARZ, inbox, "{}".into())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let deadline = tokio::time::Instant::now() + VARZ_WAIT;
    let mut seen: Vec<VarzSeen> = Vec::new();
    let mut waiting = missing.clone();
    while !waiting.is_empty() {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        match decode_varz(&msg.payload) {
            Some(varz) => {
                waiting.remove(&varz.name);
                seen.push(varz);
            }
            None => {
                *malformed += 1;
                crate::log_malformed("VARZ reply", &"no server name or client port");
            }
        }
    }
    seen
}

/// The addresses the servers' routes show for their peers, asked of every server in `varz`.
async fn gather_routes(
    main: &Client,
    varz: &[VarzSeen],
    malformed: &mut u64,
) -> Vec<(String, String)> {
    let asked = varz.iter().take(MAX_DISCOVERED_LINKS).map(|v| async move {
        let request = main.request(direct_routez_subject(&v.id), "{}".into());
        match tokio::time::timeout(ROUTEZ_TIMEOUT, request).await {
            Ok(Ok(msg)) => decode_routez(&msg.payload).ok_or(()),
            _ => Ok(Vec::new()),
        }
    });
    let mut seen = Vec::new();
    for reply in join_all(asked).await {
        match reply {
            Ok(routes) => seen.extend(routes),
            Err(()) => {
                *malformed += 1;
                crate::log_malformed("ROUTEZ reply", &"not a ROUTEZ envelope");
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varz(name: &str, host: &str, port: u16) -> VarzSeen {
        VarzSeen {
            name: name.to_string(),
            id: format!("ID{name}"),
            host: host.to_string(),
            port,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn varz_and_routez_replies_as_nats_server_sends_them_are_read() {
        let varz = br#"{"server":{"name":"n2","host":"0.0.0.0","id":"NID2","ver":"2.15.1"},
            "data":{"server_id":"NID2","server_name":"n2","host":"0.0.0.0","port":17422,
            "cluster":{"name":"c","addr":"127.0.0.1","cluster_port":17522}}}"#;
        assert_eq!(
            decode_varz(varz),
            Some(varz_seen("n2", "NID2", "0.0.0.0", 17422))
        );
        assert_eq!(decode_varz(br#"{"server":{"name":"n2","id":"x"}}"#), None);
        assert_eq!(decode_varz(b"garbage"), None);
        let routez = br#"{"server":{"name":"n1","id":"NID1"},"data":{"routes":[
            {"remote_id":"NID2","remote_name":"n2","ip":"10.0.0.2","port":51834},
            {"remote_id":"NID3","ip":"10.0.0.3","port":6222},
            {"remote_id":"NID4","remote_name":"n4","ip":"","port":6222}]}}"#;
        assert_eq!(
            decode_routez(routez),
            Some(vec![
                ("n2".to_string(), "10.0.0.2".to_string()),
                ("NID2".to_string(), "10.0.0.2".to_string()),
                ("NID3".to_string(), "10.0.0.3".to_string()),
            ])
        );
        assert_eq!(decode_routez(b"[]"), None);
    }

    fn varz_seen(name: &str, id: &str, host: &str, port: u16) -> VarzSeen {
        VarzSeen {
            name: name.to_string(),
            id: id.to_string(),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn a_member_listening_on_one_address_is_reached_there_and_one_on_every_address_where_its_peers_see_it(
    ) {
        let servers = [
            varz("n1", "10.0.0.1", 4222),
            varz("n2", "0.0.0.0", 4223),
            varz("n3", "::", 4224),
            varz("n4", "0.0.0.0", 4225),
            varz("n5", "fd00::5", 4226),
        ];
        let routes = vec![
            ("n2".to_string(), "10.0.0.2".to_string()),
            ("IDn2".to_string(), "10.0.0.2".to_string()),
            ("IDn3".to_string(), "fd00::3".to_string()),
        ];
        let found = addresses(
            &servers,
            &routes,
            &["nats.example".to_string()],
            &names(&["n1", "n2", "n3", "n4", "n5"]),
        );
        assert_eq!(
            found["n1"],
            vec![("nats://10.0.0.1:4222".to_string(), LinkSource::Varz)]
        );
        assert_eq!(
            found["n2"],
            vec![
                ("nats://10.0.0.2:4223".to_string(), LinkSource::Routez),
                ("nats://nats.example:4223".to_string(), LinkSource::Varz),
            ]
        );
        assert_eq!(found["n3"][0].0, "nats://[fd00::3]:4224");
        // No route shows it: only the given host, with its own port.
        assert_eq!(
            found["n4"],
            vec![("nats://nats.example:4225".to_string(), LinkSource::Varz)]
        );
        assert_eq!(found["n5"][0].0, "nats://[fd00::5]:4226");
        // Only the members asked for.
        let only = addresses(&servers, &routes, &[], &names(&["n2", "n4"]));
        assert_eq!(only.keys().collect::<Vec<_>>(), ["n2"]);
    }

    #[test]
    fn credentials_never_leave_a_url_and_hosts_are_read_from_any_url() {
        assert_eq!(
            crate::connect::redact_url("nats://sys:secret@nats:4222"),
            "nats://sys:***@nats:4222"
        );
        assert_eq!(
            crate::connect::redact_url("tls://a:b@c@h:1"),
            "tls://a:***@h:1"
        );
        assert_eq!(crate::connect::redact_url("h:4222"), "h:4222");
        assert_eq!(
            host_of("nats://u:p@nats.svc:4222").as_deref(),
            Some("nats.svc")
        );
        assert_eq!(host_of("127.0.0.1:4222").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("nats://[::1]:4222").as_deref(), Some("::1"));
        assert_eq!(host_of("nats").as_deref(), Some("nats"));
        assert_eq!(url_of_advertised("10.0.0.1:4222"), "nats://10.0.0.1:4222");
    }

    #[test]
    fn discovery_runs_at_start_then_only_for_new_members_or_answering_ones_rate_limited() {
        let t0 = Instant::now();
        let none = BTreeMap::new();
        let all = names(&["n1", "n2", "n3"]);
        assert!(!due(&BTreeSet::new(), &all, &none, None, t0), "all linked");
        assert!(due(&names(&["n3"]), &all, &none, None, t0), "at start");
        let tried: BTreeMap<String, (Instant, u32)> = [("n3".to_string(), (t0, 1))].into();
        let later = t0 + DISCOVERY_GAP;
        // Looked for already, and not long ago: not again.
        assert!(!due(&names(&["n3"]), &all, &tried, Some(t0), later));
        // A new member appears: once the gap passed.
        let n4 = names(&["n3", "n4"]);
        assert!(!due(
            &n4,
            &all,
            &tried,
            Some(t0),
            t0 + Duration::from_secs(1)
        ));
        assert!(due(&n4, &all, &tried, Some(t0), later));
        // The old one again once RETRY_AFTER passed, but only while it answers.
        let much_later = t0 + RETRY_AFTER;
        assert!(due(&names(&["n3"]), &all, &tried, Some(t0), much_later));
        assert!(!due(
            &names(&["n3"]),
            &names(&["n1"]),
            &tried,
            Some(t0),
            much_later
        ));
        // Each try doubles the wait, up to RETRY_MAX.
        let thrice: BTreeMap<String, (Instant, u32)> = [("n3".to_string(), (t0, 3))].into();
        assert!(!due(&names(&["n3"]), &all, &thrice, Some(t0), much_later));
        assert!(due(
            &names(&["n3"]),
            &all,
            &thrice,
            Some(t0),
            t0 + RETRY_AFTER * 4
        ));
        assert_eq!(retry_at(t0, 40), t0 + RETRY_MAX);
    }
}
