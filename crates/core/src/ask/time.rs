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

/// A clock time `08:00` / `8am` / `8 pm` today, as a UTC instant.
fn clock_time_at(tokens: &[Token], i: usize, clock: &Clock) -> Option<(usize, i64)> {
    let t = tokens.get(i)?;
    let (mut h, mut m, mut len) = if let Some((a, b)) = t.text.split_once(':') {
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
        Some("am") => {
            if h == 12 {
                h = 0;
            }
            len += 1;
        }
        Some("pm") => {
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
    m = m.clamp(0, 59);
    Some((len, clock.day_start(0) + h * HOUR + m * MINUTE))
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
        ("yesterday" | "yesterdays", _, _) => {
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
        if let (Some(n), Some((unit, _))) = (n, duration_unit(w(k))) {
            return Some((k + 1, TimeSpec::Lasting((n * unit as f64) as i64)));
        }
    }
    // "24 hours", "2 days" after a preposition handled above; "since ..." below.
    if w(0) == "since" {
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
    // "between D and D", "from D to D" (the end day included).
    if matches!(w(0), "between") || preposition == "from" && date_at(tokens, i, clock).is_some() {
        let start = if w(0) == "between" { 1 } else { 0 };
        if let Some((l1, d1)) = date_at(tokens, i + start, clock)
            && matches!(w(start + l1), "and" | "to" | "until" | "till" | "through")
            && let Some((l2, d2)) = date_at(tokens, i + start + l1 + 1, clock)
            && d2 >= d1
        {
            let to = clock.date_start(d2) + DAY;
            let from = clock.date_start(d1);
            return Some((
                start + l1 + 1 + l2,
                TimeSpec::Range {
                    from: Timestamp(from),
                    to: Timestamp(to.min(now).max(from + 1)),
                    label: format!("from {d1} to {d2}"),
                },
            ));
        }
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
