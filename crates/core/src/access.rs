//! Who may do what: the six roles, the permissions, **the one role → permission table**, and
//! the password policy. Pure rules; the server enforces them (route → permission lives next to
//! the router) and the tests are generated from the same tables.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::WellId;

/// A user's or API key's role.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Analyst,
    Viewer,
    ApiClient,
    /// A monitoring system (Prometheus): reads the service's metrics, nothing else.
    Monitoring,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Operator,
        Role::Analyst,
        Role::Viewer,
        Role::ApiClient,
        Role::Monitoring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
            Role::ApiClient => "api_client",
            Role::Monitoring => "monitoring",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == text)
    }

    /// The permission matrix. Admin has every permission; the others exactly these.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => Permission::ALL,
            Role::Operator => &[
                TelemetryRead,
                LatestRead,
                WellsRead,
                DiagnosticsRead,
                AlarmsRead,
                AlarmsAcknowledge,
                OwnAccount,
            ],
            Role::Analyst => &[
                TelemetryRead,
                LatestRead,
                WellsRead,
                WellsRegister,
                WellsWrite,
                DiagnosticsRead,
                DiagnosticsRetrain,
                AlarmsRead,
                AuditReadOwn,
                OwnAccount,
            ],
            Role::Viewer => &[
                LatestRead,
                WellsRead,
                DiagnosticsRead,
                AlarmsRead,
                OwnAccount,
            ],
            Role::ApiClient => &[TelemetryWrite, WellsRegister],
            Role::Monitoring => &[MetricsRead],
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

/// A role name that is none of the five.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("role {0:?} is not one of admin, operator, analyst, viewer, api_client, monitoring")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(text: &str) -> Result<Role, UnknownRole> {
        Role::parse(text).ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

/// An entry of a well list asked for (a user's or key's wells) that is not a well id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("well {entry:?}: {problem}")]
pub struct BadWellEntry {
    /// The entry as given.
    pub entry: String,
    pub problem: crate::telemetry::WellIdError,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing an identity may be allowed to do. Every non-public route needs exactly one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Send telemetry (`POST /api/v1/telemetry`).
    TelemetryWrite,
    /// Read telemetry series of a well.
    TelemetryRead,
    /// Read the newest value of every (permitted) well.
    LatestRead,
    /// Read the wells registry.
    WellsRead,
    /// Register a new well (create only, never replace or delete).
    WellsRegister,
    /// Replace well metadata.
    WellsWrite,
    /// Delete a well and all its telemetry.
    WellsDelete,
    /// Read diagnoses, events, and use the decision tree.
    DiagnosticsRead,
    /// Retrain a well's anomaly model.
    DiagnosticsRetrain,
    /// Read alarms.
    AlarmsRead,
    /// Acknowledge alarms.
    AlarmsAcknowledge,
    /// Read the audit records of one's own actions.
    AuditReadOwn,
    /// Read the whole audit trail.
    AuditReadAll,
    /// Manage users and API keys.
    UsersManage,
    /// Manage alarm notification channels and rules, read the delivery log.
    NotificationsManage,
    /// A signed-in user's own account: who am I, change my password, log out.
    OwnAccount,
    /// Read the service's operational metrics (`GET /metrics`, Prometheus text format).
    MetricsRead,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::TelemetryWrite,
        Permission::TelemetryRead,
        Permission::LatestRead,
        Permission::WellsRead,
        Permission::WellsRegister,
        Permission::WellsWrite,
        Permission::WellsDelete,
        Permission::DiagnosticsRead,
        Permission::DiagnosticsRetrain,
        Permission::AlarmsRead,
        Permission::AlarmsAcknowledge,
        Permission::AuditReadOwn,
        Permission::AuditReadAll,
        Permission::UsersManage,
        Permission::NotificationsManage,
        Permission::OwnAccount,
        Permission::MetricsRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::TelemetryWrite => "telemetry:write",
            Permission::TelemetryRead => "telemetry:read",
            Permission::LatestRead => "latest:read",
            Permission::WellsRead => "wells:read",
            Permission::WellsRegister => "wells:register",
            Permission::WellsWrite => "wells:write",
            Permission::WellsDelete => "wells:delete",
            Permission::DiagnosticsRead => "diagnostics:read",
            Permission::DiagnosticsRetrain => "diagnostics:retrain",
            Permission::AlarmsRead => "alarms:read",
            Permission::AlarmsAcknowledge => "alarms:ack",
            Permission::AuditReadOwn => "audit:read_own",
            Permission::AuditReadAll => "audit:read",
            Permission::UsersManage => "users:manage",
            Permission::NotificationsManage => "notifications:manage",
            Permission::OwnAccount => "account:self",
            Permission::MetricsRead => "metrics:read",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which wells an identity may see or write. `All` unless a user or key was limited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WellScope {
    All,
    Only(Vec<WellId>),
}

impl WellScope {
    /// The scope an administrator asks for a user or key: `None` is every well, a list only
    /// those wells, each entry a well id (the first that is not is the error).
    pub fn parse_list(wells: Option<Vec<String>>) -> Result<WellScope, BadWellEntry> {
        let Some(list) = wells else {
            return Ok(WellScope::All);
        };
        list.into_iter()
            .map(|entry| match WellId::parse(&entry) {
                Ok(id) => Ok(id),
                Err(problem) => Err(BadWellEntry { entry, problem }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(WellScope::Only)
    }

    /// The scope of a stored user or key: `None` is every well, a list only those wells.
    ///
    /// The lists were checked with [`WellScope::parse_list`] when they were stored; an entry
    /// that is not a well id (a hand-edited database) is left out, which is what it allowed
    /// before it was typed: it equals no well's id. A list never widens to `All`, even left
    /// empty.
    pub fn from_list(wells: Option<Vec<String>>) -> WellScope {
        match wells {
            None => WellScope::All,
            Some(list) => {
                WellScope::Only(list.iter().filter_map(|w| WellId::parse(w).ok()).collect())
            }
        }
    }

    pub fn allows(&self, well_id: &str) -> bool {
        match self {
            WellScope::All => true,
            WellScope::Only(list) => list.iter().any(|w| w.as_str() == well_id),
        }
    }

    pub fn as_list(&self) -> Option<&[WellId]> {
        match self {
            WellScope::All => None,
            WellScope::Only(list) => Some(list),
        }
    }
}

/// User names: 1–64 characters of ASCII letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Shortest and longest accepted password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_CHARS: usize = 256;

/// Why a password was refused. Messages are safe to show to the person choosing it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("the password must be at least {PASSWORD_MIN_CHARS} characters long")]
    TooShort,
    #[error("the password must be at most {PASSWORD_MAX_CHARS} characters long")]
    TooLong,
    #[error("the password must not contain the user name")]
    ContainsUserName,
    #[error("the password is trivial (a repeated character or a simple sequence)")]
    Trivial,
    #[error(
        "the password is one of the most common passwords (or one with digits added); choose another"
    )]
    Common,
}

/// Passwords and password stems found at the top of breach corpora (NIST SP 800-63B asks to
/// refuse them). Matched against the whole password, lower-cased, and against its stem: the
/// password without leading/trailing digits and punctuation and with the usual letter-for-digit
/// substitutions undone (`P@ssw0rd2024!` → `password`).
pub const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "passwort",
    "passw0rd",
    "pass",
    "qwerty",
    "qwertyuiop",
    "qwertyuiopasdfghjkl",
    "qwertz",
    "azerty",
    "asdf",
    "asdfgh",
    "asdfghjkl",
    "zxcvbn",
    "zxcvbnm",
    "qazwsx",
    "qazwsxedc",
    "qazwsxedcrfv",
    "1qaz2wsx",
    "1qaz2wsx3edc",
    "zaq12wsx",
    "zaq1zaq1",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1q2w3e4r5t6y",
    "q1w2e3r4",
    "q1w2e3r4t5y6",
    "qwe123",
    "qwerty123",
    "qwerty123456",
    "abc",
    "abcd",
    "abcdef",
    "abc123",
    "letmein",
    "welcome",
    "welcometo",
    "admin",
    "administrator",
    "root",
    "toor",
    "login",
    "master",
    "iloveyou",
    "loveyou",
    "monkey",
    "dragon",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "soccer",
    "hockey",
    "basketball",
    "superman",
    "batman",
    "spiderman",
    "starwars",
    "shadow",
    "michael",
    "jennifer",
    "jordan",
    "hunter",
    "trustno",
    "trustnoone",
    "whatever",
    "freedom",
    "mustang",
    "charlie",
    "pokemon",
    "secret",
    "changeme",
    "changeit",
    "default",
    "guest",
    "test",
    "tester",
    "testing",
    "user",
    "summer",
    "winter",
    "spring",
    "autumn",
    "january",
    "december",
    "hello",
    "helloworld",
    "hellohello",
    "computer",
    "internet",
    "access",
    "killer",
    "ninja",
    "cheese",
    "chocolate",
    "flower",
    "lovely",
    "money",
    "samsung",
    "google",
    "microsoft",
    "apple",
    "linux",
    "ubuntu",
    "oracle",
    "database",
    "postgres",
    "server",
    "system",
    "service",
    "company",
    "office",
    "espwatch",
    "pump",
    "oilfield",
    "scada",
    "operator",
    "engineer",
    "production",
    "blink",
    "solo",
    "zaq",
    "aa",
    "ab",
    "qq",
    "mypassword",
    "yourpassword",
    "newpassword",
    "passwordpassword",
    "letmeinplease",
    "iloveyouforever",
    "correcthorsebatterystaple",
];

fn is_common(lower: &str) -> bool {
    if COMMON_PASSWORDS.contains(&lower) {
        return true;
    }
    let edge = |c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c.is_whitespace();
    let core = lower.trim_matches(edge);
    let stem: String = core
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            c => c,
        })
        .collect();
    // "password1234", "Password!2024", "P@ssw0rd", but also "passwordpassword1".
    !stem.is_empty()
        && (COMMON_PASSWORDS.contains(&stem.as_str())
            || COMMON_PASSWORDS.contains(&core)
            || COMMON_PASSWORDS.iter().any(|w| {
                w.len() >= 4
                    && stem.len().is_multiple_of(w.len())
                    && stem == w.repeat(stem.len() / w.len())
            }))
}

/// NIST SP 800-63B style: length, not composition. No rotation rules live anywhere.
pub fn check_password(user_name: &str, password: &str) -> Result<(), PasswordProblem> {
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < PASSWORD_MIN_CHARS {
        return Err(PasswordProblem::TooShort);
    }
    if chars.len() > PASSWORD_MAX_CHARS {
        return Err(PasswordProblem::TooLong);
    }
    let lower = password.to_lowercase();
    let name = user_name.trim().to_lowercase();
    if !name.is_empty() && lower.contains(&name) {
        return Err(PasswordProblem::ContainsUserName);
    }
    if is_trivial(&lower) {
        return Err(PasswordProblem::Trivial);
    }
    if is_common(&lower) {
        return Err(PasswordProblem::Common);
    }
    Ok(())
}

/// A single repeated character, a run of one short unit ("abcabcabc…", "121212…"), or a
/// straight ascending/descending sequence ("123456789012", "abcdefghijkl").
fn is_trivial(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    let n = chars.len();
    // Repeats of a unit of up to 4 characters.
    for unit in 1..=4.min(n / 2) {
        if (unit..n).all(|i| chars[i] == chars[i - unit]) {
            return true;
        }
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| w[1] as i64 - w[0] as i64)
        .collect();
    // Straight sequences, allowing the digit wrap 9 → 0 and 0 → 9.
    let sequential = |want: i64| {
        steps
            .iter()
            .all(|&s| s == want || (want == 1 && s == -9) || (want == -1 && s == 9))
    };
    sequential(1) || sequential(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_has_everything_and_api_client_only_writes() {
        for p in Permission::ALL {
            assert!(Role::Admin.allows(*p));
        }
        assert_eq!(
            Role::ApiClient.permissions(),
            &[Permission::TelemetryWrite, Permission::WellsRegister]
        );
        assert!(!Role::Viewer.allows(Permission::TelemetryRead));
        assert!(Role::Operator.allows(Permission::AlarmsAcknowledge));
        assert!(!Role::Analyst.allows(Permission::AlarmsAcknowledge));
        assert!(Role::Analyst.allows(Permission::WellsWrite));
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn password_policy() {
        assert_eq!(
            check_password("ana", "short"),
            Err(PasswordProblem::TooShort)
        );
        assert_eq!(
            check_password("ana", &"x".repeat(257)),
            Err(PasswordProblem::TooLong)
        );
        assert_eq!(
            check_password("operator7", "myOperator7isgreat"),
            Err(PasswordProblem::ContainsUserName)
        );
        for trivial in [
            "aaaaaaaaaaaa",
            "123456789012",
            "abcdefghijklmn",
            "abcabcabcabc",
            "121212121212",
            "987654321098",
        ] {
            assert_eq!(
                check_password("ana", trivial),
                Err(PasswordProblem::Trivial),
                "{trivial}"
            );
        }
        assert_eq!(check_password("ana", "correct horse battery"), Ok(()));
        for common in [
            "password1234",
            "Password!2024",
            "P@ssw0rd123456",
            "qwertyuiopasdfghjkl",
            "1qaz2wsx3edc",
            "iloveyou2024!",
            "welcome12345",
            "letmeinletmein",
            "espwatch2026!",
        ] {
            assert_eq!(
                check_password("ana", common),
                Err(PasswordProblem::Common),
                "{common}"
            );
        }
        assert_eq!(check_password("ana", "pumps at dawn, 7 wells"), Ok(()));
        // Length counts characters, not bytes.
        assert_eq!(
            check_password("ana", "ééééééééééé"),
            Err(PasswordProblem::TooShort)
        );
    }

    #[test]
    fn well_scope() {
        let s = WellScope::from_list(Some(vec!["W1".into()]));
        assert!(s.allows("W1"));
        assert!(!s.allows("W2"));
        assert!(WellScope::All.allows("anything"));
        // An entry that is no well id allows nothing, and never turns the list into `All`.
        let odd = WellScope::from_list(Some(vec!["W 1".into(), "W1".into()]));
        assert_eq!(odd, WellScope::Only(vec![WellId::parse("W1").unwrap()]));
        assert!(!odd.allows("W 1"));
        assert_eq!(
            WellScope::parse_list(Some(vec!["W1".into(), "W 1".into()])),
            Err(BadWellEntry {
                entry: "W 1".into(),
                problem: crate::telemetry::WellIdError::BadChar(' ')
            })
        );
        assert_eq!(
            WellScope::parse_list(Some(vec!["W 1".into()]))
                .unwrap_err()
                .to_string(),
            r#"well "W 1": may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found ' ')"#
        );
        assert_eq!(WellScope::parse_list(None), Ok(WellScope::All));
        assert_eq!(
            WellScope::parse_list(Some(Vec::new())),
            Ok(WellScope::Only(Vec::new()))
        );
        let none = WellScope::from_list(Some(vec!["".into()]));
        assert_eq!(none, WellScope::Only(Vec::new()));
        assert!(!none.allows(""));
        assert_eq!(
            serde_json::to_string(&WellScope::from_list(Some(vec!["W1".into()]))).unwrap(),
            r#"["W1"]"#
        );
    }
}
