//! Live events for `GET /api/v1/stream`: committed readings, alarm changes, well state and
//! connectivity, fanned out to WebSocket subscribers.
//!
//! The hub also keeps each well's connectivity ([`Presence`]: online or offline since when, as
//! the field protocols report it, e.g. Sparkplug B births and deaths), which
//! `GET /wells/latest` shows. It is held in memory only: a restarted server knows nothing until
//! the next birth or death (a Sparkplug edge node answers a restarted host's rebirth request).
//!
//! Publishing never waits for a subscriber. Events go into one bounded
//! [`tokio::sync::broadcast`] channel *after* the data they describe is committed (the ingest
//! handler publishes after `Store::append` returned, the diagnostics after the alarm store
//! answered); `send` on a broadcast channel only writes into a ring buffer, so a slow or stuck
//! subscriber costs ingestion nothing. Each connection task reads the ring at its own pace:
//! - what is already waiting is drained and sent as one message (readings merged; past
//!   [`COALESCE_READINGS`] only the newest reading per well is kept, with a `coalesced` count);
//! - a subscriber that falls more than `stream_buffer_events` ([`CHANNEL_EVENTS`] by default)
//!   events behind loses the oldest and is
//!   told so (`{"type":"lagged","missed_events":N}`), so it can re-read `/wells/latest`;
//! - a socket that does not accept a message within [`SEND_TIMEOUT`] is closed.
//!
//! The connections do not run on the API's runtime but on the hub's own fan-out thread (a
//! current-thread runtime, started with the first stream, at a lower scheduling priority on
//! Linux: [`FAN_OUT_NICENESS`]): a committed batch wakes every subscriber at once, and
//! hundreds of connection tasks queued on the API's workers would run before the ingest
//! request's answer and the next requests. On their own thread they wait for the CPU behind
//! ingestion instead; a subscriber that falls behind because of it gets merged messages or a
//! `lagged` notice, as any slow one does. A publish wakes one task there, the relay
//! ([`relay`]), which hands the event into the connections' own ring; the connections are
//! woken from the fan-out thread itself, not one by one from the publisher's. What waits for
//! one connection is written with one flush.
//!
//! With no subscriber at all nothing is built or sent (`has_subscribers`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use espwatch_app::periodic::{Every, FirstTick};
use espwatch_core::access::Permission;
use espwatch_core::{Field, Reading, Timestamp, WellId};
use espwatch_store::Alarm;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::MissedTickBehavior;

use crate::auth::{Principal, Security};
use crate::views::AlarmView;

/// Events the ring holds by default (`stream_buffer_events`); a subscriber further behind
/// loses the oldest (with a notice).
pub const CHANNEL_EVENTS: usize = 4096;
/// Readings one message may carry before older readings of a well are coalesced away.
pub const COALESCE_READINGS: usize = 5000;
/// A socket that does not take a message within this is closed (a stuck consumer).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a stream re-checks its identity besides when credentials change through this
/// server (changes made with the CLI are seen this late at most).
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Who opened a stream, and what re-checks it: the identity, until when the credential that
/// opened it is accepted (closed with 1008 then), and the security service (revocations,
/// [`Security::still_valid`]).
pub struct StreamIdentity {
    pub principal: Principal,
    pub credential_end: Option<Timestamp>,
    pub security: Arc<Security>,
}
/// Most events drained into one message.
const DRAIN_EVENTS: usize = 256;
/// How much lower than the server's the fan-out thread's scheduling priority is (added to
/// its nice value on Linux, at most 19): under CPU contention ingestion goes first.
pub const FAN_OUT_NICENESS: i32 = 10;

/// What happened to an alarm.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmChange {
    Raised,
    Acknowledged,
    Cleared,
}

/// Readings committed by one ingest request, with their JSON made once for all subscribers
/// (by the first that needs it): fan-out costs a copy of text per subscriber, not a
/// serialization.
#[derive(Debug)]
pub struct ReadingBatch {
    pub readings: Vec<Reading>,
    json: OnceLock<Vec<String>>,
    /// The whole `readings` message, shared by every subscriber that gets all of it.
    message: OnceLock<Utf8Bytes>,
}

impl ReadingBatch {
    pub fn new(readings: Vec<Reading>) -> ReadingBatch {
        ReadingBatch {
            readings,
            json: OnceLock::new(),
            message: OnceLock::new(),
        }
    }

    /// Each reading as canonical JSON (all channels).
    fn json(&self) -> &[String] {
        self.json.get_or_init(|| {
            self.readings
                .iter()
                .map(|r| reading_json(r, None).to_string())
                .collect()
        })
    }
}

/// One published event. Cheap to clone (shared payloads).
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// Readings committed by one ingest request.
    Readings(Arc<ReadingBatch>),
    Alarm {
        change: AlarmChange,
        alarm: Arc<Alarm>,
    },
    /// A well started or stopped running (as the diagnostics engine sees it).
    WellState {
        well_id: WellId,
        running: bool,
        at: Timestamp,
    },
    /// A well's device came online or went offline (a Sparkplug B birth or death), `at` the
    /// time the server received it.
    Connectivity {
        well_id: WellId,
        online: bool,
        at: Timestamp,
    },
}

/// A well's connectivity as the field protocols last reported it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub online: bool,
    /// When it became so (received by the server).
    pub since: Timestamp,
}

/// The kinds of event a subscriber can ask for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Readings,
    Alarms,
    WellState,
    Connectivity,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Readings,
        EventKind::Alarms,
        EventKind::WellState,
        EventKind::Connectivity,
    ];

    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "readings" => Some(EventKind::Readings),
            "alarms" => Some(EventKind::Alarms),
            "well_state" => Some(EventKind::WellState),
            "connectivity" => Some(EventKind::Connectivity),
            _ => None,
        }
    }

    /// The permission a subscriber needs for this kind.
    pub fn permission(self) -> Permission {
        match self {
            EventKind::Readings => Permission::LatestRead,
            EventKind::Alarms => Permission::AlarmsRead,
            EventKind::WellState => Permission::DiagnosticsRead,
            // What `GET /wells/latest` shows.
            EventKind::Connectivity => Permission::LatestRead,
        }
    }
}

/// What a connection receives. Checked against the principal when set (see [`Subscription::check`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Subscription {
    /// `None`: every well the identity may see.
    pub wells: Option<Vec<String>>,
    /// Channels of readings; `None`: all.
    pub channels: Option<Vec<&'static str>>,
    pub events: Vec<EventKind>,
}

/// A subscription as a client writes it (query string or `subscribe` message).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Comma-separated well ids; absent: all permitted wells.
    pub wells: Option<String>,
    /// Comma-separated channel names; absent: all channels.
    pub channels: Option<String>,
    /// Comma-separated kinds (`readings`, `alarms`, `well_state`, `connectivity`); absent: all
    /// the role may see.
    pub events: Option<String>,
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
}

fn items(list: &Option<String>) -> Option<Vec<&str>> {
    list.as_deref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl SubscriptionRequest {
    /// Checks the request against the principal: every well must be in its scope, every
    /// asked kind allowed by its role. Without `events`, the kinds the role allows.
    pub fn check(&self, principal: &Principal) -> Result<Subscription, SubscriptionError> {
        let wells = match items(&self.wells) {
            None => None,
            Some(list) => {
                let mut wells = Vec::with_capacity(list.len());
                for w in list {
                    let id = WellId::parse(w)
                        .map_err(|e| SubscriptionError::Invalid(format!("well id {w:?}: {e}")))?;
                    if !principal.may_see_well(id.as_str()) {
                        return Err(SubscriptionError::Forbidden(format!(
                            "not permitted for well {w:?}"
                        )));
                    }
                    wells.push(id.to_string());
                }
                Some(wells)
            }
        };
        let channels = match items(&self.channels) {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|c| {
                        Field::from_name(c).map(Field::name).ok_or_else(|| {
                            SubscriptionError::Invalid(format!("{c:?} is not a channel"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let events = match items(&self.events) {
            None => EventKind::ALL
                .into_iter()
                .filter(|k| principal.can(k.permission()))
                .collect(),
            Some(list) => {
                let mut kinds = Vec::new();
                for k in list {
                    let kind = EventKind::parse(k).ok_or_else(|| {
                        SubscriptionError::Invalid(format!(
                            "{k:?} is not an event kind (readings, alarms, well_state, connectivity)"
                        ))
                    })?;
                    if !principal.can(kind.permission()) {
                        return Err(SubscriptionError::Forbidden(format!(
                            "role {} lacks the permission {} needed for {k} events",
                            principal.role,
                            kind.permission().name()
                        )));
                    }
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                kinds
            }
        };
        Ok(Subscription {
            wells,
            channels,
            events,
        })
    }
}

/// Counters shown by `/health/ready`.
#[derive(Clone, Debug, Serialize)]
pub struct LiveStatus {
    pub connections: usize,
    pub published_events: u64,
    /// Events subscribers lost by falling too far behind (each told so).
    pub lagged_events: u64,
    /// Readings left out of a message because a newer one of the same well was in it.
    pub coalesced_readings: u64,
}

/// The fan-out point; one per server (in [`crate::AppState`]).
pub struct LiveHub {
    tx: broadcast::Sender<LiveEvent>,
    max_per_identity: usize,
    connections: Mutex<HashMap<String, usize>>,
    shutdown: watch::Sender<bool>,
    published: AtomicU64,
    lagged: AtomicU64,
    coalesced: AtomicU64,
    /// Where events published on this node also go (the other nodes, through Redis);
    /// set once by `espwatch-field` when `redis_url` is.
    outbound: OnceLock<Outbound>,
    /// Each well's connectivity, from [`LiveEvent::Connectivity`] events (this node's and the
    /// other nodes'). In memory only.
    presence: Mutex<HashMap<WellId, Presence>>,
    /// The thread the connections run on, started with the first (`None`: it could not be
    /// started; they run where they were accepted).
    fan_out: OnceLock<Option<FanOut>>,
    /// The connections' ring, fed by the relay (started with the first stream).
    relay: OnceLock<broadcast::Sender<Relayed>>,
    /// Events each ring holds (`stream_buffer_events`).
    buffer_events: usize,
}

/// What the relay hands the connections: an event, or how many the relay itself missed
/// (it fell a whole ring behind the publishers; every connection is told).
#[derive(Clone, Debug)]
enum Relayed {
    Event(LiveEvent),
    Missed(u64),
}

/// A stream connection's place in the connections' ring ([`LiveHub::subscribe_stream`]).
pub struct StreamReceiver(broadcast::Receiver<Relayed>);

/// The relay: the publishers' ring's only stream reader, on the fan-out thread. A publish
/// wakes this one task (one cross-thread wake, made by the publisher: an ingest request's
/// worker, before its answer goes out); it hands the event on into the connections' ring,
/// whose waiting connections it wakes on its own thread, where a wake is a push onto the
/// local run queue. Without it a publish woke every connection from the publisher's thread:
/// a lock and an eventfd write per connection, hundreds per batch.
async fn relay(mut upstream: broadcast::Receiver<LiveEvent>, local: broadcast::Sender<Relayed>) {
    loop {
        let next = match upstream.recv().await {
            Ok(event) => Relayed::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Relayed::Missed(n),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // No connection at the moment: nothing to hand on.
        let _ = local.send(next);
    }
}

/// The fan-out thread: a current-thread runtime that runs until the hub is dropped (which
/// its connections, holding the hub, outlive).
struct FanOut {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FanOut {
    fn start() -> Option<FanOut> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!("stream: no fan-out runtime ({e}); streams run on the API's");
                return None;
            }
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Handed over through a slot so that, should the thread not start, it is shut down
        // here (dropping a runtime inside another one panics).
        let slot = Arc::new(Mutex::new(Some(runtime)));
        let theirs = slot.clone();
        let started = std::thread::Builder::new()
            .name("espwatch-live".into())
            .spawn(move || {
                let runtime = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(runtime) = runtime {
                    lower_priority();
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                }
            });
        match started {
            Ok(_) => Some(FanOut {
                handle,
                _stop: stop,
            }),
            Err(e) => {
                if let Some(runtime) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    runtime.shutdown_background();
                }
                tracing::warn!("stream: no fan-out thread ({e}); streams run on the API's runtime");
                None
            }
        }
    }
}

/// Lowers the calling thread's scheduling priority by [`FAN_OUT_NICENESS`] (Linux: nice
/// values are per thread); elsewhere nothing.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: `gettid` and `getpriority`/`setpriority` on this thread's own id take and
    // return plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if *libc::__errno_location() == 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, (now + FAN_OUT_NICENESS).min(19));
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Receives every event published on this node (never from other nodes); must not wait.
pub type Outbound = Box<dyn Fn(&LiveEvent) + Send + Sync>;

/// A connection slot of one identity, given back when dropped.
pub struct ConnectionPermit {
    hub: Arc<LiveHub>,
    actor: String,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut map = self
            .hub
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.actor) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.actor);
            }
        }
    }
}

impl LiveHub {
    /// A hub whose ring holds `buffer_events` events (at least 1).
    pub fn new(max_per_identity: usize, buffer_events: usize) -> Arc<LiveHub> {
        let (tx, _) = broadcast::channel(buffer_events.max(1));
        Arc::new(LiveHub {
            tx,
            max_per_identity,
            connections: Mutex::new(HashMap::new()),
            shutdown: watch::Sender::new(false),
            published: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            outbound: OnceLock::new(),
            presence: Mutex::new(HashMap::new()),
            fan_out: OnceLock::new(),
            relay: OnceLock::new(),
            buffer_events: buffer_events.max(1),
        })
    }

    /// Runs one connection ([`LiveHub::run`]) on the fan-out thread, until it ends.
    pub async fn serve(
        self: Arc<Self>,
        socket: WebSocket,
        identity: StreamIdentity,
        subscription: Subscription,
        rx: StreamReceiver,
        permit: ConnectionPermit,
    ) {
        let connection = self.clone().run(socket, identity, subscription, rx, permit);
        match self.fan_out.get_or_init(FanOut::start) {
            Some(fan_out) => {
                let _ = fan_out.handle.spawn(connection).await;
            }
            None => connection.await,
        }
    }

    /// Sends every event published on this node to `outbound` too (the cluster fan-out).
    /// Only the first call takes effect.
    pub fn set_outbound(&self, outbound: Outbound) {
        let _ = self.outbound.set(outbound);
    }

    /// Whether anyone listens (publishers skip building events otherwise): a stream or
    /// another receiver here, or other nodes.
    pub fn has_subscribers(&self) -> bool {
        let relay = self.relay.get();
        // The relay's own receiver is no listener.
        let others = self
            .tx
            .receiver_count()
            .saturating_sub(usize::from(relay.is_some()));
        others > 0
            || relay.is_some_and(|local| local.receiver_count() > 0)
            || self.outbound.get().is_some()
    }

    /// A receiver of everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }

    /// A stream connection's receiver of everything published from now on, through the
    /// relay (started with the first, on the fan-out thread); call it inside the runtime.
    pub fn subscribe_stream(&self) -> StreamReceiver {
        let local = self.relay.get_or_init(|| {
            let (local, _) = broadcast::channel(self.buffer_events);
            // Subscribed here, before the caller's receiver below: nothing published after
            // this call is missed.
            let relayed = relay(self.tx.subscribe(), local.clone());
            match self.fan_out.get_or_init(FanOut::start) {
                Some(fan_out) => drop(fan_out.handle.spawn(relayed)),
                None => drop(tokio::spawn(relayed)),
            }
            local
        });
        StreamReceiver(local.subscribe())
    }

    /// Publishes an event of this node (to its subscribers and the other nodes); never waits.
    pub fn publish(&self, event: LiveEvent) {
        if let Some(outbound) = self.outbound.get() {
            outbound(&event);
        }
        self.publish_here(event);
    }

    /// Publishes an event to this node's subscribers only (one that came from another node).
    pub fn publish_here(&self, event: LiveEvent) {
        if let LiveEvent::Connectivity {
            well_id,
            online,
            at,
        } = &event
            && !self.record_presence(well_id, *online, *at)
        {
            // No change, or older than the change known: nothing to tell.
            return;
        }
        self.send_here(event);
    }

    fn send_here(&self, event: LiveEvent) {
        if self.tx.send(event).is_ok() {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes committed readings (a copy is made only when someone listens).
    pub fn publish_readings(&self, readings: &[Reading]) {
        if !readings.is_empty() && self.has_subscribers() {
            self.publish(LiveEvent::Readings(Arc::new(ReadingBatch::new(
                readings.to_vec(),
            ))));
        }
    }

    /// A well came online or went offline at `at`: kept as its [`Presence`] and published when
    /// it changes (a birth while already online is no event). `false`: no change.
    pub fn set_online(&self, well_id: WellId, online: bool, at: Timestamp) -> bool {
        if !self.record_presence(&well_id, online, at) {
            return false;
        }
        // Published even without subscribers here: the other nodes keep the state too.
        let event = LiveEvent::Connectivity {
            well_id,
            online,
            at,
        };
        if let Some(outbound) = self.outbound.get() {
            outbound(&event);
        }
        self.send_here(event);
        true
    }

    /// Records a connectivity change unless the well already is so, or a later change is
    /// known (events from other nodes may arrive late); `true` when recorded.
    fn record_presence(&self, well_id: &WellId, online: bool, at: Timestamp) -> bool {
        let mut map = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(well_id) {
            Some(p) if p.online == online || p.since > at => false,
            _ => {
                map.insert(well_id.clone(), Presence { online, since: at });
                true
            }
        }
    }

    /// The well's connectivity; `None` when no field protocol has reported it (e.g. a well
    /// fed over HTTP, or none since this server started).
    pub fn presence(&self, well_id: &WellId) -> Option<Presence> {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(well_id)
            .copied()
    }

    /// Every known well's connectivity.
    pub fn presences(&self) -> HashMap<WellId, Presence> {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn publish_alarm(&self, change: AlarmChange, alarm: Alarm) {
        if self.has_subscribers() {
            self.publish(LiveEvent::Alarm {
                change,
                alarm: Arc::new(alarm),
            });
        }
    }

    /// A connection slot for `actor`, or `None` at the per-identity limit.
    pub fn try_connect(self: &Arc<Self>, actor: &str) -> Option<ConnectionPermit> {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(actor.to_owned()).or_insert(0);
        if *n >= self.max_per_identity {
            return None;
        }
        *n += 1;
        Some(ConnectionPermit {
            hub: self.clone(),
            actor: actor.to_owned(),
        })
    }

    pub fn max_per_identity(&self) -> usize {
        self.max_per_identity
    }

    /// Closes every stream (code 1001, going away); called when the server shuts down.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn status(&self) -> LiveStatus {
        LiveStatus {
            connections: self
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .sum(),
            published_events: self.published.load(Ordering::Relaxed),
            lagged_events: self.lagged.load(Ordering::Relaxed),
            coalesced_readings: self.coalesced.load(Ordering::Relaxed),
        }
    }

    /// Runs one connection until the client leaves, the socket stalls, the server stops, the
    /// identity no longer stands or its credential ends.
    /// `rx` was subscribed before the upgrade, so nothing published after the 101 is missed.
    pub async fn run(
        self: Arc<Self>,
        mut socket: WebSocket,
        identity: StreamIdentity,
        mut subscription: Subscription,
        StreamReceiver(mut rx): StreamReceiver,
        _permit: ConnectionPermit,
    ) {
        let StreamIdentity {
            principal,
            credential_end,
            security,
        } = identity;
        // The credential's end, on the runtime's clock from now (its timers are monotonic).
        let credential_ends = async move {
            match credential_end {
                Some(end) => {
                    let now = Timestamp::from_datetime(chrono::Utc::now());
                    let left = u64::try_from(end.0.saturating_sub(now.0)).unwrap_or(0);
                    tokio::time::sleep(Duration::from_micros(left)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(credential_ends);
        let mut revocations = security.revocations();
        // A branch of the connection's own select (it closes the socket), not a task of its own.
        let mut recheck = Every {
            period: RECHECK_EVERY,
            missed: MissedTickBehavior::Burst,
            first: FirstTick::AfterPeriod,
        }
        .interval();
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return;
        }
        let hello = serde_json::json!({
            "type": "subscribed",
            "identity": principal.name,
            "role": principal.role.name(),
            "subscription": subscription,
        });
        if !self.send(&mut socket, hello.to_string()).await {
            return;
        }
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    let stop = changed.is_err() || *shutdown.borrow_and_update();
                    if stop {
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: 1001,
                            reason: Utf8Bytes::from_static("server shutting down"),
                        }))).await;
                        return;
                    }
                }
                () = &mut credential_ends => {
                    let _ = socket.send(Message::Close(Some(CloseFrame {
                        code: 1008,
                        reason: Utf8Bytes::from_static("credential expired"),
                    }))).await;
                    return;
                }
                _ = async {
                    tokio::select! {
                        _ = revocations.changed() => {}
                        _ = recheck.tick() => {}
                    }
                } => {
                    // A store that cannot answer says nothing about the identity: keep going.
                    if let Ok(false) = security.still_valid(&principal).await {
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: Utf8Bytes::from_static("credentials revoked"),
                        }))).await;
                        return;
                    }
                }
                incoming = socket.recv() => {
                    let text = match incoming {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue, // pings are answered by the socket itself
                    };
                    let reply = match client_message(&text, &principal) {
                        Ok(new) => {
                            subscription = new;
                            serde_json::json!({"type": "subscribed", "subscription": subscription})
                        }
                        Err(e) => error_message(&e),
                    };
                    if !self.send(&mut socket, reply.to_string()).await {
                        return;
                    }
                }
                first = rx.recv() => {
                    let mut events = Vec::new();
                    let mut missed = 0u64;
                    match first {
                        Ok(Relayed::Event(e)) => events.push(e),
                        Ok(Relayed::Missed(n)) | Err(broadcast::error::RecvError::Lagged(n)) => {
                            missed += n
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    // Whatever else is already waiting goes into the same message.
                    while events.len() < DRAIN_EVENTS {
                        match rx.try_recv() {
                            Ok(Relayed::Event(e)) => events.push(e),
                            Ok(Relayed::Missed(n))
                            | Err(broadcast::error::TryRecvError::Lagged(n)) => missed += n,
                            Err(_) => break,
                        }
                    }
                    let mut messages = Vec::new();
                    if missed > 0 {
                        self.lagged.fetch_add(missed, Ordering::Relaxed);
                        let notice = serde_json::json!({
                            "type": "lagged",
                            "missed_events": missed,
                            "message": "this connection fell behind and missed events; re-read /api/v1/wells/latest and /api/v1/alarms",
                        });
                        messages.push(Utf8Bytes::from(notice.to_string()));
                    }
                    messages.extend(self.render(&events, &principal, &subscription));
                    if !self.send_all(&mut socket, messages).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends one text message; false when the connection is over (closed, or stuck for
    /// [`SEND_TIMEOUT`]).
    async fn send(&self, socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> bool {
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!("stream: a subscriber took no message for {SEND_TIMEOUT:?}; closed");
                false
            }
        }
    }

    /// Sends text messages with one flush; false when the connection is over (closed, or
    /// stuck for [`SEND_TIMEOUT`]).
    async fn send_all(&self, socket: &mut WebSocket, messages: Vec<Utf8Bytes>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let write = async {
            for message in messages {
                socket.feed(Message::Text(message)).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!("stream: a subscriber took no message for {SEND_TIMEOUT:?}; closed");
                false
            }
        }
    }

    /// The messages a batch of events makes for one subscriber.
    fn render(
        &self,
        events: &[LiveEvent],
        principal: &Principal,
        subscription: &Subscription,
    ) -> Vec<Utf8Bytes> {
        let wanted = |well: &str| {
            principal.may_see_well(well)
                && subscription
                    .wells
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|x| x == well))
        };
        let mut messages = Vec::new();
        // (batch, position) of every reading this subscriber gets, in order.
        let mut readings: Vec<(&ReadingBatch, usize)> = Vec::new();
        for event in events {
            match event {
                LiveEvent::Readings(batch) => {
                    if subscription.events.contains(&EventKind::Readings) {
                        readings.extend(
                            batch
                                .readings
                                .iter()
                                .enumerate()
                                .filter(|(_, r)| wanted(r.well_id.as_str()))
                                .map(|(i, _)| (&**batch, i)),
                        );
                    }
                }
                LiveEvent::Alarm { change, alarm } => {
                    if subscription.events.contains(&EventKind::Alarms)
                        && wanted(alarm.well_id.as_str())
                    {
                        messages.push(Utf8Bytes::from(
                            serde_json::json!({
                                "type": "alarm",
                                "change": change,
                                "alarm": AlarmView::from(Alarm::clone(alarm)),
                            })
                            .to_string(),
                        ));
                    }
                }
                LiveEvent::WellState {
                    well_id,
                    running,
                    at,
                } => {
                    if subscription.events.contains(&EventKind::WellState)
                        && wanted(well_id.as_str())
                    {
                        messages.push(Utf8Bytes::from(
                            serde_json::json!({
                                "type": "well_state",
                                "well_id": well_id,
                                "running": running,
                                "ts": at.to_rfc3339(),
                            })
                            .to_string(),
                        ));
                    }
                }
                LiveEvent::Connectivity {
                    well_id,
                    online,
                    at,
                } => {
                    if subscription.events.contains(&EventKind::Connectivity)
                        && wanted(well_id.as_str())
                    {
                        messages.push(Utf8Bytes::from(
                            serde_json::json!({
                                "type": "connectivity",
                                "well_id": well_id,
                                "online": online,
                                "ts": at.to_rfc3339(),
                            })
                            .to_string(),
                        ));
                    }
                }
            }
        }
        // The common case: one batch, all of it, every channel: the message made once.
        let whole = match events {
            [LiveEvent::Readings(batch)]
                if subscription.channels.is_none()
                    && readings.len() == batch.readings.len()
                    && readings.len() <= COALESCE_READINGS =>
            {
                Some(batch)
            }
            _ => None,
        };
        if let Some(batch) = whole {
            let message = batch.message.get_or_init(|| {
                let all: Vec<(&ReadingBatch, usize)> =
                    (0..batch.readings.len()).map(|i| (&**batch, i)).collect();
                Utf8Bytes::from(readings_message(&all, None, 0))
            });
            messages.insert(0, message.clone());
        } else if !readings.is_empty() {
            let mut coalesced = 0usize;
            if readings.len() > COALESCE_READINGS {
                // Keep the newest reading of each well.
                let before = readings.len();
                let mut seen = HashSet::new();
                let mut kept: Vec<(&ReadingBatch, usize)> = readings
                    .iter()
                    .rev()
                    .filter(|(b, i)| seen.insert(b.readings[*i].well_id.as_str()))
                    .copied()
                    .collect();
                kept.reverse();
                readings = kept;
                coalesced = before - readings.len();
                self.coalesced
                    .fetch_add(coalesced as u64, Ordering::Relaxed);
            }
            let message = readings_message(&readings, subscription.channels.as_deref(), coalesced);
            // Readings first: alarms usually follow from them.
            messages.insert(0, Utf8Bytes::from(message));
        }
        messages
    }
}

/// A `readings` message from pre-rendered readings (or, with a channel filter, rendered here).
fn readings_message(
    readings: &[(&ReadingBatch, usize)],
    channels: Option<&[&'static str]>,
    coalesced: usize,
) -> String {
    let mut message = String::from(r#"{"type":"readings","readings":["#);
    for (n, (batch, i)) in readings.iter().enumerate() {
        if n > 0 {
            message.push(',');
        }
        match channels {
            None => message.push_str(&batch.json()[*i]),
            Some(channels) => {
                message.push_str(&reading_json(&batch.readings[*i], Some(channels)).to_string())
            }
        }
    }
    message.push(']');
    if coalesced > 0 {
        message.push_str(&format!(r#","coalesced":{coalesced}"#));
    }
    message.push('}');
    message
}

/// A reading in the canonical flat shape of `POST /api/v1/telemetry`.
fn reading_json(reading: &Reading, channels: Option<&[&'static str]>) -> serde_json::Value {
    let mut row = serde_json::Map::new();
    row.insert("well_id".into(), reading.well_id.as_str().into());
    row.insert("ts".into(), reading.ts.to_rfc3339().into());
    for (field, value) in reading.values.iter() {
        if channels.is_none_or(|c| c.contains(&field.name())) {
            row.insert(field.name().into(), value.into());
        }
    }
    serde_json::Value::Object(row)
}

/// A message from the client: `{"type":"subscribe","wells":[...],"channels":[...],"events":[...]}`.
fn client_message(text: &str, principal: &Principal) -> Result<Subscription, SubscriptionError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
    enum ClientMessage {
        Subscribe {
            wells: Option<Vec<String>>,
            channels: Option<Vec<String>>,
            events: Option<Vec<String>>,
        },
    }
    let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
        SubscriptionError::Invalid(format!(
            "not a message of the stream protocol ({e}); send {{\"type\":\"subscribe\",...}}"
        ))
    })?;
    let ClientMessage::Subscribe {
        wells,
        channels,
        events,
    } = message;
    let join = |v: Option<Vec<String>>| v.map(|v| v.join(","));
    SubscriptionRequest {
        wells: join(wells),
        channels: join(channels),
        events: join(events),
    }
    .check(principal)
}

fn error_message(e: &SubscriptionError) -> serde_json::Value {
    let kind = match e {
        SubscriptionError::Invalid(_) => "invalid_subscription",
        SubscriptionError::Forbidden(_) => "forbidden",
    };
    serde_json::json!({"type": "error", "error": {"type": kind, "message": e.to_string()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalKind;
    use espwatch_core::Measurements;
    use espwatch_core::access::{Role, WellScope};

    fn viewer(wells: Option<Vec<&str>>) -> Principal {
        Principal {
            kind: PrincipalKind::User {
                session_id: "s".into(),
            },
            name: "v".into(),
            role: Role::Viewer,
            scope: WellScope::from_list(wells.map(|w| w.into_iter().map(String::from).collect())),
        }
    }

    fn reading(well: &str, secs: i64, current: f64) -> Reading {
        let mut values = Measurements::empty();
        values.set(Field::MotorCurrentA, Some(current));
        values.set(Field::FrequencyHz, Some(55.0));
        Reading {
            well_id: WellId::parse(well).unwrap(),
            ts: Timestamp::from_secs(secs),
            values,
        }
    }

    #[test]
    fn subscriptions_respect_scope_role_and_names() {
        let p = viewer(Some(vec!["W-1"]));
        let ok = SubscriptionRequest {
            wells: Some("W-1".into()),
            channels: Some("motor_current_a".into()),
            events: None,
        }
        .check(&p)
        .unwrap();
        assert_eq!(ok.wells, Some(vec!["W-1".to_owned()]));
        assert_eq!(ok.channels, Some(vec!["motor_current_a"]));
        // A viewer has latest, alarms and diagnostics reading: all four kinds.
        assert_eq!(ok.events.len(), 4);
        let out_of_scope = SubscriptionRequest {
            wells: Some("W-1,W-2".into()),
            ..Default::default()
        };
        assert!(matches!(
            out_of_scope.check(&p),
            Err(SubscriptionError::Forbidden(_))
        ));
        let bad_channel = SubscriptionRequest {
            channels: Some("torque".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad_channel.check(&p),
            Err(SubscriptionError::Invalid(_))
        ));
        let mut client = viewer(None);
        client.role = Role::ApiClient;
        let alarms = SubscriptionRequest {
            events: Some("alarms".into()),
            ..Default::default()
        };
        assert!(matches!(
            alarms.check(&client),
            Err(SubscriptionError::Forbidden(_))
        ));
    }

    #[test]
    fn rendering_filters_by_scope_and_channels_and_coalesces_floods() {
        let hub = LiveHub::new(4, CHANNEL_EVENTS);
        let p = viewer(Some(vec!["W-1"]));
        let sub = SubscriptionRequest {
            channels: Some("motor_current_a".into()),
            ..Default::default()
        }
        .check(&p)
        .unwrap();
        let batch = LiveEvent::Readings(Arc::new(ReadingBatch::new(vec![
            reading("W-1", 0, 40.0),
            reading("W-2", 0, 41.0),
        ])));
        let messages = hub.render(&[batch], &p, &sub);
        assert_eq!(messages.len(), 1);
        let m: serde_json::Value = serde_json::from_str(messages[0].as_str()).unwrap();
        assert_eq!(m["readings"].as_array().unwrap().len(), 1, "{m}");
        assert_eq!(m["readings"][0]["motor_current_a"], 40.0);
        assert!(m["readings"][0].get("frequency_hz").is_none());

        // Everything of one batch: the message is made once and shared.
        let everyone = viewer(None);
        let all = SubscriptionRequest::default().check(&everyone).unwrap();
        let batch = LiveEvent::Readings(Arc::new(ReadingBatch::new(vec![
            reading("W-1", 0, 40.0),
            reading("W-2", 0, 41.0),
        ])));
        let first = hub.render(std::slice::from_ref(&batch), &everyone, &all);
        let second = hub.render(std::slice::from_ref(&batch), &everyone, &all);
        assert_eq!(first[0].as_str().as_ptr(), second[0].as_str().as_ptr());
        let m: serde_json::Value = serde_json::from_str(first[0].as_str()).unwrap();
        assert_eq!(m["readings"].as_array().unwrap().len(), 2, "{m}");
        assert_eq!(m["readings"][1]["frequency_hz"], 55.0);

        let flood: Vec<Reading> = (0..COALESCE_READINGS as i64 + 10)
            .map(|i| reading("W-1", i, i as f64))
            .collect();
        let last = flood.last().unwrap().values.get(Field::MotorCurrentA);
        let messages = hub.render(
            &[LiveEvent::Readings(Arc::new(ReadingBatch::new(flood)))],
            &p,
            &sub,
        );
        let m: serde_json::Value = serde_json::from_str(messages[0].as_str()).unwrap();
        assert_eq!(m["readings"].as_array().unwrap().len(), 1);
        assert_eq!(m["readings"][0]["motor_current_a"].as_f64(), last);
        assert_eq!(m["coalesced"], COALESCE_READINGS + 9);
    }

    #[test]
    fn connectivity_is_kept_per_well_and_published_only_when_it_changes() {
        let hub = LiveHub::new(4, CHANNEL_EVENTS);
        let mut rx = hub.subscribe();
        let w = WellId::parse("W-1").unwrap();
        assert_eq!(hub.presence(&w), None);
        assert!(hub.set_online(w.clone(), true, Timestamp::from_secs(10)));
        // A second birth: no change, no event, the time of the change kept.
        assert!(!hub.set_online(w.clone(), true, Timestamp::from_secs(20)));
        assert_eq!(
            hub.presence(&w),
            Some(Presence {
                online: true,
                since: Timestamp::from_secs(10)
            })
        );
        assert!(hub.set_online(w.clone(), false, Timestamp::from_secs(30)));
        // A change older than the one known (another node's, late) is not taken.
        hub.publish_here(LiveEvent::Connectivity {
            well_id: w.clone(),
            online: true,
            at: Timestamp::from_secs(25),
        });
        assert_eq!(hub.presence(&w).map(|p| p.online), Some(false));
        // A newer one from another node is.
        hub.publish_here(LiveEvent::Connectivity {
            well_id: w.clone(),
            online: true,
            at: Timestamp::from_secs(40),
        });
        assert_eq!(hub.presences()[&w].since, Timestamp::from_secs(40));
        let mut seen = Vec::new();
        while let Ok(LiveEvent::Connectivity { online, at, .. }) = rx.try_recv() {
            seen.push((online, at.0 / 1_000_000));
        }
        assert_eq!(seen, [(true, 10), (false, 30), (true, 40)]);

        // Rendered for subscribers of `connectivity` in scope only.
        let p = viewer(Some(vec!["W-1"]));
        let sub = SubscriptionRequest {
            events: Some("connectivity".into()),
            ..Default::default()
        }
        .check(&p)
        .unwrap();
        let event = |well: &str| LiveEvent::Connectivity {
            well_id: WellId::parse(well).unwrap(),
            online: false,
            at: Timestamp::from_secs(30),
        };
        let messages = hub.render(&[event("W-1"), event("W-2")], &p, &sub);
        assert_eq!(messages.len(), 1);
        let m: serde_json::Value = serde_json::from_str(messages[0].as_str()).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"type": "connectivity", "well_id": "W-1", "online": false,
                "ts": Timestamp::from_secs(30).to_rfc3339()})
        );
        let alarms_only = SubscriptionRequest {
            events: Some("alarms".into()),
            ..Default::default()
        }
        .check(&p)
        .unwrap();
        assert!(hub.render(&[event("W-1")], &p, &alarms_only).is_empty());
    }

    #[tokio::test]
    async fn streams_get_every_event_through_the_relay_and_are_the_only_listeners_counted() {
        let hub = LiveHub::new(4, 16);
        assert!(!hub.has_subscribers());
        let StreamReceiver(mut a) = hub.subscribe_stream();
        let StreamReceiver(mut b) = hub.subscribe_stream();
        assert!(hub.has_subscribers());
        for secs in 0..3 {
            hub.publish_readings(&[reading("W-1", secs, 40.0)]);
        }
        for rx in [&mut a, &mut b] {
            for secs in 0..3 {
                let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("relayed")
                    .unwrap();
                let Relayed::Event(LiveEvent::Readings(batch)) = got else {
                    panic!("{got:?}")
                };
                assert_eq!(batch.readings[0].ts, Timestamp::from_secs(secs));
            }
        }
        // The relay keeps reading the publishers' ring, but with no stream left nobody
        // listens: publishers skip building events again.
        drop((a, b));
        assert!(!hub.has_subscribers());
        let direct = hub.subscribe();
        assert!(hub.has_subscribers());
        drop(direct);
        assert!(!hub.has_subscribers());
    }

    #[test]
    fn connections_are_limited_per_identity_and_given_back() {
        let hub = LiveHub::new(2, CHANNEL_EVENTS);
        let a = hub.try_connect("user:a").unwrap();
        let _b = hub.try_connect("user:a").unwrap();
        assert!(hub.try_connect("user:a").is_none());
        assert!(hub.try_connect("user:b").is_some());
        drop(a);
        assert!(hub.try_connect("user:a").is_some());
    }
}
