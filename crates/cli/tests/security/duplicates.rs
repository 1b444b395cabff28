//! Issue 18 item 14, the repair path: a store written before user names were unique ignoring
//! case (embedded security schema 1, PostgreSQL before migration 10) that holds `Admin` next to
//! `admin` refuses to open, naming the groups and `espwatch users resolve-duplicates`; that
//! command lists what it would do (changing nothing), and with `--rename` or `--disable` fixes
//! the store so that it opens — `users list`, `serve`, sign-in under the new name (or not,
//! disabled), `audit verify` — with each rename audited. On both backends; the PostgreSQL runs
//! are skipped with a printed reason when it is unreachable, unless
//! `ESPWATCH_REQUIRE_SERVICES=1`.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

const PASSWORD: &str = "duplicate-names-pass-42";

/// The store under test: its CLI arguments, and how to run SQL on it directly.
enum Db {
    Embedded(std::path::PathBuf),
    Postgres {
        db: espwatch_store_postgres::testing::TestDatabase,
        runtime: tokio::runtime::Runtime,
    },
}

impl Db {
    fn args(&self) -> Vec<String> {
        match self {
            Db::Embedded(dir) => vec!["--data-dir".into(), dir.to_str().unwrap().into()],
            Db::Postgres { db, .. } => vec!["--database-url".into(), db.url.clone()],
        }
    }

    fn flag(&self) -> &'static str {
        match self {
            Db::Embedded(_) => "resolve-duplicates --data-dir",
            Db::Postgres { .. } => "resolve-duplicates --database-url",
        }
    }

    /// Back to the schema before names were unique ignoring case, then `statements` (plain
    /// SQL both backends understand).
    fn make_old_and_run(&self, statements: &[String]) {
        match self {
            Db::Embedded(dir) => {
                let db = super::embedded_before_case_unique_names(dir);
                for statement in statements {
                    db.execute_batch(statement).unwrap();
                }
            }
            Db::Postgres { db, runtime } => runtime.block_on(async {
                let client = super::postgres_before_case_unique_names(&db.url).await;
                for statement in statements {
                    client.batch_execute(statement).await.unwrap();
                }
            }),
        }
    }
}

fn cli(db: &Db, work: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let store = db.args();
    all.extend(store.iter().map(String::as_str));
    run_cli(&all, &[("ESPWATCH_PASSWORD", PASSWORD)], work)
}

fn login(server: &ChildServer, user: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({ "username": user, "password": PASSWORD }))
            .send()
            .await
            .expect("login request")
            .status()
            .as_u16()
    })
}

/// `admin` and `ops` made by the CLI; then, as an older version allowed, `Admin` (newer than
/// `admin`, with a session) and `OPS` (older than `ops`) inserted next to them, plus `carol`.
fn scenario(db: &Db, work: &Path, action: &str) {
    for (name, role) in [("admin", "admin"), ("ops", "operator"), ("carol", "viewer")] {
        let (ok, _, stderr) = cli(db, work, &["users", "add", name, "--role", role]);
        assert!(ok, "users add {name}: {stderr}");
    }
    let far = 4_102_444_800_000_000_i64; // 2100
    db.make_old_and_run(&[
        "INSERT INTO users (name, role, password_hash, created_at, updated_at)
         SELECT 'Admin', 'viewer', password_hash, created_at + 1, created_at + 1
         FROM users WHERE name = 'admin'"
            .to_owned(),
        "INSERT INTO users (name, role, password_hash, created_at, updated_at)
         SELECT 'OPS', 'operator', password_hash, 0, 0 FROM users WHERE name = 'ops'"
            .to_owned(),
        format!(
            "INSERT INTO sessions (id, user_name, created_at, expires_at)
             VALUES ('session-of-Admin', 'Admin', 0, {far})"
        ),
    ]);

    // Refused, naming the groups and the command.
    let (ok, _, stderr) = cli(db, work, &["users", "list"]);
    assert!(!ok, "the store opened with duplicates");
    for expected in [
        "Admin",
        "admin",
        "OPS",
        "ops",
        db.flag(),
        "--rename",
        "--disable",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
    assert!(!stderr.contains("carol"), "{stderr}");

    // Listing changes nothing.
    let (ok, stdout, stderr) = cli(db, work, &["users", "resolve-duplicates"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("2 group(s)")
            && stdout.contains("to rename: Admin-2")
            && stdout.contains("to rename: ops-2")
            && stdout.contains("nothing changed"),
        "{stdout}"
    );
    let (ok, _, _) = cli(db, work, &["users", "list"]);
    assert!(!ok, "listing changed the store");

    // A --keep naming no duplicate is refused before anything changes.
    let (ok, _, stderr) = cli(
        db,
        work,
        &["users", "resolve-duplicates", action, "--keep", "carol"],
    );
    assert!(!ok && stderr.contains("carol"), "{stderr}");

    // The repair: `ops` kept by choice, `admin` by age.
    let (ok, stdout, stderr) = cli(
        db,
        work,
        &["users", "resolve-duplicates", action, "--keep", "ops"],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(": Admin-2")
            && stdout.contains(": OPS-2")
            && stdout.contains("2 account(s)"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = cli(db, work, &["users", "list"]);
    assert!(ok, "the store still does not open: {stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {stdout}"))
            .to_owned()
    };
    for name in ["admin", "ops", "carol"] {
        assert!(line(name).contains("active"), "{stdout}");
    }
    let disabled = action == "--disable";
    for name in ["Admin-2", "OPS-2"] {
        assert_eq!(line(name).contains("disabled"), disabled, "{stdout}");
    }
    assert!(
        !stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some("Admin")),
        "{stdout}"
    );
    // Nothing left to do.
    let (ok, stdout, _) = cli(db, work, &["users", "resolve-duplicates", action]);
    assert!(ok && stdout.contains("nothing to do"), "{stdout}");

    // Audited, one record per rename.
    let (ok, stdout, stderr) = cli(db, work, &["audit", "list", "--kind", "user_rename"]);
    assert!(ok, "{stderr}");
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{stdout}");
    let moves: Vec<(Value, Value, Value)> = records
        .iter()
        .map(|r| {
            let d = &r["detail"];
            (d["from"].clone(), d["to"].clone(), d["disabled"].clone())
        })
        .collect();
    for expected in [
        (json!("Admin"), json!("Admin-2"), json!(disabled)),
        (json!("OPS"), json!("OPS-2"), json!(disabled)),
    ] {
        assert!(moves.contains(&expected), "{expected:?} not in {moves:?}");
    }
    let (ok, stdout, stderr) = cli(db, work, &["audit", "verify"]);
    assert!(ok, "{stdout}{stderr}");

    // The server starts on the repaired store; the renamed account signs in under its new
    // name unless disabled, and the store refuses another spelling from now on.
    let mut serve = vec!["serve", "--listen", "127.0.0.1:0"];
    let store = db.args();
    serve.extend(store.iter().map(String::as_str));
    let server = ChildServer::start_with(&serve);
    assert_eq!(login(&server, "admin"), 200);
    assert_eq!(login(&server, "Admin-2"), if disabled { 401 } else { 200 });
    drop(server);
    let (ok, _, stderr) = cli(db, work, &["users", "add", "ADMIN", "--role", "viewer"]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
}

#[test]
fn an_embedded_store_with_names_differing_only_in_case_is_repaired_by_the_cli() {
    init();
    for action in ["--rename", "--disable"] {
        let work = tempfile::tempdir().unwrap();
        let db = Db::Embedded(work.path().join("data"));
        scenario(&db, work.path(), action);
    }
}

#[test]
fn a_postgres_store_with_names_differing_only_in_case_is_repaired_by_the_cli() {
    init();
    for action in ["--rename", "--disable"] {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let Some(db) = runtime.block_on(espwatch_store_postgres::testing::TestDatabase::create())
        else {
            return;
        };
        let work = tempfile::tempdir().unwrap();
        let db = Db::Postgres { db, runtime };
        scenario(&db, work.path(), action);
    }
}
