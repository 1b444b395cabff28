//! Several `serve` nodes on one PostgreSQL database, joined through Redis pub/sub
//! (`redis_url`). Two things cross nodes this way:
//!
//! - **Live events.** Every event a node publishes ([`LiveHub::publish`]: readings it
//!   committed, alarm changes, well state) is also published on `<prefix>:live`; every other
//!   node hands it to its own stream subscribers ([`LiveHub::publish_here`]). A client
//!   connected to node A sees readings ingested on node B. Best effort, like the stream
//!   itself: while Redis is unreachable events are dropped (counted) and each node's clients
//!   see that node's events only.
//! - **Revocations.** Whenever a node forgets its cached credentials (logout, password
//!   change, revoked API key, user disabled or changed), it publishes on `<prefix>:revoke`;
//!   the others forget theirs at once ([`Security::forget_cached_credentials_here`]), so the
//!   next request with the revoked credential is checked against the database and refused,
//!   and their streams re-check their identity. Without Redis a revocation made elsewhere is
//!   seen within `auth_cache_ms` (streams: within 60 s); after Redis comes back each node
//!   forgets its cache once, since it may have missed one.
//!
//! - **Which node diagnoses which well.** Every node heartbeats into the sorted set
//!   `<prefix>:nodes` (score: its clock in ms, every `cluster_heartbeat_ms`); members seen
//!   within `cluster_node_timeout_ms` are the nodes, and each well is diagnosed by exactly one of them, chosen
//!   by rendezvous hashing of (node, well) — so a well's readings ingested on any node reach its
//!   owner's diagnostics through `<prefix>:live`. When the set changes (a node joins, stops or
//!   dies) only the wells whose owner changed move: each node keeps the engines of the wells it
//!   still owns, drops the others, and rebuilds each well that moved to it from the database at
//!   its next reading (`membership_changes` in `/health/ready` counts the changes). Without
//!   Redis each node diagnoses what it ingests (the database still keeps one open alarm per
//!   well and condition).
//!
//! - **Retrains and transient marks.** A node given one for a well records it in the database
//!   (the answer waits for that) and announces it on `<prefix>:diagnostics`; the well's owner
//!   rebuilds the well with it ([`DiagnosticsHub::directives_changed`]). After its subscriber
//!   (re)connects, a node reads the changes it may have missed from the database.
//!
//! The data itself is never carried here: every node reads and writes the shared database.
//! Messages are JSON: `{"node": id, "type": "readings"|"alarm"|"well_state"|"connectivity", ...}`
//! on `<prefix>:live`, `{"node": id, "well_id": w, "revision": n}` on `<prefix>:diagnostics`.
//!
//! [`DiagnosticsHub::directives_changed`]: espwatch_server::diagnostics::DiagnosticsHub::directives_changed

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use espwatch_core::{Field, Measurements, Reading, Timestamp, WellId};
use espwatch_server::AppState;
use espwatch_server::live::{AlarmChange, LiveEvent, ReadingBatch};
use espwatch_store::Alarm;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::backoff::{Backoff, LongestWait};

/// Events waiting to be published; beyond this they are dropped (counted).
const QUEUE: usize = 4096;
/// Most messages sent in one pipeline.
const PIPELINE: usize = 256;
/// A connection attempt that has not succeeded within this failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A published pipeline not answered within this: its connection is taken as dead.
const UNANSWERED: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct WireReading {
    w: String,
    t: i64,
    /// Values in [`Field::ALL`] order, `null` when missing.
    v: Vec<Option<f64>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    Readings {
        readings: Vec<WireReading>,
    },
    Alarm {
        change: String,
        alarm: Box<Alarm>,
    },
    WellState {
        well_id: String,
        running: bool,
        at: i64,
    },
    Connectivity {
        well_id: String,
        online: bool,
        at: i64,
    },
    /// Sent by a node that rejoined as a new member after its hold on its wells lapsed, to
    /// itself: what its subscriber received before this was sent before the lapse was
    /// noticed (see [`Lease`]).
    Rejoined {
        generation: u64,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    event: WireEvent,
}

fn encode(node: &str, event: &LiveEvent) -> String {
    let event = match event {
        LiveEvent::Readings(batch) => WireEvent::Readings {
            readings: batch
                .readings
                .iter()
                .map(|r| WireReading {
                    w: r.well_id.as_str().to_owned(),
                    t: r.ts.0,
                    v: Field::ALL.iter().map(|f| r.values.get(*f)).collect(),
                })
                .collect(),
        },
        LiveEvent::Alarm { change, alarm } => WireEvent::Alarm {
            change: match change {
                AlarmChange::Raised => "raised",
                AlarmChange::Acknowledged => "acknowledged",
                AlarmChange::Cleared => "cleared",
            }
            .to_owned(),
            alarm: Box::new((**alarm).clone()),
        },
        LiveEvent::WellState {
            well_id,
            running,
            at,
        } => WireEvent::WellState {
            well_id: well_id.as_str().to_owned(),
            running: *running,
            at: at.0,
        },
        LiveEvent::Connectivity {
            well_id,
            online,
            at,
        } => WireEvent::Connectivity {
            well_id: well_id.as_str().to_owned(),
            online: *online,
            at: at.0,
        },
    };
    serde_json::to_string(&Envelope {
        node: node.to_owned(),
        event,
    })
    .unwrap_or_default()
}

/// A message on `<prefix>:live` this node acts on.
enum Incoming {
    /// An event of another node.
    Event(LiveEvent),
    /// This node's own [`WireEvent::Rejoined`].
    Rejoined(u64),
}

/// The event of a message from another node, or this node's own rejoin marker (`None`: any
/// other message of this node, or another node's marker).
fn decode(node: &str, text: &str) -> Result<Option<Incoming>, String> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let WireEvent::Rejoined { generation } = envelope.event {
        return Ok((envelope.node == node).then_some(Incoming::Rejoined(generation)));
    }
    if envelope.node == node {
        return Ok(None);
    }
    let well = |id: &str| WellId::parse(id).map_err(|e| format!("well {id:?}: {e}"));
    Ok(Some(Incoming::Event(match envelope.event {
        WireEvent::Readings { readings } => {
            let mut out = Vec::with_capacity(readings.len());
            for r in readings {
                let mut values = Measurements::empty();
                for (field, value) in Field::ALL.iter().zip(r.v) {
                    values.set(*field, value);
                }
                out.push(Reading {
                    well_id: well(&r.w)?,
                    ts: Timestamp(r.t),
                    values,
                });
            }
            LiveEvent::Readings(Arc::new(ReadingBatch::new(out)))
        }
        WireEvent::Alarm { change, alarm } => LiveEvent::Alarm {
            change: match change.as_str() {
                "raised" => AlarmChange::Raised,
                "acknowledged" => AlarmChange::Acknowledged,
                "cleared" => AlarmChange::Cleared,
                other => return Err(format!("unknown alarm change {other:?}")),
            },
            alarm: Arc::new(*alarm),
        },
        WireEvent::WellState {
            well_id,
            running,
            at,
        } => LiveEvent::WellState {
            well_id: well(&well_id)?,
            running,
            at: Timestamp(at),
        },
        WireEvent::Connectivity {
            well_id,
            online,
            at,
        } => LiveEvent::Connectivity {
            well_id: well(&well_id)?,
            online,
            at: Timestamp(at),
        },
        WireEvent::Rejoined { .. } => unreachable!("returned above"),
    })))
}

/// The rejoin marker of `node`'s `generation` (see [`Lease`]).
fn rejoined(node: &str, generation: u64) -> String {
    serde_json::to_string(&Envelope {
        node: node.to_owned(),
        event: WireEvent::Rejoined { generation },
    })
    .unwrap_or_default()
}

/// This node's hold on its share of the wells. The others count a node among them until
/// `cluster_node_timeout_ms` after the heartbeat they last saw, so this node may diagnose its
/// wells only while the last heartbeat Redis answered was *sent* less than that ago (an answer
/// read late, after the process was stopped or starved, renews nothing). Once that has
/// lapsed the others have taken its wells (and diagnosed their readings): the node drops
/// every well's state and queued readings, rejoins under a new member name (`<node>~<n>`,
/// the generation), diagnoses nothing that reached its subscriber before it noticed (the
/// readings it buffered while stopped: up to its own marker on `<prefix>:live`), and takes
/// the wells it is then given only after the others have had two heartbeats to see it.
struct Lease {
    base: std::time::Instant,
    /// When the last answered heartbeat was sent, ms after `base` plus 1 (0: none yet).
    answered: AtomicU64,
    timeout_ms: u64,
    /// Times the hold lapsed: 0 until the first.
    generation: AtomicU64,
}

impl Lease {
    fn new(timeout: Duration) -> Lease {
        Lease {
            base: std::time::Instant::now(),
            answered: AtomicU64::new(0),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            generation: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Redis answered a heartbeat sent at `sent`.
    fn renew(&self, sent: std::time::Instant) {
        self.answered.fetch_max(self.ms(sent) + 1, Ordering::SeqCst);
    }

    /// Whether the others still count this node (a heartbeat sent within the timeout was
    /// answered).
    fn held(&self) -> bool {
        match self.answered.load(Ordering::SeqCst) {
            0 => false,
            at => self.ms(std::time::Instant::now()) < at - 1 + self.timeout_ms,
        }
    }

    /// Whether a hold there was has lapsed.
    fn lapsed(&self) -> bool {
        self.answered.load(Ordering::SeqCst) != 0 && !self.held()
    }
}

enum Outgoing {
    Live(LiveEvent),
    Revoke,
    /// A well's diagnostics directives changed (retrain, transient mark): its owner rebuilds it.
    Directives(WellId, i64),
}

/// A message on `<prefix>:diagnostics`.
#[derive(Serialize, Deserialize)]
struct DirectivesChanged {
    node: String,
    well_id: String,
    revision: i64,
}

#[derive(Default)]
struct Stats {
    publisher_connected: AtomicBool,
    subscriber_connected: AtomicBool,
    connections: AtomicU64,
    connection_failures: AtomicU64,
    events_published: AtomicU64,
    events_received: AtomicU64,
    /// Events not sent: the queue was full or Redis unreachable.
    events_dropped: AtomicU64,
    revocations_published: AtomicU64,
    revocations_received: AtomicU64,
    /// Announcements of changed well directives (retrain, transient mark) sent and received.
    directives_published: AtomicU64,
    directives_received: AtomicU64,
    /// Messages from other nodes that could not be read.
    messages_malformed: AtomicU64,
    /// Nodes sharing the wells (0: membership unknown, this node diagnoses what it ingests).
    nodes: AtomicU64,
    /// Times the nodes sharing the wells changed as this node saw them (a node joined, left
    /// or was not heard of within `cluster_node_timeout_ms`): each moves wells between nodes.
    membership_changes: AtomicU64,
    /// Times this node's hold on its wells lapsed (see [`Lease`]), and its member name now.
    lapses: AtomicU64,
    member: Mutex<String>,
    /// Whether it is waiting for the others to see it before taking its wells (a rejoin).
    joining: AtomicBool,
    /// Readings other nodes sent before this node noticed its hold had lapsed: shown on its
    /// streams, not diagnosed here.
    backlog_readings_not_diagnosed: AtomicU64,
    /// Events sent again on a new connection because Redis had not answered their pipeline.
    events_resent: AtomicU64,
    /// `cluster_heartbeat_ms` and `cluster_node_timeout_ms`, shown beside the changes.
    heartbeat_ms: AtomicU64,
    node_timeout_ms: AtomicU64,
    /// The reconnection backoff's cap (`broker_reconnect_max_ms`) and the longest wait slept.
    reconnect_max_ms: AtomicU64,
    reconnect_longest_wait: LongestWait,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn status(&self, node: &str) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let publisher = self.publisher_connected.load(Ordering::Relaxed);
        let subscriber = self.subscriber_connected.load(Ordering::Relaxed);
        json!({
            // Redis down degrades, never unreadies: every node keeps serving from the database.
            "status": if publisher && subscriber { "healthy" } else { "degraded" },
            "node": node,
            "publisher_connected": publisher,
            "subscriber_connected": subscriber,
            "connections": n(&self.connections),
            "connection_failures": n(&self.connection_failures),
            "events_published": n(&self.events_published),
            "events_received": n(&self.events_received),
            "events_dropped": n(&self.events_dropped),
            "revocations_published": n(&self.revocations_published),
            "revocations_received": n(&self.revocations_received),
            "directives_published": n(&self.directives_published),
            "directives_received": n(&self.directives_received),
            "messages_malformed": n(&self.messages_malformed),
            "nodes": n(&self.nodes),
            "membership_changes": n(&self.membership_changes),
            "lapses": n(&self.lapses),
            "member": self.member.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "joining": self.joining.load(Ordering::Relaxed),
            "backlog_readings_not_diagnosed": n(&self.backlog_readings_not_diagnosed),
            "events_resent": n(&self.events_resent),
            "heartbeat_ms": n(&self.heartbeat_ms),
            "node_timeout_ms": n(&self.node_timeout_ms),
            "reconnect_max_ms": n(&self.reconnect_max_ms),
            "reconnect_longest_wait_ms": self.reconnect_longest_wait.ms(),
            "last_error": self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    /// A reconnection backoff capped at `reconnect_max_ms` (each task has its own).
    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(
            self.reconnect_max_ms.load(Ordering::Relaxed),
        ))
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display, logged: &mut bool) {
        self.connection_failures.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what}: {error}");
        if !*logged {
            tracing::warn!(target: "espwatch::cluster", "Redis unreachable, nodes not joined until it returns ({message})");
            *logged = true;
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// Checks `redis_url` (so `serve` refuses a bad one before binding its port).
pub fn check_config(config: &espwatch_app::Config) -> anyhow::Result<()> {
    if let Some(url) = &config.redis_url {
        redis::Client::open(url.as_str()).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: redis_url {}: {e}",
                espwatch_store_postgres::redact_url(url)
            )
        })?;
    }
    Ok(())
}

/// This node's link to the others; stopped with [`Cluster::stop`].
pub struct Cluster {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Arc<Stats>,
    node: String,
}

impl Cluster {
    /// Connects (in the background, retrying) and hooks this node's live hub and security
    /// into Redis. Fails only on an invalid `redis_url`.
    pub fn start(state: &AppState) -> anyhow::Result<Cluster> {
        check_config(&state.config)?;
        let url = state.config.redis_url.clone().unwrap_or_default();
        let client = redis::Client::open(url.as_str())?;
        let prefix = &state.config.redis_channel_prefix;
        let live_channel = format!("{prefix}:live");
        let revoke_channel = format!("{prefix}:revoke");
        let directives_channel = format!("{prefix}:diagnostics");
        let node = format!(
            "{}-{}",
            hostname(),
            espwatch_app::keys::random_token(9)?.to_lowercase()
        );
        let stats = Arc::new(Stats::default());
        let reconnect_max = state.config.broker_reconnect_max();
        stats.reconnect_max_ms.store(
            u64::try_from(reconnect_max.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        stats
            .heartbeat_ms
            .store(state.config.cluster_heartbeat_ms, Ordering::Relaxed);
        stats
            .node_timeout_ms
            .store(state.config.cluster_node_timeout_ms, Ordering::Relaxed);
        *stats.member.lock().unwrap_or_else(|e| e.into_inner()) = node.clone();
        let lease = Arc::new(Lease::new(Duration::from_millis(
            state.config.cluster_node_timeout_ms,
        )));
        let (stop, stopping) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<Outgoing>(QUEUE);

        let events = tx.clone();
        let dropped = stats.clone();
        state.live.set_outbound(Box::new(move |event: &LiveEvent| {
            if events.try_send(Outgoing::Live(event.clone())).is_err() {
                dropped.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let directives = tx.clone();
        let link = stats.clone();
        state
            .diagnostics
            .set_announcer(Box::new(move |well: &WellId, revision: i64| {
                // Stored already; told only while Redis is reachable (otherwise the owner
                // catches up when its own link comes back).
                link.publisher_connected.load(Ordering::Relaxed)
                    && directives
                        .try_send(Outgoing::Directives(well.clone(), revision))
                        .is_ok()
            }));
        state.security.set_on_revocation(Box::new(move || {
            // A full queue still gets the revocation: it waits in a task of its own.
            if let Err(mpsc::error::TrySendError::Full(message)) = tx.try_send(Outgoing::Revoke) {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(message).await;
                });
            }
        }));

        let channels = Channels {
            live: live_channel,
            revoke: revoke_channel,
            directives: directives_channel,
        };
        let publisher = tokio::spawn(publish(
            client.clone(),
            rx,
            stats.clone(),
            node.clone(),
            channels.clone(),
            stopping.clone(),
        ));
        let members = tokio::spawn(membership(
            client.clone(),
            state.clone(),
            stats.clone(),
            lease.clone(),
            node.clone(),
            (format!("{prefix}:nodes"), channels.live.clone()),
            stopping.clone(),
        ));
        let subscriber = tokio::spawn(subscribe(
            client,
            state.clone(),
            stats.clone(),
            lease,
            node.clone(),
            channels,
            stopping,
        ));
        Ok(Cluster {
            stop,
            tasks: vec![publisher, subscriber, members],
            stats,
            node,
        })
    }

    /// The status `/health/ready` shows under `redis`.
    pub fn status_fn(&self) -> impl Fn() -> Value + Send + Sync + 'static {
        let stats = self.stats.clone();
        let node = self.node.clone();
        move || stats.status(&node)
    }

    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// Sleeps the backoff's next wait (the brokers' capped, jittered one: nodes that lost Redis
/// together do not come back in lockstep); `false` if stopping.
async fn back_off(
    backoff: &mut Backoff,
    stats: &Stats,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    let wait = backoff.next_wait();
    stats.reconnect_longest_wait.record(wait);
    let slept = tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopping.wait_for(|s| *s) => false,
    };
    slept && !*stopping.borrow()
}

/// The pub/sub channels of one site.
#[derive(Clone)]
struct Channels {
    live: String,
    revoke: String,
    directives: String,
}

async fn publish(
    client: redis::Client,
    mut rx: mpsc::Receiver<Outgoing>,
    stats: Arc<Stats>,
    node: String,
    channels: Channels,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = stats.backoff();
    let mut logged = false;
    // No response timeout: a pipeline's answer is waited for however late it comes (a loaded
    // machine, Redis busy, this process stopped), up to `UNANSWERED` (see below). Giving up
    // after 500 ms (the client's default), and later after 5 s, dropped the pipeline's events:
    // readings other nodes' diagnostics and streams then never got.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    // A pipeline sent whose answer has not come: sent again, first, on the next connection
    // (at most `PIPELINE` messages; new events wait in the bounded queue meanwhile).
    let mut unconfirmed: Vec<Outgoing> = Vec::new();
    loop {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut connection = match connected {
            Ok(Ok(c)) => c,
            failed => {
                stats.publisher_connected.store(false, Ordering::Relaxed);
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connection timed out".to_owned(),
                };
                stats.failed("publisher", error, &mut logged);
                // Events of this node meanwhile: dropped (streams are best effort).
                while let Ok(message) = rx.try_recv() {
                    if let Outgoing::Live(_) = message {
                        stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if back_off(&mut backoff, &stats, &mut stopping).await {
                    continue;
                }
                return;
            }
        };
        stats.publisher_connected.store(true, Ordering::Relaxed);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        backoff.reset();
        loop {
            let resent = !unconfirmed.is_empty();
            let batch = if resent {
                std::mem::take(&mut unconfirmed)
            } else {
                let first = tokio::select! {
                    m = rx.recv() => m,
                    _ = stopping.wait_for(|s| *s) => None,
                };
                let Some(first) = first else { return };
                let mut batch = vec![first];
                while batch.len() < PIPELINE
                    && let Ok(m) = rx.try_recv()
                {
                    batch.push(m);
                }
                batch
            };
            let mut pipe = redis::pipe();
            let (mut events, mut revocations, mut directives) = (0, 0, 0);
            for message in &batch {
                match message {
                    Outgoing::Live(event) => {
                        events += 1;
                        pipe.cmd("PUBLISH")
                            .arg(&channels.live)
                            .arg(encode(&node, event))
                            .ignore();
                    }
                    Outgoing::Revoke => {
                        revocations += 1;
                        pipe.cmd("PUBLISH")
                            .arg(&channels.revoke)
                            .arg(&node)
                            .ignore();
                    }
                    Outgoing::Directives(well, revision) => {
                        directives += 1;
                        let message = DirectivesChanged {
                            node: node.clone(),
                            well_id: well.as_str().to_owned(),
                            revision: *revision,
                        };
                        pipe.cmd("PUBLISH")
                            .arg(&channels.directives)
                            .arg(serde_json::to_string(&message).unwrap_or_default())
                            .ignore();
                    }
                }
            }
            if resent {
                stats.events_resent.fetch_add(events, Ordering::Relaxed);
            }
            // The answer, however late, while the connection lives (a closed connection fails
            // the query at once); none for `UNANSWERED`: the connection is taken as dead and
            // the pipeline sent again on a new one (its events may then arrive twice).
            let query = pipe.query_async::<()>(&mut connection);
            tokio::pin!(query);
            let answer = tokio::select! {
                biased;
                a = &mut query => Some(a),
                _ = tokio::time::sleep(UNANSWERED) => None,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let answer = match answer {
                Some(a) => a.map_err(|e| e.to_string()),
                // Resumed after being stopped that long, the answer may be here but not read
                // yet: a last moment for it.
                None => match tokio::time::timeout(Duration::from_secs(1), &mut query).await {
                    Ok(a) => a.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer for {} s", UNANSWERED.as_secs())),
                },
            };
            match answer {
                Ok(()) => {
                    stats.events_published.fetch_add(events, Ordering::Relaxed);
                    stats
                        .revocations_published
                        .fetch_add(revocations, Ordering::Relaxed);
                    stats
                        .directives_published
                        .fetch_add(directives, Ordering::Relaxed);
                    if logged {
                        tracing::warn!(target: "espwatch::cluster", "Redis reachable again, nodes joined");
                        logged = false;
                    }
                }
                Err(e) => {
                    stats.publisher_connected.store(false, Ordering::Relaxed);
                    stats.failed("publish", e, &mut logged);
                    unconfirmed = batch;
                    break;
                }
            }
        }
        if !back_off(&mut backoff, &stats, &mut stopping).await {
            return;
        }
    }
}

async fn subscribe(
    client: redis::Client,
    state: AppState,
    stats: Arc<Stats>,
    lease: Arc<Lease>,
    node: String,
    channels: Channels,
    mut stopping: watch::Receiver<bool>,
) {
    let Channels {
        live: live_channel,
        revoke: revoke_channel,
        directives: directives_channel,
    } = channels;
    let mut backoff = stats.backoff();
    let mut logged = false;
    let mut malformed_logged = false;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&live_channel).await?;
            pubsub.subscribe(&revoke_channel).await?;
            pubsub.subscribe(&directives_channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                stats.subscriber_connected.store(true, Ordering::Relaxed);
                // A new subscription holds nothing from before: no backlog to skip.
                let mut accepted = lease.generation.load(Ordering::SeqCst);
                backoff.reset();
                // A revocation may have been published while this node was not listening.
                state.security.forget_cached_credentials_here();
                // Directives announced while it was not listening: read from the database.
                let diagnostics = state.diagnostics.clone();
                tokio::spawn(async move {
                    if let Err(e) = diagnostics.catch_up_directives().await {
                        tracing::warn!(target: "espwatch::cluster", error = %e, "cannot read the wells' directives changed while Redis was away; taken at each well's next rebuild");
                    }
                });
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        _ = stopping.wait_for(|s| *s) => return,
                    };
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else {
                        stats.messages_malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if message.get_channel_name() == directives_channel {
                        match serde_json::from_str::<DirectivesChanged>(&payload)
                            .map_err(|e| e.to_string())
                            .and_then(|m| {
                                WellId::parse(&m.well_id)
                                    .map(|w| (m, w))
                                    .map_err(|e| e.to_string())
                            }) {
                            Ok((m, _)) if m.node == node => {}
                            Ok((m, well)) => {
                                stats.directives_received.fetch_add(1, Ordering::Relaxed);
                                state.diagnostics.directives_changed(&well, m.revision);
                            }
                            Err(e) => {
                                stats.messages_malformed.fetch_add(1, Ordering::Relaxed);
                                if !malformed_logged {
                                    tracing::warn!(target: "espwatch::cluster", "unreadable message on {directives_channel}: {e}");
                                    malformed_logged = true;
                                }
                            }
                        }
                        continue;
                    }
                    if message.get_channel_name() == revoke_channel {
                        if payload != node {
                            stats.revocations_received.fetch_add(1, Ordering::Relaxed);
                            state.security.forget_cached_credentials_here();
                        }
                        continue;
                    }
                    match decode(&node, &payload) {
                        Ok(Some(Incoming::Rejoined(generation))) => {
                            accepted = accepted.max(generation);
                        }
                        Ok(Some(Incoming::Event(event))) => {
                            stats.events_received.fetch_add(1, Ordering::Relaxed);
                            // Readings of wells this node diagnoses, ingested elsewhere; not
                            // those sent before this node noticed its hold had lapsed (their
                            // wells' new owners diagnosed them).
                            if let LiveEvent::Readings(batch) = &event
                                && state.diagnostics.ownership().is_some()
                            {
                                if lease.generation.load(Ordering::SeqCst) > accepted {
                                    stats
                                        .backlog_readings_not_diagnosed
                                        .fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
                                } else {
                                    state.diagnostics.submit(batch.readings.clone());
                                }
                            }
                            state.live.publish_here(event);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            stats.messages_malformed.fetch_add(1, Ordering::Relaxed);
                            if !malformed_logged {
                                tracing::warn!(target: "espwatch::cluster", "unreadable message on {live_channel}: {e}");
                                malformed_logged = true;
                            }
                        }
                    }
                }
                stats.subscriber_connected.store(false, Ordering::Relaxed);
                stats.failed("subscriber", "connection closed", &mut logged);
            }
            failed => {
                stats.subscriber_connected.store(false, Ordering::Relaxed);
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connection timed out".to_owned(),
                };
                stats.failed("subscriber", error, &mut logged);
            }
        }
        if !back_off(&mut backoff, &stats, &mut stopping).await {
            return;
        }
    }
}

/// FNV-1a of (node, well), finished with MurmurHash3's fmix64 (FNV alone ranks nodes
/// unevenly for ids that differ in their last characters): the same on every node and build.
fn affinity(node: &str, well: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(well.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The node of `members` that diagnoses `well` (rendezvous hashing: when a node leaves, only
/// its wells move).
fn owner_of<'a>(members: &'a [String], well: &str) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| (affinity(m, well), m.as_str()))
        .map(String::as_str)
}

async fn membership(
    client: redis::Client,
    state: AppState,
    stats: Arc<Stats>,
    lease: Arc<Lease>,
    node: String,
    (key, live_channel): (String, String),
    mut stopping: watch::Receiver<bool>,
) {
    let mut members: Vec<String> = Vec::new();
    let mut connection = None;
    let mut logged = false;
    let heartbeat = state.config.cluster_heartbeat();
    let node_timeout = Duration::from_millis(state.config.cluster_node_timeout_ms);
    let node_timeout_ms = i64::try_from(state.config.cluster_node_timeout_ms).unwrap_or(i64::MAX);
    // This node's name in `<prefix>:nodes`: a new one each time its hold lapsed.
    let mut member = node.clone();
    // Names of this node to remove from the set, and its rejoin marker still to send.
    let mut retired: Vec<String> = Vec::new();
    let mut marker: Option<u64> = None;
    // After a rejoin, when it takes the wells it is given: once the others have seen it.
    let mut owning_from: Option<std::time::Instant> = None;
    // Whether it diagnoses what it ingests (no ownership rule: membership unknown).
    let mut local = true;
    // A slow answer is not a lost one: the client's default 500 ms (a loaded machine, a node
    // resumed after a stall) is no reason to give up the connection.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(node_timeout / 2));
    loop {
        // The others no longer count this node (it was stopped, starved or cut off longer
        // than they wait): they have its wells. Whatever it holds for them is stale.
        if !local && !members.is_empty() && lease.lapsed() {
            let generation = lease.generation.load(Ordering::SeqCst) + 1;
            retired.push(std::mem::replace(
                &mut member,
                format!("{node}~{generation}"),
            ));
            // First: from now on the subscriber diagnoses nothing it receives until it
            // reads this generation's marker (everything before it is backlog).
            lease.generation.store(generation, Ordering::SeqCst);
            marker = Some(generation);
            tracing::warn!(target: "espwatch::cluster", "no heartbeat of this node answered for cluster_node_timeout_ms: the other nodes took its wells; their state and queued readings dropped, rejoining as a new member");
            state.diagnostics.lose_ownership();
            members.clear();
            stats.lapses.fetch_add(1, Ordering::Relaxed);
            stats.nodes.store(0, Ordering::Relaxed);
            stats.membership_changes.fetch_add(1, Ordering::Relaxed);
            *stats.member.lock().unwrap_or_else(|e| e.into_inner()) = member.clone();
        }
        if connection.is_none() {
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await
            {
                Ok(Ok(c)) => connection = Some(c),
                Ok(Err(e)) => stats.failed("membership", e, &mut logged),
                Err(_) => stats.failed("membership", "connection timed out", &mut logged),
            }
        }
        let mut alive = None;
        let sent = std::time::Instant::now();
        if let Some(c) = connection.as_mut() {
            let now = chrono::Utc::now().timestamp_millis();
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD").arg(&key).arg(now).arg(&member).ignore();
            for old in &retired {
                pipe.cmd("ZREM").arg(&key).arg(old).ignore();
            }
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now - node_timeout_ms)
                .ignore();
            if let Some(generation) = marker {
                pipe.cmd("PUBLISH")
                    .arg(&live_channel)
                    .arg(rejoined(&node, generation))
                    .ignore();
            }
            let answer = pipe
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async::<(Vec<String>,)>(c)
                .await;
            match answer {
                Ok((mut nodes,)) => {
                    nodes.sort();
                    alive = Some(nodes);
                    retired.clear();
                    marker = None;
                }
                Err(e) => {
                    connection = None;
                    stats.failed("membership", e, &mut logged);
                }
            }
        }
        if alive.is_some() {
            lease.renew(sent);
        }
        match alive {
            Some(nodes) if nodes != members => {
                tracing::info!(target: "espwatch::cluster", nodes = nodes.len(), "nodes sharing the wells changed; diagnostics rebuilt from the database as readings come");
                if members.is_empty() && lease.generation.load(Ordering::SeqCst) > 0 {
                    // Rejoined: the others keep the wells now given to this node until their
                    // next heartbeat shows it; taken earlier, both would diagnose them.
                    owning_from = Some(sent + 2 * heartbeat);
                }
                stats.nodes.store(nodes.len() as u64, Ordering::Relaxed);
                stats.membership_changes.fetch_add(1, Ordering::Relaxed);
                members = nodes;
                local = false;
                let (me, shared, lease) = (member.clone(), members.clone(), lease.clone());
                state
                    .diagnostics
                    .set_ownership(Some(Arc::new(move |well: &WellId| {
                        owner_of(&shared, well.as_str()) == Some(me.as_str())
                            && lease.held()
                            && owning_from.is_none_or(|at| std::time::Instant::now() >= at)
                    })));
            }
            Some(_) => {}
            // One heartbeat without an answer (Redis slow or away for a moment, this process
            // starved or stopped): the others still count this node until the node timeout,
            // so it keeps its wells (each well still has one owner); dropping them at once
            // dropped every well's state here, and diagnosed the wells of others meanwhile.
            None if local || lease.held() => {}
            None => {
                tracing::warn!(target: "espwatch::cluster", "membership unknown without Redis: this node diagnoses the readings it ingests");
                if !members.is_empty() {
                    stats.membership_changes.fetch_add(1, Ordering::Relaxed);
                }
                stats.nodes.store(0, Ordering::Relaxed);
                members.clear();
                local = true;
                state.diagnostics.set_ownership(None);
            }
        }
        stats.joining.store(
            owning_from.is_some_and(|at| std::time::Instant::now() < at),
            Ordering::Relaxed,
        );
        let slept = tokio::select! {
            _ = tokio::time::sleep(heartbeat) => true,
            _ = stopping.wait_for(|s| *s) => false,
        };
        if !slept || *stopping.borrow() {
            // Leaving: the others take this node's wells at their next heartbeat.
            if let Some(c) = connection.as_mut() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    redis::cmd("ZREM")
                        .arg(&key)
                        .arg(&member)
                        .query_async::<i64>(c),
                )
                .await;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_wire_unchanged() {
        let mut values = Measurements::empty();
        values.set(Field::MotorCurrentA, Some(41.25));
        values.set(Field::FrequencyHz, Some(58.0));
        let reading = Reading {
            well_id: WellId::parse("W-1").unwrap(),
            ts: Timestamp(1_764_000_000_123_456),
            values,
        };
        let event = LiveEvent::Readings(Arc::new(ReadingBatch::new(vec![reading.clone()])));
        let text = encode("a", &event);
        assert!(
            decode("a", &text).unwrap().is_none(),
            "own messages are skipped"
        );
        let Some(Incoming::Event(LiveEvent::Readings(batch))) = decode("b", &text).unwrap() else {
            panic!("readings expected");
        };
        assert_eq!(batch.readings, vec![reading]);

        let event = LiveEvent::WellState {
            well_id: WellId::parse("W-2").unwrap(),
            running: false,
            at: Timestamp(7),
        };
        let Some(Incoming::Event(LiveEvent::WellState {
            well_id,
            running,
            at,
        })) = decode("b", &encode("a", &event)).unwrap()
        else {
            panic!("well state expected");
        };
        assert_eq!(
            (well_id.as_str(), running, at),
            ("W-2", false, Timestamp(7))
        );

        let event = LiveEvent::Connectivity {
            well_id: WellId::parse("W-3").unwrap(),
            online: true,
            at: Timestamp(9),
        };
        let Some(Incoming::Event(LiveEvent::Connectivity {
            well_id,
            online,
            at,
        })) = decode("b", &encode("a", &event)).unwrap()
        else {
            panic!("connectivity expected");
        };
        assert_eq!((well_id.as_str(), online, at), ("W-3", true, Timestamp(9)));
        assert!(decode("b", "{\"node\":\"a\",\"type\":\"nope\"}").is_err());

        // A rejoin marker is for its own node only.
        assert!(matches!(
            decode("a", &rejoined("a", 3)).unwrap(),
            Some(Incoming::Rejoined(3))
        ));
        assert!(decode("b", &rejoined("a", 3)).unwrap().is_none());
    }

    #[test]
    fn each_well_has_one_owner_and_only_a_leaving_nodes_wells_move() {
        let three: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let two: Vec<String> = ["n1", "n3"].map(String::from).to_vec();
        let mut per_node = std::collections::HashMap::new();
        for i in 0..3000 {
            let well = format!("W-{i}");
            let owner = owner_of(&three, &well).unwrap();
            *per_node.entry(owner).or_insert(0) += 1;
            if owner != "n2" {
                assert_eq!(owner_of(&two, &well), Some(owner), "{well} moved");
            }
        }
        for n in ["n1", "n2", "n3"] {
            assert!((800..1200).contains(&per_node[n]), "{per_node:?}");
        }
        assert_eq!(owner_of(&[], "W-1"), None);
    }
}
