//! Identities and the audit trail, behind their own trait ([`SecurityStore`]) so each backend
//! adds them independently of telemetry ([`crate::Store`]).
//!
//! What is stored, and what never is:
//! - users with their Argon2id PHC hash (hashing happens in the server, off the runtime);
//! - sessions: one per login, carrying the SHA-256 of the current refresh token (single use,
//!   rotated at each refresh; presenting an already-used token revokes the whole session);
//! - API keys: an identifying prefix id and the SHA-256 of the full key (keys are 192+ bits
//!   of randomness, so a fast hash is the right tool); the key itself is never stored;
//! - the audit log: append-only, each record chained to the previous one by
//!   [`audit_chain_hash`], so editing or deleting a record in the middle is detected by
//!   [`SecurityStore::verify_audit`]. With an [`AuditKey`] (derived from the token-signing
//!   secret, which lives outside the data directory) the chain is an HMAC chain: whoever can
//!   write the database but does not hold the key cannot recompute it after an edit. Records
//!   written before the store had a key keep their plain SHA-256 hashes and still verify;
//!   after the first keyed record every record must be keyed.
//!
//! Passwords, tokens and keys are never stored or logged in the clear.

use std::time::Duration;

use async_trait::async_trait;
use espwatch_core::Timestamp;
use espwatch_core::access::{Role, WellScope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StoreResult;

/// A stored user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string. Never serialized to clients.
    #[serde(skip)]
    pub password_hash: String,
    /// The wells it may see (serialized as `null` for every well, else the list).
    pub wells: WellScope,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Failed logins counted in the current window.
    pub failed_logins: u32,
    /// Start of the current failure-counting window.
    pub failed_since: Option<Timestamp>,
    /// Logins are refused until then.
    pub locked_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub wells: WellScope,
}

/// A change to a user. `Disable`, `SetRole`, `SetPassword` and `SetWells` also revoke all of
/// the user's sessions in the same transaction (its access tokens die with them).
#[derive(Clone, Debug, PartialEq)]
pub enum UserChange {
    Disable,
    /// Also clears a lockout and the failure count (how an admin unlocks an account).
    Enable,
    SetRole(Role),
    SetPassword(String),
    SetWells(WellScope),
}

/// Lockout rule: `max_failures` failed logins within `window` lock the account for `lock`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub window: Duration,
    pub lock: Duration,
}

impl LockoutPolicy {
    /// Counts one failed login into `user` (the rule both backends apply in their
    /// transaction):
    /// - while locked (`locked_until > now`) the count goes up but the lock is not extended;
    /// - after a lock expired, or when the window started `window` or more ago (or
    ///   never), a new window starts at `now` with a count of 1 and the old lock is cleared;
    /// - when the count reaches `max_failures` the account is locked until
    ///   `now + lock`; the count stays at the limit (so the returned user shows why)
    ///   until the next failure after the lock, or a successful login, resets it.
    ///
    /// `max_failures == 0` never locks.
    pub fn count_failure(&self, user: &mut User, now: Timestamp) {
        if user.locked_until.is_some_and(|until| until > now) {
            user.failed_logins = user.failed_logins.saturating_add(1);
            return;
        }
        let in_window = user.failed_since.is_some_and(|since| {
            now.0.saturating_sub(since.0) < Timestamp::duration_micros(self.window)
        });
        if user.locked_until.is_some() || !in_window {
            user.failed_logins = 1;
            user.failed_since = Some(now);
            user.locked_until = None;
        } else {
            user.failed_logins = user.failed_logins.saturating_add(1);
        }
        if self.max_failures > 0 && user.failed_logins >= self.max_failures {
            user.locked_until = Some(now.saturating_add(self.lock));
        }
    }
}

/// A login session (one per successful login, renewed by refreshes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Session {
    /// Random id (UUID); access tokens carry it as `sid`.
    pub id: String,
    pub user_name: String,
    pub created_at: Timestamp,
    /// The current refresh token expires then; the session with it.
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// Source address of the login.
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewSession {
    pub id: String,
    pub user_name: String,
    /// SHA-256 (hex) of the first refresh token.
    pub refresh_hash: String,
    pub expires_at: Timestamp,
    pub source: Option<String>,
}

/// Result of presenting a refresh token.
#[derive(Clone, Debug, PartialEq)]
// Rotated is the common case; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum RefreshOutcome {
    /// The token was current: it is now used, `new_hash` is current, the session lives on
    /// until `new_expires_at`.
    Rotated { session: Session, user: User },
    /// The token had been used before: someone replayed it. The session is now revoked.
    Reused { session_id: String },
    /// Unknown token, or its session is expired, revoked, or its user disabled or removed.
    Invalid,
}

/// A stored API key (without the key).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiKey {
    /// Public identifier, also the key's prefix after `espw_`.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub wells: WellScope,
    /// SHA-256 (hex) of the whole key. Never serialized to clients.
    #[serde(skip)]
    pub key_hash: String,
    pub created_at: Timestamp,
    /// Who created it (user name, or `cli`).
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub wells: WellScope,
    pub key_hash: String,
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
}

/// How a well scope is kept in the `wells` column of `users` and `api_keys` on both backends:
/// NULL for every well, else a JSON array of the ids.
pub fn scope_column(scope: &WellScope) -> Option<String> {
    scope
        .as_list()
        .map(|w| serde_json::to_string(w).unwrap_or_else(|_| "[]".into()))
}

/// A `wells` column read back ([`scope_column`]'s form). Stored lists were checked when they
/// were written; an entry that is no well id (a hand-edited database) is left out, as
/// [`WellScope::from_list`] says, so it still allows nothing and never widens the list. A
/// column that is no JSON array of strings is an error.
pub fn scope_from_column(text: Option<String>) -> Result<WellScope, serde_json::Error> {
    let list = text
        .map(|t| serde_json::from_str::<Vec<String>>(&t))
        .transpose()?;
    Ok(WellScope::from_list(list))
}

/// One audit event, as the server produces it. Request records fill the request fields;
/// security events (`kind` other than `request`) fill what applies and put specifics in
/// `detail` (never a password, token or key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened (UTC).
    pub ts: Timestamp,
    /// `request`, `login_success`, `login_failure`, `lockout`, `refresh`, `refresh_reuse`,
    /// `logout`, `password_change`, `user_create`, `user_change`, `user_remove`,
    /// `apikey_create`, `apikey_revoke`, `alarm_ack`, `config_change`, ...
    pub kind: String,
    pub request_id: Option<String>,
    pub method: Option<String>,
    /// Route template (`/api/v1/wells/{id}`), never the concrete path with ids.
    pub route: Option<String>,
    pub status: Option<u16>,
    /// `user:<name>`, `key:<id>` or `None` when anonymous.
    pub actor: Option<String>,
    pub role: Option<String>,
    pub source: Option<String>,
    pub duration_ms: Option<f64>,
    /// Event specifics as JSON (`{}` when none).
    pub detail: serde_json::Value,
}

/// An audit event as stored: numbered and chained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... in append order, without gaps.
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record (`AUDIT_GENESIS` for the first).
    pub prev_hash: String,
    /// [`audit_record_hash`] of this record.
    pub hash: String,
}

/// `prev_hash` of the first audit record.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hashes of records keyed with the key derived from the JWT secret start with this; the
/// rest is the hex HMAC-SHA256.
pub const KEYED_PREFIX: &str = "k1:";

/// Hashes of records keyed with the audit key file's key start with this.
pub const FILE_KEYED_PREFIX: &str = "k2:";

/// Whether a record hash is keyed (by either key).
pub fn is_keyed_hash(hash: &str) -> bool {
    hash.starts_with(KEYED_PREFIX) || hash.starts_with(FILE_KEYED_PREFIX)
}

/// The key of the audit chain (HMAC-SHA256). `Debug` never shows it.
///
/// Either derived from the JWT secret (records `k1:`), or read from the audit key file
/// (records `k2:`), in which case the key derived from the JWT secret may come along to
/// check the `k1:` records and anchors written before the file existed. New records and
/// anchors are always made with the file's key when there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey {
    current: [u8; 32],
    /// [`KEYED_PREFIX`] or [`FILE_KEYED_PREFIX`]: what `current` makes.
    prefix: &'static str,
    /// With a file key: the JWT-derived key, for older records and anchors only.
    legacy: Option<[u8; 32]>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`. Written out on `sha2` (twenty lines)
/// rather than adding a crate to this one; checked against RFC 4231.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

impl AuditKey {
    /// The chain key derived from a secret (the token-signing secret): an HMAC of a fixed
    /// label, so the secret itself never signs audit data.
    pub fn derive(secret: &[u8]) -> AuditKey {
        AuditKey {
            current: hmac_sha256(secret, &[b"espwatch audit chain key v1"]),
            prefix: KEYED_PREFIX,
            legacy: None,
        }
    }

    /// The chain key of an audit key file's content (its own random secret, independent of
    /// the JWT secret), with the key `derive`d from the JWT secret, when there is one, to
    /// check what was written before the file existed.
    pub fn from_key_file(content: &[u8], legacy: Option<&AuditKey>) -> AuditKey {
        AuditKey {
            current: hmac_sha256(content, &[b"espwatch audit chain key v2"]),
            prefix: FILE_KEYED_PREFIX,
            legacy: legacy.map(|k| k.current),
        }
    }

    /// Whether this key comes from an audit key file (records `k2:`).
    pub fn is_file_key(&self) -> bool {
        self.prefix == FILE_KEYED_PREFIX
    }

    /// Hex HMAC-SHA256 of `parts`, each followed by a newline, with the current key.
    pub fn mac(&self, parts: &[&[u8]]) -> String {
        mac_with(&self.current, parts)
    }

    /// Constant-time check of a hex MAC made by [`AuditKey::mac`] with the current key or,
    /// for what was signed before the audit key file existed, the JWT-derived one.
    pub fn verify_mac(&self, parts: &[&[u8]], presented: &str) -> bool {
        std::iter::once(&self.current)
            .chain(self.legacy.as_ref())
            .any(|key| constant_time_eq(&mac_with(key, parts), presented))
    }

    /// The chain hash of a record with the current key.
    fn chain_hash(&self, prev_hash: &str, id: i64, event: &AuditEvent) -> String {
        chain_hash_with(self.prefix, &self.current, prev_hash, id, event)
    }

    /// The key that made hashes with `prefix`, if this key holds it.
    fn for_prefix(&self, prefix: &str) -> Option<&[u8; 32]> {
        if prefix == self.prefix {
            Some(&self.current)
        } else if prefix == KEYED_PREFIX {
            self.legacy.as_ref()
        } else {
            None
        }
    }
}

fn mac_with(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let framed: Vec<&[u8]> = parts.iter().flat_map(|p| [*p, b"\n".as_slice()]).collect();
    hex(&hmac_sha256(key, &framed))
}

fn constant_time_eq(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn chain_hash_with(
    prefix: &str,
    key: &[u8; 32],
    prev_hash: &str,
    id: i64,
    event: &AuditEvent,
) -> String {
    let canonical = serde_json::to_string(event).expect("audit events always serialize");
    chain_hash_of_text(prefix, key, prev_hash, id, &canonical)
}

/// The keyed chain hash over an event's canonical text.
fn chain_hash_of_text(
    prefix: &str,
    key: &[u8; 32],
    prev_hash: &str,
    id: i64,
    canonical: &str,
) -> String {
    let id = id.to_string();
    format!(
        "{prefix}{}",
        mac_with(
            key,
            &[prev_hash.as_bytes(), id.as_bytes(), canonical.as_bytes()]
        )
    )
}

/// The hash of record `id` after `prev_hash`: keyed ([`KEYED_PREFIX`] + HMAC-SHA256) with a
/// key, plain [`audit_record_hash`] without. Both backends call this one function.
pub fn audit_chain_hash(
    key: Option<&AuditKey>,
    prev_hash: &str,
    id: i64,
    event: &AuditEvent,
) -> String {
    match key {
        Some(key) => key.chain_hash(prev_hash, id, event),
        None => audit_record_hash(prev_hash, id, event),
    }
}

/// Refuses to append an unkeyed record after a keyed one (it would break the chain): the
/// process appending has no key while the store's chain is keyed.
pub fn check_can_append(key: Option<&AuditKey>, last_hash: &str) -> StoreResult<()> {
    if key.is_none() && is_keyed_hash(last_hash) {
        return Err(crate::StoreError::Unavailable(
            "the audit chain is keyed and this process has no audit key: configure the JWT secret (ESPWATCH_JWT_SECRET_FILE) and the audit key file (ESPWATCH_AUDIT_KEY_FILE) as the server has them".into(),
        ));
    }
    if key.is_some_and(|k| !k.is_file_key()) && last_hash.starts_with(FILE_KEYED_PREFIX) {
        return Err(crate::StoreError::Unavailable(
            "the audit chain is keyed with the audit key file and this process has only the JWT secret: configure the audit key file (ESPWATCH_AUDIT_KEY_FILE) as the server has it".into(),
        ));
    }
    Ok(())
}

/// The plain chain hash (records written without a key): SHA-256 over the previous hash, the record number and a canonical JSON
/// encoding of the event (fixed field order; `detail` with sorted keys). Both backends call
/// this one function, so their chains verify the same way.
pub fn audit_record_hash(prev_hash: &str, id: i64, event: &AuditEvent) -> String {
    let canonical = serde_json::to_string(event).expect("audit events always serialize");
    plain_hash_of_text(prev_hash, id, &canonical)
}

fn plain_hash_of_text(prev_hash: &str, id: i64, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(id.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex(&hasher.finalize())
}

/// SHA-256 of a secret (refresh token, API key) as lowercase hex: what the store keeps.
pub fn secret_digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditFilter {
    /// Exact actor (`user:ana`).
    pub actor: Option<String>,
    pub kind: Option<String>,
    /// `ts >= since`.
    pub since: Option<Timestamp>,
    /// `ts < until`.
    pub until: Option<Timestamp>,
    /// Records with `id < before_id` (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many, newest first; 0 means [`AuditFilter::DEFAULT_LIMIT`], and more
    /// than [`AuditFilter::MAX_LIMIT`] means that many.
    pub limit: usize,
}

impl AuditFilter {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 10_000;

    /// The number of records a listing returns at most (see `limit`).
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

/// Result of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditVerification {
    pub records: u64,
    /// Records with plain SHA-256 hashes (written before the chain was keyed).
    pub unkeyed: u64,
    /// The newest record's id and hash (what an anchor pins).
    pub head: Option<(i64, String)>,
    /// The first record whose hash, link or number does not match; `None` when intact.
    pub first_broken: Option<i64>,
    /// What was wrong with it.
    pub reason: Option<String>,
    /// The trail starts after a prune: the last pruned record's id and hash, accounted for
    /// by a verified `audit_pruned` record of the remaining chain.
    pub pruned: Option<(i64, String)>,
}

/// Kind of the record a prune appends.
pub const AUDIT_PRUNED_KIND: &str = "audit_pruned";

/// Kind of the records a prune that keeps security events appends, one per security event
/// of the removed prefix, just before its `audit_pruned` record.
pub const AUDIT_CARRIED_KIND: &str = "audit_carried";

/// The kinds retention may drop ([`AuditPruneScope::Requests`]): request records and the
/// aggregated rejections. Every other kind is a security event and is carried forward.
pub const AUDIT_REQUEST_KINDS: [&str; 2] = ["request", "rejected_requests"];

/// Whether retention may drop a record of this kind.
pub fn is_request_kind(kind: &str) -> bool {
    AUDIT_REQUEST_KINDS.contains(&kind)
}

/// What a prune removes from the old prefix of the chain. The default keeps every security
/// event: a routine prune (the server's `audit_retention`, a plain `espwatch audit prune`)
/// must not be a way to erase login failures, lockouts or role changes; deleting them too is
/// a separate, explicitly named choice.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditPruneScope {
    /// Only request records ([`AUDIT_REQUEST_KINDS`]); every security event of the prefix is
    /// appended again as an `audit_carried` record holding the original (id, links, canonical
    /// text), which the verifier checks against the original's hash (`audit_retention`,
    /// `espwatch audit prune`). A prefix without request records is left alone.
    #[default]
    Requests,
    /// Every record of the prefix, security events included
    /// (`espwatch audit prune --include-security-events`).
    IncludingSecurityEvents,
}

/// What [`SecurityStore::prune_audit`] removed, and the record it appended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditPrune {
    pub first_id: i64,
    pub last_id: i64,
    /// Records deleted from the chain (`last_id - first_id + 1`).
    pub count: i64,
    /// Of those, security events appended again as `audit_carried` records.
    pub carried: i64,
    /// Hash of the last removed record: the remaining chain's first `prev_hash`.
    pub last_hash: String,
    /// Id of the `audit_pruned` record appended.
    pub record_id: i64,
    /// The batch limit stopped it short: more of the prefix is old enough.
    pub more: bool,
}

/// The `audit_pruned` event naming a removed prefix (`by` gives time, actor, role, source);
/// `carried`: how many `audit_carried` records come just before it.
pub fn audit_pruned_event(
    by: AuditEvent,
    first_id: i64,
    last_id: i64,
    last_hash: &str,
    before: Timestamp,
    carried: i64,
) -> AuditEvent {
    AuditEvent {
        kind: AUDIT_PRUNED_KIND.into(),
        detail: serde_json::json!({
            "first_id": first_id,
            "last_id": last_id,
            "count": last_id - first_id + 1,
            "last_hash": last_hash,
            "before": before.0,
            "carried": carried,
        }),
        ..by
    }
}

/// The `audit_carried` event that keeps `original` (a security event of a pruned prefix): the
/// original's fields, kind `audit_carried`, and in `detail` its id, kind, links and canonical
/// text (what its hash was computed over). A carried record carried again is copied as it is
/// (it names the same original).
pub fn audit_carried_event(original: &AuditRecord) -> AuditEvent {
    if original.event.kind == AUDIT_CARRIED_KIND {
        return original.event.clone();
    }
    let canonical = serde_json::to_string(&original.event).expect("audit events always serialize");
    AuditEvent {
        kind: AUDIT_CARRIED_KIND.into(),
        detail: serde_json::json!({
            "id": original.id,
            "kind": original.event.kind,
            "prev_hash": original.prev_hash,
            "hash": original.hash,
            "event": canonical,
        }),
        ..original.event.clone()
    }
}

/// Pruning needs the audit key: an unkeyed `audit_pruned` record could be forged by anyone.
pub fn check_can_prune(key: Option<&AuditKey>) -> StoreResult<()> {
    if key.is_none() {
        return Err(crate::StoreError::Unavailable(
            "pruning the audit trail needs the audit key (the JWT secret and audit key file the server uses)".into(),
        ));
    }
    Ok(())
}

/// One account of a group whose names differ only in case, as a store written before names
/// were unique ignoring case may hold them (issue 18 item 14); read without opening the store
/// (which refuses such a file) by `espwatch users resolve-duplicates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseDuplicate {
    pub name: String,
    /// As stored (not parsed: the repair must work whatever the row holds).
    pub role: String,
    pub disabled: bool,
    pub created_at: Timestamp,
}

/// What becomes of the accounts not kept in their group.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DuplicateAction {
    /// Renamed (`Admin` → `Admin-2`), still usable under the new name.
    Rename,
    /// Renamed and disabled: kept for the record, cannot sign in.
    Disable,
}

/// One account renamed by the repair. Its sessions end (their tokens name the old spelling).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateRename {
    pub from: String,
    pub to: String,
    pub disable: bool,
    /// The account kept under its name in the same group.
    pub kept: String,
}

/// Groups of accounts whose names differ only in ASCII case (each group sorted by name, the
/// groups by their lower-cased name); `users` may be in any order.
pub fn case_duplicate_sets(mut users: Vec<CaseDuplicate>) -> Vec<Vec<CaseDuplicate>> {
    users.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut groups: Vec<Vec<CaseDuplicate>> = Vec::new();
    for user in users {
        match groups.last_mut() {
            Some(group) if group[0].name.eq_ignore_ascii_case(&user.name) => group.push(user),
            _ => groups.push(vec![user]),
        }
    }
    groups.retain(|g| g.len() > 1);
    groups
}

/// Which account each group keeps and what the others become: the one named in `keep` (any
/// of its spellings must be given exactly), else the oldest enabled account (then the oldest,
/// then the first name in byte order). The others get the first free `<name>-<n>` (n = 2, 3,
/// ...; free ignoring case among `taken`, every name in the store, and the names given so
/// far). Refuses a `keep` naming no account of any group.
pub fn plan_case_duplicates(
    groups: &[Vec<CaseDuplicate>],
    keep: &[String],
    action: DuplicateAction,
    taken: &[String],
) -> Result<Vec<DuplicateRename>, String> {
    for wanted in keep {
        if !groups.iter().flatten().any(|u| &u.name == wanted) {
            return Err(format!(
                "--keep {wanted:?} names no account among the names that differ only in case"
            ));
        }
    }
    let mut used: std::collections::HashSet<String> =
        taken.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut plan = Vec::new();
    for group in groups {
        let chosen: Vec<&CaseDuplicate> = group.iter().filter(|u| keep.contains(&u.name)).collect();
        let kept = match chosen.as_slice() {
            [one] => *one,
            [] => group
                .iter()
                .min_by(|a, b| {
                    (a.disabled, a.created_at, &a.name).cmp(&(b.disabled, b.created_at, &b.name))
                })
                .expect("a group holds two accounts or more"),
            _ => {
                return Err(format!(
                    "--keep names more than one spelling of {:?}: keep one",
                    group[0].name
                ));
            }
        };
        for user in group.iter().filter(|u| u.name != kept.name) {
            let to = (2..)
                .map(|n| {
                    let suffix = format!("-{n}");
                    let mut base = user.name.clone();
                    base.truncate(64 - suffix.len());
                    base + &suffix
                })
                .find(|candidate| !used.contains(&candidate.to_ascii_lowercase()))
                .expect("some suffix is free");
            used.insert(to.to_ascii_lowercase());
            plan.push(DuplicateRename {
                from: user.name.clone(),
                to,
                disable: action == DuplicateAction::Disable,
                kept: kept.name.clone(),
            });
        }
    }
    Ok(plan)
}

/// The sentence that tells an operator how to repair a store holding names that differ only
/// in case; `store_flag` is `--data-dir DIR` or `--database-url URL`.
pub fn case_duplicates_hint(store_flag: &str) -> String {
    format!(
        "User names are unique ignoring case from this version on: keep one account of each \
         group and rename or disable the others with `espwatch users resolve-duplicates \
         {store_flag}` (it lists the groups and what it would do; add --rename to keep the \
         others usable under new names, or --disable to rename and disable them, and --keep \
         NAME to choose the account kept), then start again"
    )
}

/// `names` (sorted so that spellings of one name are adjacent) as the groups of spellings of
/// one name, for the message refusing a store that holds names differing only in case:
/// `"Alice", "alice"; "BOB", "bob"`.
pub fn case_duplicate_groups(names: Vec<String>) -> String {
    let mut groups: Vec<Vec<String>> = Vec::new();
    for name in names {
        match groups.last_mut() {
            Some(group) if group[0].eq_ignore_ascii_case(&name) => group.push(name),
            _ => groups.push(vec![name]),
        }
    }
    groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[async_trait]
pub trait SecurityStore: Send + Sync + 'static {
    // --- users ---
    /// `Conflict` when the name exists.
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User>;
    async fn get_user(&self, name: &str) -> StoreResult<Option<User>>;
    /// The user whose name equals `name` ignoring ASCII case (exact match first). User names
    /// are unique regardless of case, so `Admin` cannot sit next to `admin` (issue 18 item 14):
    /// both stores enforce it with a unique index, and `create_user` answers `Conflict`
    /// (naming the stored spelling) for another spelling of a taken name. Both stores
    /// override this default with an indexed lookup.
    async fn get_user_any_case(&self, name: &str) -> StoreResult<Option<User>> {
        if let Some(user) = self.get_user(name).await? {
            return Ok(Some(user));
        }
        Ok(self
            .list_users()
            .await?
            .into_iter()
            .find(|u| u.name.eq_ignore_ascii_case(name)))
    }
    /// Sorted by name.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// `Ok(None)` when there is no such user.
    async fn update_user(
        &self,
        name: &str,
        change: UserChange,
        now: Timestamp,
    ) -> StoreResult<Option<User>>;
    /// Removes the user and its sessions; false when there was none.
    async fn remove_user(&self, name: &str) -> StoreResult<bool>;

    /// Counts a failed login (starting a new window when the last one is older than the
    /// policy's window) and locks the account when the count reaches the limit. Returns the
    /// user after the update; `None` for unknown users (nothing is stored for them).
    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> StoreResult<Option<User>>;
    /// Resets the failure count after a successful login.
    async fn record_login_success(&self, name: &str) -> StoreResult<()>;

    // --- sessions ---
    async fn create_session(&self, session: NewSession, now: Timestamp) -> StoreResult<Session>;
    /// Rotates a refresh token (see [`RefreshOutcome`]). Atomic: two concurrent refreshes
    /// with the same token cannot both succeed.
    async fn rotate_refresh(
        &self,
        refresh_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome>;
    /// The session when it exists, is not revoked and not expired at `now`.
    async fn active_session(&self, id: &str, now: Timestamp) -> StoreResult<Option<Session>>;
    /// Revokes a session; false when it did not exist or was revoked already.
    async fn revoke_session(&self, id: &str, now: Timestamp) -> StoreResult<bool>;

    // --- API keys ---
    /// `Conflict` when the id exists.
    async fn create_api_key(&self, key: NewApiKey, now: Timestamp) -> StoreResult<ApiKey>;
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Newest first, revoked ones included.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// false when there is no such key or it was revoked already.
    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool>;

    // --- audit ---
    /// Appends events in order, chaining each to the previous record, in one transaction;
    /// returns their ids. Safe against concurrent appenders (other connections or processes).
    async fn append_audit(&self, events: Vec<AuditEvent>) -> StoreResult<Vec<i64>>;
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;
    /// Walks the whole chain from the first record.
    async fn verify_audit(&self) -> StoreResult<AuditVerification>;
    /// Retention: removes the oldest records, the longest prefix of the chain whose records
    /// are all older than `before` (never the newest record), and appends (chained, keyed)
    /// an `audit_pruned` record naming the removed range and the last removed hash, from
    /// which verification of the rest starts. With [`AuditPruneScope::Requests`] the prefix's
    /// security events are first appended again as `audit_carried` records (see
    /// [`audit_carried_event`]), and a prefix without request records is left alone. One
    /// transaction. `None` when there is nothing to remove. Needs the audit key.
    /// `max_records` bounds one call (a transaction holds the audit log's write lock): the
    /// rest of the prefix is left for the next call (`more`).
    async fn prune_audit(
        &self,
        before: Timestamp,
        by: AuditEvent,
        scope: AuditPruneScope,
        max_records: Option<i64>,
    ) -> StoreResult<Option<AuditPrune>>;
}

/// Checks a sequence of records (ascending ids) against the chain rules; shared by backends'
/// `verify_audit`. `expect_id` and `prev` carry state between pages.
pub struct AuditChainChecker {
    expect_id: i64,
    prev: String,
    key: Option<AuditKey>,
    keyed_seen: bool,
    /// A record keyed with the audit key file was seen: none keyed with the JWT-derived key
    /// may follow (whoever holds only the JWT secret cannot extend or rewrite the chain).
    file_keyed_seen: bool,
    /// The first record seen was not record 1: the id and hash it links to, and whether a
    /// verified `audit_pruned` record names them.
    start: Option<(i64, String)>,
    start_accounted: bool,
    /// The `audit_carried` records just checked, in a row: the first one's id and the ids
    /// of the originals they hold (an `audit_pruned` record must follow and name them).
    carried_run: Option<(i64, Vec<i64>)>,
    pub records: u64,
    pub unkeyed: u64,
}

impl Default for AuditChainChecker {
    fn default() -> Self {
        AuditChainChecker::new(None)
    }
}

impl AuditChainChecker {
    /// A checker for a chain keyed with `key` (keyed records cannot be checked without it).
    pub fn new(key: Option<AuditKey>) -> Self {
        AuditChainChecker {
            expect_id: 1,
            prev: AUDIT_GENESIS.to_owned(),
            key,
            keyed_seen: false,
            file_keyed_seen: false,
            start: None,
            start_accounted: false,
            carried_run: None,
            records: 0,
            unkeyed: 0,
        }
    }

    /// The last record checked: its id and hash.
    pub fn head(&self) -> Option<(i64, String)> {
        (self.records > 0).then(|| (self.expect_id - 1, self.prev.clone()))
    }

    /// The verdict after the last page.
    pub fn verdict(&self, broken: Option<(i64, String)>) -> AuditVerification {
        // A start nothing accounts for is a break before the first record checked: none of
        // the records after it counts as verified before the break.
        let start_is_the_break = broken.is_none() && self.start.is_some() && !self.start_accounted;
        let broken = broken.or_else(|| match &self.start {
            Some((last, _)) if !self.start_accounted => Some((
                last + 1,
                format!(
                    "records 1..={last} are missing and no audit_pruned record accounts for them (the oldest records, or the prune record, were deleted)"
                ),
            )),
            _ => None,
        });
        let broken = broken.or_else(|| {
            self.carried_run.as_ref().map(|(first, _)| {
                (
                    *first,
                    "audit_carried records at the end of the trail without their audit_pruned record (it was deleted)".to_owned(),
                )
            })
        });
        let (first_broken, reason) = broken.unzip();
        AuditVerification {
            records: if start_is_the_break { 0 } else { self.records },
            unkeyed: self.unkeyed,
            head: self.head(),
            first_broken,
            reason,
            pruned: self.start.clone(),
        }
    }

    /// Checks the next record; `Err(reason)` at the first break.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), String> {
        if self.records == 0 && self.expect_id == 1 && record.id > 1 {
            // The trail starts after a prune: checked from the link of its first record,
            // which a verified `audit_pruned` record further on must name (see `verdict`).
            self.start = Some((record.id - 1, record.prev_hash.clone()));
            self.expect_id = record.id;
            self.prev = record.prev_hash.clone();
        }
        if record.id != self.expect_id {
            return Err(format!(
                "record number {} found where {} was expected (a record is missing)",
                record.id, self.expect_id
            ));
        }
        if record.prev_hash != self.prev {
            return Err("its link to the previous record does not match".into());
        }
        let prefix = [KEYED_PREFIX, FILE_KEYED_PREFIX]
            .into_iter()
            .find(|p| record.hash.starts_with(p));
        let computed = if let Some(prefix) = prefix {
            let Some(key) = &self.key else {
                return Err("it is keyed and no audit key was given: run with the JWT secret (and audit key file) the server uses".into());
            };
            let file_keyed = prefix == FILE_KEYED_PREFIX;
            if self.file_keyed_seen && !file_keyed {
                return Err("a record keyed with the JWT-derived key after records keyed with the audit key file (the chain was extended or rewritten without the audit key)".into());
            }
            let Some(bytes) = key.for_prefix(prefix) else {
                return Err(if file_keyed {
                    "it is keyed with the audit key file and no audit key file was given: run with the audit_key_file the server uses".into()
                } else {
                    "it is keyed with the JWT-derived key and the key given cannot check it: run with the JWT secret the server used then".into()
                });
            };
            self.keyed_seen = true;
            self.file_keyed_seen |= file_keyed;
            chain_hash_with(prefix, bytes, &record.prev_hash, record.id, &record.event)
        } else {
            if self.keyed_seen {
                return Err(
                    "an unkeyed record after keyed ones (the chain was rewritten without the key)"
                        .into(),
                );
            }
            self.unkeyed += 1;
            audit_record_hash(&record.prev_hash, record.id, &record.event)
        };
        if computed != record.hash {
            return Err("its content does not match its hash (the record was altered, or the chain was recomputed without the key)".into());
        }
        if record.event.kind == AUDIT_CARRIED_KIND {
            let original = self.check_carried(record)?;
            self.carried_run
                .get_or_insert_with(|| (record.id, Vec::new()))
                .1
                .push(original);
        } else if record.event.kind != AUDIT_PRUNED_KIND && self.carried_run.is_some() {
            return Err(
                "audit_carried records are not followed by their audit_pruned record".into(),
            );
        }
        if record.event.kind == AUDIT_PRUNED_KIND {
            let d = &record.event.detail;
            let (first, last) = (d["first_id"].as_i64(), d["last_id"].as_i64());
            let (Some(first), Some(last), Some(hash)) = (first, last, d["last_hash"].as_str())
            else {
                return Err("an audit_pruned record without its range".into());
            };
            if first < 1 || last < first || last >= record.id {
                return Err("an audit_pruned record with an impossible range".into());
            }
            // The security events of the pruned prefix come just before it, carried.
            let carried = self
                .carried_run
                .take()
                .map(|(_, ids)| ids)
                .unwrap_or_default();
            let named = match &d["carried"] {
                serde_json::Value::Null => 0,
                n => n
                    .as_u64()
                    .ok_or("an audit_pruned record with an impossible carried count")?,
            };
            if carried.len() as u64 != named {
                return Err(format!(
                    "the audit_pruned record names {named} carried security events and {} audit_carried records precede it (carried records were deleted or added)",
                    carried.len()
                ));
            }
            if carried.iter().any(|&id| id > last) {
                return Err(
                    "an audit_carried record before this audit_pruned record holds a record it did not prune"
                        .into(),
                );
            }
            if let Some((start, start_hash)) = &self.start
                && *start == last
                && start_hash == hash
            {
                self.start_accounted = true;
            }
        }
        self.prev = record.hash.clone();
        self.expect_id += 1;
        self.records += 1;
        Ok(())
    }

    /// Checks that an `audit_carried` record holds a genuine original: its canonical text
    /// hashes (with the key its hash names, or plain SHA-256 for an unkeyed one) to the
    /// original hash, and the carried record shows the original's fields. Returns the
    /// original's id.
    fn check_carried(&self, record: &AuditRecord) -> Result<i64, String> {
        let d = &record.event.detail;
        let (Some(id), Some(kind), Some(prev_hash), Some(hash), Some(text)) = (
            d["id"].as_i64(),
            d["kind"].as_str(),
            d["prev_hash"].as_str(),
            d["hash"].as_str(),
            d["event"].as_str(),
        ) else {
            return Err("an audit_carried record without its original".into());
        };
        if id < 1 || id >= record.id || kind == AUDIT_CARRIED_KIND {
            return Err("an audit_carried record with an impossible original".into());
        }
        let prefix = [KEYED_PREFIX, FILE_KEYED_PREFIX]
            .into_iter()
            .find(|p| hash.starts_with(p));
        let computed = match prefix {
            Some(prefix) => {
                let Some(bytes) = self.key.as_ref().and_then(|k| k.for_prefix(prefix)) else {
                    return Err(
                        "it carries a record keyed with a key that was not given: run with the keys the server uses"
                            .into(),
                    );
                };
                chain_hash_of_text(prefix, bytes, prev_hash, id, text)
            }
            None => plain_hash_of_text(prev_hash, id, text),
        };
        if !constant_time_eq(&computed, hash) {
            return Err(format!(
                "the record it carries (original record {id}) does not match the original's hash (the carried event was altered)"
            ));
        }
        let original: AuditEvent = serde_json::from_str(text)
            .map_err(|_| format!("the record it carries (original record {id}) cannot be read"))?;
        // serde_json's default float parsing may miss the last bit of a long mantissa, so
        // `duration_ms` is compared to a relative 1e-12 (the hash above was checked on the
        // exact text); every other field exactly.
        let close = match (original.duration_ms, record.event.duration_ms) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0),
            (a, b) => a.is_none() && b.is_none(),
        };
        let shown = AuditEvent {
            kind: record.event.kind.clone(),
            detail: record.event.detail.clone(),
            duration_ms: record.event.duration_ms,
            ..original.clone()
        };
        if original.kind != kind || shown != record.event || !close {
            return Err(format!(
                "its fields differ from the original record {id} it carries"
            ));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, created: i64, disabled: bool) -> CaseDuplicate {
        CaseDuplicate {
            name: name.into(),
            role: "viewer".into(),
            disabled,
            created_at: Timestamp(created),
        }
    }

    /// Issue 18 item 14 repair: the oldest enabled account is kept unless one is named, the
    /// others get free names (ignoring case, among the store's and each other's).
    #[test]
    fn case_duplicates_are_planned_with_free_names() {
        let users = vec![
            account("carol", 1, false),
            account("Admin", 2, false),
            account("admin", 3, false),
            account("OPS", 1, true),
            account("ops", 5, false),
            account("Ops", 6, false),
            account("ops-2", 7, false),
        ];
        let groups = case_duplicate_sets(users.clone());
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|u| u.name.as_str()).collect())
            .collect();
        assert_eq!(names, [vec!["Admin", "admin"], vec!["OPS", "Ops", "ops"]]);
        let taken: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
        let plan = plan_case_duplicates(&groups, &[], DuplicateAction::Rename, &taken).unwrap();
        let moves: Vec<(&str, &str, &str)> = plan
            .iter()
            .map(|r| (r.from.as_str(), r.to.as_str(), r.kept.as_str()))
            .collect();
        assert_eq!(
            moves,
            [
                ("admin", "admin-2", "Admin"),
                ("OPS", "OPS-3", "ops"),
                ("Ops", "Ops-4", "ops"),
            ]
        );
        assert!(plan.iter().all(|r| !r.disable));
        let plan =
            plan_case_duplicates(&groups, &["admin".into()], DuplicateAction::Disable, &taken)
                .unwrap();
        assert_eq!(
            (plan[0].from.as_str(), plan[0].to.as_str()),
            ("Admin", "Admin-2")
        );
        assert!(plan.iter().all(|r| r.disable));
        assert!(
            plan_case_duplicates(&groups, &["carol".into()], DuplicateAction::Rename, &taken)
                .is_err()
        );
        assert!(
            plan_case_duplicates(
                &groups,
                &["ops".into(), "OPS".into()],
                DuplicateAction::Rename,
                &taken
            )
            .is_err()
        );
        let long = "a".repeat(64);
        let groups = case_duplicate_sets(vec![
            account(&long, 1, false),
            account(&long.to_uppercase(), 2, false),
        ]);
        let plan = plan_case_duplicates(&groups, &[], DuplicateAction::Rename, &[]).unwrap();
        assert_eq!(plan[0].to.len(), 64);
        assert!(plan[0].to.ends_with("-2"));
    }

    fn event(kind: &str) -> AuditEvent {
        AuditEvent {
            ts: Timestamp(1_700_000_000_000_000),
            kind: kind.into(),
            request_id: Some("r1".into()),
            method: Some("GET".into()),
            route: Some("/api/v1/wells".into()),
            status: Some(200),
            actor: Some("user:ana".into()),
            role: Some("viewer".into()),
            source: Some("127.0.0.1".into()),
            duration_ms: Some(1.25),
            detail: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    /// Records `first_id..` chained after `prev` with `key`.
    fn chained(
        key: &AuditKey,
        first_id: i64,
        prev: &str,
        events: Vec<AuditEvent>,
    ) -> Vec<AuditRecord> {
        let mut prev = prev.to_owned();
        let mut out = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let id = first_id + i as i64;
            let hash = audit_chain_hash(Some(key), &prev, id, &event);
            out.push(AuditRecord {
                id,
                event,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        out
    }

    fn check_all(key: &AuditKey, records: &[AuditRecord]) -> AuditVerification {
        let mut checker = AuditChainChecker::new(Some(key.clone()));
        for r in records {
            if let Err(reason) = checker.check(r) {
                return checker.verdict(Some((r.id, reason)));
            }
        }
        checker.verdict(None)
    }

    #[test]
    fn carried_records_must_hold_genuine_originals_and_precede_their_prune_record() {
        let key = AuditKey::derive(b"unit test secret, 0123456789abcdef0123456789");
        let mut login = event("login_failure");
        login.ts = Timestamp(login.ts.0 + 1);
        let old = chained(
            &key,
            1,
            AUDIT_GENESIS,
            vec![event("request"), login, event("request"), event("request")],
        );
        let by = AuditEvent {
            kind: String::new(),
            ..event("request")
        };
        let carried = audit_carried_event(&old[1]);
        let pruned = audit_pruned_event(by, 1, 3, &old[2].hash, Timestamp(0), 1);
        let trail = |events: Vec<AuditEvent>| {
            let mut t = vec![old[3].clone()];
            t.extend(chained(&key, 5, &old[3].hash, events));
            t
        };
        let good = trail(vec![carried.clone(), pruned.clone()]);
        let v = check_all(&key, &good);
        assert_eq!((v.first_broken, v.records), (None, 3), "{v:?}");
        assert_eq!(v.pruned, Some((3, old[2].hash.clone())));
        // Re-carried as it is, it still verifies.
        assert_eq!(audit_carried_event(&good[1]), carried);

        // Even with the key, a carried original that was altered does not verify.
        let mut forged = carried.clone();
        let text = forged.detail["event"]
            .as_str()
            .unwrap()
            .replace("user:ana", "user:eve");
        forged.detail["event"] = text.into();
        forged.actor = Some("user:eve".into());
        let v = check_all(&key, &trail(vec![forged, pruned.clone()]));
        assert_eq!(v.first_broken, Some(5), "{v:?}");
        assert!(v.reason.unwrap().contains("original's hash"));
        // Shown fields that differ from the original.
        let mut shown = carried.clone();
        shown.status = Some(500);
        let v = check_all(&key, &trail(vec![shown, pruned.clone()]));
        assert_eq!(v.first_broken, Some(5), "{v:?}");
        // A carried record dropped (and the chain recomputed with the key).
        let v = check_all(&key, &trail(vec![pruned.clone()]));
        assert_eq!(v.first_broken, Some(5), "{v:?}");
        assert!(v.reason.unwrap().contains("names 1 carried"));
        // One added.
        let v = check_all(
            &key,
            &trail(vec![carried.clone(), carried.clone(), pruned.clone()]),
        );
        assert_eq!(v.first_broken, Some(7), "{v:?}");
        // Carried records without their prune record: followed by another, or at the end.
        let v = check_all(
            &key,
            &trail(vec![carried.clone(), event("request"), pruned.clone()]),
        );
        assert_eq!(v.first_broken, Some(6), "{v:?}");
        let v = check_all(&key, &trail(vec![carried.clone()]));
        assert!(v.first_broken.is_some(), "{v:?}");
        // An original the prune record did not remove.
        let mut late = pruned.clone();
        late.detail["last_id"] = 1.into();
        late.detail["count"] = 1.into();
        let v = check_all(&key, &trail(vec![carried, late]));
        assert_eq!(v.first_broken, Some(6), "{v:?}");
    }

    #[test]
    fn chain_detects_edits_and_gaps() {
        let mut prev = AUDIT_GENESIS.to_owned();
        let mut records = Vec::new();
        for id in 1..=3 {
            let e = event(if id == 2 { "login_success" } else { "request" });
            let hash = audit_record_hash(&prev, id, &e);
            records.push(AuditRecord {
                id,
                event: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let mut checker = AuditChainChecker::default();
        for r in &records {
            checker.check(r).unwrap();
        }
        let mut edited = records.clone();
        edited[1].event.status = Some(500);
        let mut checker = AuditChainChecker::default();
        checker.check(&edited[0]).unwrap();
        assert!(checker.check(&edited[1]).is_err());

        let mut checker = AuditChainChecker::default();
        checker.check(&records[0]).unwrap();
        assert!(checker.check(&records[2]).is_err(), "gap detected");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2, and test case 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya ", b"want for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn keyed_chain_refuses_unkeyed_rewrites() {
        let key = AuditKey::derive(b"a secret of enough length for the test 0123");
        let build = |keyed_from: i64, key: &AuditKey| {
            let mut prev = AUDIT_GENESIS.to_owned();
            let mut records = Vec::new();
            for id in 1..=4 {
                let e = event("request");
                let hash = audit_chain_hash((id >= keyed_from).then_some(key), &prev, id, &e);
                records.push(AuditRecord {
                    id,
                    event: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                });
                prev = hash;
            }
            records
        };
        // Two legacy records, then keyed ones: verifies, counting the legacy ones.
        let mut checker = AuditChainChecker::new(Some(key.clone()));
        for r in &build(3, &key) {
            checker.check(r).unwrap();
        }
        assert_eq!((checker.records, checker.unkeyed), (4, 2));
        // Rewritten as a plain chain after keyed records: refused.
        let mut mixed = build(2, &key);
        let plain = build(99, &key);
        mixed[3] = plain[3].clone();
        mixed[3].prev_hash = mixed[2].hash.clone();
        mixed[3].hash = audit_record_hash(&mixed[3].prev_hash, 4, &mixed[3].event);
        let mut checker = AuditChainChecker::new(Some(key.clone()));
        let results: Vec<_> = mixed.iter().map(|r| checker.check(r)).collect();
        assert!(
            results[..3].iter().all(Result::is_ok) && results[3].is_err(),
            "{results:?}"
        );
        // Recomputed with another key: refused; without a key: refused.
        let other = AuditKey::derive(b"another secret of enough length 0123456789");
        assert!(
            AuditChainChecker::new(Some(key.clone()))
                .check(&build(1, &other)[0])
                .is_err()
        );
        assert!(
            AuditChainChecker::new(None)
                .check(&build(1, &key)[0])
                .is_err()
        );
        assert!(check_can_append(None, &build(1, &key)[0].hash).is_err());
        assert!(check_can_append(None, AUDIT_GENESIS).is_ok());
        assert!(!format!("{key:?}").contains(|c: char| c.is_ascii_digit()));
    }

    /// Issue 18 leftover: the audit key file's key takes over from the JWT-derived one. A
    /// chain of unkeyed, then JWT-keyed (`k1:`), then file-keyed (`k2:`) records verifies with
    /// the file key that carries the derived one; the JWT secret alone cannot check, extend
    /// or rewrite the `k2:` part, and no `k1:` record may follow a `k2:` one.
    #[test]
    fn the_audit_key_file_takes_over_from_the_jwt_derived_key() {
        let derived = AuditKey::derive(b"a secret of enough length for the test 0123");
        let file = AuditKey::from_key_file(
            b"the audit key file's random content 01234567",
            Some(&derived),
        );
        assert!(file.is_file_key() && !derived.is_file_key());
        let chain = |keys: &[Option<&AuditKey>]| {
            let mut prev = AUDIT_GENESIS.to_owned();
            let mut records = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let id = i as i64 + 1;
                let e = event("request");
                let hash = audit_chain_hash(*key, &prev, id, &e);
                records.push(AuditRecord {
                    id,
                    event: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                });
                prev = hash;
            }
            records
        };
        let verify = |key: Option<&AuditKey>, records: &[AuditRecord]| {
            let mut checker = AuditChainChecker::new(key.cloned());
            records.iter().map(|r| checker.check(r)).collect::<Vec<_>>()
        };
        let history = chain(&[
            None,
            Some(&derived),
            Some(&derived),
            Some(&file),
            Some(&file),
        ]);
        assert!(history[1].hash.starts_with(KEYED_PREFIX));
        assert!(history[3].hash.starts_with(FILE_KEYED_PREFIX));
        let all = verify(Some(&file), &history);
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        // With the JWT secret only: the file-keyed records cannot be checked.
        let jwt_only = verify(Some(&derived), &history);
        assert!(
            jwt_only[..3].iter().all(Result::is_ok) && jwt_only[3].is_err(),
            "{jwt_only:?}"
        );
        // Extended or rewritten with the JWT-derived key after file-keyed records: refused.
        let extended = chain(&[Some(&file), Some(&derived)]);
        let results = verify(Some(&file), &extended);
        assert!(results[0].is_ok() && results[1].is_err(), "{results:?}");
        assert!(check_can_append(Some(&derived), &history[4].hash).is_err());
        assert!(check_can_append(Some(&file), &history[4].hash).is_ok());
        assert!(check_can_append(Some(&file), &history[2].hash).is_ok());
        // A file key without the derived one cannot check the older `k1:` records.
        let alone = AuditKey::from_key_file(b"the audit key file's random content 01234567", None);
        let results = verify(Some(&alone), &history);
        assert!(results[0].is_ok() && results[1].is_err(), "{results:?}");
        // Anchors signed before the file existed still verify with the file key.
        let parts: [&[u8]; 2] = [b"12", b"hash"];
        assert!(file.verify_mac(&parts, &derived.mac(&parts)));
        assert!(!alone.verify_mac(&parts, &derived.mac(&parts)));
        assert!(!derived.verify_mac(&parts, &file.mac(&parts)));
    }

    /// The `wells` column both backends keep: written from a scope, read back into one; what a
    /// hand-edited or older database holds never fails the read of its user and never widens
    /// the scope.
    #[test]
    fn scope_column_round_trip_and_lenient_read() {
        use espwatch_core::WellId;
        let w = |s: &str| WellId::parse(s).unwrap();
        for scope in [
            WellScope::All,
            WellScope::Only(Vec::new()),
            WellScope::Only(vec![w("W-1"), w(".old")]),
        ] {
            assert_eq!(
                scope_from_column(scope_column(&scope)).unwrap(),
                scope,
                "{scope:?}"
            );
        }
        assert_eq!(scope_column(&WellScope::All), None);
        assert_eq!(
            scope_column(&WellScope::Only(vec![w("W-1")])).as_deref(),
            Some(r#"["W-1"]"#)
        );
        assert_eq!(
            scope_from_column(Some(r#"["W 1","W-2",""]"#.into())).unwrap(),
            WellScope::Only(vec![w("W-2")])
        );
        assert_eq!(
            scope_from_column(Some(r#"["W 1"]"#.into())).unwrap(),
            WellScope::Only(Vec::new())
        );
        assert!(scope_from_column(Some("W-1".into())).is_err());
    }

    #[test]
    fn lockout_rule() {
        let policy = LockoutPolicy {
            max_failures: 2,
            window: Duration::from_micros(10),
            lock: Duration::from_micros(100),
        };
        let mut u = User {
            name: "ana".into(),
            role: Role::Viewer,
            password_hash: String::new(),
            wells: WellScope::All,
            disabled: false,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            failed_logins: 0,
            failed_since: None,
            locked_until: None,
        };
        let state = |u: &User| (u.failed_logins, u.failed_since, u.locked_until);
        policy.count_failure(&mut u, Timestamp(1000));
        assert_eq!(state(&u), (1, Some(Timestamp(1000)), None));
        // Exactly `window` later is outside the window.
        policy.count_failure(&mut u, Timestamp(1010));
        assert_eq!(state(&u), (1, Some(Timestamp(1010)), None));
        policy.count_failure(&mut u, Timestamp(1019));
        assert_eq!(state(&u), (2, Some(Timestamp(1010)), Some(Timestamp(1119))));
        // Locked: counted, not extended, even past the window.
        policy.count_failure(&mut u, Timestamp(1100));
        assert_eq!(state(&u), (3, Some(Timestamp(1010)), Some(Timestamp(1119))));
        // The lock ends at locked_until.
        policy.count_failure(&mut u, Timestamp(1119));
        assert_eq!(state(&u), (1, Some(Timestamp(1119)), None));
    }

    #[test]
    fn audit_limits() {
        let limit = |n| {
            AuditFilter {
                limit: n,
                ..Default::default()
            }
            .effective_limit()
        };
        assert_eq!(
            (limit(0), limit(1), limit(10_000), limit(10_001)),
            (100, 1, 10_000, 10_000)
        );
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            secret_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
