//! Test support shared by this crate's tests and the HTTP suite: a fresh database per test,
//! cloned from a migrated template, dropped afterwards.
//!
//! The admin connection comes from `ESPWATCH_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When PostgreSQL cannot be reached the caller
//! gets `None` after a printed reason, unless `ESPWATCH_REQUIRE_SERVICES=1`, which panics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Connector, PostgresOptions, schema};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn admin_url() -> String {
    std::env::var("ESPWATCH_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

pub fn services_required() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The URL of `admin` with its database replaced by `db`.
pub fn url_for(admin: &str, db: &str) -> String {
    let (base, query) = match admin.find('?') {
        Some(q) => (&admin[..q], &admin[q..]),
        None => (admin, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &base[..path_start])
}

/// A database that exists for one test. Dropped (forcibly) when this value is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
const TEMPLATE_LOCK: i64 = 0x6573_7077_7470;

async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, String> {
    let connector = Connector::new(admin, Duration::from_secs(120), None, "espwatch-tests")
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect())
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())
}

impl TestDatabase {
    /// A fresh, migrated database, or `None` (reason printed) when PostgreSQL is unreachable.
    pub async fn create() -> Option<TestDatabase> {
        let admin = admin_url();
        let client = match admin_client(&admin).await {
            Ok(c) => c,
            Err(why) => {
                let msg = format!(
                    "PostgreSQL unreachable at {} ({why})",
                    crate::redact_url(&admin)
                );
                if services_required() {
                    panic!("{msg}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
                }
                eprintln!("skipping PostgreSQL test: {msg}");
                return None;
            }
        };
        let template = ensure_template(&client, &admin).await;
        let name = format!(
            "espwatch_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        // Cloning fails while another session is connected to the template; retry briefly.
        let mut attempt = 0;
        loop {
            match client
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .await
            {
                Ok(()) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "cloning the template; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("CREATE DATABASE {name}: {e}"),
            }
        }
        Some(TestDatabase {
            url: url_for(&admin, &name),
            name,
            admin,
        })
    }
}

impl TestDatabase {
    /// A copy of this database as it is now (a test's "copy of the data directory"), dropped
    /// with the copy. Nobody may be connected to this database meanwhile: connections a test
    /// just closed are waited for briefly.
    pub async fn copy(&self) -> TestDatabase {
        let client = admin_client(&self.admin)
            .await
            .expect("admin connection for a copy");
        let name = format!(
            "{}_copy_{}",
            self.name,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut attempt = 0;
        loop {
            match client
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
                .await
            {
                Ok(()) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "copying a test database; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("CREATE DATABASE {name} TEMPLATE {}: {e}", self.name),
            }
        }
        TestDatabase {
            url: url_for(&self.admin, &name),
            name,
            admin: self.admin.clone(),
        }
    }
}

/// The template's name carries a fingerprint of the migrations, so a changed schema gets a new
/// template rather than a stale one.
async fn ensure_template(client: &tokio_postgres::Client, admin: &str) -> String {
    let fingerprint = schema::fingerprint();
    let template = format!("espwatch_template_{fingerprint:016x}");
    client
        .query("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template lock");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .expect("looking for the template")
        .is_some();
    if !exists {
        let building = format!("{template}_building");
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .await
            .expect("clearing a half-built template");
        client
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("creating the template");
        let opts = PostgresOptions::default();
        crate::migrate(&url_for(admin, &building), &opts)
            .await
            .expect("migrating the template");
        // Renaming last means a half-built template is never cloned.
        client
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
            .await
            .expect("publishing the template");
    }
    client
        .query("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template unlock");
    template
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = admin_client(&admin).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = done.join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            super::url_for("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::url_for("postgres://u:p@h/test?sslmode=require", "x"),
            "postgres://u:p@h/x?sslmode=require"
        );
        assert_eq!(super::url_for("postgres://h", "x"), "postgres://h/x");
    }
}
