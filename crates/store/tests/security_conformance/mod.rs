//! Backend-independent conformance suite for [`SecurityStore`]: users, lockout, sessions and
//! refresh-token rotation, API keys, and the chained audit log (including tampering done
//! behind the store's back, through the harness).
//!
//! Instantiate with `security_conformance_tests!(make_harness_expression);` in a test module.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use espwatch_core::Timestamp;
use espwatch_core::WellId;
use espwatch_core::access::{Role, WellScope};
use espwatch_store::security::is_request_kind;
use espwatch_store::security::{AUDIT_GENESIS, audit_record_hash, secret_digest};
use espwatch_store::{
    AuditEvent, AuditFilter, AuditKey, AuditPruneScope, AuditRecord, LockoutPolicy, NewApiKey,
    NewSession, NewUser, RefreshOutcome, SecurityStore, StoreError, UserChange,
};

/// How the suite reaches a backend's security store and, bypassing it, its storage.
#[async_trait]
pub trait SecurityHarness: Send + Sync + 'static {
    /// A store over this harness's storage (the same storage on every call).
    async fn open(&self) -> Arc<dyn SecurityStore>;
    /// The same, keying the audit chain with `key` (pruning needs it).
    async fn open_keyed(&self, key: AuditKey) -> Arc<dyn SecurityStore>;
    /// Changes one column (e.g. `status`) of audit record `id` directly in the storage.
    async fn tamper_audit(&self, id: i64);
    /// Deletes audit record `id` directly in the storage.
    async fn delete_audit(&self, id: i64);
    /// Sets user `name`'s stored role to a string no `Role` parses.
    async fn corrupt_role(&self, name: &str);
}

/// Generates one `#[tokio::test]` per case for the harness built by `$make`.
macro_rules! security_conformance_tests {
    ($make:expr) => {
        $crate::security_conformance::security_conformance_tests!(@cases $make;
            users_create_get_list_conflict,
            user_changes_and_session_revocation,
            remove_user_cascades,
            lockout_window_limit_and_lock,
            login_success_and_enable_reset_lockout,
            sessions_lifecycle,
            refresh_rotation_and_reuse_detection,
            refresh_invalid_cases,
            concurrent_refresh_has_one_winner,
            api_keys_lifecycle,
            audit_append_chain_and_verify,
            audit_round_trips_values,
            audit_concurrent_appenders,
            audit_list_filters,
            audit_tamper_detected,
            audit_deleted_record_detected,
            audit_retention_removes_requests_and_carries_security_events,
            audit_retention_in_batches_keeps_the_chain_verifiable,
            audit_prune_of_security_events_is_explicit_and_verifiable,
            stored_garbage_is_an_error_not_a_panic,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let harness = $make;
                $crate::security_conformance::$case(&harness).await;
            }
        )*
    };
}
pub(crate) use security_conformance_tests;

// ---------------------------------------------------------------------------------------------
// Helpers

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000_000;
pub const SEC: i64 = 1_000_000;

pub fn at(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * SEC)
}

pub fn new_user(name: &str, role: Role) -> NewUser {
    NewUser {
        name: name.into(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
        wells: WellScope::All,
    }
}

/// The scope of exactly these wells.
pub fn only(wells: &[&str]) -> WellScope {
    WellScope::Only(wells.iter().map(|w| WellId::parse(w).unwrap()).collect())
}

pub fn new_session(id: &str, user: &str, token: &str, expires_secs: i64) -> NewSession {
    NewSession {
        id: id.into(),
        user_name: user.into(),
        refresh_hash: secret_digest(token),
        expires_at: at(expires_secs),
        source: Some("10.0.0.7".into()),
    }
}

pub fn new_key(id: &str, role: Role) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        name: format!("gateway {id}"),
        role,
        wells: only(&["W-1", "W-2"]),
        key_hash: secret_digest(&format!("espw_{id}_secret")),
        created_by: "user:root".into(),
        expires_at: Some(at(86_400)),
    }
}

pub fn policy() -> LockoutPolicy {
    LockoutPolicy {
        max_failures: 3,
        window: std::time::Duration::from_secs(60),
        lock: std::time::Duration::from_secs(300),
    }
}

pub fn event(secs: i64, kind: &str, actor: Option<&str>, status: u16) -> AuditEvent {
    AuditEvent {
        ts: at(secs),
        kind: kind.into(),
        request_id: Some(format!("req-{secs}")),
        method: Some("GET".into()),
        route: Some("/api/v1/wells/{id}".into()),
        status: Some(status),
        actor: actor.map(str::to_owned),
        role: actor.map(|_| "viewer".to_owned()),
        source: Some("192.0.2.1".into()),
        duration_ms: Some(1.5 + secs as f64 / 1000.0),
        detail: serde_json::json!({"zeta": 1, "alpha": {"b": [1, 2.5, "x"], "a": null}}),
    }
}

fn rotated(outcome: RefreshOutcome) -> (espwatch_store::Session, espwatch_store::User) {
    match outcome {
        RefreshOutcome::Rotated { session, user } => (session, user),
        other => panic!("expected Rotated, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Users

pub async fn users_create_get_list_conflict(h: &impl SecurityHarness) {
    let s = h.open().await;
    assert!(s.list_users().await.unwrap().is_empty());
    assert_eq!(s.get_user("ana").await.unwrap(), None);

    let mut nu = new_user("ana", Role::Analyst);
    nu.wells = only(&["W-1", "W-7"]);
    let ana = s.create_user(nu.clone(), at(0)).await.unwrap();
    assert_eq!(ana.name, "ana");
    assert_eq!(ana.role, Role::Analyst);
    assert_eq!(ana.password_hash, nu.password_hash);
    assert_eq!(ana.wells, only(&["W-1", "W-7"]));
    assert!(!ana.disabled);
    assert_eq!((ana.created_at, ana.updated_at), (at(0), at(0)));
    assert_eq!(ana.failed_logins, 0);
    assert_eq!((ana.failed_since, ana.locked_until), (None, None));
    assert_eq!(s.get_user("ana").await.unwrap(), Some(ana.clone()));

    // An empty list is not "every well".
    let mut empty = new_user("bob", Role::Viewer);
    empty.wells = only(&[]);
    let bob = s.create_user(empty, at(1)).await.unwrap();
    assert_eq!(bob.wells, only(&[]));
    s.create_user(new_user("Zed", Role::Admin), at(2))
        .await
        .unwrap();
    s.create_user(new_user("carl", Role::ApiClient), at(3))
        .await
        .unwrap();

    match s.create_user(new_user("ana", Role::Admin), at(4)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The conflict changed nothing.
    assert_eq!(s.get_user("ana").await.unwrap(), Some(ana));

    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(
        names,
        ["Zed", "ana", "bob", "carl"],
        "sorted by name (bytes)"
    );

    // Every role survives the round trip.
    for (i, role) in Role::ALL.into_iter().enumerate() {
        let name = format!("role-{i}");
        s.create_user(new_user(&name, role), at(5)).await.unwrap();
        assert_eq!(s.get_user(&name).await.unwrap().unwrap().role, role);
    }
}

pub async fn user_changes_and_session_revocation(h: &impl SecurityHarness) {
    let s = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    s.create_user(new_user("other", Role::Viewer), at(0))
        .await
        .unwrap();
    assert_eq!(
        s.update_user("nobody", UserChange::Disable, at(1))
            .await
            .unwrap(),
        None
    );

    let changes = [
        (UserChange::SetRole(Role::Operator), true),
        (UserChange::SetPassword("$argon2id$new".into()), true),
        (UserChange::SetWells(only(&["W-9"])), true),
        (UserChange::SetWells(WellScope::All), true),
        (UserChange::Disable, true),
        (UserChange::Enable, false),
    ];
    for (i, (change, revokes)) in changes.into_iter().enumerate() {
        let i = i as i64;
        let sid = format!("s-{i}");
        let other_sid = format!("o-{i}");
        s.create_session(
            new_session(&sid, "ana", &format!("t-{i}"), 3600),
            at(10 * i),
        )
        .await
        .unwrap();
        s.create_session(
            new_session(&other_sid, "other", &format!("ot-{i}"), 3600),
            at(10 * i),
        )
        .await
        .unwrap();
        let now = at(10 * i + 5);
        let user = s
            .update_user("ana", change.clone(), now)
            .await
            .unwrap()
            .expect("ana exists");
        assert_eq!(user.updated_at, now, "{change:?}");
        assert_eq!(user.created_at, at(0));
        match &change {
            UserChange::SetRole(r) => assert_eq!(user.role, *r),
            UserChange::SetPassword(p) => assert_eq!(&user.password_hash, p),
            UserChange::SetWells(w) => assert_eq!(&user.wells, w),
            UserChange::Disable => assert!(user.disabled),
            UserChange::Enable => assert!(!user.disabled),
        }
        assert_eq!(s.get_user("ana").await.unwrap(), Some(user));
        let active = s.active_session(&sid, now).await.unwrap();
        if revokes {
            assert_eq!(active, None, "{change:?} revokes the user's sessions");
            // Revoked already: revoking again reports false.
            assert!(!s.revoke_session(&sid, now).await.unwrap());
            assert_eq!(
                s.rotate_refresh(&secret_digest(&format!("t-{i}")), "x", at(7200), now)
                    .await
                    .unwrap(),
                RefreshOutcome::Invalid
            );
        } else {
            assert!(active.is_some(), "{change:?} keeps sessions");
        }
        // Other users' sessions are untouched.
        assert!(s.active_session(&other_sid, now).await.unwrap().is_some());
    }
    let ana = s.get_user("ana").await.unwrap().unwrap();
    assert_eq!(ana.role, Role::Operator);
    assert_eq!(ana.wells, WellScope::All);
    assert_eq!(ana.password_hash, "$argon2id$new");
}

pub async fn remove_user_cascades(h: &impl SecurityHarness) {
    let s = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    s.create_session(new_session("s1", "ana", "tok1", 3600), at(1))
        .await
        .unwrap();
    s.create_session(new_session("s2", "ana", "tok2", 3600), at(1))
        .await
        .unwrap();
    rotated(
        s.rotate_refresh(
            &secret_digest("tok1"),
            &secret_digest("tok1b"),
            at(3600),
            at(2),
        )
        .await
        .unwrap(),
    );
    assert!(s.remove_user("ana").await.unwrap());
    assert!(!s.remove_user("ana").await.unwrap());
    assert_eq!(s.get_user("ana").await.unwrap(), None);
    for sid in ["s1", "s2"] {
        assert_eq!(s.active_session(sid, at(3)).await.unwrap(), None);
        assert!(!s.revoke_session(sid, at(3)).await.unwrap(), "gone");
    }
    for tok in ["tok1", "tok1b", "tok2"] {
        assert_eq!(
            s.rotate_refresh(&secret_digest(tok), "n", at(3600), at(3))
                .await
                .unwrap(),
            RefreshOutcome::Invalid,
            "{tok}"
        );
    }
    // The name can be used again, and the old sessions do not come back with it.
    s.create_user(new_user("ana", Role::Admin), at(4))
        .await
        .unwrap();
    assert_eq!(s.active_session("s1", at(5)).await.unwrap(), None);
    // Session ids of the removed user are free again too.
    s.create_session(new_session("s1", "ana", "tok9", 3600), at(6))
        .await
        .unwrap();
}

pub async fn lockout_window_limit_and_lock(h: &impl SecurityHarness) {
    let s = h.open().await;
    let p = policy();
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    assert_eq!(
        s.record_login_failure("ghost", at(0), p).await.unwrap(),
        None
    );
    assert_eq!(s.get_user("ghost").await.unwrap(), None, "nothing stored");

    let u = s
        .record_login_failure("ana", at(10), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (1, Some(at(10)), None)
    );
    let u = s
        .record_login_failure("ana", at(40), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (2, Some(at(10)), None)
    );
    // The window (60 s from the first failure) has passed: a new window starts.
    let u = s
        .record_login_failure("ana", at(70), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (1, Some(at(70)), None)
    );
    s.record_login_failure("ana", at(80), p).await.unwrap();
    let u = s
        .record_login_failure("ana", at(90), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.failed_logins, 3);
    assert_eq!(u.locked_until, Some(at(390)), "locked for 300 s");
    assert_eq!(s.get_user("ana").await.unwrap(), Some(u));

    // Failures while locked count but do not extend the lock.
    let u = s
        .record_login_failure("ana", at(100), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.locked_until, Some(at(390)));
    assert_eq!(u.failed_logins, 4);

    // After the lock: a fresh window, and the old lock is gone.
    let u = s
        .record_login_failure("ana", at(400), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (1, Some(at(400)), None)
    );

    // max_failures 0: never locks.
    let off = LockoutPolicy {
        max_failures: 0,
        ..p
    };
    s.create_user(new_user("bob", Role::Viewer), at(0))
        .await
        .unwrap();
    for i in 0..10 {
        let u = s
            .record_login_failure("bob", at(i), off)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.locked_until, None);
    }
}

pub async fn login_success_and_enable_reset_lockout(h: &impl SecurityHarness) {
    let s = h.open().await;
    let p = policy();
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    s.record_login_failure("ana", at(1), p).await.unwrap();
    s.record_login_failure("ana", at(2), p).await.unwrap();
    s.record_login_success("ana").await.unwrap();
    let u = s.get_user("ana").await.unwrap().unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (0, None, None)
    );
    // After the reset, two more failures do not lock (the count restarted).
    s.record_login_failure("ana", at(3), p).await.unwrap();
    let u = s
        .record_login_failure("ana", at(4), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.failed_logins, u.locked_until), (2, None));
    let u = s
        .record_login_failure("ana", at(5), p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.locked_until, Some(at(305)));
    // An admin's Enable unlocks.
    let u = s
        .update_user("ana", UserChange::Enable, at(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.failed_logins, u.failed_since, u.locked_until),
        (0, None, None)
    );
    // Unknown users: nothing to do, no error.
    s.record_login_success("ghost").await.unwrap();
}

pub async fn sessions_lifecycle(h: &impl SecurityHarness) {
    let s = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    let session = s
        .create_session(new_session("s1", "ana", "tok", 100), at(10))
        .await
        .unwrap();
    assert_eq!(session.id, "s1");
    assert_eq!(session.user_name, "ana");
    assert_eq!(session.created_at, at(10));
    assert_eq!(session.expires_at, at(100));
    assert_eq!(session.revoked_at, None);
    assert_eq!(session.source.as_deref(), Some("10.0.0.7"));

    assert_eq!(
        s.active_session("s1", at(50)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(s.active_session("s1", at(99)).await.unwrap(), Some(session));
    assert_eq!(
        s.active_session("s1", at(100)).await.unwrap(),
        None,
        "expired at expires_at"
    );
    assert_eq!(s.active_session("nope", at(50)).await.unwrap(), None);

    match s
        .create_session(new_session("s1", "ana", "tok-other", 100), at(11))
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict for a duplicate session id, got {other:?}"),
    }
    assert!(
        s.create_session(new_session("s9", "ghost", "tok9", 100), at(11))
            .await
            .is_err(),
        "a session needs its user"
    );

    let mut anonymous = new_session("s2", "ana", "tok2", 100);
    anonymous.source = None;
    let s2 = s.create_session(anonymous, at(12)).await.unwrap();
    assert_eq!(s2.source, None);

    assert!(s.revoke_session("s2", at(20)).await.unwrap());
    assert!(
        !s.revoke_session("s2", at(21)).await.unwrap(),
        "already revoked"
    );
    assert!(!s.revoke_session("nope", at(21)).await.unwrap());
    assert_eq!(s.active_session("s2", at(22)).await.unwrap(), None);
    assert!(s.active_session("s1", at(22)).await.unwrap().is_some());
}

pub async fn refresh_rotation_and_reuse_detection(h: &impl SecurityHarness) {
    let s = h.open().await;
    let ana = s
        .create_user(new_user("ana", Role::Operator), at(0))
        .await
        .unwrap();
    s.create_session(new_session("s1", "ana", "t1", 100), at(1))
        .await
        .unwrap();

    let (session, user) = rotated(
        s.rotate_refresh(&secret_digest("t1"), &secret_digest("t2"), at(200), at(50))
            .await
            .unwrap(),
    );
    assert_eq!(session.id, "s1");
    assert_eq!(session.expires_at, at(200), "renewed");
    assert_eq!(session.created_at, at(1));
    assert_eq!(session.revoked_at, None);
    assert_eq!(user, ana);
    assert_eq!(
        s.active_session("s1", at(150)).await.unwrap(),
        Some(session),
        "the stored session was renewed"
    );

    let (session, _) = rotated(
        s.rotate_refresh(&secret_digest("t2"), &secret_digest("t3"), at(300), at(150))
            .await
            .unwrap(),
    );
    assert_eq!(session.expires_at, at(300));

    // Replaying t1 (used): the whole session dies, including the current t3.
    assert_eq!(
        s.rotate_refresh(&secret_digest("t1"), &secret_digest("t4"), at(400), at(160))
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: "s1".into()
        }
    );
    assert_eq!(s.active_session("s1", at(161)).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh(&secret_digest("t3"), &secret_digest("t5"), at(400), at(162))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // t4 was never stored.
    assert_eq!(
        s.rotate_refresh(&secret_digest("t4"), &secret_digest("t6"), at(400), at(163))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // Reuse stays reuse (the session is already revoked).
    assert_eq!(
        s.rotate_refresh(&secret_digest("t2"), &secret_digest("t7"), at(400), at(164))
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: "s1".into()
        }
    );
}

pub async fn refresh_invalid_cases(h: &impl SecurityHarness) {
    let s = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_refresh(&secret_digest("never"), "n", at(100), at(1))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // Expired session.
    s.create_session(new_session("exp", "ana", "t-exp", 10), at(1))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_refresh(&secret_digest("t-exp"), "n1", at(100), at(10))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // Revoked session (logout).
    s.create_session(new_session("rev", "ana", "t-rev", 100), at(1))
        .await
        .unwrap();
    s.revoke_session("rev", at(2)).await.unwrap();
    assert_eq!(
        s.rotate_refresh(&secret_digest("t-rev"), "n2", at(200), at(3))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    // Disabled, then enabled again: the session was revoked by Disable and stays dead.
    s.create_session(new_session("dis", "ana", "t-dis", 100), at(1))
        .await
        .unwrap();
    s.update_user("ana", UserChange::Disable, at(4))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_refresh(&secret_digest("t-dis"), "n3", at(200), at(5))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    s.update_user("ana", UserChange::Enable, at(6))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_refresh(&secret_digest("t-dis"), "n4", at(200), at(7))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // The failed attempts did not consume anything: nothing was rotated, nothing reused.
    let fresh = s
        .create_session(new_session("ok", "ana", "t-ok", 100), at(8))
        .await
        .unwrap();
    let (session, _) = rotated(
        s.rotate_refresh(&secret_digest("t-ok"), "n5", at(200), at(9))
            .await
            .unwrap(),
    );
    assert_eq!(session.id, fresh.id);
}

pub async fn concurrent_refresh_has_one_winner(h: &impl SecurityHarness) {
    let s = h.open().await;
    // Half the refreshes go through a second instance (another connection or pool).
    let other = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    for round in 0..3 {
        let sid = format!("s{round}");
        let token = format!("tok{round}");
        s.create_session(new_session(&sid, "ana", &token, 100), at(1))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { s.clone() } else { other.clone() };
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                s.rotate_refresh(
                    &secret_digest(&token),
                    &secret_digest(&format!("{token}-next-{i}")),
                    at(200),
                    at(2),
                )
                .await
                .unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                RefreshOutcome::Rotated { session, .. } => {
                    winners += 1;
                    assert_eq!(session.id, sid);
                }
                RefreshOutcome::Reused { session_id } => assert_eq!(session_id, sid),
                RefreshOutcome::Invalid => panic!("the token was valid and then used"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one refresh wins");
        // The losers replayed a used token: the session is revoked.
        assert_eq!(s.active_session(&sid, at(3)).await.unwrap(), None);
    }
}

pub async fn api_keys_lifecycle(h: &impl SecurityHarness) {
    let s = h.open().await;
    assert!(s.list_api_keys().await.unwrap().is_empty());
    assert_eq!(s.get_api_key("k1").await.unwrap(), None);

    let nk = new_key("k1", Role::ApiClient);
    let k1 = s.create_api_key(nk.clone(), at(10)).await.unwrap();
    assert_eq!(k1.id, "k1");
    assert_eq!(k1.name, nk.name);
    assert_eq!(k1.role, Role::ApiClient);
    assert_eq!(k1.wells, nk.wells);
    assert_eq!(k1.key_hash, nk.key_hash);
    assert_eq!(k1.created_at, at(10));
    assert_eq!(k1.created_by, "user:root");
    assert_eq!(k1.expires_at, Some(at(86_400)));
    assert_eq!(k1.revoked_at, None);
    assert_eq!(s.get_api_key("k1").await.unwrap(), Some(k1.clone()));

    let mut forever = new_key("k2", Role::Viewer);
    forever.wells = WellScope::All;
    forever.expires_at = None;
    forever.created_by = "cli".into();
    let k2 = s.create_api_key(forever, at(20)).await.unwrap();
    assert_eq!((k2.wells.clone(), k2.expires_at), (WellScope::All, None));
    let k0 = s
        .create_api_key(new_key("k0", Role::Operator), at(5))
        .await
        .unwrap();

    match s.create_api_key(new_key("k1", Role::Admin), at(30)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.get_api_key("k1").await.unwrap(), Some(k1.clone()));

    let ids: Vec<String> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["k2", "k1", "k0"], "newest first");

    assert!(s.revoke_api_key("k1", at(40)).await.unwrap());
    assert!(
        !s.revoke_api_key("k1", at(41)).await.unwrap(),
        "already revoked"
    );
    assert!(!s.revoke_api_key("nope", at(41)).await.unwrap());
    let revoked = s.get_api_key("k1").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(40)));
    let listed = s.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 3, "revoked keys are listed");
    assert_eq!(listed[1], revoked);
    assert_eq!(listed[0], k2);
    assert_eq!(listed[2], k0);
}

// ---------------------------------------------------------------------------------------------
// Audit

pub async fn audit_append_chain_and_verify(h: &impl SecurityHarness) {
    let s = h.open().await;
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken, v.reason), (0, None, None));
    assert!(s.append_audit(vec![]).await.unwrap().is_empty());

    let first: Vec<_> = (0..3)
        .map(|i| event(i, "request", Some("user:ana"), 200))
        .collect();
    assert_eq!(s.append_audit(first.clone()).await.unwrap(), [1, 2, 3]);
    let second = vec![
        event(10, "login_failure", None, 401),
        event(11, "login_success", Some("user:ana"), 200),
    ];
    assert_eq!(s.append_audit(second.clone()).await.unwrap(), [4, 5]);

    let mut records = s.list_audit(&AuditFilter::default()).await.unwrap();
    records.reverse();
    assert_eq!(records.len(), 5);
    let mut prev = AUDIT_GENESIS.to_owned();
    for (i, (r, e)) in records.iter().zip(first.iter().chain(&second)).enumerate() {
        assert_eq!(r.id, i as i64 + 1);
        assert_eq!(&r.event, e, "stored as given");
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash, audit_record_hash(&prev, r.id, e));
        prev = r.hash.clone();
    }
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken, v.reason), (5, None, None));

    // A store opened again continues the chain.
    drop(s);
    let s = h.open().await;
    assert_eq!(
        s.append_audit(vec![event(20, "logout", Some("user:ana"), 204)])
            .await
            .unwrap(),
        [6]
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken), (6, None));
}

pub async fn audit_round_trips_values(h: &impl SecurityHarness) {
    let s = h.open().await;
    let sparse = AuditEvent {
        ts: at(0),
        kind: "config_change".into(),
        request_id: None,
        method: None,
        route: None,
        status: None,
        actor: None,
        role: None,
        source: None,
        duration_ms: None,
        detail: serde_json::json!({}),
    };
    let rich = AuditEvent {
        ts: Timestamp(T0 + 123_457),
        kind: "user_change".into(),
        request_id: Some("01J-ü-\"quoted\"".into()),
        status: Some(u16::MAX),
        duration_ms: Some(0.1 + 0.2),
        detail: serde_json::json!({
            "big": u64::MAX, "neg": i64::MIN, "pi": std::f64::consts::PI, "tiny": 5e-324,
            "nested": {"z": [true, false, null], "a": "日本"}, "empty": [], "s": "line\nbreak"
        }),
        ..event(1, "x", Some("user:ünï"), 200)
    };
    let weird = AuditEvent {
        duration_ms: Some(f64::NAN),
        detail: serde_json::Value::Null,
        ..event(2, "request", Some("key:k1"), 500)
    };
    s.append_audit(vec![sparse.clone(), rich.clone(), weird])
        .await
        .unwrap();
    let records = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(records[2].event, sparse);
    assert_eq!(records[1].event, rich);
    assert_eq!(
        records[0].event.duration_ms, None,
        "a non-finite duration is stored as none"
    );
    assert_eq!(records[0].event.detail, serde_json::Value::Null);
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken), (3, None), "{:?}", v.reason);
}

pub async fn audit_concurrent_appenders(h: &impl SecurityHarness) {
    // Two store instances (two connections or pools), four tasks on each.
    let stores = [h.open().await, h.open().await];
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let s = stores[t as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for b in 0..10i64 {
                let batch: Vec<_> = (0..(1 + (t + b) % 4))
                    .map(|i| {
                        event(
                            t * 1000 + b * 10 + i,
                            "request",
                            Some(&format!("user:t{t}")),
                            200,
                        )
                    })
                    .collect();
                let n = batch.len();
                let got = s.append_audit(batch).await.unwrap();
                assert_eq!(got.len(), n);
                assert!(
                    got.windows(2).all(|w| w[1] == w[0] + 1),
                    "a batch is contiguous: {got:?}"
                );
                ids.extend(got);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are unique");
    let n = all.len() as i64;
    assert_eq!(unique, (1..=n).collect(), "ids are gapless");
    let v = stores[0].verify_audit().await.unwrap();
    assert_eq!(
        (v.records, v.first_broken),
        (n as u64, None),
        "{:?}",
        v.reason
    );
}

pub async fn audit_list_filters(h: &impl SecurityHarness) {
    let s = h.open().await;
    let mut events = Vec::new();
    for i in 0..30i64 {
        let (kind, actor) = match i % 3 {
            0 => ("request", Some("user:ana")),
            1 => ("login_failure", None),
            _ => ("request", Some("key:k1")),
        };
        events.push(event(i * 10, kind, actor, 200));
    }
    s.append_audit(events).await.unwrap();
    let ids = |filter: AuditFilter| {
        let s = s.clone();
        async move {
            s.list_audit(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        ids(AuditFilter::default()).await,
        (1..=30).rev().collect::<Vec<_>>(),
        "newest first; limit 0 means the default"
    );
    assert_eq!(
        ids(AuditFilter {
            limit: 4,
            ..Default::default()
        })
        .await,
        [30, 29, 28, 27]
    );
    assert_eq!(
        ids(AuditFilter {
            before_id: Some(28),
            limit: 3,
            ..Default::default()
        })
        .await,
        [27, 26, 25],
        "paging backwards"
    );
    assert_eq!(
        ids(AuditFilter {
            actor: Some("user:ana".into()),
            ..Default::default()
        })
        .await,
        [28, 25, 22, 19, 16, 13, 10, 7, 4, 1]
    );
    assert_eq!(
        ids(AuditFilter {
            kind: Some("login_failure".into()),
            limit: 3,
            ..Default::default()
        })
        .await,
        [29, 26, 23]
    );
    // Event i (id i + 1) has ts = 10 i seconds; since inclusive, until exclusive.
    assert_eq!(
        ids(AuditFilter {
            since: Some(at(50)),
            until: Some(at(90)),
            ..Default::default()
        })
        .await,
        [9, 8, 7, 6]
    );
    assert_eq!(
        ids(AuditFilter {
            actor: Some("key:k1".into()),
            kind: Some("request".into()),
            since: Some(at(20)),
            until: Some(at(200)),
            before_id: Some(18),
            limit: 2,
        })
        .await,
        [15, 12]
    );
    assert!(
        ids(AuditFilter {
            actor: Some("user:nobody".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Limits: 0 → 100, and a cap of 10 000.
    let more: Vec<_> = (0..10_050)
        .map(|i| event(1000 + i, "request", None, 200))
        .collect();
    s.append_audit(more).await.unwrap();
    assert_eq!(ids(AuditFilter::default()).await.len(), 100);
    let capped = ids(AuditFilter {
        limit: 50_000,
        ..Default::default()
    })
    .await;
    assert_eq!(capped.len(), 10_000);
    assert_eq!(capped[0], 10_080);
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken), (10_080, None));
}

pub async fn audit_tamper_detected(h: &impl SecurityHarness) {
    let s = h.open().await;
    let events: Vec<_> = (0..20)
        .map(|i| event(i, "request", Some("user:ana"), 200))
        .collect();
    s.append_audit(events).await.unwrap();
    assert_eq!(s.verify_audit().await.unwrap().first_broken, None);
    h.tamper_audit(7).await;
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, Some(7), "{v:?}");
    assert_eq!(v.records, 6, "records verified before the break");
    assert!(v.reason.is_some());
    // Appends continue (the chain goes on from the stored last hash); the break stays found.
    s.append_audit(vec![event(100, "request", None, 200)])
        .await
        .unwrap();
    assert_eq!(s.verify_audit().await.unwrap().first_broken, Some(7));
}

pub async fn audit_deleted_record_detected(h: &impl SecurityHarness) {
    let s = h.open().await;
    let events: Vec<_> = (0..20)
        .map(|i| event(i, "request", Some("user:ana"), 200))
        .collect();
    s.append_audit(events).await.unwrap();
    // Deleting the first record is found: no audit_pruned record accounts for it.
    h.delete_audit(1).await;
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, Some(2), "{v:?}");
    assert_eq!(
        v.records, 0,
        "the break is at the start: nothing verified before it"
    );
    assert!(v.reason.unwrap().contains("missing"));

    // A gap further on is reported where it is: a trail that starts late may be a pruned
    // one whose audit_pruned record lies beyond the gap, so the later break is the one found.
    h.delete_audit(12).await;
    let v = s.verify_audit().await.unwrap();
    assert_eq!(
        v.first_broken,
        Some(13),
        "the record after the gap is reported: {v:?}"
    );
    assert_eq!(v.records, 10, "records 2..=11 verified before the gap");
    assert!(v.reason.unwrap().contains("missing"));
}

/// Issue 18 item 4: retention removes request records only. The security events of the
/// pruned prefix are carried forward (`audit_carried`, holding the original record), the
/// chain still verifies after several rounds, and a carried record edited is found.
pub async fn audit_retention_removes_requests_and_carries_security_events(
    h: &impl SecurityHarness,
) {
    let key = AuditKey::derive(b"conformance audit key, 0123456789abcdef0123456789");
    let s = h.open_keyed(key).await;
    let kinds = [
        "request",
        "login_failure",
        "request",
        "rejected_requests",
        "user_create",
        "request",
        "request",
        "apikey_create",
        "request",
        "request",
    ];
    // 1..=10 old, 11..=13 young.
    let mut events: Vec<_> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| event(i as i64, kind, Some("user:ana"), 401))
        .collect();
    events.push(event(1000, "request", None, 200));
    events.push(event(1001, "lockout", Some("user:bob"), 423));
    events.push(event(1002, "request", None, 200));
    s.append_audit(events).await.unwrap();
    let by = |secs| AuditEvent {
        ts: at(secs),
        kind: String::new(),
        request_id: None,
        method: None,
        route: None,
        status: None,
        actor: Some("system:audit_retention".into()),
        role: None,
        source: None,
        duration_ms: None,
        detail: serde_json::Value::Null,
    };
    let all = |s: Arc<dyn SecurityStore>| async move {
        let mut records = s
            .list_audit(&AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        records.reverse();
        records
    };
    let originals: Vec<AuditRecord> = all(s.clone()).await;

    // Without the key, nothing is pruned.
    let unkeyed = h.open().await;
    assert!(matches!(
        unkeyed
            .prune_audit(at(500), by(2000), AuditPruneScope::Requests, None)
            .await,
        Err(StoreError::Unavailable(_))
    ));

    let p = s
        .prune_audit(at(500), by(2000), AuditPruneScope::Requests, None)
        .await
        .unwrap()
        .expect("old request records to remove");
    assert_eq!(
        (p.first_id, p.last_id, p.count, p.carried, p.record_id),
        (1, 10, 10, 3, 17)
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.first_broken, v.records), (None, 7), "{v:?}");
    assert_eq!(v.pruned, Some((10, originals[9].hash.clone())));
    let records = all(s.clone()).await;
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        (11..=17).collect::<Vec<_>>()
    );
    // The carried records show the originals (time, actor, status, ...) and hold them whole.
    for (record, original) in records[3..6].iter().zip([2usize, 5, 8]) {
        let original = &originals[original - 1];
        assert_eq!(record.event.kind, "audit_carried");
        assert_eq!(record.event.ts, original.event.ts);
        assert_eq!(record.event.actor, original.event.actor);
        assert_eq!(record.event.status, original.event.status);
        let d = &record.event.detail;
        assert_eq!(d["id"], original.id);
        assert_eq!(d["kind"], original.event.kind.as_str());
        assert_eq!(d["hash"], original.hash.as_str());
        assert_eq!(d["prev_hash"], original.prev_hash.as_str());
        let text = d["event"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<AuditEvent>(text).unwrap(),
            original.event
        );
    }
    assert_eq!(records[6].event.kind, "audit_pruned");
    assert_eq!(records[6].event.detail["carried"], 3);
    assert_eq!(
        records[6].event.actor.as_deref(),
        Some("system:audit_retention")
    );
    // No request record older than the cut is left; every security event is.
    assert!(
        records
            .iter()
            .all(|r| !(is_request_kind(&r.event.kind) && r.event.ts < at(500)))
    );
    // Nothing more to remove at that cut.
    assert!(
        s.prune_audit(at(500), by(2001), AuditPruneScope::Requests, None)
            .await
            .unwrap()
            .is_none()
    );

    // A later round: the newest record (the prune record) stays, and with it the records
    // it names as carried; 11..=13 go, the lockout carried.
    let p = s
        .prune_audit(at(5000), by(5001), AuditPruneScope::Requests, None)
        .await
        .unwrap()
        .expect("records 11..=13");
    assert_eq!(
        (p.first_id, p.last_id, p.carried, p.record_id),
        (11, 13, 1, 19)
    );
    assert_eq!(s.verify_audit().await.unwrap().first_broken, None);
    // A prefix of nothing but security events is left alone (no churn).
    s.append_audit(vec![
        event(6000, "request", None, 200),
        event(20_000, "request", None, 200),
    ])
    .await
    .unwrap();
    // 14..=19 are carried records and prune records, 20 an old request: carried again,
    // the prune records among them too.
    let p = s
        .prune_audit(at(10_000), by(10_001), AuditPruneScope::Requests, None)
        .await
        .unwrap()
        .expect("record 20");
    assert_eq!(
        (p.first_id, p.last_id, p.count, p.carried, p.record_id),
        (14, 20, 7, 6, 28)
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.first_broken, v.records), (None, 8), "{v:?}");
    let records = all(s.clone()).await;
    let carried: Vec<(i64, String)> = records
        .iter()
        .filter(|r| r.event.kind == "audit_carried")
        .map(|r| {
            let d = &r.event.detail;
            (
                d["id"].as_i64().unwrap(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (2, "login_failure"),
        (5, "user_create"),
        (8, "apikey_create"),
        (17, "audit_pruned"),
        (12, "lockout"),
        (19, "audit_pruned"),
    ];
    assert_eq!(
        carried,
        expected.map(|(id, k)| (id, k.to_owned())).to_vec(),
        "every security event kept, carried as the original"
    );
    // Listing by kind finds the carried security events by their original kind.
    let by_kind = |kind: &str| {
        let s = s.clone();
        let kind = kind.to_owned();
        async move {
            s.list_audit(&AuditFilter {
                kind: Some(kind),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_kind("login_failure").await, vec![22]);
    assert_eq!(by_kind("lockout").await, vec![26]);
    assert_eq!(by_kind("audit_pruned").await, vec![28, 27, 25]);
    assert_eq!(by_kind("request").await, vec![21]);
    assert!(
        s.prune_audit(at(10_000), by(10_002), AuditPruneScope::Requests, None)
            .await
            .unwrap()
            .is_none()
    );
    // A carried record edited behind the store's back is found.
    h.tamper_audit(23).await;
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, Some(23), "{v:?}");
}

/// Retention in batches of at most a few records (the server's rounds are cut so): every
/// batch leaves a verifiable chain, carried records are never parted from their prune
/// record, and in the end every security event is there once and no old request record is.
pub async fn audit_retention_in_batches_keeps_the_chain_verifiable(h: &impl SecurityHarness) {
    let key = AuditKey::derive(b"conformance audit key, 0123456789abcdef0123456789");
    let s = h.open_keyed(key).await;
    let kinds = [
        "request",
        "login_failure",
        "lockout",
        "request",
        "rejected_requests",
    ];
    let events: Vec<_> = (0..40)
        .map(|i| event(i, kinds[i as usize % kinds.len()], Some("user:ana"), 401))
        .collect();
    s.append_audit(events).await.unwrap();
    let by = |secs| AuditEvent {
        kind: String::new(),
        actor: Some("system:audit_retention".into()),
        ..event(secs, "", None, 200)
    };
    // Prunes in batches of 3 until nothing is left to do, checking the chain after each.
    let drain = |cut: i64, stamp: i64| {
        let s = s.clone();
        async move {
            let mut calls = 0;
            let mut extended = false;
            loop {
                calls += 1;
                assert!(calls < 100, "batches end");
                let p = s
                    .prune_audit(
                        at(cut),
                        by(stamp + calls),
                        AuditPruneScope::Requests,
                        Some(3),
                    )
                    .await
                    .unwrap();
                let v = s.verify_audit().await.unwrap();
                assert_eq!(v.first_broken, None, "after batch {calls}: {v:?}");
                match p {
                    None => return extended,
                    Some(p) => extended |= p.count > 3,
                }
            }
        }
    };
    // The prune records are younger than the cut: each batch stops before the previous
    // batches' carried records, and the last one takes record 40 too.
    drain(500, 1000).await;
    // Later, with those prune records old too and more requests behind them: batches that
    // would end between carried records and their prune record run up to it, and carried
    // records are carried again.
    let more: Vec<_> = (0..6)
        .map(|i| event(50_000 + i, "request", None, 200))
        .chain([event(200_000, "request", None, 200)])
        .collect();
    s.append_audit(more).await.unwrap();
    assert!(
        drain(100_000, 100_000).await,
        "a batch was extended to its unit's end"
    );
    let records = s
        .list_audit(&AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut kept: Vec<i64> = records
        .iter()
        .filter(|r| r.event.kind == "audit_carried" && r.event.detail["kind"] != "audit_pruned")
        .map(|r| r.event.detail["id"].as_i64().unwrap())
        .collect();
    kept.sort();
    let expected: Vec<i64> = (1..=40)
        .filter(|id| matches!((id - 1) % 5, 1 | 2))
        .collect();
    assert_eq!(kept, expected, "every security event carried, once");
    let requests: Vec<i64> = records
        .iter()
        .filter(|r| is_request_kind(&r.event.kind))
        .map(|r| r.id)
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "only the young request is left: {requests:?}"
    );
}

/// Deleting security events is a separate, named scope: the default keeps them (a prefix of
/// nothing but security events is left alone); `IncludingSecurityEvents` removes them, and the
/// chain verifies across a mix of both kinds of prune.
pub async fn audit_prune_of_security_events_is_explicit_and_verifiable(h: &impl SecurityHarness) {
    assert_eq!(AuditPruneScope::default(), AuditPruneScope::Requests);
    let key = AuditKey::derive(b"conformance audit key, 0123456789abcdef0123456789");
    let s = h.open_keyed(key).await;
    let by = |secs| AuditEvent {
        kind: String::new(),
        actor: Some("cli:root".into()),
        ..event(secs, "", None, 200)
    };
    let of_kind = |kind: &str| {
        let s = s.clone();
        let kind = kind.to_owned();
        async move {
            s.list_audit(&AuditFilter {
                kind: Some(kind),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
        }
    };
    // 1..=2 old security events, 3 young.
    s.append_audit(vec![
        event(0, "login_failure", Some("user:ana"), 401),
        event(1, "user_change", Some("user:root"), 200),
        event(1000, "request", None, 200),
    ])
    .await
    .unwrap();
    assert!(
        s.prune_audit(at(500), by(1500), AuditPruneScope::default(), None)
            .await
            .unwrap()
            .is_none(),
        "security events only: the default prune leaves them"
    );
    assert_eq!(of_kind("login_failure").await, vec![1]);
    let p = s
        .prune_audit(
            at(500),
            by(1500),
            AuditPruneScope::IncludingSecurityEvents,
            None,
        )
        .await
        .unwrap()
        .expect("records 1..=2");
    assert_eq!(
        (p.first_id, p.last_id, p.count, p.carried, p.record_id),
        (1, 2, 2, 0, 4)
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.first_broken, v.records), (None, 2), "{v:?}");
    assert!(of_kind("login_failure").await.is_empty());
    assert!(of_kind("user_change").await.is_empty());

    // Then a default prune over that prune record, a request and a lockout: the prune
    // record and the lockout are carried.
    s.append_audit(vec![
        event(1100, "request", None, 200),
        event(1200, "lockout", Some("user:ana"), 423),
        event(5000, "request", None, 200),
    ])
    .await
    .unwrap();
    let p = s
        .prune_audit(at(2000), by(2001), AuditPruneScope::default(), None)
        .await
        .unwrap()
        .expect("records 3..=6");
    assert_eq!(
        (p.first_id, p.last_id, p.count, p.carried, p.record_id),
        (3, 6, 4, 2, 10)
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.first_broken, v.records), (None, 4), "{v:?}");
    assert_eq!(of_kind("lockout").await, vec![9]);
    // And an explicit one again: the request 7 goes; the carried records stay with their
    // prune record, the newest, which a prune never removes.
    let p = s
        .prune_audit(
            at(6000),
            by(6001),
            AuditPruneScope::IncludingSecurityEvents,
            None,
        )
        .await
        .unwrap()
        .expect("record 7");
    assert_eq!(
        (p.first_id, p.last_id, p.carried, p.record_id),
        (7, 7, 0, 11)
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!((v.first_broken, v.records), (None, 4), "{v:?}");
    assert_eq!(of_kind("lockout").await, vec![9]);
}

pub async fn stored_garbage_is_an_error_not_a_panic(h: &impl SecurityHarness) {
    let s = h.open().await;
    s.create_user(new_user("ana", Role::Viewer), at(0))
        .await
        .unwrap();
    s.create_user(new_user("bob", Role::Viewer), at(0))
        .await
        .unwrap();
    h.corrupt_role("ana").await;
    assert!(matches!(
        s.get_user("ana").await,
        Err(StoreError::Internal(_))
    ));
    assert!(matches!(s.list_users().await, Err(StoreError::Internal(_))));
    // Other users still work.
    assert_eq!(s.get_user("bob").await.unwrap().unwrap().name, "bob");
}
