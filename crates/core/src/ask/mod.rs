//! "Ask the fleet": a question in plain words → a typed [`Interpretation`] in canonical names
//! (issue 24). Deterministic and pure: the wells registry and the clock are passed in, no model,
//! nothing learned at run time.
//!
//! How a question is read, in passes over its [tokens](tokens::tokenize), each claiming the
//! tokens it understands:
//! 1. wells: ids (`ESP-003`, `esp003`, `ESP-3`, `esp 3`, `well 12`), `PREFIX*`, names and
//!    fields/pads from the registry;
//! 2. time expressions ([`time`]);
//! 3. comparisons: a comparison word, a number and its unit (`above 80 °C`, `< 2000 kPa`);
//! 4. the domain [lexicon](lexicon::PHRASES): channels, conditions, aggregates, intent cues,
//!    alarm and run states — longest phrase first, long words within one edit;
//! 5. counts (`top 5`, `five wells`) and display units (`in °F`).
//!
//! The intent is then decided from what was found. A question whose parts do not make one of
//! the intents, or that leaves a needed part open ("pressure" without saying which), is
//! [`NotUnderstood`]: what was recognised and 2–3 rephrasings that would be understood. Never
//! a guess.

pub mod lexicon;
pub mod time;
pub mod tokens;
pub mod units;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::condition::Condition;
use crate::duration::format_duration_micros;
use crate::series::Agg;
use crate::telemetry::{Field, Timestamp, WellId};
use crate::well::WellMeta;
use lexicon::{Ambiguity, Concept, Cue, PHRASES, Part};
pub use time::{Clock, TimeSpec};
use tokens::{Kind, Token, close, tokenize};
pub use units::Unit;

/// What the question asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Latest value of channels for wells.
    Value,
    /// One number per well over a time range (avg, min, max).
    Aggregate,
    /// A channel over time, per well, bucketed.
    Trend,
    /// Two or more wells side by side on a channel.
    Compare,
    /// Wells whose channel passes a threshold.
    Filter,
    /// Wells ranked by a channel.
    Top,
    /// Wells that have (or had) a condition.
    Condition,
    /// Alarms by state.
    Alarms,
    /// Why a well is alarming / what is wrong with it.
    Diagnosis,
    /// Everything about one well now.
    Status,
    /// Which wells are running or stopped (or whether one is).
    RunState,
    /// Wells that have not reported for a while.
    NoData,
}

impl Intent {
    pub const ALL: [Intent; 12] = [
        Intent::Value,
        Intent::Aggregate,
        Intent::Trend,
        Intent::Compare,
        Intent::Filter,
        Intent::Top,
        Intent::Condition,
        Intent::Alarms,
        Intent::Diagnosis,
        Intent::Status,
        Intent::RunState,
        Intent::NoData,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Intent::Value => "value",
            Intent::Aggregate => "aggregate",
            Intent::Trend => "trend",
            Intent::Compare => "compare",
            Intent::Filter => "filter",
            Intent::Top => "top",
            Intent::Condition => "condition",
            Intent::Alarms => "alarms",
            Intent::Diagnosis => "diagnosis",
            Intent::Status => "status",
            Intent::RunState => "run_state",
            Intent::NoData => "no_data",
        }
    }

    pub fn from_name(name: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.name() == name)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    pub fn name(self) -> &'static str {
        match self {
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
            Cmp::Lt => "lt",
            Cmp::Le => "le",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Cmp::Gt => "above",
            Cmp::Ge => "at least",
            Cmp::Lt => "below",
            Cmp::Le => "at most",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Le => value <= threshold,
        }
    }

    pub fn from_name(name: &str) -> Option<Cmp> {
        [Cmp::Gt, Cmp::Ge, Cmp::Lt, Cmp::Le]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// Which alarms: `open` is raised or acknowledged (not cleared).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AlarmStateQuery {
    Open,
    Raised,
    Acknowledged,
    Cleared,
}

impl AlarmStateQuery {
    pub fn name(self) -> &'static str {
        match self {
            AlarmStateQuery::Open => "open",
            AlarmStateQuery::Raised => "raised",
            AlarmStateQuery::Acknowledged => "acknowledged",
            AlarmStateQuery::Cleared => "cleared",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Stopped,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }
}

/// A threshold on a channel (on either, when several: "vibration" is both axes).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub channels: Vec<Field>,
    pub cmp: Cmp,
    /// In the channel's canonical unit.
    pub value: f64,
    /// The unit the question wrote the number in.
    pub unit: Unit,
    /// The number as written.
    pub written: f64,
}

/// What a question was understood to ask, in canonical names.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpretation {
    pub intent: Intent,
    /// The wells named (ids, in the order named, a group's wells in registry order). Empty:
    /// the whole fleet the asker may see.
    pub wells: Vec<WellId>,
    /// Fields/pads or `PREFIX*` groups the wells came from.
    pub groups: Vec<String>,
    pub condition: Option<Condition>,
    pub channels: Vec<Field>,
    pub time: Option<TimeSpec>,
    /// Bucket width of a trend, microseconds (set by the caller when answering).
    pub step: Option<i64>,
    pub agg: Option<Agg>,
    pub filter: Option<Filter>,
    pub limit: Option<usize>,
    pub order: Option<Order>,
    pub alarm_state: Option<AlarmStateQuery>,
    pub run_state: Option<RunState>,
    /// `no_data`: how long without a reading, microseconds.
    pub stale_for: Option<i64>,
    /// Units the asker wrote in, to answer in them too.
    pub units: Vec<Unit>,
    /// `alarms` / `condition`: the wells *without* such alarms ("which wells have no open
    /// alarms", "never had a gas lock").
    pub without: bool,
}

impl Interpretation {
    fn new(intent: Intent) -> Self {
        Interpretation {
            intent,
            wells: Vec::new(),
            groups: Vec::new(),
            condition: None,
            channels: Vec::new(),
            time: None,
            step: None,
            agg: None,
            filter: None,
            limit: None,
            order: None,
            alarm_state: None,
            run_state: None,
            stale_for: None,
            units: Vec::new(),
            without: false,
        }
    }

    /// The time range, when the question gave one.
    pub fn range(&self) -> Option<(Timestamp, Timestamp)> {
        match &self.time {
            Some(TimeSpec::Range { from, to, .. }) => Some((*from, *to)),
            _ => None,
        }
    }

    /// The unit to show a channel in: the asker's, else the canonical one.
    pub fn display_unit(&self, field: Field) -> Unit {
        let q = units::quantity_of(field);
        self.units
            .iter()
            .copied()
            .find(|u| u.quantity() == q)
            .unwrap_or_else(|| Unit::canonical_of(field))
    }

    /// The JSON form: `{"intent", "wells", "condition", "channels", "from", "to", "step",
    /// "agg", "filter", ...}`; absent parts are `null` (lists empty).
    pub fn to_json(&self) -> Value {
        let (from, to, label) = match &self.time {
            Some(TimeSpec::Range { from, to, label }) => (
                Value::from(from.to_rfc3339()),
                Value::from(to.to_rfc3339()),
                Value::from(label.clone()),
            ),
            Some(TimeSpec::Now) => (Value::Null, Value::Null, Value::from("now")),
            Some(TimeSpec::BeforeTrip) => {
                (Value::Null, Value::Null, Value::from("before the trip"))
            }
            Some(TimeSpec::Lasting(d)) => (
                Value::Null,
                Value::Null,
                Value::from(format!("for {}", format_duration_micros(*d))),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        json!({
            "intent": self.intent.name(),
            "wells": self.wells,
            "groups": self.groups,
            "condition": self.condition.map(Condition::name),
            "channels": self.channels.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "from": from,
            "to": to,
            "time": label,
            "step": self.step.map(format_duration_micros),
            "agg": self.agg.map(Agg::name),
            "filter": self.filter.as_ref().map(|f| json!({
                "channels": f.channels.iter().map(|c| c.name()).collect::<Vec<_>>(),
                "op": f.cmp.name(),
                "value": f.value,
                "unit": Unit::canonical_of(f.channels[0]).name(),
                "written": format!("{} {}", fmt_number(f.written), f.unit.symbol()),
            })),
            "limit": self.limit,
            "order": self.order.map(Order::name),
            "alarm_state": self.alarm_state.map(AlarmStateQuery::name),
            "run_state": self.run_state.map(RunState::name),
            "stale_for": self.stale_for.map(format_duration_micros),
            "units": self.units.iter().map(|u| u.name()).collect::<Vec<_>>(),
            "without": self.without,
        })
    }
}

/// A number as a person writes it: no trailing zeros, at most 2 decimals (more below 1).
pub fn fmt_number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let digits = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// A question that was not understood: what was recognised, and questions that would be.
#[derive(Clone, Debug, PartialEq)]
pub struct NotUnderstood {
    pub message: String,
    /// The parts recognised, in canonical names (same keys as an interpretation).
    pub recognised: Value,
    /// Words that meant nothing here.
    pub unknown: Vec<String>,
    /// 2–3 rephrasings that would be understood, with this fleet's wells.
    pub suggestions: Vec<String>,
    /// The control verb, when the question was a command ("shut down ESP-003"): refused,
    /// `ask` answers questions and does not control pumps or alarms.
    /// (Boxed: the error stays small.)
    pub command: Option<Box<str>>,
}

impl std::fmt::Display for NotUnderstood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One well of the registry as the parser sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WellEntry {
    pub id: WellId,
    pub name: Option<String>,
    pub field: Option<String>,
}

impl From<&WellMeta> for WellEntry {
    fn from(m: &WellMeta) -> Self {
        WellEntry {
            id: m.well_id.clone(),
            name: m.name.clone(),
            field: m.field.clone(),
        }
    }
}

/// The registry, indexed for the parser. Build it once per question (cheap) or keep it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    wells: Vec<WellEntry>,
    /// Lower-case id → index.
    by_id: HashMap<String, usize>,
    /// Id without separators (`esp003`) → index.
    by_norm: HashMap<String, Vec<usize>>,
    /// (letters, number) → indices: `ESP-003` is ("esp", 3).
    by_number: HashMap<(String, u64), Vec<usize>>,
    /// The trailing number alone → indices (`well 12`).
    by_bare_number: HashMap<u64, Vec<usize>>,
    prefixes: Vec<String>,
    /// Name without separators (`kestrel3`) → indices.
    by_name_norm: HashMap<String, Vec<usize>>,
    /// Name words → index.
    names: Vec<(Vec<String>, usize)>,
    /// Field words → (display name, indices).
    fields: Vec<(Vec<String>, String, Vec<usize>)>,
}

fn norm_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `esp-003` → ("esp", 3); `w17` → ("w", 17); `2026-11-20` → None.
fn letters_number(id: &str) -> Option<(String, u64)> {
    let id = id.to_ascii_lowercase();
    let letters: String = id.chars().take_while(char::is_ascii_alphabetic).collect();
    if letters.is_empty() {
        return None;
    }
    let rest = id[letters.len()..].trim_start_matches(['-', '_', '.', ' ']);
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) || rest.len() > 9 {
        return None;
    }
    Some((letters, rest.parse().ok()?))
}

fn words_of(text: &str) -> Vec<String> {
    tokenize(text).into_iter().map(|t| t.text).collect()
}

impl Directory {
    pub fn new(wells: impl IntoIterator<Item = WellEntry>) -> Directory {
        let mut d = Directory::default();
        let mut fields: Vec<(Vec<String>, String, Vec<usize>)> = Vec::new();
        for (i, w) in wells.into_iter().enumerate() {
            d.by_id.insert(w.id.as_str().to_ascii_lowercase(), i);
            d.by_norm.entry(norm_id(w.id.as_str())).or_default().push(i);
            if let Some((letters, n)) = letters_number(w.id.as_str()) {
                if !d.prefixes.contains(&letters) {
                    d.prefixes.push(letters.clone());
                }
                d.by_number.entry((letters, n)).or_default().push(i);
                d.by_bare_number.entry(n).or_default().push(i);
            }
            if let Some(name) = &w.name {
                let words = words_of(name);
                if !words.is_empty() && words.join(" ") != w.id.as_str().to_ascii_lowercase() {
                    d.names.push((words, i));
                }
                d.by_name_norm.entry(norm_id(name)).or_default().push(i);
            }
            if let Some(field) = &w.field {
                let words = words_of(field);
                if !words.is_empty() {
                    match fields.iter_mut().find(|f| f.0 == words) {
                        Some(f) => f.2.push(i),
                        None => fields.push((words, field.clone(), vec![i])),
                    }
                }
            }
            d.wells.push(w);
        }
        // Longest names first, so "North Pad East" wins over "North Pad".
        d.names.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        fields.sort_by_key(|f| std::cmp::Reverse(f.0.len()));
        d.fields = fields;
        d
    }

    pub fn from_metas<'a>(metas: impl IntoIterator<Item = &'a WellMeta>) -> Directory {
        Directory::new(metas.into_iter().map(WellEntry::from))
    }

    pub fn wells(&self) -> &[WellEntry] {
        &self.wells
    }

    pub fn len(&self) -> usize {
        self.wells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wells.is_empty()
    }

    fn id(&self, i: usize) -> WellId {
        self.wells[i].id.clone()
    }

    /// Ids within one edit of `text` (for "did you mean").
    fn near(&self, text: &str) -> Vec<String> {
        let t: Vec<char> = norm_id(text).chars().collect();
        let mut out: Vec<String> = self
            .wells
            .iter()
            .filter(|w| {
                let c: Vec<char> = norm_id(w.id.as_str()).chars().collect();
                tokens::osa_distance(&t, &c) <= 1
            })
            .map(|w| w.id.to_string())
            .collect();
        out.truncate(3);
        out
    }
}

/// What a span of tokens was recognised as.
#[derive(Clone, Debug)]
enum Item {
    Wells(Vec<usize>),
    Group(String, Vec<usize>),
    UnknownWell(String),
    Time(TimeSpec),
    Threshold {
        cmp: Cmp,
        value: f64,
        unit: Option<Unit>,
    },
    Count(usize),
    DisplayUnit(Unit),
    Concept(Concept),
    /// A bucket asked for ("hourly", "every 15 min"), microseconds.
    Step(i64),
    /// Words about the future ("tomorrow", "next week"): refused.
    Future(String),
    /// A negation of what follows it ("no open alarms", "never had a gas lock"): the wells
    /// without it.
    Without,
}

struct Scan<'a> {
    tokens: &'a [Token],
    used: Vec<bool>,
    items: Vec<(usize, Item)>,
}

impl<'a> Scan<'a> {
    fn word(&self, i: usize) -> &str {
        self.tokens.get(i).map(|t| t.text.as_str()).unwrap_or("")
    }

    fn free(&self, i: usize, len: usize) -> bool {
        i + len <= self.tokens.len() && self.used[i..i + len].iter().all(|u| !u)
    }

    fn claim(&mut self, i: usize, len: usize, item: Item) {
        for u in &mut self.used[i..i + len] {
            *u = true;
        }
        self.items.push((i, item));
    }
}

/// Words an id-like token must not be mistaken for.
fn is_vocabulary(word: &str) -> bool {
    Unit::from_word(word).is_some()
        || PHRASES.iter().any(|(p, _)| *p == word)
        || time::duration_unit(word).is_some()
}

/// Articles and possessives a phrase may carry between its words: "broke a shaft" is "broke
/// shaft", "a hole in their tubing" is "hole in tubing". Never at a phrase's start or end.
const INNER_ARTICLES: &[&str] = &["a", "an", "the", "its", "their", "his", "her"];

/// Matches `phrase` (space-separated words) at `tokens[i..]`: (length, exact?). The length
/// counts the articles skipped inside it.
fn match_phrase(scan: &Scan, i: usize, phrase: &str) -> Option<(usize, bool)> {
    let mut exact = true;
    let mut len = 0;
    for (k, w) in phrase.split(' ').enumerate() {
        if k > 0 {
            while let Some(t) = scan.tokens.get(i + len)
                && t.text != w
                && INNER_ARTICLES.contains(&t.text.as_str())
                && !scan.used[i + len]
            {
                len += 1;
            }
        }
        let t = scan.tokens.get(i + len)?;
        if scan.used[i + len] {
            return None;
        }
        if t.text == w {
        } else if matches!(t.kind, Kind::Word) && close(&t.text, w) {
            exact = false;
        } else {
            return None;
        }
        len += 1;
    }
    Some((len, exact))
}

/// A part of the installation and a trouble word, in either order or joined by a preposition
/// ("sensor issues", "failed gauges", "problems with the gauges"): that part's condition.
/// The part must not begin a longer phrase ("tubing pressure" is a channel).
fn troubled_part_at(scan: &Scan, i: usize) -> Option<(usize, Condition)> {
    let part = |k: usize| -> Option<Condition> {
        if !scan.free(k, 1) {
            return None;
        }
        let (_, c) = lexicon::TROUBLED_PARTS
            .iter()
            .find(|(w, _)| *w == scan.word(k))?;
        let longer = lexicon_at(scan, k, |_| true).is_some_and(|(len, _)| len > 1);
        (!longer).then_some(*c)
    };
    let trouble = |k: usize| scan.free(k, 1) && lexicon::TROUBLE.contains(&scan.word(k));
    if trouble(i + 1)
        && let Some(c) = part(i)
    {
        return Some((2, c));
    }
    if trouble(i) {
        if let Some(c) = part(i + 1) {
            return Some((2, c));
        }
        if matches!(scan.word(i + 1), "with" | "on" | "in" | "of" | "at") && scan.free(i + 1, 1) {
            let mut k = i + 2;
            if INNER_ARTICLES.contains(&scan.word(k)) && scan.free(k, 1) {
                k += 1;
            }
            if let Some(c) = part(k) {
                return Some((k + 1 - i, c));
            }
        }
    }
    None
}

/// A multi-word phrase with one edit across its words ("gas lok"): the words joined, long
/// enough that one edit is a typo, not another word. A word of one or two letters must be
/// exact: an edit there makes another word ("by vibration" is not "y vibration").
fn match_phrase_joined(scan: &Scan, i: usize, phrase: &str) -> Option<usize> {
    let words: Vec<&str> = phrase.split(' ').collect();
    if words.len() < 2 {
        return None;
    }
    let mut joined = String::new();
    for (k, w) in words.iter().enumerate() {
        let t = scan.tokens.get(i + k)?;
        if scan.used[i + k] || !matches!(t.kind, Kind::Word) {
            return None;
        }
        if (w.chars().count() <= 2 || t.text.chars().count() <= 2) && t.text != *w {
            return None;
        }
        // A common word is itself, not a typo of a phrase's word: "had sensor" is not "bad
        // sensor".
        if t.text != *w && lexicon::FILLER.contains(&t.text.as_str()) {
            return None;
        }
        joined.push_str(&t.text);
    }
    let target: Vec<char> = words.concat().chars().collect();
    let got: Vec<char> = joined.chars().collect();
    // The distance is at least the difference in length: checked first, it spares the table.
    (target.len() >= 7
        && got.len().abs_diff(target.len()) <= 1
        && tokens::osa_distance(&got, &target) <= 1)
        .then_some(words.len())
}

/// The longest lexicon phrase at `i` (exact beats fuzzy at equal length).
fn lexicon_at(scan: &Scan, i: usize, only: impl Fn(&Concept) -> bool) -> Option<(usize, Concept)> {
    let mut best: Option<(usize, bool, &Concept)> = None;
    for (phrase, concept) in PHRASES {
        if !only(concept) {
            continue;
        }
        let found = match_phrase(scan, i, phrase)
            .or_else(|| match_phrase_joined(scan, i, phrase).map(|len| (len, false)));
        if let Some((len, exact)) = found {
            let better = match best {
                None => true,
                Some((l, e, _)) => len > l || (len == l && exact && !e),
            };
            if better {
                best = Some((len, exact, concept));
            }
        }
    }
    best.map(|(len, _, c)| (len, c.clone()))
}

fn wells_at(scan: &Scan, i: usize, dir: &Directory) -> Option<(usize, Item)> {
    let t = &scan.tokens[i];
    let text = t.text.as_str();
    if let Some(&k) = dir.by_id.get(text) {
        return Some((1, Item::Wells(vec![k])));
    }
    // Names and fields, several words, long words within one edit.
    let phrase_len = |words: &[String]| -> Option<usize> {
        for (k, w) in words.iter().enumerate() {
            let t = scan.tokens.get(i + k)?;
            if scan.used[i + k] || !(t.text == *w || close(&t.text, w)) {
                return None;
            }
        }
        Some(words.len())
    };
    for (words, k) in &dir.names {
        if let Some(len) = phrase_len(words) {
            return Some((len, Item::Wells(vec![*k])));
        }
    }
    for (words, name, members) in &dir.fields {
        if let Some(len) = phrase_len(words) {
            return Some((len, Item::Group(name.clone(), members.clone())));
        }
        // "north pad" for "North Pad Field"? Only the full name counts; "the north" alone
        // does not.
    }
    // A field written with other separators: "field a", "field-a", "FieldA" for "Field-A".
    for (_, name, members) in &dir.fields {
        let target = norm_id(name);
        let mut joined = String::new();
        for k in 0..3 {
            let Some(t) = scan.tokens.get(i + k) else {
                break;
            };
            if scan.used[i + k] || matches!(t.kind, Kind::Symbol) {
                break;
            }
            joined.push_str(&norm_id(&t.text));
            if joined == target {
                return Some((k + 1, Item::Group(name.clone(), members.clone())));
            }
            if !target.starts_with(&joined) {
                break;
            }
        }
    }
    if matches!(t.kind, Kind::Word) {
        if let Some(prefix) = text.strip_suffix('*') {
            let members: Vec<usize> = dir
                .wells
                .iter()
                .enumerate()
                .filter(|(_, w)| w.id.as_str().to_ascii_lowercase().starts_with(prefix))
                .map(|(k, _)| k)
                .collect();
            return Some((
                1,
                if members.is_empty() {
                    Item::UnknownWell(t.raw.to_uppercase())
                } else {
                    Item::Group(format!("{}*", prefix.to_uppercase()), members)
                },
            ));
        }
        if let Some(ks) = dir.by_norm.get(&norm_id(text))
            && ks.len() == 1
            && text.chars().any(|c| c.is_ascii_digit())
        {
            return Some((1, Item::Wells(ks.clone())));
        }
        if let Some(ks) = dir.by_name_norm.get(&norm_id(text))
            && ks.len() == 1
            && text.chars().any(|c| c.is_ascii_digit())
        {
            return Some((1, Item::Wells(ks.clone())));
        }
        if !is_vocabulary(text)
            && let Some(key) = letters_number(text)
        {
            return Some((
                1,
                match dir.by_number.get(&key) {
                    Some(ks) if ks.len() == 1 => Item::Wells(ks.clone()),
                    _ => Item::UnknownWell(t.raw.to_uppercase()),
                },
            ));
        }
        // "esp 3", "well 12", "pump #7".
        if let Some(n) = scan.tokens.get(i + 1).and_then(Token::number)
            && n.fract() == 0.0
            && n >= 0.0
            && !scan.used.get(i + 1).copied().unwrap_or(true)
        {
            let n = n as u64;
            let by_prefix = dir.prefixes.iter().any(|p| p == text);
            // "well 3 amps" but not "top 3 wells", "last 3 days".
            let by_word = matches!(text, "well" | "pump" | "unit" | "esp" | "no" | "number");
            let next_is_unit = time::duration_unit(scan.word(i + 2)).is_some();
            if by_prefix || (by_word && !next_is_unit) {
                let ks = if by_prefix {
                    dir.by_number.get(&(text.to_owned(), n))
                } else {
                    dir.by_bare_number.get(&n)
                };
                return Some((
                    2,
                    match ks {
                        Some(ks) if ks.len() == 1 => Item::Wells(ks.clone()),
                        _ => Item::UnknownWell(format!("{} {}", t.raw.to_uppercase(), n)),
                    },
                ));
            }
        }
    }
    None
}

/// "starting with ESP-01", "beginning with KAL".
fn prefix_phrase_at(scan: &Scan, i: usize, dir: &Directory) -> Option<(usize, Item)> {
    if !matches!(
        scan.word(i),
        "starting" | "beginning" | "prefixed" | "prefix"
    ) || scan.word(i + 1) != "with"
    {
        return None;
    }
    let t = scan.tokens.get(i + 2)?;
    let prefix = t.text.trim_end_matches('*');
    let members: Vec<usize> = dir
        .wells
        .iter()
        .enumerate()
        .filter(|(_, w)| w.id.as_str().to_ascii_lowercase().starts_with(prefix))
        .map(|(k, _)| k)
        .collect();
    Some((
        3,
        if members.is_empty() {
            Item::UnknownWell(t.raw.to_uppercase())
        } else {
            Item::Group(format!("{}*", prefix.to_uppercase()), members)
        },
    ))
}

/// A unit after a number: `degrees c`, `deg f`, `psi`, `%`.
fn unit_at(scan: &Scan, i: usize) -> Option<(usize, Unit)> {
    let w = scan.word(i);
    if matches!(w, "deg" | "degrees" | "degree") {
        return match scan.word(i + 1) {
            "c" | "celsius" | "centigrade" => Some((2, Unit::DegC)),
            "f" | "fahrenheit" => Some((2, Unit::DegF)),
            _ => Some((1, Unit::DegC)),
        };
    }
    if matches!(w, "bbl" | "bbls" | "barrels" | "m3" | "sm3")
        && matches!(scan.word(i + 1), "per" | "a")
        && matches!(scan.word(i + 2), "day" | "d")
    {
        return Unit::from_word(w).map(|u| (3, u));
    }
    Unit::from_word(w).map(|u| (1, u))
}

fn threshold_at(scan: &Scan, i: usize) -> Option<(usize, Item)> {
    let (len, concept) = lexicon_at(scan, i, |c| matches!(c, Concept::Cmp(_)))?;
    let Concept::Cmp(cmp) = concept else {
        return None;
    };
    let mut j = i + len;
    // "above a 100" no; "over 40 A".
    let value = scan.tokens.get(j).and_then(Token::number)?;
    if !scan.free(j, 1) {
        return None;
    }
    j += 1;
    let mut unit = None;
    if let Some((ulen, u)) = unit_at(scan, j)
        && scan.free(j, ulen)
    {
        unit = Some(u);
        j += ulen;
    }
    Some((j - i, Item::Threshold { cmp, value, unit }))
}

/// Words that negate the state word after them ("haven't been acknowledged").
const NEGATORS: &[&str] = &[
    "not", "havent", "hasnt", "hadnt", "isnt", "arent", "wasnt", "werent", "dont", "doesnt",
    "didnt", "never", "nobody", "noone", "neither", "nor",
];

/// Words a negation may reach across to its state word: "not yet been", "nobody has".
const NEGATION_GAP: &[&str] = &[
    "been",
    "be",
    "being",
    "yet",
    "has",
    "have",
    "had",
    "got",
    "gotten",
    "ever",
    "still",
    "currently",
    "even",
    "one",
    "anyone",
    "anybody",
];

/// Where a negation of the state word at `i` starts, if one does: a negator at most three
/// free words before it, only gap words between.
fn negation_before(scan: &Scan, i: usize) -> Option<usize> {
    let mut k = i;
    for _ in 0..4 {
        if k == 0 {
            return None;
        }
        k -= 1;
        if scan.used[k] {
            return None;
        }
        let w = scan.word(k);
        // "no one": the negator is "no".
        if w == "one" && k > 0 && scan.word(k - 1) == "no" && !scan.used[k - 1] {
            return Some(k - 1);
        }
        if NEGATORS.contains(&w) {
            return Some(k);
        }
        if !NEGATION_GAP.contains(&w) {
            return None;
        }
    }
    None
}

/// Words that, before an alarm or a condition, ask for the wells without it: "no open alarms",
/// "never had a gas lock", "not gas locked", "without alarms".
const WITHOUT_WORDS: &[&str] = &[
    "no", "not", "never", "without", "none", "zero", "havent", "hasnt", "hadnt", "dont", "doesnt",
    "didnt", "arent", "isnt", "werent", "wasnt",
];

/// The alarm or condition a negation at `i` applies to: only gap words (articles, "had",
/// "been", "any") and alarm states between them. The end of the span to claim.
fn negated_alarm_after(scan: &Scan, i: usize) -> Option<usize> {
    let n = scan.tokens.len();
    let mut k = i + 1;
    while k < n && k <= i + 6 {
        if !scan.used[k] {
            let w = scan.word(k);
            if NEGATION_GAP.contains(&w)
                || INNER_ARTICLES.contains(&w)
                || matches!(w, "any" | "single" | "of" | "with")
            {
                k += 1;
                continue;
            }
            return None;
        }
        match scan.items.iter().find(|(p, _)| *p == k).map(|(_, it)| it) {
            Some(Item::Concept(Concept::Cue(Cue::Alarm) | Concept::Condition(_))) => {
                return Some(k);
            }
            Some(Item::Concept(Concept::AlarmState(_))) => {
                k += 1;
                while k < n && scan.used[k] && !scan.items.iter().any(|(p, _)| *p == k) {
                    k += 1;
                }
            }
            _ => return None,
        }
    }
    None
}

/// The opposite of a state: not acknowledged is still raised, not cleared is open, not
/// running is stopped. `None`: the state has no plain opposite (or the concept is no state).
fn negated(concept: &Concept) -> Option<Concept> {
    Some(match concept {
        Concept::AlarmState(AlarmStateQuery::Acknowledged) => {
            Concept::AlarmState(AlarmStateQuery::Raised)
        }
        Concept::AlarmState(AlarmStateQuery::Cleared) => Concept::AlarmState(AlarmStateQuery::Open),
        Concept::AlarmState(AlarmStateQuery::Open) => Concept::AlarmState(AlarmStateQuery::Cleared),
        Concept::RunState(RunState::Running) => Concept::RunState(RunState::Stopped),
        Concept::RunState(RunState::Stopped) => Concept::RunState(RunState::Running),
        _ => return None,
    })
}

/// A state word with the prefix "un" ("uncleared", "unresolved", "unacknowledged"): its
/// opposite.
fn un_negated(word: &str) -> Option<Concept> {
    let rest = word.strip_prefix("un")?;
    if rest.len() < 4 {
        return None;
    }
    let (_, concept) = PHRASES
        .iter()
        .find(|(p, c)| *p == rest && matches!(c, Concept::AlarmState(_) | Concept::RunState(_)))?;
    negated(concept)
}

/// Verbs that act on a pump, a drive or an alarm. A question that opens with one (after "please",
/// "can you"...) is a command, which `ask` refuses.
const CONTROL_VERBS: &[&str] = &[
    // Destructive or writing verbs: ask changes nothing in the store either.
    "delete",
    "remove",
    "erase",
    "purge",
    "wipe",
    "drop",
    "destroy",
    "truncate",
    "disable",
    "enable",
    "create",
    "add",
    "register",
    "unregister",
    "rename",
    "edit",
    "modify",
    "overwrite",
    "insert",
    "dismiss",
    "suppress",
    "stop",
    "start",
    "restart",
    "reset",
    "reboot",
    "shut",
    "turn",
    "switch",
    "kill",
    "trip",
    "acknowledge",
    "ack",
    "silence",
    "mute",
    "clear",
    "close",
    "increase",
    "decrease",
    "raise",
    "lower",
    "reduce",
    "boost",
    "bump",
    "ramp",
    "slow",
    "set",
    "adjust",
    "change",
    "choke",
    "resume",
    "startup",
    "speed",
];

/// Words before a command that do not change it: "please", "can you", "I want to", "go ahead
/// and".
const COMMAND_LEAD: &[&str] = &[
    "please",
    "pls",
    "kindly",
    "can",
    "could",
    "would",
    "will",
    "you",
    "go",
    "ahead",
    "and",
    "lets",
    "let",
    "us",
    "i",
    "id",
    "want",
    "need",
    "to",
    "like",
    "now",
    "immediately",
    "just",
    "quickly",
    "we",
    "should",
];

/// The control verb a question opens with, when it is a command: "shut down ESP-003",
/// "please set ESP-010 speed to 50 Hz", "can you acknowledge the alarms". A verb used as a
/// noun ("change in PIP", "stop reasons", "speed of ESP-003") or naming a list ("shut in
/// wells") is not one.
fn command_at_start(tokens: &[Token]) -> Option<String> {
    let word = |k: usize| tokens.get(k).map(|t| t.text.as_str()).unwrap_or("");
    let mut k = 0;
    while COMMAND_LEAD.contains(&word(k)) {
        k += 1;
    }
    let verb = word(k);
    if !CONTROL_VERBS.contains(&verb) {
        return None;
    }
    let next = word(k + 1);
    if next.is_empty()
        || matches!(
            next,
            "in" | "of"
                | "for"
                | "history"
                | "trend"
                | "reason"
                | "reasons"
                | "time"
                | "times"
                | "count"
                | "counts"
                | "event"
                | "events"
                | "log"
                | "rate"
                | "code"
                | "codes"
                | "cause"
                | "causes"
        ) && verb != "shut"
    {
        return None;
    }
    // "speed up" / "slow down" are commands; "speed of ESP-003" is a channel.
    if verb == "speed" && next != "up" {
        return None;
    }
    // "shut in wells", "shut down pumps": the list of stopped wells, said as an adjective.
    if verb == "shut"
        && matches!(next, "in" | "down" | "off")
        && matches!(word(k + 2), "wells" | "pumps" | "esps" | "units" | "")
    {
        return None;
    }
    Some(match verb {
        "shut" | "turn" | "switch" | "speed" | "slow" | "bump" | "ramp"
            if matches!(next, "in" | "down" | "off" | "on" | "up") =>
        {
            format!("{verb} {next}")
        }
        _ => verb.to_owned(),
    })
}

/// The refusal of a command: what `ask` is for, and questions about the same wells it would
/// answer.
fn refuse_command(
    question: &str,
    verb: &str,
    items: &[(usize, Item)],
    dir: &Directory,
) -> NotUnderstood {
    let mut wells: Vec<WellId> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for (_, item) in items {
        match item {
            Item::Wells(ks) => wells.extend(ks.iter().map(|&k| dir.id(k))),
            Item::Group(name, _) => groups.push(name.clone()),
            _ => {}
        }
    }
    let alarm_verb = matches!(
        verb,
        "acknowledge" | "ack" | "silence" | "mute" | "clear" | "reset" | "dismiss" | "suppress"
    ) || question.to_lowercase().contains("alarm");
    let suggestions: Vec<String> = match (wells.first(), alarm_verb) {
        (Some(w), true) => vec![
            format!("open alarms on {w}"),
            "which alarms are unacknowledged".into(),
            format!("what is wrong with {w}"),
        ],
        (Some(w), false) => vec![
            format!("status of {w}"),
            format!("is {w} running"),
            format!("what is wrong with {w}"),
        ],
        (None, true) => vec![
            "which alarms are unacknowledged".into(),
            "which wells have an open alarm".into(),
        ],
        (None, false) => vec![
            "which pumps are stopped".into(),
            "which wells have an open alarm".into(),
        ],
    };
    let mut recognised = serde_json::Map::new();
    if !wells.is_empty() {
        recognised.insert("wells".into(), json!(wells));
    }
    if !groups.is_empty() {
        recognised.insert("groups".into(), json!(groups));
    }
    NotUnderstood {
        message: format!(
            "\u{201c}{}\u{201d} is a command: ask answers questions about the wells and does not control \
             pumps, drives or alarms, nor change any record. Do it from the control system; here \
             you can ask how the wells are.",
            question.trim()
        ),
        recognised: Value::Object(recognised),
        unknown: Vec::new(),
        suggestions,
        command: Some(verb.into()),
    }
}

/// Reads a question. `dir` is the registry the well words are looked up in; `clock` the
/// moment of asking and the zone of "today".
pub fn parse(
    question: &str,
    dir: &Directory,
    clock: &Clock,
) -> Result<Interpretation, NotUnderstood> {
    let tokens = tokenize(question);
    let mut scan = Scan {
        tokens: &tokens,
        used: vec![false; tokens.len()],
        items: Vec::new(),
    };
    let n = tokens.len();
    // 1. Wells.
    let mut i = 0;
    while i < n {
        if let Some((len, item)) =
            prefix_phrase_at(&scan, i, dir).or_else(|| wells_at(&scan, i, dir))
        {
            scan.claim(i, len, item);
            i += len;
        } else {
            i += 1;
        }
    }
    // A command ("shut down ESP-003", "please restart Kestrel 3") is refused, whatever else
    // it names: the parser reads questions, nothing here acts on a pump or an alarm.
    if let Some(verb) = command_at_start(&tokens) {
        return Err(refuse_command(question, &verb, &scan.items, dir));
    }
    // 2. Time; words about the future are kept to be refused.
    let mut i = 0;
    while i < n {
        if let Some(len) = time::future_at(&tokens, i, clock)
            && scan.free(i, len)
        {
            let words: Vec<&str> = tokens[i..i + len].iter().map(|t| t.raw.as_str()).collect();
            scan.claim(i, len, Item::Future(words.join(" ")));
            i += len;
        } else if !scan.used[i]
            && let Some((len, spec)) = time::time_at(&tokens, i, clock)
            && scan.free(i, len)
        {
            scan.claim(i, len, Item::Time(spec));
            i += len;
        } else {
            i += 1;
        }
    }
    // 3. Thresholds.
    let mut i = 0;
    while i < n {
        if scan.free(i, 1)
            && let Some((len, item)) = threshold_at(&scan, i)
        {
            scan.claim(i, len, item);
            i += len;
        } else {
            i += 1;
        }
    }
    // 3b. Steps: "hourly", "every 15 min", "per hour" (after the thresholds: "500 bbl per
    // day" is a unit).
    let mut i = 0;
    while i < n {
        if let Some((len, step)) = time::step_at(&tokens, i)
            && scan.free(i, len)
        {
            scan.claim(i, len, Item::Step(step));
            i += len;
        } else {
            i += 1;
        }
    }
    // 4. Counts: "top 5", "5 wells", "five wells", "which 3".
    #[allow(clippy::needless_range_loop)] // `i` also indexes `scan.used` and neighbours
    for i in 0..n {
        if scan.used[i] {
            continue;
        }
        let value = tokens[i].number().or_else(|| {
            (!matches!(tokens[i].text.as_str(), "a" | "an" | "few" | "couple"))
                .then(|| time::number_word(&tokens[i].text))
                .flatten()
        });
        let Some(v) = value else { continue };
        if v.fract() != 0.0 || !(1.0..=1000.0).contains(&v) {
            continue;
        }
        let before = if i > 0 { scan.word(i - 1) } else { "" };
        let after = scan.word(i + 1);
        let counts = matches!(
            before,
            "top" | "bottom" | "first" | "which" | "the" | "best" | "worst"
        ) || matches!(
            after,
            "wells"
                | "pumps"
                | "esps"
                | "units"
                | "producers"
                | "hottest"
                | "highest"
                | "lowest"
                | "worst"
                | "best"
                | "most"
                | "least"
        );
        if counts {
            scan.claim(i, 1, Item::Count(v as usize));
        }
    }
    // 5. Lexicon; "current" before a channel means "now".
    let mut i = 0;
    while i < n {
        if scan.used[i] {
            i += 1;
            continue;
        }
        if scan.word(i) == "current"
            && i + 1 < n
            && lexicon_at(&scan, i + 1, |c| {
                matches!(
                    c,
                    Concept::Channel(_) | Concept::Ambiguous(_) | Concept::Part(_)
                )
            })
            .is_some()
        {
            scan.claim(i, 1, Item::Time(TimeSpec::Now));
            i += 1;
            continue;
        }
        if let Some((len, c)) = troubled_part_at(&scan, i) {
            scan.claim(i, len, Item::Concept(Concept::Condition(c)));
            i += len;
            continue;
        }
        // "uncleared", "unresolved": the state word negated by its prefix.
        if let Some(concept) = un_negated(scan.word(i)) {
            scan.claim(i, 1, Item::Concept(concept));
            i += 1;
            continue;
        }
        if let Some((len, concept)) = lexicon_at(&scan, i, |_| true) {
            // "haven't been acknowledged", "aren't running", "not cleared": a negation before
            // a state word asks for the opposite state.
            if let Some(k) = negation_before(&scan, i)
                && let Some(opposite) = negated(&concept)
            {
                scan.claim(k, i + len - k, Item::Concept(opposite));
            } else {
                scan.claim(i, len, Item::Concept(concept));
            }
            i += len;
        } else {
            i += 1;
        }
    }
    // 6. Display units ("in °F", "in bar") and leftovers.
    let mut unknown = Vec::new();
    for i in 0..n {
        if scan.used[i] {
            continue;
        }
        let t = &tokens[i];
        // A lone letter is a unit only as a temperature scale asked for: "in F", "in C"
        // ("a", "v", "g" alone are words or a well's letter).
        let scale_asked = matches!(t.text.as_str(), "c" | "f")
            && i > 0
            && matches!(tokens[i - 1].text.as_str(), "in" | "into" | "as");
        if let Some(u) = Unit::from_word(&t.text)
            && (t.text.len() > 1 || scale_asked)
            && !matches!(t.text.as_str(), "deg" | "degree" | "degrees")
        {
            scan.claim(i, 1, Item::DisplayUnit(u));
            continue;
        }
        // "no open alarms", "never had a gas lock", "not gas locked", "without alarms": the
        // wells without them. A negation of anything else is not understood (never dropped).
        if WITHOUT_WORDS.contains(&t.text.as_str())
            && let Some(end) = negated_alarm_after(&scan, i)
        {
            for u in &mut scan.used[i..end] {
                *u = true;
            }
            scan.items.push((i, Item::Without));
            continue;
        }
        if matches!(t.kind, Kind::Symbol) || lexicon::FILLER.contains(&t.text.as_str()) {
            continue;
        }
        // "south pad", "eagle wells": a group that is not in the registry (or not visible):
        // never widened to the whole fleet.
        if matches!(t.kind, Kind::Word)
            && matches!(
                tokens.get(i + 1).map(|t| t.text.as_str()),
                Some("pad" | "pads" | "field" | "platform" | "area" | "wells")
            )
        {
            scan.items.push((
                i,
                Item::UnknownWell(format!("{} {}", t.raw, tokens[i + 1].raw)),
            ));
        }
        unknown.push(t.raw.clone());
    }
    scan.items.sort_by_key(|(pos, _)| *pos);
    let mut it = decide(&scan.items, unknown, dir, question)?;
    if let Some(TimeSpec::Lasting(d)) = it.time {
        // "for 2 hours" outside "no data": the last 2 hours.
        it.time = Some(TimeSpec::Range {
            from: Timestamp(clock.now.0 - d),
            to: clock.now,
            label: format!("the last {}", format_duration_micros(d)),
        });
    }
    Ok(it)
}

/// Everything recognised, gathered.
#[derive(Default)]
struct Parts {
    wells: Vec<WellId>,
    explicit_wells: usize,
    groups: Vec<String>,
    unknown_wells: Vec<String>,
    channels: Vec<Field>,
    channel_pos: Vec<(usize, Vec<Field>)>,
    /// A verb's channel ("making": flow), used when no channel is named.
    activity: Option<(usize, &'static [Field])>,
    ambiguous: Vec<(usize, Ambiguity)>,
    parts: Vec<Part>,
    condition: Option<Condition>,
    agg: Option<Agg>,
    extreme: Option<Order>,
    rank_by: Option<(&'static [Field], Order)>,
    thresholds: Vec<(usize, Cmp, f64, Option<Unit>)>,
    cues: Vec<Cue>,
    alarm_state: Option<AlarmStateQuery>,
    run_state: Option<RunState>,
    wells_word: bool,
    count: Option<usize>,
    time: Option<TimeSpec>,
    units: Vec<Unit>,
    step: Option<i64>,
    future: Option<String>,
    without: bool,
    /// A comparison word with no number after it ("below", "more than").
    lone_cmp: Option<Cmp>,
    /// The well a mistyped id most likely meant, for the rephrasings only.
    suggest_well: Option<WellId>,
}

impl Parts {
    fn has(&self, cue: Cue) -> bool {
        self.cues.contains(&cue)
    }

    fn add_channels(&mut self, pos: usize, fields: &[Field]) {
        for f in fields {
            if !self.channels.contains(f) {
                self.channels.push(*f);
            }
        }
        self.channel_pos.push((pos, fields.to_vec()));
    }
}

fn decide(
    items: &[(usize, Item)],
    unknown: Vec<String>,
    dir: &Directory,
    question: &str,
) -> Result<Interpretation, NotUnderstood> {
    let mut p = Parts::default();
    for (pos, item) in items {
        match item {
            Item::Wells(ks) => {
                for &k in ks {
                    let id = dir.id(k);
                    if !p.wells.contains(&id) {
                        p.wells.push(id);
                        p.explicit_wells += 1;
                    }
                }
            }
            Item::Group(name, ks) => {
                p.groups.push(name.clone());
                for &k in ks {
                    let id = dir.id(k);
                    if !p.wells.contains(&id) {
                        p.wells.push(id);
                    }
                }
            }
            Item::UnknownWell(w) => p.unknown_wells.push(w.clone()),
            Item::Time(spec) => {
                if p.time.is_none() || matches!(p.time, Some(TimeSpec::Now)) {
                    p.time = Some(spec.clone());
                }
            }
            Item::Threshold { cmp, value, unit } => p.thresholds.push((*pos, *cmp, *value, *unit)),
            Item::Count(c) => p.count = Some(*c),
            Item::Step(step) => {
                p.step.get_or_insert(*step);
            }
            Item::Future(words) => {
                p.future.get_or_insert(words.clone());
            }
            Item::Without => p.without = true,
            Item::DisplayUnit(u) => {
                if !p.units.contains(u) {
                    p.units.push(*u);
                }
            }
            Item::Concept(c) => match c {
                Concept::Channel(fields) => p.add_channels(*pos, fields),
                Concept::Ambiguous(a) => p.ambiguous.push((*pos, *a)),
                Concept::Part(part) => p.parts.push(*part),
                Concept::Condition(c) => {
                    p.condition.get_or_insert(*c);
                }
                Concept::Agg(a) => {
                    p.agg.get_or_insert(*a);
                }
                Concept::Extreme(o) => {
                    p.extreme.get_or_insert(*o);
                }
                Concept::RankBy(fields, o) => {
                    p.rank_by.get_or_insert((fields, *o));
                }
                Concept::Cmp(c) => {
                    p.lone_cmp.get_or_insert(*c);
                }
                Concept::Filler => {}
                Concept::Cue(cue) => p.cues.push(*cue),
                Concept::AlarmState(s) => {
                    p.alarm_state.get_or_insert(*s);
                }
                Concept::RunState(s) => {
                    p.run_state.get_or_insert(*s);
                }
                Concept::Wells => p.wells_word = true,
                Concept::Activity(fields) => {
                    p.activity.get_or_insert((*pos, *fields));
                }
            },
        }
    }
    let fail = |p: &Parts, message: String| -> NotUnderstood {
        not_understood(p, message, &unknown, dir, question)
    };
    if let Some(w) = p.unknown_wells.first().cloned() {
        let near = dir.near(&w);
        p.suggest_well = near.first().and_then(|n| WellId::parse(n).ok());
        let message = if near.is_empty() {
            format!("no well, field or pad {w:?} is registered (or visible to you)")
        } else {
            format!(
                "no well {w:?} is registered; did you mean {}?",
                near.join(" or ")
            )
        };
        return Err(fail(&p, message));
    }
    // Nothing is dropped: a word that changes the question and was not placed is a refusal,
    // never a default ("no open alarms" read as open alarms, "tomorrow" as now, a date that
    // does not exist as no date, "below" with no number as no threshold).
    if let Some(words) = &p.future {
        return Err(fail(
            &p,
            format!(
                "\u{201c}{words}\u{201d} asks about the future: ask answers from what has been \
                 measured and diagnosed, it does not forecast."
            ),
        ));
    }
    if let Some(bad) = unknown.iter().find(|w| looks_like_date_or_time(w)) {
        return Err(fail(
            &p,
            format!(
                "\u{201c}{bad}\u{201d} is not a date or a time I can read (YYYY-MM-DD, HH:MM)."
            ),
        ));
    }
    if let Some(neg) = unknown.iter().find(|w| {
        WITHOUT_WORDS.contains(&w.to_lowercase().as_str())
            || NEGATORS.contains(&w.to_lowercase().as_str())
    }) {
        return Err(fail(
            &p,
            format!(
                "I could not tell what \u{201c}{neg}\u{201d} applies to, and leaving it out would \
                 answer the opposite question."
            ),
        ));
    }
    if let Some(num) = unknown.iter().find(|w| w.parse::<f64>().is_ok()) {
        return Err(fail(
            &p,
            format!("I could not tell what the number {num} refers to."),
        ));
    }
    if !unknown.is_empty() {
        let words: Vec<String> = unknown
            .iter()
            .map(|w| format!("\u{201c}{w}\u{201d}"))
            .collect();
        return Err(fail(
            &p,
            format!(
                "I do not know {} {}; I do not answer with {} left out, as {} could change the question.",
                if words.len() == 1 {
                    "the word"
                } else {
                    "the words"
                },
                words.join(", "),
                if words.len() == 1 { "it" } else { "them" },
                if words.len() == 1 { "it" } else { "they" },
            ),
        ));
    }
    if let Some(cmp) = p.lone_cmp {
        return Err(fail(
            &p,
            format!(
                "{} what? Give the threshold as a number with its unit.",
                capitalised(cmp.words())
            ),
        ));
    }
    if p.thresholds.len() > 1 {
        return Err(fail(
            &p,
            "one threshold at a time: ask for each of them separately.".into(),
        ));
    }
    // Ambiguous words settled by a part named elsewhere ("temperature of the motor").
    for (pos, a) in p.ambiguous.clone() {
        let field = match a {
            Ambiguity::Pressure => {
                if p.parts.contains(&Part::Intake) {
                    Some(Field::IntakePressurePsi)
                } else if p.parts.contains(&Part::Tubing) {
                    Some(Field::TubingPressurePsi)
                } else if p
                    .channels
                    .iter()
                    .any(|f| units::quantity_of(*f) == units::Quantity::Pressure)
                {
                    None
                } else {
                    return Err(fail(
                        &p,
                        "which pressure: intake (PIP), discharge or tubing (wellhead)?".into(),
                    ));
                }
            }
            Ambiguity::Temperature => {
                if p.parts.contains(&Part::Motor) {
                    Some(Field::MotorTempC)
                } else if p.parts.contains(&Part::Intake) {
                    Some(Field::IntakeTempC)
                } else if p
                    .channels
                    .iter()
                    .any(|f| units::quantity_of(*f) == units::Quantity::Temperature)
                {
                    None
                } else {
                    return Err(fail(
                        &p,
                        "which temperature: motor (winding) or intake (fluid)?".into(),
                    ));
                }
            }
        };
        if let Some(f) = field {
            p.add_channels(pos, &[f]);
        }
    }
    if p.channels.is_empty() && p.ambiguous.is_empty() {
        if p.parts.contains(&Part::Intake) {
            p.add_channels(usize::MAX, &[Field::IntakePressurePsi]);
        } else if p.parts.contains(&Part::Tubing) {
            p.add_channels(usize::MAX, &[Field::TubingPressurePsi]);
        }
    }
    if let Some((pos, fields)) = p.activity
        && p.channels.is_empty()
        && p.ambiguous.is_empty()
        && p.rank_by.is_none()
        && (p.wells_word || !p.wells.is_empty())
    {
        p.add_channels(pos, fields);
    }
    if let Some((fields, order)) = p.rank_by
        && p.channels.is_empty()
    {
        p.add_channels(usize::MAX, fields);
        p.extreme.get_or_insert(order);
    }
    // "what's ESP-001 pumping in bpd": the unit asked for names the channel when none is
    // named (units of one channel only: a temperature or a % could be several).
    if p.channels.is_empty()
        && p.ambiguous.is_empty()
        && p.thresholds.is_empty()
        && p.condition.is_none()
        && !p.has(Cue::Alarm)
        && !p.has(Cue::Status)
        && !p.has(Cue::Why)
        && (p.explicit_wells > 0 || p.wells_word)
        && let [u] = p.units[..]
        && !matches!(
            u.quantity(),
            units::Quantity::Temperature | units::Quantity::Fraction
        )
        && let Some(f) = implied_channel(u)
    {
        p.add_channels(usize::MAX, &[f]);
    }
    // Thresholds: the channel named nearest before (else after), or the one its unit implies.
    let mut filter = None;
    if let Some(&(pos, cmp, value, unit)) = p.thresholds.first() {
        let named = p
            .channel_pos
            .iter()
            .filter(|(cp, _)| *cp < pos)
            .max_by_key(|(cp, _)| *cp)
            .or_else(|| {
                p.channel_pos
                    .iter()
                    .filter(|(cp, _)| *cp > pos)
                    .min_by_key(|(cp, _)| *cp)
            })
            .map(|(_, f)| f.clone());
        let channels = match (named, unit) {
            (Some(f), _) => f,
            (None, Some(u)) => match implied_channel(u) {
                Some(f) => {
                    p.add_channels(pos, &[f]);
                    vec![f]
                }
                None => {
                    return Err(fail(
                        &p,
                        format!(
                            "{} {} of which channel: intake (PIP), discharge or tubing pressure?",
                            fmt_number(value),
                            u.symbol()
                        ),
                    ));
                }
            },
            (None, None) => {
                return Err(fail(
                    &p,
                    format!(
                        "{} {}: of which channel, in which unit?",
                        cmp.words(),
                        fmt_number(value)
                    ),
                ));
            }
        };
        let canonical = Unit::canonical_of(channels[0]);
        let unit = unit.unwrap_or(canonical);
        if unit.quantity() != canonical.quantity() {
            return Err(fail(
                &p,
                format!(
                    "{} {} is not a unit of {}",
                    fmt_number(value),
                    unit.symbol(),
                    channels[0].name()
                ),
            ));
        }
        if unit != canonical && !p.units.contains(&unit) {
            p.units.push(unit);
        }
        filter = Some(Filter {
            channels,
            cmp,
            value: unit.to_canonical(value),
            unit,
            written: value,
        });
    }
    let explicit = p.explicit_wells;
    let rank_words = p.has(Cue::Rank)
        || p.rank_by.is_some()
        || p.count.is_some()
        || (explicit == 0
            && p.wells.is_empty()
            && (p.extreme.is_some()
                || (p.agg.is_some_and(|a| matches!(a, Agg::Max | Agg::Min)) && p.has(Cue::Which)))
            && (p.wells_word || p.has(Cue::Which)));
    // "against" compares only wells named on both sides of it.
    let compare_cue = p.has(Cue::Compare) || (p.has(Cue::Against) && p.wells.len() >= 2);
    let intent = if p.has(Cue::NoData) {
        Intent::NoData
    } else if compare_cue
        || (explicit >= 2 && !p.channels.is_empty() && filter.is_none() && !p.has(Cue::Trend))
    {
        if p.wells.len() < 2 {
            return Err(fail(&p, "compare which wells? Name two or more.".into()));
        }
        if p.channels.is_empty() {
            return Err(fail(&p, "compare them on which channel?".into()));
        }
        Intent::Compare
    } else if (p.has(Cue::Why) || (p.has(Cue::Trip) && explicit > 0)) && explicit >= 1 {
        Intent::Diagnosis
    } else if p.condition.is_some() {
        Intent::Condition
    } else if p.has(Cue::Alarm) || (p.alarm_state.is_some() && p.channels.is_empty()) {
        Intent::Alarms
    } else if filter.is_some() {
        Intent::Filter
    } else if rank_words && !p.channels.is_empty() && explicit == 0 {
        Intent::Top
    } else if p.has(Cue::How)
        && explicit >= 1
        && p.channels.is_empty()
        && unknown.is_empty()
        && p.run_state != Some(RunState::Stopped)
        && !p.has(Cue::Trip)
    {
        // "how is Kestrel 3 running", "how are things on ESP-004": how the well is doing.
        Intent::Status
    } else if (p.run_state.is_some() || p.has(Cue::Trip)) && p.channels.is_empty() {
        Intent::RunState
    } else if !p.channels.is_empty() {
        if p.has(Cue::Trend) {
            Intent::Trend
        } else if p.agg.is_some() || p.extreme.is_some() {
            Intent::Aggregate
        } else if matches!(p.time, Some(TimeSpec::Range { .. } | TimeSpec::BeforeTrip)) {
            Intent::Trend
        } else {
            Intent::Value
        }
    } else if explicit >= 1
        && (p.has(Cue::Status) || (unknown.is_empty() && p.cues.iter().all(|c| *c == Cue::Which)))
    {
        Intent::Status
    } else if p.has(Cue::Why) {
        return Err(fail(
            &p,
            "which well? Name it (for example ESP-003).".into(),
        ));
    } else {
        return Err(fail(&p, "I could not tell what you are asking.".into()));
    };
    // A step asks for a series: of a channel's value, average, min or max.
    let span = match &p.time {
        Some(TimeSpec::Range { from, to, .. }) => to.0 - from.0,
        _ => 24 * 3_600_000_000,
    };
    // "what did ESP-003 look like before the trip", "how was ESP-003 doing yesterday": a
    // status over a time is the trend of the channels a status shows, never the status now.
    let intent = if intent == Intent::Status
        && matches!(p.time, Some(TimeSpec::Range { .. } | TimeSpec::BeforeTrip))
    {
        p.add_channels(usize::MAX, STATUS_CHANNELS);
        Intent::Trend
    } else {
        intent
    };
    // "current" alone: one word, no well, no fleet word, nothing asked of it ("what is the
    // motor current" asks the fleet's).
    if intent == Intent::Value
        && question.split_whitespace().count() == 1
        && p.wells.is_empty()
        && p.groups.is_empty()
        && !p.wells_word
        && p.cues.is_empty()
        && p.time.is_none()
        && p.units.is_empty()
    {
        return Err(fail(
            &p,
            format!(
                "{} of which wells? Name a well, a field, or say all wells.",
                capitalised(channel_words(p.channels[0]))
            ),
        ));
    }
    // "daily average flow on Monday": one calendar day asked for by the day, whose one bucket
    // is the aggregate itself ("daily average this week" stays a series, however early in the
    // week it is asked).
    let one_day = matches!(&p.time, Some(TimeSpec::Range { label, .. })
        if label == "today" || label == "yesterday" || label.starts_with("on "));
    if let Some(step) = p.step
        && intent == Intent::Aggregate
        && one_day
        && step >= 24 * 3_600_000_000
    {
        p.step = None;
    }
    let intent = match (p.step, intent) {
        (Some(_), Intent::Value | Intent::Aggregate | Intent::Trend) => Intent::Trend,
        (Some(step), _) => {
            return Err(fail(
                &p,
                format!(
                    "\u{201c}every {}\u{201d} applies to a trend of a channel of named wells.",
                    format_duration_micros(step)
                ),
            ));
        }
        (None, intent) => intent,
    };
    if let Some(step) = p.step
        && span / step > MAX_ASKED_BUCKETS as i64
    {
        return Err(fail(
            &p,
            format!(
                "every {} over that range is {} points, more than {MAX_ASKED_BUCKETS}: ask \
                     for a longer step or a shorter range.",
                format_duration_micros(step),
                span / step
            ),
        ));
    }
    if p.without && !matches!(intent, Intent::Alarms | Intent::Condition) {
        return Err(fail(
            &p,
            "a negation applies to alarms and conditions (\u{201c}wells with no open alarms\u{201d}).".into(),
        ));
    }
    let mut it = Interpretation::new(intent);
    it.without = p.without;
    it.wells = p.wells.clone();
    it.groups = p.groups.clone();
    it.condition = p.condition;
    it.channels = p.channels.clone();
    it.units = p.units.clone();
    it.time = p.time.clone();
    match intent {
        Intent::NoData => {
            if let Some(TimeSpec::Lasting(d)) = it.time {
                it.stale_for = Some(d);
                it.time = None;
            } else if let Some(TimeSpec::Range { from, to, .. }) = it.time {
                it.stale_for = Some(to.0 - from.0);
                it.time = None;
            }
            it.channels.clear();
        }
        Intent::Aggregate => {
            it.agg = p.agg.or(match p.extreme {
                Some(Order::Desc) => Some(Agg::Max),
                Some(Order::Asc) => Some(Agg::Min),
                None => None,
            });
        }
        Intent::Compare => it.agg = p.agg,
        Intent::Top => {
            it.order = Some(p.extreme.or(p.rank_by.map(|r| r.1)).unwrap_or(match p.agg {
                Some(Agg::Min) => Order::Asc,
                _ => Order::Desc,
            }));
            it.limit = p.count;
            it.agg = p.agg.filter(|a| *a == Agg::Avg);
        }
        Intent::Filter => {
            it.filter = filter;
            it.agg = p.agg;
        }
        Intent::Alarms => {
            it.alarm_state = p.alarm_state;
            // "wells with no alarms": none open now (a cleared alarm of last month does not
            // count), said in the interpretation.
            if p.without && it.alarm_state.is_none() && it.range().is_none() {
                it.alarm_state = Some(AlarmStateQuery::Open);
            }
        }
        Intent::RunState => {
            it.run_state = Some(p.run_state.unwrap_or(RunState::Stopped));
            if it.time == Some(TimeSpec::Now) {
                it.time = None;
            }
        }
        Intent::Condition | Intent::Diagnosis | Intent::Status => {
            it.channels.clear();
            if it.time == Some(TimeSpec::Now) {
                it.time = None;
            }
        }
        Intent::Trend => {
            it.step = p.step;
            it.agg = p.agg;
        }
        Intent::Value => {}
    }
    // "now" is what every answer without a time reads (the latest values, open alarms, the
    // live state), so it adds nothing to the interpretation; only an aggregate or a trend
    // read a range, and there it stays for the answer to say how it read it.
    if !matches!(intent, Intent::Aggregate | Intent::Trend) && it.time == Some(TimeSpec::Now) {
        it.time = None;
    }
    Ok(it)
}

/// The channels a well's status shows: its trend over a time is these.
pub const STATUS_CHANNELS: &[Field] = &[
    Field::FrequencyHz,
    Field::MotorCurrentA,
    Field::IntakePressurePsi,
    Field::MotorTempC,
    Field::FlowRateBpd,
];

/// The most buckets a step asked for may make.
pub const MAX_ASKED_BUCKETS: usize = 2000;

/// A word that looks like a date or a clock time but is not one that was read ("2026-02-30",
/// "25:00", "12/31").
fn looks_like_date_or_time(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| matches!(c, '-' | ':' | '/'))
        && word.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, '-' | ':' | '/' | '.' | 't' | 'T' | 'z' | 'Z')
        })
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn implied_channel(unit: Unit) -> Option<Field> {
    Some(match unit {
        Unit::Hz => Field::FrequencyHz,
        Unit::Amp => Field::MotorCurrentA,
        Unit::Volt => Field::MotorVoltageV,
        Unit::Bpd | Unit::M3d => Field::FlowRateBpd,
        Unit::DegC | Unit::DegF => Field::MotorTempC,
        Unit::G => Field::VibrationXG,
        Unit::Pct => Field::WaterCutPct,
        Unit::ScfBbl => Field::GorScfBbl,
        Unit::Psi | Unit::KPa | Unit::MPa | Unit::Bar => return None,
    })
}

/// Operator words for a channel, for answers and rephrasings.
pub fn channel_words(f: Field) -> &'static str {
    match f {
        Field::FrequencyHz => "frequency",
        Field::MotorCurrentA => "motor current",
        Field::MotorVoltageV => "motor voltage",
        Field::IntakePressurePsi => "intake pressure",
        Field::DischargePressurePsi => "discharge pressure",
        Field::TubingPressurePsi => "tubing pressure",
        Field::IntakeTempC => "intake temperature",
        Field::MotorTempC => "motor temperature",
        Field::VibrationXG => "vibration X",
        Field::VibrationYG => "vibration Y",
        Field::FlowRateBpd => "flow rate",
        Field::GorScfBbl => "GOR",
        Field::WaterCutPct => "water cut",
    }
}

/// Operator words for a condition.
pub fn condition_words(c: Condition) -> &'static str {
    match c {
        Condition::GasInterference => "gas interference",
        Condition::GasLock => "gas lock",
        Condition::PumpOff => "pump-off",
        Condition::ClosedValve => "a closed valve (deadhead)",
        Condition::TubingLeak => "a tubing leak",
        Condition::BrokenShaft => "a broken shaft",
        Condition::PumpWear => "pump wear",
        Condition::ScalePlugging => "scale plugging",
        Condition::Overload => "overload",
        Condition::MotorOverheat => "motor overheating",
        Condition::PowerFluctuation => "power fluctuation",
        Condition::SensorFault => "a sensor fault",
    }
}

fn not_understood(
    p: &Parts,
    message: String,
    unknown: &[String],
    dir: &Directory,
    question: &str,
) -> NotUnderstood {
    let well = p
        .wells
        .first()
        .or(p.suggest_well.as_ref())
        .or_else(|| dir.wells.first().map(|w| &w.id))
        .map_or_else(|| "ESP-001".to_owned(), WellId::to_string);
    let channel = p.channels.first().copied().or(match p.ambiguous.first() {
        Some((_, Ambiguity::Temperature)) => Some(Field::MotorTempC),
        Some((_, Ambiguity::Pressure)) => Some(Field::IntakePressurePsi),
        None => None,
    });
    let mut suggestions = Vec::new();
    let time_words = match &p.time {
        Some(TimeSpec::Range { label, .. }) => label.clone(),
        _ => "yesterday".into(),
    };
    if let Some(c) = p.condition {
        suggestions.push(format!(
            "which wells had {} {time_words}",
            condition_words(c)
        ));
    }
    match channel {
        Some(f) => {
            let words = channel_words(f);
            // The threshold again, in its unit; never a number whose unit was not read ("5
            // mpa" with an unknown unit is not offered back as 5 psi).
            if let Some(&(_, cmp, value, unit)) = p.thresholds.first()
                && (unit.is_some() || unknown.is_empty())
            {
                let unit = unit
                    .filter(|u| u.quantity() == units::quantity_of(f))
                    .unwrap_or(Unit::canonical_of(f));
                suggestions.push(format!(
                    "wells with {words} {} {} {}",
                    cmp.words(),
                    fmt_number(value),
                    unit.symbol()
                ));
            }
            suggestions.push(format!("what is the {words} of {well} now"));
            suggestions.push(format!("average {words} of {well} {time_words}"));
            suggestions.push(format!("top 5 wells by {words}"));
        }
        None => {
            if !p.wells.is_empty() {
                suggestions.push(format!("what is wrong with {well}"));
                suggestions.push(format!("status of {well}"));
                suggestions.push(format!("motor current of {well} over the last 24 hours"));
            } else {
                suggestions.push("which wells have an open alarm".into());
                suggestions.push(format!("what is the intake pressure of {well} now"));
                suggestions.push("which wells had a gas lock this week".into());
            }
        }
    }
    suggestions.dedup();
    suggestions.truncate(3);
    let mut recognised = serde_json::Map::new();
    if !p.wells.is_empty() {
        recognised.insert("wells".into(), json!(p.wells));
    }
    if !p.groups.is_empty() {
        recognised.insert("groups".into(), json!(p.groups));
    }
    if !p.channels.is_empty() {
        recognised.insert(
            "channels".into(),
            json!(p.channels.iter().map(|f| f.name()).collect::<Vec<_>>()),
        );
    }
    if let Some(c) = p.condition {
        recognised.insert("condition".into(), json!(c.name()));
    }
    if let Some(a) = p.agg {
        recognised.insert("agg".into(), json!(a.name()));
    }
    if let Some(TimeSpec::Range { from, to, label }) = &p.time {
        recognised.insert("from".into(), json!(from.to_rfc3339()));
        recognised.insert("to".into(), json!(to.to_rfc3339()));
        recognised.insert("time".into(), json!(label));
    }
    if let Some(s) = p.alarm_state {
        recognised.insert("alarm_state".into(), json!(s.name()));
    }
    if let Some(s) = p.run_state {
        recognised.insert("run_state".into(), json!(s.name()));
    }
    let _ = question;
    NotUnderstood {
        message,
        recognised: Value::Object(recognised),
        unknown: unknown.to_vec(),
        suggestions,
        command: None,
    }
}
