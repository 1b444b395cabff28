//! Time expressions: "now", "today", "yesterday", "last night", "this week", "last 24 hours",
//! "since Monday", "between 2026-11-20 and 2026-11-22", "on Nov 21", "before the trip".
//! Calendar words are read in the display zone (a fixed UTC offset); ranges are UTC instants,
//! `[from, to)`.

use chrono::{Datelike, NaiveDate};

use super::tokens::Token;
use crate::localtime::UtcOffset;
use crate::telemetry::Timestamp;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The moment a question is asked and the zone its calendar words are read in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    pub now: Timestamp,
    pub zone: UtcOffset,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TimeSpec {
    /// The latest values ("now", "currently", "latest").
    Now,
    /// A range `[from, to)` and how to say it ("yesterday", "the last 6 hours").
    Range {
        from: Timestamp,
        to: Timestamp,
        label: String,
    },
    /// The hours before the well's last trip: resolved against the data by the caller.
    BeforeTrip,
    /// A duration without an end ("for 2 hours", "in 30 minutes") — how long something has
    /// lasted, used by "no data for an hour".
    Lasting(i64),
}

impl Clock {
    fn offset(&self) -> i64 {
        self.zone.seconds() as i64 * 1_000_000
    }

    /// Start (UTC) of the local day `days` days from today (negative: before).
    fn day_start(&self, days: i64) -> i64 {
        let local = self.now.0 + self.offset();
        local.div_euclid(DAY) * DAY + days * DAY - self.offset()
    }

    /// Monday = 0.
    fn weekday(&self) -> i64 {
        let local_day = (self.now.0 + self.offset()).div_euclid(DAY);
        (local_day + 3).rem_euclid(7)
    }

    fn date_start(&self, date: NaiveDate) -> i64 {
        let days = date
            .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
            .num_days();
        days * DAY - self.offset()
    }

    fn today(&self) -> NaiveDate {
        let days = (self.now.0 + self.offset()).div_euclid(DAY);
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(days as u64)
    }

    fn range(&self, from: i64, to: i64, label: impl Into<String>) -> TimeSpec {
        TimeSpec::Range {
            from: Timestamp(from),
            to: Timestamp(to.min(self.now.0).max(from + 1)),
            label: label.into(),
        }
    }
}

const WEEKDAYS: [(&str, &str); 7] = [
    ("monday", "mon"),
    ("tuesday", "tue"),
    ("wednesday", "wed"),
    ("thursday", "thu"),
    ("friday", "fri"),
    ("saturday", "sat"),
    ("sunday", "sun"),
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn weekday_of(word: &str) -> Option<i64> {
    WEEKDAYS
        .iter()
        .position(|(long, short)| {
            word == *long || word == *short || (word.len() >= 5 && super::tokens::close(word, long))
        })
        .map(|i| i as i64)
}

fn month_of(word: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| {
            word == *m
                || (word.len() == 3 && m.starts_with(word))
                || word == "sept" && *m == "september"
        })
        .map(|i| i as u32 + 1)
}

/// Spelled-out small numbers ("five wells", "two hours", "an hour").
pub fn number_word(word: &str) -> Option<f64> {
    Some(match word {
        "a" | "an" | "one" => 1.0,
        "two" | "couple" => 2.0,
        "three" | "few" => 3.0,
        "four" => 4.0,
        "five" => 5.0,
        "six" => 6.0,
        "seven" => 7.0,
        "eight" => 8.0,
        "nine" => 9.0,
        "ten" => 10.0,
        "twelve" => 12.0,
        "fifteen" => 15.0,
        "twenty" => 20.0,
        "thirty" => 30.0,
        "fortyeight" => 48.0,
        _ => return None,
    })
}

/// Microseconds of a duration unit word, with its canonical name.
pub fn duration_unit(word: &str) -> Option<(i64, &'static str)> {
    Some(match word {
        "s" | "sec" | "secs" | "second" | "seconds" => (1_000_000, "second"),
        "m" | "min" | "mins" | "minute" | "minutes" => (MINUTE, "minute"),
        "h" | "hr" | "hrs" | "hour" | "hours" => (HOUR, "hour"),
        "d" | "day" | "days" => (DAY, "day"),
        "w" | "wk" | "wks" | "week" | "weeks" => (7 * DAY, "week"),
        _ => return None,
    })
}

fn plural(n: f64, unit: &str) -> String {
    if n == 1.0 {
        format!("the last {unit}")
    } else {
        format!("the last {} {unit}s", fmt_num(n))
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A calendar date at `tokens[i..]`: `2026-11-20`, `nov 20`, `20 nov`, `november 20th`,
/// `20th of november`; with its length.
fn date_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, NaiveDate)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let t0 = w(0);
    if t0.len() == 10
        && let Ok(d) = NaiveDate::parse_from_str(t0, "%Y-%m-%d")
    {
        return Some((1, d));
    }
    let ordinal = |k: usize| matches!(w(k), "st" | "nd" | "rd" | "th");
    let this_year = |m: u32, d: u32| {
        let today = clock.today();
        let date = NaiveDate::from_ymd_opt(today.year(), m, d)?;
        if date > today {
            NaiveDate::from_ymd_opt(today.year() - 1, m, d)
        } else {
            Some(date)
        }
    };
    if let Some(m) = month_of(t0)
        && let Some(d) = tokens.get(i + 1).and_then(Token::number)
        && d.fract() == 0.0
        && (1.0..=31.0).contains(&d)
    {
        let len = 2 + usize::from(ordinal(2));
        return this_year(m, d as u32).map(|date| (len, date));
    }
    if let Some(d) = tokens.get(i).and_then(Token::number)
        && d.fract() == 0.0
        && (1.0..=31.0).contains(&d)
    {
        let mut k = 1 + usize::from(ordinal(1));
        if w(k) == "of" {
            k += 1;
        }
        if let Some(m) = month_of(w(k)) {
            return this_year(m, d as u32).map(|date| (k + 1, date));
        }
    }
    None
}

/// A clock time `08:00` / `8am` / `8 pm` / `noon`: its offset from the local midnight, with
/// its length.
fn hm_at(tokens: &[Token], i: usize) -> Option<(usize, i64)> {
    let t = tokens.get(i)?;
    match t.text.as_str() {
        "noon" | "midday" => return Some((1, 12 * HOUR)),
        "midnight" => return Some((1, 0)),
        _ => {}
    }
    let (mut h, m, mut len) = if let Some((a, b)) = t.text.split_once(':') {
        if b.len() != 2 || a.is_empty() || a.len() > 2 {
            return None;
        }
        (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?, 1)
    } else {
        let n = t.number()?;
        if n.fract() != 0.0 {
            return None;
        }
        let next = tokens.get(i + 1).map(|t| t.text.as_str());
        if !matches!(next, Some("am" | "pm")) {
            return None;
        }
        (n as i64, 0, 1)
    };
    match tokens.get(i + len).map(|t| t.text.as_str()) {
        Some("am") if h <= 12 => {
            if h == 12 {
                h = 0;
            }
            len += 1;
        }
        Some("pm") if h <= 12 => {
            if h < 12 {
                h += 12;
            }
            len += 1;
        }
        _ => {}
    }
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    Some((len, h * HOUR + m * MINUTE))
}

/// A clock time today, as a UTC instant.
fn clock_time_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, i64)> {
    hm_at(tokens, i).map(|(len, off)| (len, clock.day_start(0) + off))
}

/// `HH:MM` of an offset from midnight.
fn hm_label(off: i64) -> String {
    format!("{:02}:{:02}", off / HOUR, off % HOUR / MINUTE)
}

/// A day named at `tokens[i]`: `today`, `yesterday` (`yday`), a date, a weekday (the last
/// one, today included): (length, start of the day as a UTC instant, its label).
fn day_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, i64, String)> {
    let w = tokens.get(i).map(|t| t.text.as_str()).unwrap_or("");
    if matches!(w, "today" | "todays") {
        return Some((1, clock.day_start(0), "today".into()));
    }
    if is_yesterday(w) {
        return Some((1, clock.day_start(-1), "yesterday".into()));
    }
    if let Some((len, date)) = date_at(tokens, i, clock) {
        return Some((len, clock.date_start(date), date.to_string()));
    }
    if let Some(wd) = weekday_of(w) {
        let back = (clock.weekday() - wd).rem_euclid(7);
        let name = WEEKDAYS[wd as usize].0;
        return Some((
            1,
            clock.day_start(-back),
            format!("{}{}", name[..1].to_uppercase(), &name[1..]),
        ));
    }
    None
}

/// "yesterday" and how it is shortened or mistyped: "yday", "yest", "yesterdays", "yesteday".
pub fn is_yesterday(word: &str) -> bool {
    matches!(
        word,
        "yesterday" | "yesterdays" | "yday" | "yest" | "ystd" | "ydy"
    ) || (word.starts_with('y') && super::tokens::close(word, "yesterday"))
}

/// One end of a range: a day, a day with a clock time (`2026-12-06 06:00`, `yesterday at
/// 14:00`, `14:00 yesterday`), or a clock time alone.
#[derive(Clone, Debug)]
enum End {
    Day(i64, String),
    Instant(i64, String),
    Clock(i64),
}

fn end_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, End)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    if w(0) == "now" {
        return Some((1, End::Instant(clock.now.0, "now".into())));
    }
    if let Some((dl, day, label)) = day_at(tokens, i, clock) {
        let k = dl + usize::from(matches!(w(dl), "at" | "around"));
        if let Some((hl, off)) = hm_at(tokens, i + k) {
            return Some((
                k + hl,
                End::Instant(day + off, format!("{label} {}", hm_label(off))),
            ));
        }
        return Some((dl, End::Day(day, label)));
    }
    let (hl, off) = hm_at(tokens, i)?;
    let k = hl + usize::from(w(hl) == "on");
    if let Some((dl, day, label)) = day_at(tokens, i + k, clock) {
        return Some((
            k + dl,
            End::Instant(day + off, format!("{label} {}", hm_label(off))),
        ));
    }
    Some((hl, End::Clock(off)))
}

/// A range between two ends ("between 2026-12-06 06:00 and 2026-12-06 12:00", "from 06:00 to
/// 12:00 yesterday"), starting at the first end.
fn between_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, TimeSpec)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let (l1, a) = end_at(tokens, i, clock)?;
    if !matches!(w(l1), "and" | "to" | "until" | "till" | "through" | "-") {
        return None;
    }
    let (l2, b) = end_at(tokens, i + l1 + 1, clock)?;
    let mut len = l1 + 1 + l2;
    let (from, to, label) = match (a, b) {
        (End::Day(d1, l1), End::Day(d2, l2)) => {
            if d2 < d1 {
                return None;
            }
            (d1, d2 + DAY, format!("from {l1} to {l2}"))
        }
        (End::Day(d1, l1), End::Instant(t, l2)) => (d1, t, format!("from {l1} to {l2}")),
        (End::Instant(t, l1), End::Day(d2, l2)) => (t, d2 + DAY, format!("from {l1} to {l2}")),
        (End::Instant(t1, l1), End::Instant(t2, l2)) => (t1, t2, format!("from {l1} to {l2}")),
        (End::Instant(t1, l1), End::Clock(off)) => {
            let day = t1 - (t1 + clock.offset()).rem_euclid(DAY);
            let mut t2 = day + off;
            if t2 <= t1 {
                t2 += DAY;
            }
            (t1, t2, format!("from {l1} to {}", hm_label(off)))
        }
        // "between 06:00 and 12:00 yesterday": the day said once, at the end.
        (End::Clock(o1), End::Instant(t2, l2)) => {
            let day = t2 - (t2 + clock.offset()).rem_euclid(DAY);
            let mut t1 = day + o1;
            if t1 >= t2 {
                t1 -= DAY;
            }
            (t1, t2, format!("from {} to {l2}", hm_label(o1)))
        }
        (End::Clock(o1), End::Clock(o2)) => {
            // The day, when said after: "from 06:00 to 12:00 yesterday", "... on Monday".
            let k = len + usize::from(w(len) == "on");
            let (day, day_label) = match day_at(tokens, i + k, clock) {
                Some((dl, day, l)) => {
                    len = k + dl;
                    (day, l)
                }
                None => {
                    // Today, or yesterday when today's part has not begun.
                    let today = clock.day_start(0);
                    if today + o1 >= clock.now.0 {
                        (today - DAY, "yesterday".into())
                    } else {
                        (today, "today".into())
                    }
                }
            };
            let to = if o2 <= o1 { day + o2 + DAY } else { day + o2 };
            (
                day + o1,
                to,
                format!("{day_label} from {} to {}", hm_label(o1), hm_label(o2)),
            )
        }
        _ => return None,
    };
    if to <= from || from >= clock.now.0 {
        return None;
    }
    Some((
        len,
        TimeSpec::Range {
            from: Timestamp(from),
            to: Timestamp(to.min(clock.now.0).max(from + 1)),
            label,
        },
    ))
}

/// A day with a clock time ("yesterday at 14:00", "2026-12-06 06:00", "yesterday from 06:00 to
/// 12:00"): the hour from that moment (a moment has no readings of its own), or the range.
fn day_time_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, TimeSpec)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let (dl, day, label) = day_at(tokens, i, clock)?;
    if matches!(w(dl), "from" | "between")
        && let Some((hl1, o1)) = hm_at(tokens, i + dl + 1)
        && matches!(w(dl + 1 + hl1), "to" | "and" | "until" | "till" | "-")
        && let Some((hl2, o2)) = hm_at(tokens, i + dl + 2 + hl1)
    {
        let to = if o2 <= o1 { day + o2 + DAY } else { day + o2 };
        if day + o1 >= clock.now.0 {
            return None;
        }
        return Some((
            dl + 2 + hl1 + hl2,
            clock.range(
                day + o1,
                to,
                format!("{label} from {} to {}", hm_label(o1), hm_label(o2)),
            ),
        ));
    }
    let (len, end) = end_at(tokens, i, clock)?;
    let End::Instant(t, label) = end else {
        return None;
    };
    Some((len, moment(clock, t, &label)))
}

/// A moment: the hour from it, said so.
fn moment(clock: &Clock, t: i64, label: &str) -> TimeSpec {
    clock.range(t, t + HOUR, format!("the hour from {label}"))
}

/// Words about the future at `tokens[i]`: "tomorrow", "tonight", "next week", "will",
/// "forecast". `ask` reads what was measured; these are refused, never read as now.
pub fn future_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<usize> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    match w(0) {
        "tomorrow" | "tomorrows" | "tmrw" | "tmr" | "tonight" | "tonights" | "will"
        | "forecast" | "forecasts" | "forecasted" | "predict" | "predicted" | "prediction"
        | "predictions" | "upcoming" | "future" | "projected" | "projection" | "wont" | "gonna" => {
            Some(1)
        }
        "next" => {
            let k = if tokens.get(i + 1).and_then(Token::number).is_some()
                || number_word(w(1)).is_some() && !matches!(w(1), "a" | "an")
            {
                2
            } else {
                1
            };
            (duration_unit(w(k)).is_some()
                || weekday_of(w(k)).is_some()
                || matches!(
                    w(k),
                    "month" | "months" | "year" | "years" | "weekend" | "shift" | "quarter"
                ))
            .then_some(k + 1)
        }
        "going" if w(1) == "to" => Some(2),
        "this" if w(1) == "weekend" && clock.weekday() < 5 => Some(2),
        _ => None,
    }
}

/// The weekend at `tokens[i]` ("weekend", "this weekend", "last weekend"): Saturday and Sunday,
/// the current one when today is one of them (but "last weekend" then is the one before).
fn weekend_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, TimeSpec)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let (len, before) = match (w(0), w(1)) {
        ("weekend", _) => (1, false),
        ("this", "weekend") => (2, false),
        ("last" | "past" | "previous", "weekend") => (2, true),
        _ => return None,
    };
    let wd = clock.weekday();
    let mut back = (wd - 5).rem_euclid(7);
    if before && wd >= 5 {
        back += 7;
    }
    let sat = clock.day_start(-back);
    let label = if before {
        "last weekend"
    } else {
        "the weekend"
    };
    Some((len, clock.range(sat, sat + 2 * DAY, label)))
}

fn is_bucket_word(word: &str) -> bool {
    matches!(
        word,
        "bucket" | "buckets" | "interval" | "intervals" | "steps" | "step" | "bins" | "resolution"
    )
}

/// A bucket asked for ("hourly", "daily", "every 15 min", "per hour", "in 30-minute buckets",
/// "15 min average"), microseconds, with its length.
pub fn step_at(tokens: &[Token], i: usize) -> Option<(usize, i64)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let named = |word: &str| -> Option<i64> {
        Some(match word {
            "minutely" => MINUTE,
            "hourly" => HOUR,
            "halfhourly" | "half-hourly" => 30 * MINUTE,
            "daily" => DAY,
            "weekly" => 7 * DAY,
            _ => return None,
        })
    };
    if let Some(step) = named(w(0)) {
        return Some((1, step));
    }
    // "15-minute", "1-hour", "30-min": one token.
    let dashed = |word: &str| -> Option<i64> {
        let (n, unit) = word.split_once('-')?;
        let n: f64 = n.parse().ok()?;
        let (u, _) = duration_unit(unit)?;
        (n > 0.0 && n.fract() == 0.0).then_some((n * u as f64) as i64)
    };
    // "every 15 min", "every hour", "per hour", "by day", "each hour", "in 15 min buckets".
    if matches!(w(0), "every" | "per" | "by" | "each" | "in") {
        let (n, k) = match tokens.get(i + 1).and_then(Token::number) {
            Some(n) => (n, 2),
            None => (1.0, 1),
        };
        let bucket_word = |k: usize| is_bucket_word(w(k));
        if let Some((u, _)) = duration_unit(w(k))
            && n > 0.0
            && n.fract() == 0.0
            && w(k) != "m"
        {
            // "in 15 min" is a duration unless buckets follow; "by day" / "per hour" only
            // with "by"/"per"/"every"/"each".
            let buckets = bucket_word(k + 1);
            if w(0) != "in" || buckets {
                return Some((k + 1 + usize::from(buckets), (n * u as f64) as i64));
            }
        }
        if let Some(step) = dashed(w(1))
            && (w(0) != "in" || bucket_word(2))
        {
            return Some((2 + usize::from(bucket_word(2)), step));
        }
    }
    // "15-minute average", "1-hour buckets", "15 min buckets", "15 minute intervals".
    if let Some(step) = dashed(w(0))
        && matches!(
            w(1),
            "average"
                | "averages"
                | "avg"
                | "mean"
                | "max"
                | "min"
                | "bucket"
                | "buckets"
                | "interval"
                | "intervals"
                | "steps"
                | "step"
                | "bins"
        )
    {
        return Some((1, step));
    }
    if let Some(n) = tokens.get(i).and_then(Token::number)
        && let Some((u, _)) = duration_unit(w(1))
        && n > 0.0
        && n.fract() == 0.0
        && matches!(
            w(2),
            "bucket"
                | "buckets"
                | "interval"
                | "intervals"
                | "steps"
                | "step"
                | "bins"
                | "averages"
        )
    {
        return Some((3, (n * u as f64) as i64));
    }
    None
}

/// The time expression starting at `tokens[i]`, with the number of tokens it spans.
pub fn time_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, TimeSpec)> {
    // Leading prepositions belong to the expression: "over the last 12 hours".
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let mut skip = 0;
    if matches!(
        w(0),
        "in" | "over" | "during" | "for" | "within" | "of" | "from" | "at" | "on"
    ) {
        skip = 1;
        if w(1) == "the" {
            skip = 2;
        }
    } else if w(0) == "the" {
        skip = 1;
    }
    // With the article, "the last week" is a span ending now, as "the last 7 days" is: "over
    // the last week", "in the last week". Without it, "last week" is the calendar week.
    let article = skip > 0 && w(skip - 1) == "the";
    if skip > 0
        && let Some((len, spec)) = bare_time_at(tokens, i + skip, clock, w(0), article)
    {
        return Some((skip + len, spec));
    }
    bare_time_at(tokens, i, clock, "", false)
}

fn bare_time_at(
    tokens: &[Token],
    i: usize,
    clock: &Clock,
    preposition: &str,
    article: bool,
) -> Option<(usize, TimeSpec)> {
    let w = |k: usize| tokens.get(i + k).map(|t| t.text.as_str()).unwrap_or("");
    let now = clock.now.0;
    let today = clock.day_start(0);
    if preposition == "from"
        && let Some(found) = between_at(tokens, i, clock)
    {
        return Some(found);
    }
    // "from yesterday 14:00" with no end: since then.
    if preposition == "from"
        && let Some((len, End::Instant(t, label))) = end_at(tokens, i, clock)
    {
        return Some((len, clock.range(t, now, format!("since {label}"))));
    }
    // A day with a clock time: "yesterday at 14:00", "2026-12-06 06:00", "14:00 yesterday",
    // "yesterday from 06:00 to 12:00"; "at 14:00" alone is today's.
    if !matches!(w(0), "since" | "between") {
        if let Some(found) = day_time_at(tokens, i, clock) {
            return Some(found);
        }
        if hm_at(tokens, i).is_some() {
            match end_at(tokens, i, clock) {
                Some((len, End::Instant(t, label))) => {
                    return Some((len, moment(clock, t, &label)));
                }
                Some((len, End::Clock(off))) if preposition == "at" => {
                    let mut t = today + off;
                    let mut day = "today";
                    if t >= now {
                        t -= DAY;
                        day = "yesterday";
                    }
                    return Some((len, moment(clock, t, &format!("{day} {}", hm_label(off)))));
                }
                _ => {}
            }
        }
    }
    if let Some(found) = weekend_at(tokens, i, clock) {
        return Some(found);
    }
    // "the hour from yesterday 14:00" (how a moment is said back).
    if w(0) == "hour"
        && matches!(w(1), "from" | "after" | "starting")
        && let Some((len, End::Instant(t, label))) = end_at(tokens, i + 2, clock)
    {
        return Some((2 + len, moment(clock, t, &label)));
    }
    match (w(0), w(1), w(2)) {
        ("right", "now", _) => return Some((2, TimeSpec::Now)),
        ("the", "moment", _) if preposition == "at" => return Some((2, TimeSpec::Now)),
        ("moment", _, _) if preposition == "at" => return Some((1, TimeSpec::Now)),
        ("present", _, _) if preposition == "at" => return Some((1, TimeSpec::Now)),
        ("now" | "currently" | "presently" | "latest" | "nowadays", _, _) => {
            return Some((1, TimeSpec::Now));
        }
        ("today" | "todays", _, _) => return Some((1, clock.range(today, now, "today"))),
        ("last" | "yesterday", "night", _) | ("overnight", _, _) => {
            let len = if w(0) == "overnight" { 1 } else { 2 };
            return Some((
                len,
                clock.range(today - 6 * HOUR, today + 6 * HOUR, "last night"),
            ));
        }
        (y, "morning" | "afternoon" | "evening", _) if is_yesterday(y) => {
            let (from, to) = match w(1) {
                "morning" => (0, 12),
                "afternoon" => (12, 18),
                _ => (18, 24),
            };
            return Some((
                2,
                clock.range(
                    today - DAY + from * HOUR,
                    today - DAY + to * HOUR,
                    format!("yesterday {}", w(1)),
                ),
            ));
        }
        (y, _, _) if is_yesterday(y) => {
            return Some((1, clock.range(today - DAY, today, "yesterday")));
        }
        ("this", "morning", _) => {
            return Some((2, clock.range(today, today + 12 * HOUR, "this morning")));
        }
        ("this", "afternoon", _) => {
            return Some((
                2,
                clock.range(today + 12 * HOUR, today + 18 * HOUR, "this afternoon"),
            ));
        }
        ("this", "week", _) => {
            let start = today - clock.weekday() * DAY;
            return Some((2, clock.range(start, now, "this week")));
        }
        ("last" | "previous", "week", _) if !(article && w(0) == "last") => {
            let start = today - clock.weekday() * DAY;
            return Some((2, clock.range(start - 7 * DAY, start, "last week")));
        }
        ("this", "month", _) => {
            let d = clock.today();
            let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?;
            return Some((2, clock.range(clock.date_start(first), now, "this month")));
        }
        ("last" | "previous", "month", _) => {
            let d = clock.today();
            let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?;
            let prev = first - chrono::Months::new(1);
            return Some((
                2,
                clock.range(
                    clock.date_start(prev),
                    clock.date_start(first),
                    "last month",
                ),
            ));
        }
        ("before", "the" | "its" | "it", "trip" | "tripped" | "shutdown" | "stop") => {
            return Some((3, TimeSpec::BeforeTrip));
        }
        ("before", "trip" | "tripping" | "shutdown", _) => return Some((2, TimeSpec::BeforeTrip)),
        _ => {}
    }
    // "last 24 hours", "past 2 days", "last hour", "the past week" (rolling), "last 24h".
    if matches!(w(0), "last" | "past" | "previous" | "recent" | "next") && w(0) != "next" {
        let (n, k) = match tokens.get(i + 1).and_then(Token::number) {
            Some(n) => (Some(n), 2),
            None => match number_word(w(1)) {
                Some(n) if !matches!(w(1), "a" | "an") => (Some(n), 2),
                _ => (None, 1),
            },
        };
        if let Some((unit, name)) = duration_unit(w(k)) {
            // "last week" was the calendar week above; "the past week" is the last 7 days.
            let n = n.unwrap_or(1.0);
            if n > 0.0 && n <= 10_000.0 {
                let span = (n * unit as f64) as i64;
                return Some((k + 1, clock.range(now - span, now, plural(n, name))));
            }
        }
    }
    // "for 2 hours", "in 30 minutes", "for an hour": how long, no end.
    if matches!(preposition, "for" | "in" | "over" | "within") || w(0) == "since" {
        let (n, k) = match tokens.get(i).and_then(Token::number) {
            Some(n) => (Some(n), 1),
            None => (number_word(w(0)), 1),
        };
        if let (Some(n), Some((unit, _))) = (n, duration_unit(w(k)))
            && !is_bucket_word(w(k + 1))
        {
            return Some((k + 1, TimeSpec::Lasting((n * unit as f64) as i64)));
        }
    }
    // "24 hours", "2 days" after a preposition handled above; "since ..." below.
    if w(0) == "since" {
        // "since yesterday 14:00", "since 2026-12-06 06:00", "since Monday at 8am".
        if let Some((len, End::Instant(t, label))) = end_at(tokens, i + 1, clock) {
            return Some((1 + len, clock.range(t, now, format!("since {label}"))));
        }
        if let Some(wd) = weekday_of(w(1)) {
            let back = (clock.weekday() - wd).rem_euclid(7);
            let name = WEEKDAYS[wd as usize].0;
            let label = format!("since {}{}", name[..1].to_uppercase(), &name[1..]);
            return Some((2, clock.range(today - back * DAY, now, label)));
        }
        match w(1) {
            "yesterday" => return Some((2, clock.range(today - DAY, now, "since yesterday"))),
            "midnight" | "today" => return Some((2, clock.range(today, now, "today"))),
            "last" if w(2) == "week" => {
                let start = today - clock.weekday() * DAY - 7 * DAY;
                return Some((3, clock.range(start, now, "since last week")));
            }
            _ => {}
        }
        if let Some((len, date)) = date_at(tokens, i + 1, clock) {
            let from = clock.date_start(date);
            return Some((1 + len, clock.range(from, now, format!("since {date}"))));
        }
        if let Some((len, at)) = clock_time_at(tokens, i + 1, clock) {
            let from = if at > now { at - DAY } else { at };
            let label = format!("since {}", tokens[i + 1].raw);
            return Some((1 + len, clock.range(from, now, label)));
        }
    }
    // "between D and D", "from D to D" (the end day included), with clock times or without.
    if w(0) == "between"
        && let Some((len, spec)) = between_at(tokens, i + 1, clock)
    {
        return Some((1 + len, spec));
    }
    // A date or a weekday alone: that day.
    if let Some((len, date)) = date_at(tokens, i, clock) {
        let from = clock.date_start(date);
        return Some((len, clock.range(from, from + DAY, format!("on {date}"))));
    }
    if let Some(wd) = weekday_of(w(0))
        && (preposition == "on" || preposition.is_empty() || preposition == "since")
    {
        let mut back = (clock.weekday() - wd).rem_euclid(7);
        if w(1) == "last" || preposition.is_empty() && back == 0 {
            back = if back == 0 { 7 } else { back };
        }
        let name = WEEKDAYS[wd as usize].0;
        let from = today - back * DAY;
        let label = format!("on {}{}", name[..1].to_uppercase(), &name[1..]);
        return Some((1, clock.range(from, from + DAY, label)));
    }
    None
}
