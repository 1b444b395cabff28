//! "Ask the fleet" (issue 24): a question → its interpretation (`espwatch_core::ask`, pure) →
//! an answer built from the same store queries and diagnoses the API serves: the latest
//! readings (`/wells/latest`), raw and bucketed telemetry (`/wells/{id}/telemetry`), the alarms
//! (`/alarms`) and a well's live diagnosis (`/wells/{id}/diagnosis`, where a diagnosis source
//! is given). Used by `POST /api/v1/ask` and `espwatch ask --data-dir`.
//!
//! Per-well scopes: the registry the question is read against holds only the wells the asker
//! may see, so a well outside the scope is "not registered (or visible to you)", and fleet
//! answers are computed over visible wells only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use espwatch_core::access::{Permission, Role, WellScope};
use espwatch_core::ask::{
    self, AlarmStateQuery, Clock, Directory, Intent, Interpretation, NotUnderstood, Order,
    RunState, TimeSpec, Unit, channel_words, condition_words, fmt_number,
};
use espwatch_core::diagnostics::Diagnosis;
use espwatch_core::localtime::UtcOffset;
use espwatch_core::well::WellMeta;
use espwatch_core::{Agg, Field, Point, TelemetryQuery, TimeRange, Timestamp, WellId};
use espwatch_store::{
    Alarm, AlarmFilter, AlarmState, AlarmStore, FleetQuery, FleetTotalsQuery, Store, StoreError,
};
use serde_json::{Value, json};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Most wells a trend or an aggregate reads raw data for in one question.
pub const MAX_SERIES_WELLS: usize = 50;
/// Default count of a ranking.
pub const DEFAULT_TOP: usize = 5;

/// A well's live diagnosis (the server's diagnostics hub); the offline command has none.
pub trait Diagnoses: Send + Sync {
    fn diagnosis<'a>(
        &'a self,
        well: &'a WellId,
    ) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + 'a>>;
}

/// What a question is answered from.
pub struct Asker<'a> {
    pub store: &'a dyn Store,
    pub alarms: Option<&'a dyn AlarmStore>,
    pub diagnoses: Option<&'a dyn Diagnoses>,
    pub scope: &'a WellScope,
    /// The asker's role: an answer reads only what the role may read through the other
    /// routes (history needs `telemetry:read`, alarms `alarms:read`, ...).
    pub role: Role,
    pub now: Timestamp,
    /// The zone "today" and "yesterday" are read in, and answer times shown in.
    pub zone: UtcOffset,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{}", .0.message)]
    NotUnderstood(NotUnderstood),
    #[error("answering this needs the `{0}` permission, which the role does not have")]
    Forbidden(Permission),
    #[error("this store keeps no alarms")]
    AlarmsUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("answering failed unexpectedly: {0}")]
    Join(String),
}

/// The answer: `{"text", "wells", "values", "series"}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub text: String,
    /// Serialised as their strings, as every well id in the API.
    pub wells: Vec<WellId>,
    pub values: Vec<Value>,
    pub series: Vec<Value>,
}

/// A question answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    pub interpretation: Interpretation,
    pub answer: Answer,
    pub suggestions: Vec<String>,
}

impl Answered {
    /// `{"interpretation": {...}, "answer": {"text", "wells", "values", "series"}, "suggestions"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "interpretation": self.interpretation.to_json(),
            "answer": {
                "text": self.answer.text,
                "wells": self.answer.wells,
                "values": self.answer.values,
                "series": self.answer.series,
            },
            "suggestions": self.suggestions,
        })
    }
}

/// The body of a 422: the message, what was recognised, rephrasings; `command` (the control
/// verb) when the question was a command, refused because ask controls nothing.
pub fn not_understood_json(e: &NotUnderstood) -> Value {
    json!({
        "recognised": e.recognised,
        "unknown": e.unknown,
        "suggestions": e.suggestions,
        "command": e.command,
    })
}

/// Reads `question` against the wells the asker may see and answers it.
pub async fn ask(a: &Asker<'_>, question: &str) -> Result<Answered, AskError> {
    // The registry is read once per question: the parse reads the question against it, and
    // the answer's "every visible well" is the same list.
    let records = a.store.list_wells().await?;
    let metas: Vec<_> = records
        .into_iter()
        .filter(|r| a.scope.allows(r.meta.well_id.as_str()))
        .map(|r| r.meta)
        .collect();
    let mut visible: Vec<WellId> = metas.iter().map(|m| m.well_id.clone()).collect();
    visible.sort();
    let clock = Clock {
        now: a.now,
        zone: a.zone,
    };
    let question = question.to_owned();
    // The parse is pure CPU (fuzzy matching against every visible well): off the runtime.
    let parsed = tokio::task::spawn_blocking(move || {
        let dir = DIRECTORIES.get(&metas);
        ask::parse(&question, &dir, &clock)
    })
    .await
    .map_err(|e| AskError::Join(e.to_string()))?;
    let mut it = parsed.map_err(AskError::NotUnderstood)?;
    let answer = answer(a, &visible, &mut it).await?;
    let suggestions = follow_ups(&it);
    Ok(Answered {
        interpretation: it,
        answer,
        suggestions,
    })
}

/// The directories questions were last read against, shared by every question of the process.
static DIRECTORIES: DirectoryCache = DirectoryCache::new();

/// Directories kept: identities with different well scopes read against different registries.
const KEPT_DIRECTORIES: usize = 4;

/// The registry indexed for the parser, kept while the registry it was built from (each
/// well's id, name and field, in order) is unchanged. Building a [`Directory`] tokenises every
/// well's name and field: on 1 000 wells it was most of a question's CPU, and a registry
/// changes seldom. Every question compares the registry it reads with the kept ones, entry by
/// entry (no hash, no version that could miss a change), and builds a new one on a difference.
pub struct DirectoryCache {
    /// Most recently used first.
    kept: Mutex<Vec<Arc<Directory>>>,
}

impl DirectoryCache {
    pub const fn new() -> DirectoryCache {
        DirectoryCache {
            kept: Mutex::new(Vec::new()),
        }
    }

    /// The directory of `metas`: a kept one built from the same entries, or a new one.
    pub fn get(&self, metas: &[WellMeta]) -> Arc<Directory> {
        let same = |d: &Directory| {
            d.len() == metas.len()
                && d.wells()
                    .iter()
                    .zip(metas)
                    .all(|(e, m)| e.id == m.well_id && e.name == m.name && e.field == m.field)
        };
        {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = kept.iter().position(|d| same(d)) {
                let d = kept.remove(i);
                kept.insert(0, d.clone());
                return d;
            }
        }
        let built = Arc::new(Directory::from_metas(metas.iter()));
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.insert(0, built.clone());
        kept.truncate(KEPT_DIRECTORIES);
        built
    }
}

impl Default for DirectoryCache {
    fn default() -> Self {
        DirectoryCache::new()
    }
}

/// Questions that go on from this one.
fn follow_ups(it: &Interpretation) -> Vec<String> {
    let well = it.wells.first().cloned();
    let channel = it.channels.first().map(|f| channel_words(*f));
    let mut out = Vec::new();
    match (it.intent, well, channel) {
        (Intent::Value, Some(w), Some(c)) => {
            out.push(format!("trend of {c} of {w} over the last 24 hours"));
            out.push(format!("what is wrong with {w}"));
        }
        (Intent::Aggregate | Intent::Trend, Some(w), Some(c)) => {
            out.push(format!("{c} of {w} now"));
            out.push(format!("top 5 wells by {c}"));
        }
        (Intent::Diagnosis | Intent::Status | Intent::Alarms, Some(w), _) => {
            out.push(format!("motor current of {w} over the last 24 hours"));
            out.push(format!("alarms on {w}"));
        }
        (_, _, Some(c)) => {
            out.push(format!("top 5 wells by {c}"));
            out.push("which wells have an open alarm".into());
        }
        _ => {
            out.push("which wells have an open alarm".into());
            out.push("which pumps are stopped".into());
        }
    }
    out
}

fn default_range(it: &mut Interpretation, now: Timestamp) -> (Timestamp, Timestamp) {
    if let Some(r) = it.range() {
        return r;
    }
    let (from, to) = (Timestamp(now.0 - DAY), now);
    it.time = Some(TimeSpec::Range {
        from,
        to,
        label: "the last 24 hours".into(),
    });
    (from, to)
}

fn time_label(it: &Interpretation) -> String {
    match &it.time {
        Some(TimeSpec::Range { label, .. }) => label.clone(),
        _ => "now".into(),
    }
}

/// A trend's bucket: the smallest of 1m/5m/15m/1h/6h/1d that gives at most 200 buckets.
pub fn trend_step(from: Timestamp, to: Timestamp) -> i64 {
    let span = (to.0 - from.0).max(1);
    for step in [MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY] {
        if span / step <= 200 {
            return step;
        }
    }
    7 * DAY
}

/// The wells a question is about: those named, else every visible well with or without data
/// (`visible`, sorted).
fn target_wells(visible: &[WellId], it: &Interpretation) -> Vec<WellId> {
    if !it.wells.is_empty() {
        return it.wells.clone();
    }
    visible.to_vec()
}

/// The newest reading of each visible well.
async fn latest_map(a: &Asker<'_>) -> Result<HashMap<WellId, Point>, AskError> {
    Ok(a.store
        .latest()
        .await?
        .into_iter()
        .filter(|l| a.scope.allows(l.well_id.as_str()))
        .map(|l| (l.well_id, l.point))
        .collect())
}

fn show(it: &Interpretation, field: Field, v: f64) -> (f64, Unit) {
    let unit = it.display_unit(field);
    (unit.from_canonical(v), unit)
}

fn with_unit(it: &Interpretation, field: Field, v: f64) -> String {
    let (v, unit) = show(it, field, v);
    let sep = if unit == Unit::Pct { "" } else { " " };
    format!("{}{sep}{}", fmt_number(v), unit.symbol())
}

fn value_json(it: &Interpretation, well: &WellId, field: Field, v: f64, extra: Value) -> Value {
    let (shown, unit) = show(it, field, v);
    let mut o = json!({
        "well_id": well,
        "channel": field.name(),
        "value": shown,
        "unit": unit.symbol(),
    });
    if let (Value::Object(o), Value::Object(extra)) = (&mut o, extra) {
        o.extend(extra);
    }
    o
}

fn ago(now: Timestamp, ts: Timestamp) -> String {
    let s = (now.0 - ts.0) / 1_000_000;
    if s < 0 {
        "in the future".into()
    } else if s < 120 {
        format!("{s} s ago")
    } else if s < 2 * 3600 {
        format!("{} min ago", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h ago", s / 3600)
    } else {
        format!("{} days ago", s / 86_400)
    }
}

/// Per well and channel: the latest value, or the aggregate over the range when the
/// question has one (avg unless it said otherwise).
///
/// The aggregate of every well is one store pass over the fleet ([`per_well_aggregates`]),
/// never a read per well: "wells with average intake pressure below 500 psi yesterday" on
/// 1 000 wells is one snapshot, only the channels asked, whole hours from rollups.
async fn values_per_well(
    a: &Asker<'_>,
    it: &mut Interpretation,
    wells: &[WellId],
    fields: &[Field],
) -> Result<Vec<(WellId, Field, f64, Option<Timestamp>)>, AskError> {
    let mut out = Vec::new();
    if it.range().is_some() || it.agg.is_some() {
        let (from, to) = default_range(it, a.now);
        let agg = *it.agg.get_or_insert(Agg::Avg);
        for (w, f, v, _) in per_well_aggregates(a, wells, fields, from, to, agg).await? {
            out.push((w, f, v, None));
        }
    } else {
        let latest = latest_map(a).await?;
        for w in wells {
            if let Some((ts, m)) = latest.get(w) {
                for &f in fields {
                    if let Some(v) = m.get(f) {
                        out.push((w.clone(), f, v, Some(*ts)));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Per well (by id) and channel: `agg` of the well's values in `[from, to)` and how many
/// values it is made of. Avg/min/max are one [`Store::fleet_totals`] (count, sum, min, max per
/// well, whole hours from the store's rollups); last is one [`Store::fleet_query`] with the
/// range in one bucket, plus the totals for the counts.
async fn per_well_aggregates(
    a: &Asker<'_>,
    wells: &[WellId],
    fields: &[Field],
    from: Timestamp,
    to: Timestamp,
    agg: Agg,
) -> Result<Vec<(WellId, Field, f64, usize)>, AskError> {
    let mut out = Vec::new();
    if wells.is_empty() || fields.is_empty() || from >= to {
        return Ok(out);
    }
    let range = TimeRange { from, to };
    let totals = a
        .store
        .fleet_totals(&FleetTotalsQuery {
            wells: wells.to_vec(),
            range,
            fields: fields.to_vec(),
        })
        .await?;
    if agg == Agg::Last {
        let counts: HashMap<(&WellId, Field), u64> = totals
            .iter()
            .flat_map(|w| {
                fields
                    .iter()
                    .zip(&w.channels)
                    .map(move |(f, t)| ((&w.well_id, *f), t.n))
            })
            .collect();
        let query = FleetQuery {
            wells: wells.to_vec(),
            range,
            fields: fields.to_vec(),
            step_micros: whole_range_step(to),
            agg,
        };
        for ws in a.store.fleet_query(&query).await? {
            for (f, column) in &ws.series.columns {
                if let Some(&Some(v)) = column.first() {
                    let n = counts.get(&(&ws.well_id, *f)).copied().unwrap_or(0);
                    out.push((ws.well_id.clone(), *f, v, n as usize));
                }
            }
        }
        return Ok(out);
    }
    for w in totals {
        for (f, t) in fields.iter().zip(&w.channels) {
            if let Some(v) = t.result(agg) {
                out.push((w.well_id.clone(), *f, v, t.n as usize));
            }
        }
    }
    Ok(out)
}

/// The step that makes a bucketed query over `[from, to)` one bucket: buckets are aligned to
/// the epoch (`series::bucket_start`), so a step of `to` itself puts the whole range in the
/// bucket starting at 0, whose aggregate is that of the range's raw points.
fn whole_range_step(to: Timestamp) -> i64 {
    to.0.max(1)
}

fn is_running(m: &espwatch_core::Measurements) -> Option<bool> {
    match (m.get(Field::FrequencyHz), m.get(Field::MotorCurrentA)) {
        (Some(f), _) => Some(f > 1.0),
        (None, Some(i)) => Some(i > 1.0),
        _ => None,
    }
}

async fn list_alarms(a: &Asker<'_>, well: Option<&WellId>) -> Result<Vec<Alarm>, AskError> {
    let store = a.alarms.ok_or(AskError::AlarmsUnavailable)?;
    let mut alarms = store
        .list_alarms(&AlarmFilter {
            state: None,
            open: false,
            well_id: well.cloned(),
            ..AlarmFilter::default()
        })
        .await?;
    alarms.retain(|x| a.scope.allows(x.well_id.as_str()));
    Ok(alarms)
}

/// Whether an alarm was open at some moment of `[from, to)`.
fn overlaps(alarm: &Alarm, from: Timestamp, to: Timestamp) -> bool {
    alarm.started_at < to && alarm.ended_at.is_none_or(|e| e >= from)
}

fn alarm_json(x: &Alarm) -> Value {
    json!({
        "id": x.id,
        "well_id": x.well_id,
        "condition": x.condition,
        "severity": x.severity,
        "state": x.state.name(),
        "confidence": x.confidence,
        "started_at": x.started_at.to_rfc3339(),
        "ended_at": x.ended_at.map(Timestamp::to_rfc3339),
        "acknowledged_by": x.acknowledged_by,
    })
}

fn condition_text(name: &str) -> String {
    espwatch_core::Condition::from_name(name)
        .map(|c| condition_words(c).trim_start_matches("a ").to_owned())
        .unwrap_or_else(|| name.replace('_', " "))
}

fn list_text<T: std::fmt::Display>(items: &[T], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// One well's value of one channel: the latest (with its time) or an aggregate.
type Row = (WellId, Field, f64, Option<Timestamp>);

/// The wells, first occurrence kept, in order (a set beside the list: fleet answers hold
/// 1 000 wells).
fn dedup_wells(ids: impl IntoIterator<Item = WellId>) -> Vec<WellId> {
    let mut seen: HashSet<WellId> = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// What answering reads, as the permissions of the routes that serve the same data.
pub fn needed_permission(it: &Interpretation) -> Permission {
    let history = it.range().is_some() || it.agg.is_some() || it.time == Some(TimeSpec::BeforeTrip);
    match it.intent {
        Intent::Aggregate | Intent::Trend => Permission::TelemetryRead,
        Intent::Compare | Intent::Filter | Intent::Top if history => Permission::TelemetryRead,
        Intent::Value | Intent::Compare | Intent::Filter | Intent::Top => Permission::LatestRead,
        Intent::Status | Intent::RunState | Intent::NoData => Permission::LatestRead,
        Intent::Condition | Intent::Alarms => Permission::AlarmsRead,
        Intent::Diagnosis => Permission::DiagnosticsRead,
    }
}

async fn answer(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let needed = needed_permission(it);
    if !a.role.allows(needed) {
        return Err(AskError::Forbidden(needed));
    }
    match it.intent {
        Intent::Value => value(a, visible, it).await,
        Intent::Aggregate => aggregate(a, visible, it).await,
        Intent::Trend => trend(a, visible, it).await,
        Intent::Compare => compare(a, it).await,
        Intent::Filter => filter(a, visible, it).await,
        Intent::Top => top(a, visible, it).await,
        Intent::Condition => condition(a, visible, it).await,
        Intent::Alarms => alarms(a, visible, it).await,
        Intent::Diagnosis => diagnosis(a, it).await,
        Intent::Status => status(a, it).await,
        Intent::RunState => run_state(a, visible, it).await,
        Intent::NoData => no_data(a, visible, it).await,
    }
}

async fn value(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let wells = target_wells(visible, it);
    let latest = latest_map(a).await?;
    let mut ans = Answer::default();
    let mut parts = Vec::new();
    for w in &wells {
        let Some((ts, m)) = latest.get(w) else {
            continue;
        };
        let mut shown = Vec::new();
        for &f in &it.channels {
            if let Some(v) = m.get(f) {
                ans.values
                    .push(value_json(it, w, f, v, json!({ "ts": ts.to_rfc3339() })));
                shown.push(format!("{} {}", channel_words(f), with_unit(it, f, v)));
            }
        }
        if !shown.is_empty() {
            ans.wells.push(w.clone());
            parts.push(format!("{w}: {} ({})", shown.join(", "), ago(a.now, *ts)));
        }
    }
    let channels = it
        .channels
        .iter()
        .map(|f| channel_words(*f))
        .collect::<Vec<_>>()
        .join(" and ");
    ans.text = if parts.is_empty() {
        format!("No {channels} reading for {}.", list_text(&wells, 5))
    } else if parts.len() == 1 {
        format!("{}.", parts[0])
    } else {
        format!(
            "Latest {channels} of {} wells: {}.",
            parts.len(),
            list_text(&parts, 8)
        )
    };
    Ok(ans)
}

async fn aggregate(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let (from, to) = default_range(it, a.now);
    let agg = *it.agg.get_or_insert(Agg::Avg);
    let wells = target_wells(visible, it);
    let mut ans = Answer::default();
    let mut per: Vec<(WellId, Field, f64, usize)> = Vec::new();
    // Per channel: sum and count of every well's points (avg), or the most extreme well.
    type Pooled = (f64, usize, Option<(WellId, f64)>);
    let mut pooled: BTreeMap<Field, Pooled> = BTreeMap::new();
    // One pass over the fleet, then the wells in the order asked.
    let mut by_well: HashMap<WellId, Vec<(Field, f64, usize)>> = HashMap::new();
    for (w, f, v, n) in per_well_aggregates(a, &wells, &it.channels, from, to, agg).await? {
        by_well.entry(w).or_default().push((f, v, n));
    }
    for w in &wells {
        for &(f, v, n) in by_well.get(w).into_iter().flatten() {
            per.push((w.clone(), f, v, n));
            let e = pooled.entry(f).or_insert((0.0, 0, None));
            match agg {
                Agg::Avg => {
                    e.0 += v * n as f64;
                    e.1 += n;
                }
                Agg::Max | Agg::Min | Agg::Last => {
                    let better = match &e.2 {
                        None => true,
                        Some((_, best)) => match agg {
                            Agg::Max => v > *best,
                            Agg::Min => v < *best,
                            _ => true,
                        },
                    };
                    if better {
                        e.2 = Some((w.clone(), v));
                    }
                    e.1 += n;
                }
            }
        }
    }
    for (w, f, v, n) in &per {
        ans.values.push(value_json(
            it,
            w,
            *f,
            *v,
            json!({ "agg": agg.name(), "points": n, "from": from.to_rfc3339(), "to": to.to_rfc3339() }),
        ));
    }
    ans.wells = dedup_wells(per.iter().map(|p| p.0.clone()));
    let label = time_label(it);
    let agg_word = match agg {
        Agg::Avg => "Average",
        Agg::Max => "Maximum",
        Agg::Min => "Minimum",
        Agg::Last => "Last",
    };
    let mut sentences = Vec::new();
    for (&f, (sum, n, best)) in &pooled {
        let words = channel_words(f);
        if ans.wells.len() == 1 {
            let v = per
                .iter()
                .find(|p| p.1 == f)
                .map(|p| p.2)
                .unwrap_or(f64::NAN);
            sentences.push(format!(
                "{agg_word} {words} of {} {label}: {} ({n} readings).",
                ans.wells[0],
                with_unit(it, f, v)
            ));
        } else if agg == Agg::Avg {
            sentences.push(format!(
                "{agg_word} {words} {label} over {} wells: {} ({n} readings).",
                ans.wells.len(),
                with_unit(it, f, sum / *n as f64)
            ));
        } else if let Some((w, v)) = best {
            sentences.push(format!(
                "{agg_word} {words} {label} over {} wells: {} at {w}.",
                ans.wells.len(),
                with_unit(it, f, *v)
            ));
        }
    }
    ans.text = if sentences.is_empty() {
        format!(
            "No {} readings {label} for {}.",
            it.channels
                .iter()
                .map(|f| channel_words(*f))
                .collect::<Vec<_>>()
                .join(" or "),
            list_text(&wells, 5)
        )
    } else {
        sentences.join(" ")
    };
    Ok(ans)
}

/// The last running → stopped change of a well within the last 7 days.
async fn last_trip(a: &Asker<'_>, id: &WellId) -> Result<Option<Timestamp>, AskError> {
    let range = TimeRange {
        from: Timestamp(a.now.0 - 7 * DAY),
        to: Timestamp(a.now.0 + 1),
    };
    let points = a.store.read_range(id, range).await?;
    let mut last = None;
    let mut was: Option<bool> = None;
    for (ts, m) in &points {
        if let Some(r) = is_running(m) {
            if was == Some(true) && !r {
                last = Some(*ts);
            }
            was = Some(r);
        }
    }
    Ok(last)
}

async fn trend(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let wells = target_wells(visible, it);
    let mut ans = Answer::default();
    if it.time == Some(TimeSpec::BeforeTrip) {
        let Some(w) = wells.first() else {
            ans.text = "Name the well whose trip you mean.".into();
            return Ok(ans);
        };
        match last_trip(a, w).await? {
            Some(trip) => {
                it.time = Some(TimeSpec::Range {
                    from: Timestamp(trip.0 - 6 * HOUR),
                    to: Timestamp(trip.0 + 1),
                    label: format!("in the 6 hours before its trip at {}", trip.to_rfc3339()),
                });
            }
            None => {
                ans.text = format!("{w} has not tripped in the last 7 days.");
                ans.wells = vec![w.clone()];
                return Ok(ans);
            }
        }
    }
    let (from, to) = default_range(it, a.now);
    // The step asked for ("hourly", "every 15 min"; the parser bounds the buckets), else one
    // that gives at most 200 buckets; the aggregate asked for ("hourly max"), else the mean.
    let step = it.step.unwrap_or_else(|| trend_step(from, to));
    it.step = Some(step);
    let agg = *it.agg.get_or_insert(Agg::Avg);
    let label = time_label(it);
    let mut sentences = Vec::new();
    for w in wells.iter().take(MAX_SERIES_WELLS) {
        let query = TelemetryQuery {
            well_id: w.clone(),
            range: TimeRange { from, to },
            fields: it.channels.clone(),
            step_micros: Some(step),
            agg,
            max_points: 1_000_000,
        };
        let series = a.store.query(&query).await?;
        if series.ts.is_empty() {
            continue;
        }
        ans.wells.push(w.clone());
        for (f, values) in &series.columns {
            let unit = it.display_unit(*f);
            ans.series.push(json!({
                "well_id": w,
                "channel": f.name(),
                "unit": unit.symbol(),
                "step": espwatch_core::duration::format_duration_micros(step),
                "agg": agg.name(),
                "ts": series.ts.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                "values": values.iter().map(|v| v.map(|v| unit.from_canonical(v))).collect::<Vec<_>>(),
            }));
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            if let (Some(first), Some(last)) = (present.first(), present.last()) {
                let min = present.iter().copied().fold(f64::INFINITY, f64::min);
                let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let change = last - first;
                let rel = if first.abs() > 1e-9 {
                    change / first.abs()
                } else {
                    0.0
                };
                let direction = if rel > 0.02 {
                    "rose"
                } else if rel < -0.02 {
                    "fell"
                } else {
                    "held steady"
                };
                ans.values.push(value_json(
                    it,
                    w,
                    *f,
                    *last,
                    json!({ "first": show(it, *f, *first).0, "min": show(it, *f, min).0, "max": show(it, *f, max).0, "from": from.to_rfc3339(), "to": to.to_rfc3339() }),
                ));
                sentences.push(format!(
                    "{} of {w} {direction} {label}: from {} to {} (min {}, max {}).",
                    capitalise(channel_words(*f)),
                    with_unit(it, *f, *first),
                    with_unit(it, *f, *last),
                    with_unit(it, *f, min),
                    with_unit(it, *f, max),
                ));
            }
        }
    }
    ans.text = if sentences.is_empty() {
        format!("No readings {label} for {}.", list_text(&wells, 5))
    } else {
        // Whole sentences, one after the other (a list joined by commas read "A)., Motor").
        let mut text = sentences
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if sentences.len() > 6 {
            text.push_str(&format!(" And {} more.", sentences.len() - 6));
        }
        text
    };
    Ok(ans)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

async fn compare(a: &Asker<'_>, it: &mut Interpretation) -> Result<Answer, AskError> {
    let wells = it.wells.clone();
    let fields = it.channels.clone();
    let rows = values_per_well(a, it, &wells, &fields).await?;
    let mut ans = Answer::default();
    let label = match it.agg {
        Some(agg) => format!("{} {}", agg.name(), time_label(it)),
        None => "now".into(),
    };
    let mut sentences = Vec::new();
    for f in &fields {
        let mut these: Vec<&(WellId, Field, f64, Option<Timestamp>)> =
            rows.iter().filter(|r| r.1 == *f).collect();
        for r in &these {
            let extra = match (r.3, it.agg) {
                (Some(ts), _) => json!({ "ts": ts.to_rfc3339() }),
                (None, Some(agg)) => json!({ "agg": agg.name() }),
                _ => json!({}),
            };
            ans.values.push(value_json(it, &r.0, *f, r.2, extra));
        }
        if these.is_empty() {
            continue;
        }
        let listed = these
            .iter()
            .map(|r| format!("{} {}", r.0, with_unit(it, *f, r.2)))
            .collect::<Vec<_>>();
        these.sort_by(|x, y| y.2.total_cmp(&x.2));
        let mut s = format!(
            "{} ({label}): {}",
            capitalise(channel_words(*f)),
            listed.join(", ")
        );
        if these.len() >= 2 {
            let (hi, lo) = (these[0], these[these.len() - 1]);
            let diff = hi.2 - lo.2;
            // A difference in the display unit: the offsets (°F) cancel.
            let (d, unit) = (
                show(it, *f, hi.2).0 - show(it, *f, lo.2).0,
                it.display_unit(*f),
            );
            let pct = if lo.2.abs() > 1e-9 {
                format!(" ({} %)", fmt_number(100.0 * diff / lo.2.abs()))
            } else {
                String::new()
            };
            s.push_str(&format!(
                "; {} is {} {} higher than {}{pct}",
                hi.0,
                fmt_number(d),
                unit.symbol(),
                lo.0
            ));
        }
        sentences.push(s + ".");
    }
    ans.wells = dedup_wells(rows.iter().map(|r| r.0.clone()));
    ans.text = if sentences.is_empty() {
        format!("No readings to compare for {}.", list_text(&wells, 5))
    } else {
        sentences.join(" ")
    };
    Ok(ans)
}

async fn filter(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let f = it.filter.clone().expect("a filter question has a filter");
    let wells = target_wells(visible, it);
    let rows = values_per_well(a, it, &wells, &f.channels).await?;
    let mut ans = Answer::default();
    let mut listed = Vec::new();
    // Each well's rows, in their order: one pass over the rows, not one per well.
    let mut per_well: HashMap<&WellId, Vec<&Row>> = HashMap::new();
    for r in &rows {
        per_well.entry(&r.0).or_default().push(r);
    }
    for w in &wells {
        let hits: Vec<_> = per_well
            .get(w)
            .into_iter()
            .flatten()
            .filter(|r| f.cmp.holds(r.2, f.value))
            .copied()
            .collect();
        if hits.is_empty() {
            continue;
        }
        ans.wells.push(w.clone());
        for r in &hits {
            let extra = match r.3 {
                Some(ts) => json!({ "ts": ts.to_rfc3339() }),
                None => json!({ "agg": it.agg.map(Agg::name) }),
            };
            ans.values.push(value_json(it, w, r.1, r.2, extra));
        }
        listed.push(format!("{w} ({})", with_unit(it, hits[0].1, hits[0].2)));
    }
    let judged = per_well.len();
    let when = match it.agg {
        Some(agg) => format!("({} {})", agg.name(), time_label(it)),
        None => "now".into(),
    };
    let what = format!(
        "{} {} {}",
        channel_words(f.channels[0]).replace(" X", ""),
        f.cmp.words(),
        format_args!(
            "{}{}{}",
            fmt_number(f.written),
            if f.unit == Unit::Pct { "" } else { " " },
            f.unit.symbol()
        )
    );
    ans.text = if listed.is_empty() {
        format!("No well has {what} {when} ({judged} wells with data checked).")
    } else {
        format!(
            "{} of {judged} wells have {what} {when}: {}.",
            listed.len(),
            list_text(&listed, 10)
        )
    };
    Ok(ans)
}

async fn top(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let wells = target_wells(visible, it);
    let fields = it.channels.clone();
    let rows = values_per_well(a, it, &wells, &fields).await?;
    let order = it.order.unwrap_or(Order::Desc);
    let limit = *it.limit.get_or_insert(DEFAULT_TOP);
    // One value per well: the most extreme of its channels (vibration: the worse axis).
    let mut best: Vec<(WellId, Field, f64, Option<Timestamp>)> = Vec::new();
    let mut at: HashMap<WellId, usize> = HashMap::new();
    for r in rows {
        match at.get(&r.0).map(|&i| &mut best[i]) {
            Some(b) => {
                let better = match order {
                    Order::Desc => r.2 > b.2,
                    Order::Asc => r.2 < b.2,
                };
                if better {
                    *b = r;
                }
            }
            None => {
                at.insert(r.0.clone(), best.len());
                best.push(r);
            }
        }
    }
    best.sort_by(|x, y| match order {
        Order::Desc => y.2.total_cmp(&x.2),
        Order::Asc => x.2.total_cmp(&y.2),
    });
    best.truncate(limit);
    let mut ans = Answer::default();
    let mut listed = Vec::new();
    for (rank, r) in best.iter().enumerate() {
        let extra = match r.3 {
            Some(ts) => json!({ "rank": rank + 1, "ts": ts.to_rfc3339() }),
            None => json!({ "rank": rank + 1, "agg": it.agg.map(Agg::name) }),
        };
        ans.values.push(value_json(it, &r.0, r.1, r.2, extra));
        ans.wells.push(r.0.clone());
        listed.push(format!("{}. {} {}", rank + 1, r.0, with_unit(it, r.1, r.2)));
    }
    let when = match it.agg {
        Some(agg) => format!("{} {}", agg.name(), time_label(it)),
        None => "now".into(),
    };
    let dir = if order == Order::Desc {
        "highest"
    } else {
        "lowest"
    };
    ans.text = if listed.is_empty() {
        format!("No well has {} readings {when}.", channel_words(fields[0]))
    } else {
        format!(
            "Wells with the {dir} {} ({when}): {}.",
            channel_words(fields[0]).replace(" X", ""),
            listed.join(", ")
        )
    };
    Ok(ans)
}

async fn condition(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let c = it.condition.expect("a condition question has a condition");
    let all = list_alarms(a, None).await?;
    let targets: HashSet<WellId> = target_wells(visible, it).into_iter().collect();
    let range = it.range();
    let hits: Vec<&Alarm> = all
        .iter()
        .filter(|x| x.condition == Diagnosis::Condition(c) && targets.contains(&x.well_id))
        .filter(|x| match range {
            Some((from, to)) => overlaps(x, from, to),
            None => x.state != AlarmState::Cleared,
        })
        .collect();
    let words = condition_words(c);
    let when = match range {
        Some(_) => time_label(it),
        None => "now".into(),
    };
    if it.without {
        let what = match range {
            Some(_) => format!("{words} {when}"),
            None => format!("an open {} alarm", condition_text(c.name())),
        };
        return Ok(without_answer(&target_wells(visible, it), &hits, &what));
    }
    let mut ans = Answer {
        values: hits.iter().map(|x| alarm_json(x)).collect(),
        wells: dedup_wells(hits.iter().map(|x| x.well_id.clone())),
        ..Answer::default()
    };
    let listed: Vec<String> = ans
        .wells
        .iter()
        .map(|w| {
            let x = hits.iter().find(|x| &x.well_id == w).expect("listed");
            let state = if x.state == AlarmState::Cleared {
                format!(
                    "cleared {}",
                    x.ended_at.map(Timestamp::to_rfc3339).unwrap_or_default()
                )
            } else {
                format!("{} since {}", x.state.name(), x.started_at.to_rfc3339())
            };
            format!("{w} ({}, {state})", x.severity)
        })
        .collect();
    ans.text = if listed.is_empty() {
        if range.is_some() {
            format!("No well had {words} {when}.")
        } else {
            format!("No well has an open {} alarm.", condition_text(c.name()))
        }
    } else if range.is_some() {
        format!(
            "{} well{} had {words} {when}: {}.",
            listed.len(),
            if listed.len() == 1 { "" } else { "s" },
            list_text(&listed, 10)
        )
    } else {
        format!(
            "{} well{} an open {} alarm: {}.",
            listed.len(),
            if listed.len() == 1 { " has" } else { "s have" },
            condition_text(c.name()),
            list_text(&listed, 10)
        )
    };
    Ok(ans)
}

/// The wells asked about that have none of `hits` ("which wells have no open alarms"): every
/// target well without one, in order.
fn without_answer(targets: &[WellId], hits: &[&Alarm], what: &str) -> Answer {
    let with: HashSet<&WellId> = hits.iter().map(|x| &x.well_id).collect();
    let wells: Vec<WellId> = targets
        .iter()
        .filter(|w| !with.contains(w))
        .cloned()
        .collect();
    let text = if wells.is_empty() {
        format!(
            "None: each of the {} well{} asked about has {what}.",
            targets.len(),
            if targets.len() == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "{} of {} well{} without {what}: {}.",
            wells.len(),
            targets.len(),
            if targets.len() == 1 { "" } else { "s" },
            list_text(&wells, 20)
        )
    };
    Answer {
        text,
        values: wells.iter().map(|w| json!({ "well_id": w })).collect(),
        wells,
        ..Answer::default()
    }
}

fn state_matches(q: Option<AlarmStateQuery>, s: AlarmState) -> bool {
    match q {
        None => true,
        Some(AlarmStateQuery::Open) => s != AlarmState::Cleared,
        Some(AlarmStateQuery::Raised) => s == AlarmState::Raised,
        Some(AlarmStateQuery::Acknowledged) => s == AlarmState::Acknowledged,
        Some(AlarmStateQuery::Cleared) => s == AlarmState::Cleared,
    }
}

async fn alarms(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let all = list_alarms(a, None).await?;
    let targets: HashSet<WellId> = target_wells(visible, it).into_iter().collect();
    let range = it.range();
    let hits: Vec<&Alarm> = all
        .iter()
        .filter(|x| targets.contains(&x.well_id) && state_matches(it.alarm_state, x.state))
        .filter(|x| match range {
            Some((from, to)) => match it.alarm_state {
                Some(AlarmStateQuery::Cleared) => x.ended_at.is_some_and(|e| e >= from && e < to),
                _ => overlaps(x, from, to),
            },
            None => true,
        })
        .collect();
    let kind = it
        .alarm_state
        .map(|s| format!("{} ", s.name()))
        .unwrap_or_default();
    let when = if range.is_some() {
        format!(" {}", time_label(it))
    } else {
        String::new()
    };
    if it.without {
        let mut wells = target_wells(visible, it);
        wells.sort();
        return Ok(without_answer(
            &wells,
            &hits,
            &format!("{kind}alarms{when}"),
        ));
    }
    let mut ans = Answer {
        values: hits.iter().map(|x| alarm_json(x)).collect(),
        wells: dedup_wells(hits.iter().map(|x| x.well_id.clone())),
        ..Answer::default()
    };
    let listed: Vec<String> = hits
        .iter()
        .map(|x| {
            format!(
                "{} {} ({}, {})",
                x.well_id,
                x.condition,
                x.severity,
                x.state.name()
            )
        })
        .collect();
    ans.text = if hits.is_empty() {
        format!("No {kind}alarms{when}.")
    } else {
        format!(
            "{} {kind}alarm{}{when} on {} well{}: {}.",
            hits.len(),
            if hits.len() == 1 { "" } else { "s" },
            ans.wells.len(),
            if ans.wells.len() == 1 { "" } else { "s" },
            list_text(&listed, 10)
        )
    };
    Ok(ans)
}

async fn diagnosis(a: &Asker<'_>, it: &mut Interpretation) -> Result<Answer, AskError> {
    let mut ans = Answer::default();
    let mut sentences = Vec::new();
    let range = it.range();
    for w in it.wells.clone().iter().take(3) {
        ans.wells.push(w.clone());
        let alarms = match a.alarms {
            Some(_) if a.role.allows(Permission::AlarmsRead) => list_alarms(a, Some(w)).await?,
            _ => Vec::new(),
        };
        let relevant: Vec<&Alarm> = alarms
            .iter()
            .filter(|x| match range {
                Some((from, to)) => overlaps(x, from, to),
                None => x.state != AlarmState::Cleared,
            })
            .collect();
        let diag = match a.diagnoses {
            Some(d) => d.diagnosis(w).await,
            None => None,
        };
        let mut s = String::new();
        if let Some(d) = diag.as_ref().filter(|d| !d.is_null()) {
            let running = d["running"].as_bool();
            s.push_str(&format!(
                "{w} is {}",
                match running {
                    Some(true) => "running",
                    Some(false) => "stopped",
                    None => "in an unknown state",
                }
            ));
            let findings: Vec<String> = d["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    let c = f["condition"].as_str()?;
                    let evidence: Vec<String> = f["evidence"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .take(2)
                        .filter_map(|e| {
                            Some(format!(
                                "{} {} {} {}",
                                e["feature"].as_str()?,
                                e["value"].as_f64().map(fmt_number).unwrap_or("n/a".into()),
                                e["relation"].as_str().unwrap_or("vs"),
                                fmt_number(e["threshold"].as_f64().unwrap_or(f64::NAN))
                            ))
                        })
                        .collect();
                    Some(if evidence.is_empty() {
                        condition_text(c)
                    } else {
                        format!("{} ({})", condition_text(c), evidence.join("; "))
                    })
                })
                .collect();
            if findings.is_empty() {
                s.push_str(", and its latest reading shows no abnormal condition");
            } else {
                s.push_str(&format!("; the diagnostics see {}", findings.join(", ")));
                if let Some(action) = d["findings"][0]["action"].as_str() {
                    s.push_str(&format!(". {action}"));
                }
            }
            ans.values.push(json!({
                "well_id": w,
                "diagnosis": {
                    "as_of": d["as_of"],
                    "running": d["running"],
                    "findings": d["findings"],
                    "open_episodes": d["open_episodes"],
                    "starts_last_24h": d["starts_last_24h"],
                },
            }));
        } else {
            s.push_str(&format!("{w}: no live diagnosis here"));
        }
        if relevant.is_empty() {
            s.push_str(&format!(
                ". No alarm {}.",
                if range.is_some() {
                    time_label(it)
                } else {
                    "is open".into()
                }
            ));
        } else {
            let listed: Vec<String> = relevant
                .iter()
                .map(|x| {
                    format!(
                        "{} ({}, {} since {}{})",
                        x.condition,
                        x.severity,
                        x.state.name(),
                        x.started_at.to_rfc3339(),
                        x.detail["action"]
                            .as_str()
                            .filter(|_| diag.is_none())
                            .map(|a| format!("; {a}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            s.push_str(&format!(
                ". Alarm{}: {}.",
                if relevant.len() == 1 { "" } else { "s" },
                list_text(&listed, 5)
            ));
            for x in &relevant {
                ans.values.push(alarm_json(x));
            }
        }
        sentences.push(s.replace("..", "."));
    }
    ans.text = sentences.join(" ");
    Ok(ans)
}

async fn status(a: &Asker<'_>, it: &mut Interpretation) -> Result<Answer, AskError> {
    let latest = latest_map(a).await?;
    let mut ans = Answer::default();
    let mut sentences = Vec::new();
    for w in it.wells.clone().iter().take(5) {
        ans.wells.push(w.clone());
        let Some((ts, m)) = latest.get(w) else {
            sentences.push(format!("{w} has never reported."));
            continue;
        };
        let running = is_running(m);
        let mut shown = Vec::new();
        for f in [
            Field::FrequencyHz,
            Field::MotorCurrentA,
            Field::IntakePressurePsi,
            Field::MotorTempC,
            Field::FlowRateBpd,
        ] {
            if let Some(v) = m.get(f) {
                shown.push(format!("{} {}", channel_words(f), with_unit(it, f, v)));
            }
        }
        for (f, v) in m.iter() {
            ans.values
                .push(value_json(it, w, f, v, json!({ "ts": ts.to_rfc3339() })));
        }
        let mut s = format!(
            "{w} is {} ({}): {}",
            match running {
                Some(true) => "running",
                Some(false) => "stopped",
                None => "in an unknown run state",
            },
            format_args!("last reading {}", ago(a.now, *ts)),
            shown.join(", ")
        );
        if a.alarms.is_some() && a.role.allows(Permission::AlarmsRead) {
            let open: Vec<Alarm> = list_alarms(a, Some(w))
                .await?
                .into_iter()
                .filter(|x| x.state != AlarmState::Cleared)
                .collect();
            if open.is_empty() {
                s.push_str("; no open alarm.");
            } else {
                s.push_str(&format!(
                    "; open alarm{}: {}.",
                    if open.len() == 1 { "" } else { "s" },
                    open.iter()
                        .map(|x| format!("{} ({})", x.condition, x.severity))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                ans.values.extend(open.iter().map(alarm_json));
            }
        } else {
            s.push('.');
        }
        sentences.push(s);
    }
    ans.text = sentences.join(" ");
    Ok(ans)
}

async fn run_state(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let want = it.run_state.unwrap_or(RunState::Stopped);
    let wells = target_wells(visible, it);
    let latest = latest_map(a).await?;
    let mut ans = Answer::default();
    let mut matching = Vec::new();
    let mut unknown = 0;
    for w in &wells {
        let state = latest.get(w).and_then(|(_, m)| is_running(m));
        let Some(running) = state else {
            unknown += 1;
            continue;
        };
        let (ts, m) = &latest[w];
        let is = if running {
            RunState::Running
        } else {
            RunState::Stopped
        };
        if is == want {
            matching.push(w.clone());
            ans.values.push(json!({
                "well_id": w,
                "state": is.name(),
                "ts": ts.to_rfc3339(),
                "frequency_hz": m.get(Field::FrequencyHz),
                "motor_current_a": m.get(Field::MotorCurrentA),
            }));
        }
    }
    ans.wells = matching.clone();
    let judged = wells.len() - unknown;
    ans.text = if !it.wells.is_empty() && wells.len() == 1 {
        let w = &wells[0];
        match latest.get(w).and_then(|(_, m)| is_running(m)) {
            Some(r) => format!(
                "{}: {w} is {} (last reading {}).",
                if (r && want == RunState::Running) || (!r && want == RunState::Stopped) {
                    "Yes"
                } else {
                    "No"
                },
                if r { "running" } else { "stopped" },
                ago(a.now, latest[w].0)
            ),
            None => format!("{w} has no frequency or current reading to tell."),
        }
    } else if matching.is_empty() {
        format!(
            "No well is {} ({judged} wells with data checked).",
            want.name()
        )
    } else {
        format!(
            "{} of {judged} wells {} {}: {}.",
            matching.len(),
            if matching.len() == 1 { "is" } else { "are" },
            want.name(),
            list_text(&matching, 15)
        )
    };
    Ok(ans)
}

async fn no_data(
    a: &Asker<'_>,
    visible: &[WellId],
    it: &mut Interpretation,
) -> Result<Answer, AskError> {
    let stale = *it.stale_for.get_or_insert(HOUR);
    let wells = target_wells(visible, it);
    let latest = latest_map(a).await?;
    let mut ans = Answer::default();
    let mut listed = Vec::new();
    for w in &wells {
        match latest.get(w) {
            Some((ts, _)) if a.now.0 - ts.0 < stale => {}
            Some((ts, _)) => {
                ans.values.push(json!({ "well_id": w, "last_reading": ts.to_rfc3339(), "age_s": (a.now.0 - ts.0) / 1_000_000 }));
                listed.push(format!("{w} (last reading {})", ago(a.now, *ts)));
                ans.wells.push(w.clone());
            }
            None => {
                ans.values
                    .push(json!({ "well_id": w, "last_reading": null, "age_s": null }));
                listed.push(format!("{w} (never reported)"));
                ans.wells.push(w.clone());
            }
        }
    }
    let span = espwatch_core::duration::format_duration_micros(stale);
    ans.text = if listed.is_empty() {
        format!("Every well has reported within {span}.")
    } else {
        format!(
            "{} of {} wells have not reported for {span}: {}.",
            listed.len(),
            wells.len(),
            list_text(&listed, 10)
        )
    };
    Ok(ans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use espwatch_core::{Reading, Series, WellMeta};
    use espwatch_store::{
        AppendOptions, AppendOutcome, LatestReading, ProbeResult, StoreHealth, StoreResult,
        StoreStats, Totals, WellRecord, WellSeries, WellTotals,
    };
    use std::sync::Mutex;

    /// A store that answers fleet queries (remembering them) and refuses a per-well read, so
    /// an answer that reads well by well fails.
    struct FleetOnly {
        wells: Vec<WellId>,
        asked: Mutex<Vec<FleetQuery>>,
        totals_asked: Mutex<Vec<FleetTotalsQuery>>,
    }

    fn refused() -> StoreError {
        StoreError::Internal("read well by well".into())
    }

    #[async_trait]
    impl Store for FleetOnly {
        async fn append(&self, _: Vec<Reading>, _: AppendOptions) -> StoreResult<AppendOutcome> {
            Err(refused())
        }
        async fn read_range(&self, _: &WellId, _: TimeRange) -> StoreResult<Vec<Point>> {
            Err(refused())
        }
        async fn query(&self, _: &TelemetryQuery) -> StoreResult<Series> {
            Err(refused())
        }
        async fn fleet_query(&self, query: &FleetQuery) -> StoreResult<Vec<WellSeries>> {
            self.asked.lock().unwrap().push(query.clone());
            // Well n's average is 10 × n amps.
            Ok(query
                .wells
                .iter()
                .enumerate()
                .map(|(n, w)| WellSeries {
                    well_id: w.clone(),
                    series: Series {
                        ts: vec![Timestamp(0)],
                        columns: vec![(query.fields[0], vec![Some(10.0 * (n + 1) as f64)])],
                        downsampled: false,
                    },
                })
                .collect())
        }
        async fn fleet_totals(&self, query: &FleetTotalsQuery) -> StoreResult<Vec<WellTotals>> {
            self.totals_asked.lock().unwrap().push(query.clone());
            // Well n has n + 1 readings averaging 10 × n amps, from 10 × n - 1 to 10 × n + 1.
            Ok(query
                .wells
                .iter()
                .enumerate()
                .map(|(n, w)| {
                    let (n, mean) = ((n + 1) as u64, 10.0 * (n + 1) as f64);
                    WellTotals {
                        well_id: w.clone(),
                        readings: n,
                        channels: vec![Totals {
                            n,
                            sum: mean * n as f64,
                            min: mean - 1.0,
                            max: mean + 1.0,
                        }],
                    }
                })
                .collect())
        }
        async fn latest(&self) -> StoreResult<Vec<LatestReading>> {
            Ok(Vec::new())
        }
        async fn list_wells(&self) -> StoreResult<Vec<WellRecord>> {
            Ok(self
                .wells
                .iter()
                .map(|w| WellRecord {
                    meta: WellMeta::minimal(w),
                    created_at: Timestamp(0),
                    updated_at: Timestamp(0),
                    auto_registered: false,
                })
                .collect())
        }
        async fn get_well(&self, _: &WellId) -> StoreResult<Option<WellRecord>> {
            Err(refused())
        }
        async fn create_well(&self, _: WellMeta) -> StoreResult<WellRecord> {
            Err(refused())
        }
        async fn update_well(&self, _: WellMeta) -> StoreResult<Option<WellRecord>> {
            Err(refused())
        }
        async fn delete_well(&self, _: &WellId) -> StoreResult<bool> {
            Err(refused())
        }
        async fn health(&self) -> StoreHealth {
            let ok = ProbeResult {
                ok: true,
                latency_ms: 0.0,
                detail: None,
            };
            StoreHealth {
                backend: "fleet-only",
                read: ok.clone(),
                write: ok,
            }
        }
        async fn stats(&self) -> StoreResult<StoreStats> {
            Ok(StoreStats::default())
        }
        async fn close(&self) -> StoreResult<()> {
            Ok(())
        }
    }

    /// Issue 24: a fleet-wide aggregate, filter or ranking over a range is one
    /// `fleet_totals` over the wells (the store's single pass, whole hours from rollups),
    /// never a read per well nor a raw bucketed pass.
    #[tokio::test]
    async fn fleet_aggregates_are_one_fleet_totals_query() {
        let wells: Vec<WellId> = (1..=4)
            .map(|n| WellId::parse(&format!("ESP-{n:03}")).unwrap())
            .collect();
        let store = FleetOnly {
            wells: wells.clone(),
            asked: Mutex::new(Vec::new()),
            totals_asked: Mutex::new(Vec::new()),
        };
        let now = Timestamp::parse_rfc3339("2026-11-25T15:30:00Z").unwrap();
        let asker = Asker {
            store: &store,
            alarms: None,
            diagnoses: None,
            scope: &WellScope::All,
            role: Role::Admin,
            now,
            zone: UtcOffset::UTC,
        };
        let day = Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap();
        let answered = ask(
            &asker,
            "wells with average motor current above 25 A yesterday",
        )
        .await
        .unwrap();
        assert_eq!(answered.answer.wells, wells[2..].to_vec());
        let asked = store.totals_asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        let q = &asked[0];
        assert_eq!(q.wells, wells);
        assert_eq!(q.fields, [Field::MotorCurrentA]);
        assert_eq!((q.range.from, q.range.to), (day, Timestamp(day.0 + DAY)));

        let answered = ask(&asker, "top 2 wells by average current yesterday")
            .await
            .unwrap();
        assert_eq!(answered.answer.wells, [wells[3].clone(), wells[2].clone()]);
        assert_eq!(store.totals_asked.lock().unwrap().len(), 2);

        // The fleet's average pools every well's readings: (1·10 + 2·20 + 3·30 + 4·40) / 10.
        let answered = ask(&asker, "average motor current of all wells yesterday")
            .await
            .unwrap();
        assert_eq!(answered.answer.wells, wells);
        assert!(
            answered.answer.text.contains("30 A (10 readings)"),
            "{}",
            answered.answer.text
        );
        assert_eq!(answered.answer.values.len(), 4);
        assert_eq!(answered.answer.values[3]["value"], 40.0);
        assert_eq!(answered.answer.values[3]["points"], 4);
        let answered = ask(&asker, "maximum motor current of all wells yesterday")
            .await
            .unwrap();
        assert!(
            answered.answer.text.contains("41 A at ESP-004"),
            "{}",
            answered.answer.text
        );
        assert_eq!(store.totals_asked.lock().unwrap().len(), 4);
        assert!(store.asked.lock().unwrap().is_empty());
    }
    fn named(id: &str, name: &str, field: &str) -> WellMeta {
        let mut m = WellMeta::minimal(&WellId::parse(id).unwrap());
        m.name = Some(name.into());
        m.field = Some(field.into());
        m
    }

    /// Issue 24: the registry's directory is built once and kept while the registry is the
    /// same (building it was most of a question's CPU on 1 000 wells); a renamed, added or
    /// moved well gives a new one, which reads the new names.
    #[test]
    fn the_directory_is_kept_until_the_registry_changes() {
        let cache = DirectoryCache::new();
        let clock = ask::Clock {
            now: Timestamp::parse_rfc3339("2026-11-25T15:30:00Z").unwrap(),
            zone: UtcOffset::UTC,
        };
        let mut metas = vec![
            named("ESP-001", "Kestrel 1", "North Pad"),
            named("ESP-002", "Falcon Creek", "North Pad"),
        ];
        let first = cache.get(&metas);
        assert!(Arc::ptr_eq(&first, &cache.get(&metas.clone())));

        metas[1].name = Some("Osprey Ridge".into());
        let renamed = cache.get(&metas);
        assert!(!Arc::ptr_eq(&first, &renamed));
        let wells = |dir: &Directory, q: &str| {
            ask::parse(q, dir, &clock)
                .map(|it| it.wells)
                .unwrap_or_default()
        };
        let q = "motor current of osprey ridge now";
        assert_eq!(wells(&renamed, q), [metas[1].well_id.clone()]);
        assert!(wells(&first, q).is_empty());

        metas[0].field = Some("South Pad".into());
        let moved = cache.get(&metas);
        assert!(!Arc::ptr_eq(&renamed, &moved));
        metas.push(named("ESP-003", "Heron 3", "South Pad"));
        let added = cache.get(&metas);
        assert_eq!(added.len(), 3);
        // An identity with another scope (another registry) keeps its own: both stay.
        assert!(Arc::ptr_eq(&moved, &cache.get(&metas[..2])));
        assert!(Arc::ptr_eq(&added, &cache.get(&metas)));
    }
}
