//! How much of a secret is recognisable structure: common words, keyboard walks, runs and
//! dates. Used by [`crate::config::check_secret`] to refuse secrets a person made up
//! (`thisismysupersecretjwtsigningkey`, `correct horse battery staple 123`), which the byte
//! statistics alone let through. Random hex or base64 is almost never structured: a stretch
//! counts only from 4 characters on, and random text rarely holds one.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Shortest stretch that counts as structure.
const MIN_MATCH: usize = 4;
/// Longest word looked up (longer words are found as their parts).
const MAX_WORD: usize = 14;
/// Only the first characters are examined; longer secrets are judged by their head.
const MAX_EXAMINED: usize = 256;

const WORD_FILE: &str = include_str!("common_words.txt");

fn words() -> &'static HashSet<&'static str> {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| {
        WORD_FILE
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .chain(
                espwatch_core::access::COMMON_PASSWORDS
                    .iter()
                    .copied()
                    .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic())),
            )
            .filter(|w| w.len() >= MIN_MATCH && w.len() <= MAX_WORD)
            .collect()
    })
}

/// Key rows of a US keyboard, unshifted. Row `r + 1` sits half a key to the right of row `r`,
/// so key `c` of row `r` touches keys `c - 1` and `c` of row `r + 1`.
const ROWS: [&[u8]; 4] = [
    b"1234567890-=",
    b"qwertyuiop[]",
    b"asdfghjkl;'",
    b"zxcvbnm,./",
];

fn key_position(b: u8) -> Option<(usize, usize)> {
    let b = b.to_ascii_lowercase();
    ROWS.iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().position(|&k| k == b).map(|c| (r, c)))
}

fn keys_touch(a: u8, b: u8) -> bool {
    let (Some((ra, ca)), Some((rb, cb))) = (key_position(a), key_position(b)) else {
        return false;
    };
    if ra == rb {
        // The same key twice is a repeat, not a step (`ffgg` of lower-cased base64 is no walk).
        return ca.abs_diff(cb) == 1;
    }
    // Order so that `(r0, c0)` is the upper key.
    let ((r0, c0), (r1, c1)) = if ra < rb {
        ((ra, ca), (rb, cb))
    } else {
        ((rb, cb), (ra, ca))
    };
    r1 == r0 + 1 && (c1 == c0 || c1 + 1 == c0)
}

/// Marks every maximal run `s[i..j]` of length ≥ [`MIN_MATCH`] in which each neighbouring pair
/// satisfies `linked` and that never steps straight back (`3232` is no walk: random digits
/// give such zigzags often).
fn mark_runs(s: &[u8], covered: &mut [bool], linked: impl Fn(u8, u8) -> bool) {
    let mut start = 0;
    for i in 1..=s.len() {
        let back = i >= 2 && i - start >= 2 && i < s.len() && s[i] == s[i - 2] && s[i] != s[i - 1];
        if i == s.len() || !linked(s[i - 1], s[i]) || back {
            if i - start >= MIN_MATCH {
                covered[start..i].iter_mut().for_each(|c| *c = true);
            }
            start = i;
        }
    }
}

fn digits_value(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |v, b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    })
}

fn is_year(s: &[u8]) -> bool {
    s.len() == 4 && digits_value(s).is_some_and(|y| (1900..=2099).contains(&y))
}

/// A day and month (either order), two or one digits each, with an optional separator.
fn day_month_len(s: &[u8]) -> Option<usize> {
    let seps = b"-./_ ";
    for (a, b) in [(2, 2), (1, 2), (2, 1), (1, 1)] {
        for sep in [0usize, 1] {
            let len = a + sep + b;
            // Without a separator only `ddmm`: `11` + a year is too likely in random digits.
            let ambiguous = sep == 0 && (a, b) != (2, 2);
            if ambiguous || s.len() < len || (sep == 1 && !seps.contains(&s[a])) {
                continue;
            }
            let (Some(x), Some(y)) = (digits_value(&s[..a]), digits_value(&s[a + sep..len])) else {
                continue;
            };
            let valid = |d: u32, m: u32| (1..=31).contains(&d) && (1..=12).contains(&m);
            if valid(x, y) || valid(y, x) {
                return Some(len);
            }
        }
    }
    None
}

fn mark_dates(s: &[u8], covered: &mut [bool]) {
    let seps = b"-./_ ";
    for i in 0..s.len() {
        if i + 4 <= s.len() && is_year(&s[i..i + 4]) {
            // A year alone only where it is all of a number (`secret-2026`, `pass2024!`):
            // inside a longer run of digits it is what random hex is full of.
            let digit_at = |k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
            if (i == 0 || !digit_at(i - 1)) && !digit_at(i + 4) {
                covered[i..i + 4].iter_mut().for_each(|c| *c = true);
            }
            // 2026-12-07, 20261207
            let mut j = i + 4;
            if j < s.len() && seps.contains(&s[j]) {
                j += 1;
            }
            if let Some(len) = day_month_len(&s[j..]) {
                covered[i..j + len].iter_mut().for_each(|c| *c = true);
            }
        }
        // 07.12.2026, 07122026
        if let Some(len) = day_month_len(&s[i..]) {
            let mut j = i + len;
            if j < s.len() && seps.contains(&s[j]) {
                j += 1;
            }
            if j + 4 <= s.len() && is_year(&s[j..j + 4]) {
                covered[i..j + 4].iter_mut().for_each(|c| *c = true);
            }
        }
    }
}

fn mark_words(s: &[u8], covered: &mut [bool]) {
    let lower: Vec<u8> = s.iter().map(u8::to_ascii_lowercase).collect();
    let words = words();
    for i in 0..lower.len() {
        for j in i + MIN_MATCH..=(i + MAX_WORD).min(lower.len()) {
            let Ok(piece) = std::str::from_utf8(&lower[i..j]) else {
                continue;
            };
            if words.contains(piece) {
                covered[i..j].iter_mut().for_each(|c| *c = true);
            }
        }
    }
}

/// A block of 4 or more characters repeated right after itself (`x7k2x7k2`).
fn mark_repeated_blocks(s: &[u8], covered: &mut [bool]) {
    for unit in MIN_MATCH..=s.len() / 2 {
        for i in 0..=s.len() - 2 * unit {
            if s[i..i + unit] == s[i + unit..i + 2 * unit] {
                covered[i..i + 2 * unit].iter_mut().for_each(|c| *c = true);
            }
        }
    }
}

/// Characters of `secret` (of its first [`MAX_EXAMINED`]) that belong to a recognisable
/// structure of at least 4 characters, and the number examined. Separators between two
/// structured stretches count with them (`correct horse`, `my-espwatch-secret`).
pub(crate) fn structured(secret: &[u8]) -> (usize, usize) {
    let s = &secret[..secret.len().min(MAX_EXAMINED)];
    let mut covered = vec![false; s.len()];
    mark_words(s, &mut covered);
    mark_runs(s, &mut covered, keys_touch);
    mark_runs(s, &mut covered, |a, b| a == b);
    for step in [1i16, -1] {
        mark_runs(s, &mut covered, |a, b| {
            a.is_ascii_alphanumeric()
                && b.is_ascii_alphanumeric()
                && i16::from(b) - i16::from(a) == step
        });
    }
    mark_dates(s, &mut covered);
    mark_repeated_blocks(s, &mut covered);
    for i in 1..s.len().saturating_sub(1) {
        if !s[i].is_ascii_alphanumeric() && covered[i - 1] && covered[i + 1] {
            covered[i] = true;
        }
    }
    (covered.iter().filter(|c| **c).count(), s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fraction(s: &str) -> f64 {
        let (hit, n) = structured(s.as_bytes());
        hit as f64 / n as f64
    }

    #[test]
    fn each_kind_of_structure_is_found() {
        assert_eq!(fraction("secret"), 1.0, "a word");
        assert_eq!(fraction("qwertyuiop"), 1.0, "a keyboard row");
        assert_eq!(fraction("1qaz"), 1.0, "a keyboard column");
        assert_eq!(fraction("zzzz"), 1.0, "one character");
        assert_eq!(fraction("6543"), 1.0, "a descending run");
        assert_eq!(fraction("2026-12-07"), 1.0, "a date");
        assert_eq!(fraction("07.12.2026"), 1.0, "a date, day first");
        assert_eq!(fraction("x7k2x7k2"), 1.0, "a repeated block");
        assert_eq!(fraction("x7k2"), 0.0, "nothing");
        assert_eq!(fraction("123"), 0.0, "too short to count");
        // What random hex and base64 hold often does not count.
        assert_eq!(fraction("3232"), 0.0, "a zigzag");
        assert_eq!(fraction("fFgG"), 0.0, "the same keys twice");
        assert_eq!(fraction("x720261"), 0.0, "a year inside a longer number");
        assert_eq!(fraction("x2026!"), 4.0 / 6.0, "a year alone");
    }
}
