//! Tokens of a question: lower-cased words, numbers and comparison symbols, with the original
//! spelling kept for messages; plus the one fuzzy comparison the parser allows (one edit, on
//! long words only).

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Word,
    Number(f64),
    /// `>`, `<`, `>=`, `<=`, `=`.
    Symbol,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// Lower case, the unit spellings folded (`°c` → `degc`, `bbl/d` → `bpd`, `m³/d` → `m3d`).
    pub text: String,
    /// As written.
    pub raw: String,
    pub kind: Kind,
}

impl Token {
    pub fn is(&self, word: &str) -> bool {
        self.text == word
    }

    pub fn number(&self) -> Option<f64> {
        match self.kind {
            Kind::Number(v) => Some(v),
            _ => None,
        }
    }
}

/// Unit spellings folded into one word before splitting, longest first.
const FOLDS: &[(&str, &str)] = &[
    ("cubic meters per day", " m3d "),
    ("cubic metres per day", " m3d "),
    ("barrels per day", " bpd "),
    ("barrels a day", " bpd "),
    ("m³/day", " m3d "),
    ("m3/day", " m3d "),
    ("m³/d", " m3d "),
    ("m3/d", " m3d "),
    ("sm3/d", " m3d "),
    ("bbl/day", " bpd "),
    ("bbls/d", " bpd "),
    ("bbl/d", " bpd "),
    ("b/d", " bpd "),
    ("scf/bbl", " scfbbl "),
    ("scf/stb", " scfbbl "),
    ("deg c", " degc "),
    ("deg f", " degf "),
    ("°c", " degc "),
    ("°f", " degf "),
    ("℃", " degc "),
    ("℉", " degf "),
    ("º", " deg "),
    ("°", " deg "),
    ("≥", " >= "),
    ("≤", " <= "),
    ("bs&w", " bsw "),
    ("gas-oil", "gas oil"),
    ("gas/oil", "gas oil"),
];

/// Splits a question into tokens. Never fails; an empty question gives no tokens.
pub fn tokenize(question: &str) -> Vec<Token> {
    let mut text = question.to_lowercase();
    // Contractions: "what's" → "what", "ESP-010's" → "ESP-010", "haven't" → "havent".
    text = text.replace(['’', '‘'], "'");
    text = text.replace("'s ", " ");
    if text.ends_with("'s") {
        text.truncate(text.len() - 2);
    }
    text = text.replace('\'', "");
    for (from, to) in FOLDS {
        if text.contains(from) {
            text = text.replace(from, to);
        }
    }
    let text = drop_thousands_commas(&text);
    let raw_lower = text.clone();
    let mut tokens = Vec::new();
    let chars: Vec<char> = raw_lower.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '#' {
            let start = i;
            while i < chars.len() {
                let c = chars[i];
                let inner = matches!(c, '-' | '.' | '_' | ':' | '/')
                    && i + 1 < chars.len()
                    && chars[i + 1].is_alphanumeric()
                    && i > start;
                if c.is_alphanumeric()
                    || inner
                    || (c == '*' && i > start)
                    || (c == '#' && i == start)
                {
                    i += 1;
                } else {
                    break;
                }
            }
            let word: String = chars[start..i].iter().collect();
            push_word(&mut tokens, word.trim_start_matches('#').to_owned());
        } else if matches!(c, '>' | '<' | '=') {
            let mut s = c.to_string();
            if i + 1 < chars.len() && chars[i + 1] == '=' {
                s.push('=');
                i += 1;
            }
            i += 1;
            tokens.push(Token {
                raw: s.clone(),
                text: s,
                kind: Kind::Symbol,
            });
        } else if c == '%' {
            i += 1;
            tokens.push(word_token("%".into()));
        } else {
            i += 1;
        }
    }
    tokens
}

fn drop_thousands_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let thousands = c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && i + 3 < chars.len() + 1
            && chars
                .get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(char::is_ascii_digit))
            && chars.get(i + 4).is_none_or(|c| !c.is_ascii_digit());
        if !thousands {
            out.push(c);
        }
    }
    out
}

fn word_token(text: String) -> Token {
    Token {
        raw: text.clone(),
        text,
        kind: Kind::Word,
    }
}

/// A word; `80degc`, `40a`, `24h`, `90%` are split into the number and the unit.
fn push_word(tokens: &mut Vec<Token>, word: String) {
    if word.is_empty() {
        return;
    }
    if let Ok(v) = word.parse::<f64>()
        && v.is_finite()
        && !word.contains(':')
    {
        tokens.push(Token {
            raw: word.clone(),
            text: word,
            kind: Kind::Number(v),
        });
        return;
    }
    let digits = word
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    if digits > 0 && digits < word.len() {
        let (number, unit) = word.split_at(digits);
        if unit.chars().all(|c| c.is_alphabetic())
            && let Ok(v) = number.parse::<f64>()
        {
            tokens.push(Token {
                raw: number.to_owned(),
                text: number.to_owned(),
                kind: Kind::Number(v),
            });
            tokens.push(word_token(unit.to_owned()));
            return;
        }
    }
    tokens.push(word_token(word));
}

/// Whether `token` is `word`, or (both long enough) one edit away from it: a letter changed,
/// added, dropped, or two neighbours swapped. Short words must be exact: "temp" is not "tempo".
pub fn close(token: &str, word: &str) -> bool {
    if token == word {
        return true;
    }
    // The length and letter checks first, without allocating: a question is read against
    // every name of the registry (1 000 wells), and nearly every pair fails them.
    let (na, nb) = (token.chars().count(), word.chars().count());
    if nb < 5 || na < 4 || na.abs_diff(nb) > 1 {
        return false;
    }
    if !token.chars().all(char::is_alphabetic) {
        return false;
    }
    let (a, b): (Vec<char>, Vec<char>) = (token.chars().collect(), word.chars().collect());
    osa_distance(&a, &b) <= 1
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
pub fn osa_distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(q: &str) -> Vec<String> {
        tokenize(q).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn words_numbers_units_and_ids() {
        assert_eq!(
            texts("What's ESP-010's PIP above 2,000 kPa?"),
            ["what", "esp-010", "pip", "above", "2000", "kpa"]
        );
        assert_eq!(texts("over 80°C"), ["over", "80", "degc"]);
        assert_eq!(texts("40A, 24h, 90%"), ["40", "a", "24", "h", "90", "%"]);
        assert_eq!(texts("< 100 m³/d"), ["<", "100", "m3d"]);
        assert_eq!(texts("temp >= 0.5 g"), ["temp", ">=", "0.5", "g"]);
        assert_eq!(
            texts("between 2026-11-20 and 08:00"),
            ["between", "2026-11-20", "and", "08:00"]
        );
        assert_eq!(texts("wells ESP-01* #12"), ["wells", "esp-01*", "12"]);
    }

    #[test]
    fn one_edit_on_long_words_only() {
        assert!(close("avrage", "average"));
        assert!(close("vibraton", "vibration"));
        assert!(close("tmeperature", "temperature"));
        assert!(close("curent", "current"));
        assert!(close("wich", "which"));
        assert!(!close("temo", "temp"));
        assert!(!close("bar", "bpd"));
        assert!(!close("avg", "avx"));
    }
}
