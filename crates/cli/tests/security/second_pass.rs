//! Issue 18, the second pass: what someone already holding something (a stolen token, a
//! socket, the data directory, a telemetry credential) could still do. Each test fails
//! without its fix.

use espwatch_core::access::Role;
use serde_json::{Value, json};

use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// Issue 18 item 1: a stolen access token does not buy unlimited password guesses through
/// `POST /auth/password`. Wrong current passwords count towards the same lockout as sign-in,
/// are audited, and when the account locks the guessing session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_guesses_count_towards_lockout_and_end_the_session() {
    let app = spawn_app_with(|c| c.auth_cache_ms = 0).await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Operator, None).await;
    let (stolen, _) = app.user_client("ana", PASSWORD).await;
    let guess = |password: &str| {
        stolen.post(app.url("/api/v1/auth/password")).json(
            &json!({"current_password": password, "new_password": "a much better passphrase"}),
        )
    };
    // lockout_max_failures = 5: four guesses are plain 401s, the fifth locks the account.
    for i in 0..4 {
        let (status, body) = app.send(guess(&format!("guess number {i} !!"))).await;
        assert_eq!(
            (status, body["error"]["type"].clone()),
            (401, json!("invalid_credentials")),
            "{body}"
        );
    }
    let (status, body) = app.send(guess("guess number 5 !!")).await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (401, json!("session_ended")),
        "{body}"
    );
    // The session is over: even the right password gets nowhere with it.
    let (status, _) = app.send(guess(PASSWORD)).await;
    assert_eq!(status, 401);
    let (status, _) = app.send(stolen.get(app.url("/api/v1/auth/me"))).await;
    assert_eq!(status, 401, "the guessing session ended");
    // The account is locked for sign-in too.
    assert_eq!(app.login("ana", PASSWORD).await.0, 401);
    let user = app.security.get_user("ana").await.unwrap().unwrap();
    assert!(user.locked_until.is_some(), "{user:?}");

    // Audited as security events, attributed to the session's user.
    let (_, audit) = app
        .get("/api/v1/audit?kind=password_change_failure&limit=100")
        .await;
    let failures = audit["records"].as_array().unwrap();
    assert_eq!(failures.len(), 5, "{audit}");
    assert!(failures.iter().all(|r| r["actor"] == "user:ana"), "{audit}");
    let (_, audit) = app.get("/api/v1/audit?kind=lockout").await;
    assert_eq!(audit["records"][0]["actor"], "user:ana", "{audit}");
    assert_eq!(
        audit["records"][0]["detail"]["via"], "password_change",
        "{audit}"
    );
    let (_, audit) = app.get("/api/v1/audit?kind=session_ended").await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 1, "{audit}");
}

/// Issue 18 item 1: password changes share the per-address sign-in budget (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_attempts_share_the_sign_in_rate_limit() {
    let app = spawn_app_with(|c| {
        c.login_rate_per_minute = 3.0;
        c.lockout_max_failures = 1000;
    })
    .await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Operator, None).await;
    let (client, _) = app.user_client("ana", PASSWORD).await;
    let mut statuses = Vec::new();
    let mut limited: Option<Value> = None;
    for i in 0..8 {
        let (status, body) = app
            .send(client.post(app.url("/api/v1/auth/password")).json(
                &json!({"current_password": format!("wrong guess {i} !!"), "new_password": "a much better passphrase"}),
            ))
            .await;
        statuses.push(status);
        if status == 429 {
            limited = Some(body);
        }
    }
    let body = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(body["error"]["type"], "rate_limited", "{body}");
}

/// Reads from a raw connection until the server closes it; `Some(bytes)` when it did within
/// `within`, `None` when the connection was still open then.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Issue 18 item 2: slow headers, silent connections and idle keep-alive connections are
/// closed after the header-read timeout; one address cannot hold more than its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_each_address_is_capped() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let app = spawn_app_with(|c| {
        c.http_header_timeout_secs = 1;
        c.max_connections_per_source = 4;
    })
    .await;

    // Slowloris: one header line every 300 ms never completes the head.
    let mut slow = TcpStream::connect(app.address).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    trickle.await;
    let closed = closed_within(&mut slow, Duration::from_secs(1)).await;
    let answer = closed.expect("a trickling head kept the connection open");
    // Answered as HTTP allows: 408 in the envelope, with the security headers.
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"request_timeout\"")
            && answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // Silent from the start.
    let mut silent = TcpStream::connect(app.address).await.unwrap();
    assert_eq!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        Some(Vec::new()),
        "a silent connection is closed, without an answer to no request"
    );

    // Idle after a complete exchange (keep-alive).
    let mut idle = TcpStream::connect(app.address).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let received = closed_within(&mut idle, Duration::from_secs(8))
        .await
        .expect("idle keep-alive closed");
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200")
            && !String::from_utf8_lossy(&received).contains("408"),
        "{}",
        String::from_utf8_lossy(&received)
    );

    // Four connections from one address are fine, the fifth is refused in the envelope.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(app.address).await.unwrap();
    let refused = closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .expect("refused at once");
    let text = String::from_utf8_lossy(&refused);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("too_many_connections") && text.contains("retry-after: 1"),
        "{text}"
    );
    assert!(text.contains("x-content-type-options: nosniff"), "{text}");
    // A slot freed is a slot usable again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = app.send(app.anonymous.get(app.url("/health/live"))).await;
    assert_eq!(status, 200);
}

/// Issue 18 item 2 on the second listener: the unauthenticated metrics address
/// (`metrics_listen`) closes silent and slow connections after the header timeout and caps
/// the connections of one address, like the API listener.
#[test]
fn the_metrics_address_closes_slow_connections_and_caps_each_address() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    init();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut server = ChildServer::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("ESPWATCH_METRICS_LISTEN", "127.0.0.1:0"),
            ("ESPWATCH_HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("ESPWATCH_MAX_CONNECTIONS_PER_SOURCE", "2"),
        ],
    );
    let address = server.metrics_address();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let metrics = reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);

        // Silent from the start: closed, without an answer.
        let mut silent = TcpStream::connect(&address).await.unwrap();
        assert_eq!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            Some(Vec::new()),
            "a silent connection to the metrics address is closed"
        );
        // A head begun and never finished: 408 in the envelope.
        let mut slow = TcpStream::connect(&address).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut slow, Duration::from_secs(5))
            .await
            .expect("a slow head is closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408") && answer.contains("\"request_timeout\""),
            "{answer}"
        );

        // Two connections from one address are fine, the third is refused.
        let held = [
            TcpStream::connect(&address).await.unwrap(),
            TcpStream::connect(&address).await.unwrap(),
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(&address).await.unwrap();
        let refused = closed_within(&mut third, Duration::from_secs(2))
            .await
            .expect("refused at once");
        let text = String::from_utf8_lossy(&refused);
        assert!(
            text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections"),
            "{text}"
        );
        drop(held);
    });
    assert!(server.terminate().success());
}

/// Copies a data directory (files and subdirectories) so each attack starts from the same
/// trail.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Where a test's audit trail lives: a data directory, or a PostgreSQL database (whose owner
/// plays the data directory's owner). Each method runs on a runtime of its own, dropped at the
/// end, so no connection outlives it (a database with a connection cannot be copied).
enum Trail {
    Dir(std::path::PathBuf),
    Db(espwatch_store_postgres::testing::TestDatabase),
}

impl Trail {
    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Runtime::new().unwrap().block_on(future)
    }

    /// The arguments pointing an `espwatch` command at this trail.
    fn args(&self) -> Vec<String> {
        match self {
            Trail::Dir(dir) => vec!["--data-dir".into(), dir.to_str().unwrap().into()],
            Trail::Db(db) => vec!["--database-url".into(), db.url.clone()],
        }
    }

    /// Every record, oldest first.
    fn records(&self) -> Vec<espwatch_store::AuditRecord> {
        use espwatch_store::SecurityStore;
        let filter = espwatch_store::AuditFilter {
            limit: 10_000,
            ..Default::default()
        };
        let mut records = Trail::run(async {
            match self {
                Trail::Dir(dir) => espwatch_store::EmbeddedSecurityStore::open(dir)
                    .unwrap()
                    .list_audit(&filter)
                    .await
                    .unwrap(),
                Trail::Db(db) => {
                    let opts = espwatch_store_postgres::PostgresOptions {
                        pool_size: 1,
                        ..Default::default()
                    };
                    espwatch_store_postgres::PostgresStore::open(&db.url, opts)
                        .await
                        .unwrap()
                        .list_audit(&filter)
                        .await
                        .unwrap()
                }
            }
        });
        records.reverse();
        records
    }

    /// A copy to attack, so each attack starts from the same trail.
    fn copy(&self, to: &std::path::Path) -> Trail {
        match self {
            Trail::Dir(dir) => {
                copy_dir(dir, to);
                Trail::Dir(to.to_owned())
            }
            Trail::Db(db) => Trail::Db(Trail::run(db.copy())),
        }
    }

    /// Runs `sql` (statements; `$1` is `id`) with the append-only triggers dropped first, as
    /// the owner of the files or of the database can.
    fn tamper(&self, sql: &str, id: i64) {
        match self {
            Trail::Dir(dir) => {
                let db = rusqlite::Connection::open(dir.join("security.sqlite")).unwrap();
                db.execute_batch(
                    "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete",
                )
                .unwrap();
                db.execute(&sql.replace("$1", "?1"), [id]).unwrap();
            }
            Trail::Db(db) => Trail::run(async {
                let client = Self::connect(db).await;
                client
                    .batch_execute("DROP TRIGGER audit_no_change ON audit")
                    .await
                    .unwrap();
                client.execute(sql, &[&id]).await.unwrap();
            }),
        }
    }

    async fn connect(
        db: &espwatch_store_postgres::testing::TestDatabase,
    ) -> tokio_postgres::Client {
        espwatch_store_postgres::Connector::new(
            &db.url,
            std::time::Duration::from_secs(30),
            None,
            "espwatch-tests",
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
    }

    /// Rewrites the trail from record `from` on as someone with write access to the data
    /// directory (or the database) would: triggers dropped, record `from` edited (`403` →
    /// `200`, actor changed), and every hash from there recomputed with `hash` (a plain
    /// SHA-256 chain, or a keyed one with a stolen key).
    fn rewrite(&self, from: i64, hash: impl Fn(&str, i64, &espwatch_store::AuditEvent) -> String) {
        let records = self.records();
        let mut prev = records[(from - 2) as usize].hash.clone();
        let mut rows = Vec::new();
        for mut record in records.into_iter().filter(|r| r.id >= from) {
            if record.id == from {
                record.event.status = Some(200);
                record.event.actor = Some("user:admin".into());
            }
            let h = hash(&prev, record.id, &record.event);
            rows.push((
                record.id,
                record.event.status,
                record.event.actor,
                prev,
                h.clone(),
            ));
            prev = h;
        }
        match self {
            Trail::Dir(dir) => {
                let db = rusqlite::Connection::open(dir.join("security.sqlite")).unwrap();
                db.execute_batch("DROP TRIGGER audit_no_update").unwrap();
                for (id, status, actor, prev, hash) in rows {
                    db.execute(
                        "UPDATE audit SET status = ?2, actor = ?3, prev_hash = ?4, hash = ?5 WHERE id = ?1",
                        rusqlite::params![id, status, actor, prev, hash],
                    )
                    .unwrap();
                }
            }
            Trail::Db(db) => Trail::run(async {
                let client = Self::connect(db).await;
                client
                    .batch_execute("DROP TRIGGER audit_no_change ON audit")
                    .await
                    .unwrap();
                for (id, status, actor, prev, hash) in rows {
                    let status = status.map(i32::from);
                    client
                        .execute(
                            "UPDATE audit SET status = $2, actor = $3, prev_hash = $4, hash = $5 WHERE id = $1",
                            &[&id, &status, &actor, &prev, &hash],
                        )
                        .await
                        .unwrap();
                }
            }),
        }
    }
}

/// Issue 18 item 3: the audit chain is keyed with a key held outside the data directory and
/// its head is anchored, signed, in a file next to the secret. A trail rewritten without the
/// key, rewritten even with it, or with its newest records deleted no longer verifies; a
/// trail begun before keying (older data directories) still does. The key is the audit key
/// file's, made by the server at its first start (0600), so the JWT secret alone cannot
/// rewrite the trail; records keyed before it existed (JWT-derived key) still verify.
/// Runs on both stores: on PostgreSQL the database's owner plays the data directory's owner
/// (triggers dropped, rows rewritten or deleted, copies made with `CREATE DATABASE ...
/// TEMPLATE`), and the anchor file is the same file outside the database.
mod the_audit_trail_resists_rewriting_and_truncation_by_the_data_directory_owner {
    use super::*;

    #[test]
    fn embedded() {
        init();
        let work = tempfile::tempdir().unwrap();
        let trail = Trail::Dir(work.path().join("data"));
        resists_rewriting_and_truncation(&work, trail);
    }

    #[test]
    fn postgres() {
        init();
        let Some(db) = Trail::run(espwatch_store_postgres::testing::TestDatabase::create()) else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        resists_rewriting_and_truncation(&work, Trail::Db(db));
    }
}

fn resists_rewriting_and_truncation(work: &tempfile::TempDir, trail: Trail) {
    let store_args = trail.args();
    let with_store = |args: &[&'static str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(store_args.iter().map(String::as_str));
        all
    };
    let secret_file = work.path().join("jwt.secret");
    std::fs::write(&secret_file, test_jwt_secret()).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let secret_s = secret_file.to_str().unwrap();
    let anchors = work.path().join("jwt.secret.anchors");
    let secret_env = [("ESPWATCH_JWT_SECRET_FILE", secret_s)];
    let verify = |trail: &Trail| {
        let args = trail.args();
        let mut all = vec!["audit", "verify"];
        all.extend(args.iter().map(String::as_str));
        run_cli(&all, &secret_env, work.path())
    };

    // A record written without a key, as every trail before this change: it stays valid.
    let (ok, _, stderr) = run_cli(
        &with_store(&[
            "apikeys",
            "create",
            "--name",
            "admin",
            "--role",
            "admin",
            "--expires",
            "1d",
        ]),
        &[("ESPWATCH_JWT_SECRET", "")],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = run_cli(
        &with_store(&["apikeys", "create", "--name", "t", "--role", "viewer"]),
        &secret_env,
        work.path(),
    );
    assert!(ok);
    let viewer = stdout.trim().to_owned();

    let mut server = ChildServer::start_with_env(
        &with_store(&["serve", "--listen", "127.0.0.1:0"]),
        &[
            ("ESPWATCH_JWT_SECRET_FILE", secret_s),
            ("ESPWATCH_AUDIT_ANCHOR_SECS", "1"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = bearer_client(&viewer);
        for _ in 0..5 {
            assert_eq!(
                client
                    .get(server.url("/api/v1/wells"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
            // A viewer may not list users: 403 records to tamper with.
            assert_eq!(
                client
                    .get(server.url("/api/v1/users"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                403
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    });
    assert!(
        std::fs::read_to_string(&anchors)
            .map(|a| a.lines().count())
            .unwrap_or(0)
            >= 1,
        "anchored while running"
    );
    assert!(server.terminate().success());
    let anchored = espwatch_app::anchors::read_anchors(&anchors).unwrap();
    let newest = anchored.iter().map(|a| a.id).max().unwrap();
    // The server made the audit key file at its first start, private, next to the secret.
    let audit_key_file = work.path().join("jwt.secret.audit-key");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&audit_key_file).unwrap().permissions()
        ) & 0o777,
        0o600
    );

    let (ok, stdout, _) = verify(&trail);
    assert!(
        ok && stdout.contains("intact") && stdout.contains("1 unkeyed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("newest anchor (record {newest} ")),
        "the shutdown anchor covers the last record: {stdout}"
    );
    let (ok, stdout, _) = run_cli(
        &with_store(&["audit", "verify"]),
        &[("ESPWATCH_JWT_SECRET", "")],
        work.path(),
    );
    assert!(
        !ok && stdout.contains("no audit key"),
        "keyed records need the key: {stdout}"
    );

    // The first 403 record after keying is the one to launder.
    let target = {
        let records = trail.records();
        // One record before keying, the CLI's keyed with the JWT-derived key (before the
        // audit key file existed), the server's with the file's key: one chain.
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| {
                r.hash
                    .get(..3)
                    .filter(|p| p.ends_with(':'))
                    .unwrap_or("sha")
            })
            .collect();
        assert_eq!(&kinds[..2], ["sha", "k1:"], "{kinds:?}");
        assert!(kinds[2..].iter().all(|k| *k == "k2:"), "{kinds:?}");
        records
            .iter()
            .filter(|r| r.event.status == Some(403))
            .map(|r| r.id)
            .min()
            .unwrap()
    };

    // Rewritten as a plain SHA-256 chain (what sufficed before): refused.
    let plain = trail.copy(&work.path().join("plain"));
    plain.rewrite(target, espwatch_store::security::audit_record_hash);
    let (ok, stdout, _) = verify(&plain);
    assert!(
        !ok && stdout.contains(&format!("BROKEN at record {target}")),
        "{stdout}"
    );

    // Rewritten with the key derived from the JWT secret (stolen with it): the records
    // written since the audit key file existed are keyed with that file's key instead.
    let derived = espwatch_store::AuditKey::derive(test_jwt_secret().as_bytes());
    let jwt_only = trail.copy(&work.path().join("jwt-only"));
    jwt_only.rewrite(target, |prev, id, event| {
        espwatch_store::security::audit_chain_hash(Some(&derived), prev, id, event)
    });
    let (ok, stdout, _) = verify(&jwt_only);
    assert!(
        !ok && stdout.contains(&format!("BROKEN at record {target}"))
            && stdout.contains("without the audit key"),
        "{stdout}"
    );

    // Rewritten with the audit key itself (stolen too): the anchor still differs.
    let keyed = trail.copy(&work.path().join("keyed"));
    let key = espwatch_store::AuditKey::from_key_file(
        std::fs::read_to_string(&audit_key_file)
            .unwrap()
            .trim()
            .as_bytes(),
        Some(&derived),
    );
    keyed.rewrite(target, |prev, id, event| {
        espwatch_store::security::audit_chain_hash(Some(&key), prev, id, event)
    });
    let (ok, stdout, _) = verify(&keyed);
    assert!(!ok && stdout.contains("rewritten"), "{stdout}");

    // The newest records deleted: the anchor names what is missing.
    let truncated = trail.copy(&work.path().join("truncated"));
    truncated.tamper("DELETE FROM audit WHERE id > $1", newest - 5);
    let (ok, stdout, _) = verify(&truncated);
    assert!(!ok && stdout.contains("deleted"), "{stdout}");

    // A forged anchor line (no key) is reported too.
    let mut text = std::fs::read_to_string(&anchors).unwrap();
    text.push_str(&format!(
        "{{\"id\":1,\"hash\":\"x\",\"ts\":\"2026-01-01T00:00:00Z\",\"mac\":\"{}\"}}\n",
        "0".repeat(64)
    ));
    std::fs::write(&anchors, text).unwrap();
    let (ok, stdout, _) = verify(&trail);
    assert!(!ok && stdout.contains("not signed"), "{stdout}");
}

/// Issue 18 items 10, 11 and 16: two credentials on one request are refused; admin API keys
/// must expire (within 90 days); the audit route's parameters are query parameters in the
/// OpenAPI document and `limit` outside 1..=10000 is a 400, not a silent default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_eternal_admin_keys_and_audit_parameters_are_refused() {
    let app = spawn_app().await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Admin, None).await;
    let (ana, _) = app.user_client("ana", PASSWORD).await;
    let (status, _) = app.send(ana.get(app.url("/api/v1/wells"))).await;
    assert_eq!(status, 200);
    for (name, value) in [
        (
            "x-api-key",
            "espw_000000000000_not-a-real-key-at-all-0123456789",
        ),
        ("x-api-key", app.admin_key.as_str()),
    ] {
        let (status, body) = app
            .send(ana.get(app.url("/api/v1/wells")).header(name, value))
            .await;
        assert_eq!(
            (status, body["error"]["type"].clone()),
            (401, json!("ambiguous_credentials")),
            "{body}"
        );
    }
    let (status, body) = app
        .send(
            app.anonymous
                .get(app.url("/api/v1/wells"))
                .header("x-api-key", &app.admin_key)
                .header("x-api-key", &app.admin_key),
        )
        .await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (401, json!("ambiguous_credentials")),
        "{body}"
    );

    // Admin keys: an expiry is required, at most 90 days.
    for expires in [None, Some("365d")] {
        let mut request = json!({"name": "root key", "role": "admin"});
        if let Some(e) = expires {
            request["expires"] = json!(e);
        }
        let (status, body) = app
            .send(app.client.post(app.url("/api/v1/apikeys")).json(&request))
            .await;
        assert_eq!(
            (status, body["error"]["type"].clone()),
            (422, json!("invalid_expires")),
            "{expires:?}: {body}"
        );
    }
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/apikeys"))
                .json(&json!({"name": "root key", "role": "admin", "expires": "30d"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/apikeys"))
                .json(&json!({"name": "gateway", "role": "api_client"})),
        )
        .await;
    assert_eq!(
        status, 201,
        "other roles may still have keys without expiry: {body}"
    );
    // Admin keys stored without an expiry (before the rule) stop 90 days after creation.
    for (age_days, expected) in [(100, 401), (10, 200)] {
        let (id, key) = espwatch_app::keys::generate_api_key().unwrap();
        let created = espwatch_core::Timestamp::from_datetime(
            chrono::Utc::now() - chrono::Duration::days(age_days),
        );
        app.security
            .create_api_key(
                espwatch_store::NewApiKey {
                    id,
                    name: format!("old admin key {age_days}"),
                    role: Role::Admin,
                    wells: espwatch_core::access::WellScope::All,
                    key_hash: espwatch_store::security::secret_digest(&key),
                    created_by: "cli:root".into(),
                    expires_at: None,
                },
                created,
            )
            .await
            .unwrap();
        let (status, _) = app
            .send(bearer_client(&key).get(app.url("/api/v1/users")))
            .await;
        assert_eq!(
            status, expected,
            "admin key without expiry, {age_days} days old"
        );
    }

    // The audit listing's parameters.
    let (_, doc) = app
        .send(app.anonymous.get(app.url("/api/v1/openapi.json")))
        .await;
    let params = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(
        !params.is_empty()
            && params
                .iter()
                .all(|p| p["in"] == "query" && p["required"] != json!(true)),
        "{params:?}"
    );
    for bad in ["0", "10001", "-1"] {
        let (status, body) = app.get(&format!("/api/v1/audit?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
    }
    let (status, body) = app.get("/api/v1/audit?limit=1").await;
    assert_eq!(
        (status, body["records"].as_array().unwrap().len()),
        (200, 1)
    );
}

/// Issue 18 item 10, beyond the headers: the console's session cookie is a credential too, so
/// a request carrying it and a header, or it twice, or a `bearer.` subprotocol beside it on
/// the stream, is refused whatever the order of precedence would have picked; an
/// `Authorization` header of another scheme counts. Each refusal is audited with its type
/// (`detail.refused` on the request record, `refused` counts in the minute's summary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_beside_the_console_cookie_is_ambiguous_and_refusals_are_audited() {
    let app = spawn_app().await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Admin, None).await;
    let (_, signed_in) = app.user_client("ana", PASSWORD).await;
    let token = signed_in["access_token"].as_str().unwrap().to_owned();
    let console = app
        .anonymous
        .post(app.url("/api/v1/auth/console/login"))
        .json(&json!({"username": "ana", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    let cookie = console
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("espwatch_access="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let wells = || app.anonymous.get(app.url("/api/v1/wells"));
    // Each credential alone works.
    let (status, _) = app.send(wells().header("cookie", &cookie)).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .send(wells().header("authorization", format!("Bearer {token}")))
        .await;
    assert_eq!(status, 200);

    let ambiguous = [
        wells()
            .header("cookie", &cookie)
            .header("authorization", format!("Bearer {token}")),
        wells()
            .header("cookie", &cookie)
            .header("x-api-key", &app.admin_key),
        wells()
            .header("cookie", &cookie)
            .header("authorization", "Basic YW5hOmFuYQ=="),
        wells().header(
            "cookie",
            format!("{cookie}; espwatch_access=planted-by-a-sibling"),
        ),
        app.anonymous
            .get(app.url("/api/v1/stream"))
            .header("cookie", &cookie)
            .header(
                "sec-websocket-protocol",
                format!("espwatch.v1, bearer.{token}"),
            ),
    ];
    let sent = ambiguous.len() as u64;
    for request in ambiguous {
        let response = request.send().await.unwrap();
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{:?}",
            response.headers()
        );
        let (status, body) = status_json(response).await;
        assert_eq!(
            (status, body["error"]["type"].clone()),
            (401, json!("ambiguous_credentials")),
            "{body}"
        );
        assert!(body["error"]["id"].is_string(), "{body}");
    }

    let security = app.security.clone();
    let _dir = app.stop().await;
    let all = security
        .list_audit(&espwatch_store::AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let recorded = all
        .iter()
        .filter(|r| {
            r.event.kind == "request"
                && r.event.status == Some(401)
                && r.event.detail["refused"] == "ambiguous_credentials"
        })
        .count() as u64;
    let summarised: u64 = all
        .iter()
        .filter(|r| r.event.kind == "rejected_requests")
        .filter_map(|r| r.event.detail["refused"]["ambiguous_credentials"].as_u64())
        .sum();
    assert!(recorded >= 1, "the first refusal is recorded on its own");
    assert_eq!(
        recorded + summarised,
        sent,
        "every refusal is accounted for by type"
    );
}

both_backends! {
    /// Issue 18 item 14, enforced by the store itself: creations of one name in several
    /// spellings racing each other (each passes the service's check before any is stored: the
    /// password hash comes between) end with exactly one account, the others 409 naming it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creations_of_one_name_in_several_spellings_make_one_account() {
        let app = spawn_app().await;
        let spellings = ["Alice", "alice", "ALICE", "aLiCe"];
        let create = |name: &str| {
            app.send(app.client.post(app.url("/api/v1/users")).json(
                &json!({"name": name, "role": "viewer", "password": PASSWORD}),
            ))
        };
        let (a, b, c, d) = tokio::join!(
            create(spellings[0]),
            create(spellings[1]),
            create(spellings[2]),
            create(spellings[3])
        );
        let answers = [a, b, c, d];
        let created: Vec<&str> = spellings
            .iter()
            .zip(&answers)
            .filter(|(_, (status, _))| *status == 201)
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(created.len(), 1, "{answers:?}");
        for (status, body) in answers.iter().filter(|(status, _)| *status != 201) {
            assert_eq!(
                (*status, body["error"]["type"].clone()),
                (409, json!("conflict")),
                "{body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{:?}", created[0])),
                "names the account that exists: {body}"
            );
        }
        let (_, users) = app.get("/api/v1/users").await;
        let names: Vec<&str> = users
            .as_array()
            .or_else(|| users["users"].as_array())
            .unwrap()
            .iter()
            .filter_map(|u| u["name"].as_str())
            .filter(|n| n.eq_ignore_ascii_case("alice"))
            .collect();
        assert_eq!(names, created, "{users}");
        // Signing in under any spelling reaches that one account.
        let (status, body) = app.login("ALICE", PASSWORD).await;
        assert_eq!((status, body["user"]["name"].clone()), (200, json!(created[0])), "{body}");
    }
}

/// Users as a store written before names were unique ignoring case may hold them.
const SPELLINGS: [&str; 5] = ["Alice", "BOB", "alice", "bob", "carol"];

/// Issue 18 item 14, existing data: a store that already holds names differing only in case
/// is refused by every command that opens it (here `espwatch users list`), naming each group
/// and saying what to do; once one of each is left it opens, and from then on the store itself
/// refuses another spelling.
#[test]
fn an_embedded_store_holding_names_that_differ_only_in_case_is_refused_naming_them() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let dir_s = dir.to_str().unwrap();
    let (ok, _, stderr) = run_cli(&["users", "list", "--data-dir", dir_s], &[], work.path());
    assert!(ok, "{stderr}");
    // Back to the schema before the index, with names that differ only in case.
    let db = super::embedded_before_case_unique_names(&dir);
    for name in SPELLINGS {
        db.execute(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at)
             VALUES (?1, 'viewer', 'x', 0, 0)",
            [name],
        )
        .unwrap();
    }
    drop(db);
    let (ok, _, stderr) = run_cli(&["users", "list", "--data-dir", dir_s], &[], work.path());
    assert!(
        !ok && stderr.contains(r#"differ only in case: "Alice", "alice"; "BOB", "bob"."#)
            && stderr.contains("keep one account of each group")
            && !stderr.contains("carol"),
        "{stderr}"
    );
    let db = rusqlite::Connection::open(dir.join("security.sqlite")).unwrap();
    db.execute("DELETE FROM users WHERE name IN ('alice', 'BOB')", [])
        .unwrap();
    drop(db);
    let (ok, stdout, stderr) = run_cli(&["users", "list", "--data-dir", dir_s], &[], work.path());
    assert!(
        ok && stdout.contains("Alice") && stdout.contains("bob"),
        "{stdout}{stderr}"
    );
    let db = rusqlite::Connection::open(dir.join("security.sqlite")).unwrap();
    let refused = db.execute(
        "INSERT INTO users (name, role, password_hash, created_at, updated_at)
         VALUES ('ALICE', 'viewer', 'x', 0, 0)",
        [],
    );
    assert!(refused.is_err(), "the index stands: {refused:?}");
}

/// The same on PostgreSQL: migration 10 refuses such a database, naming the groups, and
/// applies once one of each is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_holding_names_that_differ_only_in_case_is_refused_naming_them() {
    init();
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    // Back to the schema before migration 10, with names that differ only in case.
    let client = super::postgres_before_case_unique_names(&db.url).await;
    for name in SPELLINGS {
        client
            .execute(
                "INSERT INTO users (name, role, password_hash, created_at, updated_at)
                 VALUES ($1, 'viewer', 'x', 0, 0)",
                &[&name],
            )
            .await
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    let list = move || {
        let url = url.clone();
        let cwd = work.path().to_owned();
        tokio::task::spawn_blocking(move || {
            run_cli(&["users", "list", "--database-url", &url], &[], &cwd)
        })
    };
    let (ok, _, stderr) = list().await.unwrap();
    assert!(
        !ok && stderr.contains("differ only in case: 'Alice', 'alice'; 'BOB', 'bob'.")
            && stderr.contains("keep one account of each group")
            && !stderr.contains("carol"),
        "{stderr}"
    );
    client
        .execute("DELETE FROM users WHERE name IN ('alice', 'BOB')", &[])
        .await
        .unwrap();
    let (ok, stdout, stderr) = list().await.unwrap();
    assert!(
        ok && stdout.contains("Alice") && stdout.contains("bob"),
        "{stdout}{stderr}"
    );
    let refused = client
        .execute(
            "INSERT INTO users (name, role, password_hash, created_at, updated_at)
             VALUES ('ALICE', 'viewer', 'x', 0, 0)",
            &[],
        )
        .await;
    assert!(refused.is_err(), "the index stands: {refused:?}");
}

/// Issue 18 item 5 through the real binary: `espwatch serve` on a data directory made by
/// someone else's umask (0755) tightens it to 0700, and every database file it writes while
/// serving (telemetry, its log, alarms, identities and audit) is private to its owner.
#[cfg(unix)]
#[test]
fn the_server_keeps_its_data_directory_and_files_private() {
    use std::os::unix::fs::PermissionsExt;
    init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut server = ChildServer::start(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = server.client();
        let response = client
            .post(server.url("/api/v1/telemetry"))
            .json(&json!([reading("W-1", &ts(0), 40.0)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        for path in [
            "/api/v1/wells/W-1/telemetry",
            "/api/v1/alarms",
            "/api/v1/users",
        ] {
            let response = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
        // Request records are written within 50 ms.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    });
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let check = |when: &str| {
        assert_eq!(mode(&dir), 0o700, "{when}: the data directory");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_file() {
                assert_eq!(
                    mode(&entry.path()) & 0o077,
                    0,
                    "{when}: {name} is {:o}",
                    mode(&entry.path())
                );
                files.push(name);
            }
        }
        for db in ["espwatch.db", "alarms.sqlite", "security.sqlite"] {
            assert!(files.iter().any(|f| f == db), "{when}: {db} in {files:?}");
        }
    };
    check("while serving");
    assert!(server.terminate().success());
    check("after a clean stop");
}

/// Issue 18 item 9 through HTTP: a telemetry batch whose middle reading carries hundreds of
/// thousands of unknown keys (about 12 MB, under the body limit) is answered with that reading
/// refused for its key count, without decoding the rest of it, and the readings around it
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_with_too_many_keys_is_refused_over_http_and_its_batch_kept() {
    let app = spawn_app().await;
    let mut body = format!(
        r#"[{{"well_id":"K-1","ts":"{}","motor_current_a":1}},{{"well_id":"K-1","ts":"{}","motor_current_a":1"#,
        ts(0),
        ts(1)
    );
    for i in 0..600_000 {
        body.push_str(&format!(r#","motor_curent_{i}":1"#));
    }
    body.push_str(&format!(
        r#"}},{{"well_id":"K-1","ts":"{}","motor_current_a":2}}]"#,
        ts(2)
    ));
    assert!(
        body.len() > 10_000_000 && body.len() < 16 * 1024 * 1024,
        "{}",
        body.len()
    );
    let started = std::time::Instant::now();
    let (status, answer) = app
        .post("/api/v1/telemetry", "application/json", body)
        .await;
    println!(
        "a reading with 600 000 keys answered in {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{answer}");
    assert_eq!(rejected[0]["index"], 1, "{answer}");
    let errors = rejected[0]["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("more than 256 keys")),
        "{answer}"
    );
    assert!(
        errors.len() <= 33,
        "errors collected are capped: {}",
        errors.len()
    );
    let points = app.all_points("K-1").await;
    assert_eq!(points["ts"], json!([ts(0), ts(2)]), "{points}");
}

/// Issue 18 item 14: user names are unique ignoring case, and sign-in matches them so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_are_compared_ignoring_case() {
    let app = spawn_app().await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Operator, None).await;
    let (status, body) = app
        .send(
            app.client.post(app.url("/api/v1/users")).json(
                &json!({"name": "ANA", "role": "admin", "password": "another long passphrase"}),
            ),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = app.login("Ana", PASSWORD).await;
    assert_eq!(
        (status, body["user"]["name"].clone()),
        (200, json!("ana")),
        "{body}"
    );
    // Failures under another spelling count on the same account.
    for _ in 0..5 {
        assert_eq!(app.login("ANA", "wrong password!!").await.0, 401);
    }
    assert_eq!(app.login("ana", PASSWORD).await.0, 401, "locked");
}

/// Issue 18 item 4: a flood of unauthenticated refusals from one address is one request
/// record plus one `rejected_requests` summary with the count, not a record per request;
/// authenticated requests are still recorded one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_summarised_per_source_and_minute() {
    let app = spawn_app().await;
    let security = app.security.clone();
    for _ in 0..60 {
        let (status, _) = app.send(app.anonymous.get(app.url("/api/v1/wells"))).await;
        assert_eq!(status, 401);
    }
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/wells").await.0, 200);
    }
    let _dir = app.stop().await;
    use espwatch_store::AuditFilter;
    let all = security
        .list_audit(&AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = all
        .iter()
        .filter(|r| r.event.kind == "request" && r.event.status == Some(401))
        .count();
    let summarised: u64 = all
        .iter()
        .filter(|r| r.event.kind == "rejected_requests")
        .map(|r| r.event.detail["count"].as_u64().unwrap())
        .sum();
    // A minute boundary during the test may split the flood in two.
    assert!(
        (1..=2).contains(&refused),
        "{refused} request records for 401s"
    );
    assert_eq!(
        refused as u64 + summarised,
        60,
        "every refusal is accounted for"
    );
    let granted = all
        .iter()
        .filter(|r| r.event.kind == "request" && r.event.status == Some(200))
        .count();
    assert_eq!(granted, 5);
    assert_eq!(security.verify_audit().await.unwrap().first_broken, None);
}

/// Issue 18 item 13: well ids must start with a letter or a digit; `.`, `..` and `.hidden`
/// never become wells (per reading, the rest of the batch is kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_ids_must_start_with_a_letter_or_a_digit() {
    let app = spawn_app().await;
    let batch = json!([
        reading(".", &ts(0), 1.0),
        reading("..", &ts(0), 1.0),
        reading(".hidden", &ts(0), 1.0),
        reading("_W", &ts(0), 1.0),
        reading("W-1", &ts(0), 1.0),
    ]);
    let (status, body) = app.ingest_json(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["accepted"].clone(),
            body["rejected"].as_array().map(Vec::len)
        ),
        (json!(1), Some(4)),
        "{body}"
    );
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/wells"))
                .json(&json!({"well_id": ".x"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, wells) = app.get("/api/v1/wells").await;
    assert_eq!(
        wells.to_string().matches("\"well_id\"").count(),
        1,
        "{wells}"
    );
}

/// Issue 18 item 6: what used to come back from the HTTP layer with an empty body — 414, 431,
/// 400 — is in the error envelope with the security headers and audited, whether the head is
/// refused as it arrives or by the HTTP server itself; the docs are not cached and run no
/// inline script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_heads_get_the_envelope_and_the_docs_are_locked_down() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let raw = |head: String| {
        let address = app.address;
        async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let received = closed_within(&mut stream, std::time::Duration::from_secs(5))
                .await
                .expect("answered and closed");
            String::from_utf8_lossy(&received).into_owned()
        }
    };
    for (head, status, kind) in [
        (
            format!(
                "GET /api/v1/wells?x={} HTTP/1.1\r\nhost: x\r\n\r\n",
                "a".repeat(10_000)
            ),
            "414",
            "uri_too_long",
        ),
        (
            format!(
                "GET /api/v1/wells HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "b".repeat(70_000)
            ),
            "431",
            "headers_too_large",
        ),
        (
            format!(
                "GET /api/v1/wells HTTP/1.1\r\nhost: x\r\n{}\r\n",
                "x-a: 1\r\n".repeat(150)
            ),
            "431",
            "headers_too_large",
        ),
        ("HELLO THERE\r\n\r\n".to_owned(), "400", "malformed_request"),
        (
            "GET /api/v1/wells HTTP/1.1\r\nno colon here\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        // What the HTTP server itself refuses: a version within the first 24 bytes (which it
        // reads first, to tell HTTP/2), two different lengths, a transfer coding not ending in
        // chunked, a target that is no URI.
        (
            "GET /api/v1/wells HTTP/9.9\r\nhost: x\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"
                .to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "GET /api/v1/wells HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "GET http://[::1/api/v1/wells HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
    ] {
        let answer = raw(head).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer:.200}"
        );
        for needle in [
            kind,
            "\"error\"",
            "x-content-type-options: nosniff",
            "content-security-policy: default-src 'none'",
            "cache-control: no-store",
        ] {
            assert!(answer.contains(needle), "{needle} missing: {answer:.600}");
        }
        assert!(
            !answer.contains("strict-transport-security"),
            "HSTS over plain HTTP: {answer:.600}"
        );
    }
    let docs = app.anonymous.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["cache-control"], "no-store");
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let script = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert!(!script.contains("unsafe-inline"), "{csp}");
    let page = docs.text().await.unwrap();
    assert!(
        !page.contains("<script>"),
        "an inline script the CSP would block: {page}"
    );

    // Audited like other anonymous refusals: the first of the minute as a request record,
    // the others counted in the summary written when the minute ends (here: at shutdown).
    let security = app.security.clone();
    let _dir = app.stop().await;
    let all = security
        .list_audit(&espwatch_store::AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for r in &all {
        if r.event.kind == "request"
            && let Some(status) = r.event.status
            && status != 200
        {
            *seen.entry(status.to_string()).or_insert(0) += 1;
        }
        if r.event.kind == "rejected_requests" {
            for (status, n) in r.event.detail["statuses"].as_object().unwrap() {
                *seen.entry(status.clone()).or_insert(0) += n.as_u64().unwrap();
            }
        }
    }
    let expected: std::collections::BTreeMap<String, u64> = [
        ("400".to_owned(), 6),
        ("414".to_owned(), 1),
        ("431".to_owned(), 2),
    ]
    .into();
    assert_eq!(seen, expected, "{all:#?}");
}

/// Issue 17: telemetry is limited per identity in readings, not requests, so a gateway
/// sending one reading per request is not throttled by the request limits; a batch beyond
/// the identity's budget is served and the next request waits (429, `Retry-After`, nothing
/// of it stored). Other routes keep their request limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_limited_in_readings_per_identity_not_in_requests() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_identity = 5.0;
        c.rate_limit_per_source = 5.0;
        c.telemetry_readings_per_identity = 100.0;
    })
    .await;
    let gateway =
        bearer_client(&create_key(app.security.as_ref(), "gateway", Role::ApiClient, None).await);
    let post = |body: Value| {
        gateway
            .post(app.url("/api/v1/telemetry"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    // 60 one-reading requests back to back: 60 readings of a 200 burst, far above 5 requests/s.
    for i in 0..60 {
        let (status, body) = app.send(post(reading("W-1", &ts(i), 40.0))).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let batch: Vec<Value> = (100..400).map(|i| reading("W-1", &ts(i), 41.0)).collect();
    let (status, body) = app.send(post(Value::Array(batch))).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(300)),
        "{body}"
    );
    let response = post(reading("W-1", &ts(1000), 42.0)).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let points = app.all_points("W-1").await;
    assert_eq!(
        points["ts"].as_array().map(Vec::len),
        Some(360),
        "nothing of the refused request stored"
    );
    // Other routes still count requests per source and identity.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(app.send(app.client.get(app.url("/api/v1/wells"))).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Issue 18 item 7: `espwatch secret init` writes a random secret the server accepts, owner
/// only, and never overwrites one by accident.
#[test]
fn secret_init_writes_a_private_random_secret() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("jwt.secret");
    let out_s = out.to_str().unwrap();
    let (ok, stdout, stderr) = run_cli(&["secret", "init", "--out", out_s], &[], work.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("export ESPWATCH_JWT_SECRET_FILE="),
        "{stdout}"
    );
    let secret = std::fs::read_to_string(&out).unwrap();
    espwatch_app::config::check_secret(secret.trim().as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (ok, _, stderr) = run_cli(&["secret", "init", "--out", out_s], &[], work.path());
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), secret, "kept");
    let (ok, _, stderr) = run_cli(
        &["secret", "init", "--out", out_s, "--force"],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    assert_ne!(
        std::fs::read_to_string(&out).unwrap(),
        secret,
        "replaced on request"
    );
    // The server starts with it (and refuses to start without a usable one, tested elsewhere).
    let data = work.path().join("data");
    let mut server = ChildServer::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("ESPWATCH_JWT_SECRET_FILE", out_s)],
    );
    use std::io::{Read, Write};
    let mut probe = std::net::TcpStream::connect(server.address).unwrap();
    probe
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(server.terminate().success());
}

/// Issue 18 item 3, second sink: with `audit_anchor_syslog` every anchor also goes to syslog
/// (here a datagram socket the test reads, written to a log file as a logger would). With the
/// anchor file gone (deleted by whoever truncated the trail), `audit verify --syslog-anchors`
/// still finds the deleted newest records.
#[cfg(unix)]
#[test]
fn audit_anchors_sent_to_syslog_detect_truncation_without_the_anchor_file() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let dir_s = dir.to_str().unwrap();
    let secret_file = work.path().join("jwt.secret");
    std::fs::write(&secret_file, test_jwt_secret()).unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let secret_s = secret_file.to_str().unwrap();
    let socket = work.path().join("log.sock");
    let log_file = work.path().join("auth.log");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    let logger = {
        let log_file = log_file.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            listener
                .set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            while let Ok(n) = listener.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message == "stop" {
                    break;
                }
                // `<85>espwatch[PID]: MSG` → `TIME HOST espwatch[PID]: MSG`.
                let line = format!(
                    "Dec  4 21:40:00 plant-host {}\n",
                    message
                        .trim_start_matches(|c| c != '>')
                        .trim_start_matches('>')
                );
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_file)
                    .unwrap()
                    .write_all(line.as_bytes())
                    .unwrap();
            }
        })
    };
    let secret_env = [("ESPWATCH_JWT_SECRET_FILE", secret_s)];
    let (ok, stdout, stderr) = run_cli(
        &[
            "apikeys",
            "create",
            "--name",
            "t",
            "--role",
            "viewer",
            "--data-dir",
            dir_s,
        ],
        &secret_env,
        work.path(),
    );
    assert!(ok, "{stderr}");
    let viewer = stdout.trim().to_owned();
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir_s],
        &[
            ("ESPWATCH_JWT_SECRET_FILE", secret_s),
            ("ESPWATCH_AUDIT_ANCHOR_SECS", "1"),
            ("ESPWATCH_AUDIT_ANCHOR_SYSLOG", socket.to_str().unwrap()),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = bearer_client(&viewer);
        for _ in 0..10 {
            let status = client
                .get(server.url("/api/v1/wells"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    });
    assert!(server.terminate().success());
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"stop", &socket)
        .unwrap();
    logger.join().unwrap();
    let from_syslog = espwatch_app::anchors::read_syslog_anchors(&log_file).unwrap();
    assert!(
        from_syslog.len() >= 2,
        "anchored while running and at shutdown"
    );
    let newest = from_syslog.iter().map(|a| a.id).max().unwrap();
    let log_s = log_file.to_str().unwrap();
    let verify = |data_dir: &str| {
        run_cli(
            &[
                "audit",
                "verify",
                "--data-dir",
                data_dir,
                "--syslog-anchors",
                log_s,
            ],
            &secret_env,
            work.path(),
        )
    };
    let (ok, stdout, _) = verify(dir_s);
    assert!(
        ok && stdout.contains(&format!(
            "syslog anchors: consistent with the newest (record {newest} "
        )),
        "{stdout}"
    );

    // The newest records deleted and the anchor file with them: syslog still has the head.
    std::fs::remove_file(work.path().join("jwt.secret.anchors")).unwrap();
    let db = rusqlite::Connection::open(dir.join("security.sqlite")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_delete").unwrap();
    db.execute("DELETE FROM audit WHERE id > ?1", [newest - 3])
        .unwrap();
    drop(db);
    let (ok, stdout, _) = verify(dir_s);
    assert!(
        !ok && stdout.contains("syslog anchors") && stdout.contains("deleted"),
        "{stdout}"
    );
}

/// Issue 18 item 4, retention: `audit prune --include-security-events` removes the oldest
/// records, security events included, and appends a keyed `audit_pruned` record (a plain
/// prune of a range holding only security events removes nothing); the rest still verifies, and editing, deleting in the middle,
/// deleting the prune record or forging it without the key is detected.
#[test]
fn audit_prune_keeps_the_chain_verifiable_and_tampering_detected() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let dir_s = dir.to_str().unwrap();
    let secret_file = work.path().join("jwt.secret");
    std::fs::write(&secret_file, test_jwt_secret()).unwrap();
    let secret_s = secret_file.to_str().unwrap();
    let env = [("ESPWATCH_JWT_SECRET_FILE", secret_s)];
    let create = |name: &str| {
        let (ok, _, stderr) = run_cli(
            &[
                "apikeys",
                "create",
                "--name",
                name,
                "--role",
                "viewer",
                "--data-dir",
                dir_s,
            ],
            &env,
            work.path(),
        );
        assert!(ok, "{stderr}");
    };
    for n in 0..4 {
        create(&format!("old{n}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let cut = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(50));
    for n in 0..3 {
        create(&format!("new{n}"));
    }
    let verify = |d: &std::path::Path| {
        run_cli(
            &["audit", "verify", "--data-dir", d.to_str().unwrap()],
            &env,
            work.path(),
        )
    };
    // Without the key, no prune.
    let (ok, _, _) = run_cli(
        &["audit", "prune", "--before", &cut, "--data-dir", dir_s],
        &[("ESPWATCH_JWT_SECRET", "")],
        work.path(),
    );
    assert!(!ok);
    // These records are all security events (key creations): a plain prune keeps them.
    let (ok, stdout, stderr) = run_cli(
        &["audit", "prune", "--before", &cut, "--data-dir", dir_s],
        &env,
        work.path(),
    );
    assert!(
        ok && stdout.contains("security events are kept"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run_cli(
        &[
            "audit",
            "prune",
            "--before",
            &cut,
            "--include-security-events",
            "--data-dir",
            dir_s,
        ],
        &env,
        work.path(),
    );
    assert!(
        ok && stdout.contains("pruned audit records 1..=4"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, _) = verify(&dir);
    assert!(ok && stdout.contains("intact: 4 records"), "{stdout}");

    let records = |d: &std::path::Path| {
        let db = rusqlite::Connection::open(d.join("security.sqlite")).unwrap();
        db.execute_batch(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete",
        )
        .unwrap();
        db
    };
    // Edited record: broken.
    let edited = work.path().join("edited");
    copy_dir(&dir, &edited);
    records(&edited)
        .execute("UPDATE audit SET actor = 'user:admin' WHERE id = 6", [])
        .unwrap();
    let (ok, stdout, _) = verify(&edited);
    assert!(!ok && stdout.contains("BROKEN at record 6"), "{stdout}");
    // Deleted in the middle: broken.
    let middle = work.path().join("middle");
    copy_dir(&dir, &middle);
    records(&middle)
        .execute("DELETE FROM audit WHERE id = 6", [])
        .unwrap();
    let (ok, stdout, _) = verify(&middle);
    assert!(!ok && stdout.contains("BROKEN"), "{stdout}");
    // The prune record deleted (it is the newest): the missing prefix is unaccounted for.
    let unpruned = work.path().join("unpruned");
    copy_dir(&dir, &unpruned);
    records(&unpruned)
        .execute("DELETE FROM audit WHERE kind = 'audit_pruned'", [])
        .unwrap();
    let (ok, stdout, _) = verify(&unpruned);
    assert!(!ok && stdout.contains("no audit_pruned record"), "{stdout}");
    // More deleted than was pruned: the prune record names another range.
    let deeper = work.path().join("deeper");
    copy_dir(&dir, &deeper);
    records(&deeper)
        .execute("DELETE FROM audit WHERE id = 5", [])
        .unwrap();
    let (ok, stdout, _) = verify(&deeper);
    assert!(!ok && stdout.contains("no audit_pruned record"), "{stdout}");
    // A prune record forged without the key (plain hash, or another key) is refused.
    let forged = work.path().join("forged");
    copy_dir(&dir, &forged);
    {
        let db = records(&forged);
        let (detail, prev): (String, String) = db
            .query_row(
                "SELECT detail, prev_hash FROM audit WHERE kind = 'audit_pruned'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let mut d: Value = serde_json::from_str(&detail).unwrap();
        let five: String = db
            .query_row("SELECT hash FROM audit WHERE id = 5", [], |r| r.get(0))
            .unwrap();
        d["last_id"] = json!(5);
        d["count"] = json!(5);
        d["last_hash"] = json!(five);
        db.execute("DELETE FROM audit WHERE id = 5", []).unwrap();
        let other = espwatch_store::AuditKey::derive(b"not the server's secret, 0123456789abcdef");
        let mut event = espwatch_store::AuditEvent {
            ts: espwatch_core::Timestamp(0),
            kind: "audit_pruned".into(),
            request_id: None,
            method: None,
            route: None,
            status: None,
            actor: None,
            role: None,
            source: None,
            duration_ms: None,
            detail: d.clone(),
        };
        let (id, ts, actor, role, source): (
            i64,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = db
            .query_row(
                "SELECT id, ts, actor, role, source FROM audit WHERE kind = 'audit_pruned'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        event.ts = espwatch_core::Timestamp(ts);
        (event.actor, event.role, event.source) = (actor, role, source);
        let hash = espwatch_store::security::audit_chain_hash(Some(&other), &prev, id, &event);
        db.execute(
            "UPDATE audit SET detail = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![d.to_string(), hash, id],
        )
        .unwrap();
    }
    let (ok, stdout, _) = verify(&forged);
    assert!(!ok && stdout.contains("BROKEN"), "{stdout}");
    // A second prune continues from the first; the trail still verifies.
    let (ok, stdout, _) = run_cli(
        &[
            "audit",
            "prune",
            "--before",
            &chrono::Utc::now().to_rfc3339(),
            "--include-security-events",
            "--data-dir",
            dir_s,
        ],
        &env,
        work.path(),
    );
    assert!(
        ok && stdout.contains("pruned audit records 5..=7"),
        "{stdout}"
    );
    let (ok, stdout, _) = verify(&dir);
    assert!(ok && stdout.contains("intact: 2 records"), "{stdout}");
}

/// Issue 18 item 4, retention of request records: with `audit_retention` set, `serve` removes
/// the request records older than the cut (a UTC midnight at least that long ago) and keeps
/// every security event, carried forward as `audit_carried` records that hold the original;
/// `audit verify` still says intact, an edited carried record is found, and `/health/ready`
/// reports the round under `checks.audit_retention`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_retention_removes_old_request_records_and_keeps_security_events() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    let dir_s = dir.to_str().unwrap();
    // Ten days ago, as the server would have written them (keyed as the server keys them).
    let config = espwatch_app::Config {
        data_dir: dir.clone(),
        jwt_secret: Some(espwatch_app::SecretString(test_jwt_secret().to_owned())),
        ..espwatch_app::Config::default()
    };
    let store = espwatch_app::open_security_store(&config).await.unwrap();
    let old = espwatch_core::Timestamp::from_datetime(chrono::Utc::now()).0 - 10 * 86_400_000_000;
    let kinds = [
        "request",
        "login_failure",
        "request",
        "rejected_requests",
        "request",
        "user_create",
        "request",
        "request",
    ];
    let events = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| espwatch_store::AuditEvent {
            ts: espwatch_core::Timestamp(old + i as i64 * 1_000_000),
            kind: (*kind).into(),
            request_id: Some(format!("old-{i}")),
            method: Some("POST".into()),
            route: Some("/api/v1/auth/login".into()),
            status: Some(401),
            actor: Some("user:mallory".into()),
            role: None,
            source: Some("192.0.2.7".into()),
            duration_ms: Some(2.5),
            detail: json!({"n": i}),
        })
        .collect();
    store.append_audit(events).await.unwrap();
    // And one of now, which stays.
    let mut recent = store
        .list_audit(&espwatch_store::AuditFilter::default())
        .await
        .unwrap()[0]
        .event
        .clone();
    recent.ts = espwatch_core::Timestamp::from_datetime(chrono::Utc::now());
    store.append_audit(vec![recent]).await.unwrap();
    drop(store);

    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir_s],
        &[("ESPWATCH_AUDIT_RETENTION", "3d")],
    );
    let ready = async || -> Value {
        reqwest::get(server.url("/health/ready"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let body = ready().await;
        if body["checks"]["audit_retention"]["rounds"].as_u64() >= Some(1) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit retention round: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let r = &body["checks"]["audit_retention"];
    assert_eq!(r["status"], "healthy", "{body}");
    assert_eq!(r["keep"], "3d", "{body}");
    assert_eq!(r["consecutive_failures"], 0, "{body}");
    assert!(
        r["last_error"].is_null() && r["last_run"].is_string(),
        "{body}"
    );
    assert_eq!(r["last_round"]["removed"], 6, "{body}");
    assert_eq!(r["last_round"]["carried"], 2, "{body}");
    assert_eq!(r["last_round"]["first_id"], 1, "{body}");
    assert_eq!(r["last_round"]["last_id"], 8, "{body}");
    assert!(
        r["last_round"]["cut"]
            .as_str()
            .is_some_and(|c| c.ends_with("T00:00:00Z")),
        "cut at a UTC midnight: {body}"
    );
    assert!(server.terminate().success());

    let verify = |d: &std::path::Path| {
        run_cli(
            &["audit", "verify", "--data-dir", d.to_str().unwrap()],
            &[],
            work.path(),
        )
    };
    let (ok, stdout, stderr) = verify(&dir);
    assert!(
        ok && stdout.contains("audit trail intact"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run_cli(
        &["audit", "list", "--limit", "1000", "--data-dir", dir_s],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .all(|r| r["actor"] != "user:mallory" || r["kind"] == "audit_carried" || r["id"] == 9),
        "only the security events of the old records are left: {stdout}"
    );
    let mut carried: Vec<(i64, String)> = records
        .iter()
        .filter(|r| r["kind"] == "audit_carried" && r["actor"] == "user:mallory")
        .map(|r| {
            (
                r["detail"]["id"].as_i64().unwrap(),
                r["detail"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    carried.sort();
    assert_eq!(
        carried,
        vec![
            (2, "login_failure".to_owned()),
            (6, "user_create".to_owned())
        ],
        "{stdout}"
    );
    let pruned: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "audit_pruned")
        .collect();
    assert_eq!(pruned.len(), 1, "{stdout}");
    assert_eq!(pruned[0]["actor"], "system:audit_retention");
    assert_eq!(pruned[0]["detail"]["carried"], 2);

    // A carried record edited (the attacker drops the triggers first): found.
    let edited = work.path().join("edited");
    copy_dir(&dir, &edited);
    {
        let db = rusqlite::Connection::open(edited.join("security.sqlite")).unwrap();
        db.execute_batch("DROP TRIGGER IF EXISTS audit_no_update")
            .unwrap();
        let n = db
            .execute(
                "UPDATE audit SET source = '198.51.100.1' WHERE kind = 'audit_carried'",
                [],
            )
            .unwrap();
        assert_eq!(n, 2);
    }
    let (ok, stdout, _) = verify(&edited);
    assert!(!ok && stdout.contains("BROKEN"), "{stdout}");
}

both_backends! {
    /// Issue 18 item 4, security events kept: a plain `espwatch audit prune` removes only the
    /// request records of the range; the login failures, user creations and role changes in it
    /// are carried forward (`audit_carried`), still found by `GET /audit?kind=`, and the trail
    /// still verifies. Deleting them too takes `--include-security-events`, and the trail
    /// verifies after that as well.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_audit_prune_keeps_security_events() {
        let app = spawn_app().await;
        let store_args = app.cli_store_args();
        let cli = async |args: Vec<String>| {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_cli(&args, &[], std::path::Path::new("."))
            })
            .await
            .unwrap()
        };
        let with_store = |args: &[&str]| {
            let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            all.extend(store_args.iter().cloned());
            all
        };
        let (status, body) = app
            .send(app.client.post(app.url("/api/v1/users")).json(
                &json!({"name": "oper", "role": "viewer", "password": PASSWORD}),
            ))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = app
            .send(
                app.client
                    .patch(app.url("/api/v1/users/oper"))
                    .json(&json!({"role": "operator"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        for _ in 0..2 {
            assert_eq!(app.login("oper", "not the password at all").await.0, 401);
        }
        // Request records are written within 50 ms; let the last ones land before the cut.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let cut = chrono::Utc::now().to_rfc3339();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(app.get("/api/v1/auth/me").await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let of_kind = async |kind: &str| -> Vec<Value> {
            let (status, body) = app
                .get(&format!("/api/v1/audit?kind={kind}&limit=10000"))
                .await;
            assert_eq!(status, 200, "{body}");
            body["records"].as_array().unwrap().clone()
        };
        let old_requests = async || -> usize {
            let until = cut.replace('+', "%2B");
            let (status, body) = app
                .get(&format!("/api/v1/audit?kind=request&until={until}&limit=10000"))
                .await;
            assert_eq!(status, 200, "{body}");
            body["records"].as_array().unwrap().len()
        };
        let (_, everything) = app.get("/api/v1/audit?limit=10000").await;
        assert!(old_requests().await >= 2, "requests before the cut: {everything}");

        // A plain prune: the requests go, the security events stay.
        let (ok, stdout, stderr) = cli(with_store(&["audit", "prune", "--before", &cut])).await;
        assert!(ok && stdout.contains("pruned audit records"), "{stdout}{stderr}");
        assert_eq!(old_requests().await, 0, "{stdout}");
        let kept = [
            ("login_failure", 2),
            ("user_create", 1),
            ("user_change", 1),
            ("server_start", 1),
        ];
        for (kind, n) in kept {
            let records = of_kind(kind).await;
            assert_eq!(records.len(), n, "{kind} kept: {records:?}");
            for r in &records {
                assert_eq!(r["kind"], "audit_carried", "{r}");
                assert_eq!(r["detail"]["kind"], kind, "{r}");
            }
        }
        // And the API description says how carried events are found and shown.
        let (_, doc) = app
            .send(app.anonymous.get(app.url("/api/v1/openapi.json")))
            .await;
        let kind = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "kind")
            .unwrap()
            .clone();
        assert!(
            kind["description"]
                .as_str()
                .is_some_and(|d| d.contains("audit_carried") && d.contains("detail.kind")),
            "{kind}"
        );
        let pruned = of_kind("audit_pruned").await;
        assert_eq!(pruned.len(), 1, "{pruned:?}");
        assert_eq!(pruned[0]["detail"]["carried"], 5, "{pruned:?}");
        let (ok, stdout, stderr) = cli(with_store(&["audit", "verify"])).await;
        assert!(ok && stdout.contains("audit trail intact"), "{stdout}{stderr}");

        // Deleting security events is a separate, named choice; not with --requests-only.
        // As before the first cut: the records of the requests above land before it, and one
        // lands after it. Otherwise the first prune's record may still be the newest, which
        // always stays, and its carried records with it.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = chrono::Utc::now().to_rfc3339();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(app.get("/api/v1/auth/me").await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (ok, _, stderr) = cli(with_store(&[
            "audit",
            "prune",
            "--before",
            &now,
            "--requests-only",
            "--include-security-events",
        ]))
        .await;
        assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
        let (ok, stdout, stderr) = cli(with_store(&[
            "audit",
            "prune",
            "--before",
            &now,
            "--include-security-events",
        ]))
        .await;
        assert!(
            ok && stdout.contains("0 security events carried forward"),
            "{stdout}{stderr}"
        );
        assert!(of_kind("login_failure").await.is_empty());
        assert!(of_kind("user_change").await.is_empty());
        let (ok, stdout, stderr) = cli(with_store(&["audit", "verify"])).await;
        assert!(ok && stdout.contains("audit trail intact"), "{stdout}{stderr}");
        app.stop().await;
    }
}
