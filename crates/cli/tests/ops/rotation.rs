//! Rotating the JWT secret without signing everyone out (issue 22, README "Rotating the JWT
//! secret"): the server signs with the new secret and, until `jwt_previous_valid_until`, also
//! accepts access tokens the previous one signed; after it they are refused (401). Refresh
//! tokens are opaque (stored hashed), so a session opened before the rotation refreshes into
//! a token of the new secret. Driven over HTTP: an in-process server with the old secret, then
//! the real binary configured through its environment as the README says, then a server that
//! no longer knows the old secret at all.

use std::path::Path;
use std::time::Duration;

use espwatch_core::access::Role;
use serde_json::{Value, json};

use crate::support::*;

const PASSWORD: &str = "rotation-test-password-7";

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, secret).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

async fn me(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn refresh(url: String, token: &str) -> (u16, Value) {
    status_json(
        reqwest::Client::new()
            .post(url)
            .json(&json!({ "refresh_token": token }))
            .send()
            .await
            .expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_secret_rotates_without_signing_anyone_out() {
    init();
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("jwt.secret");
    let previous_file = secrets.path().join("jwt.secret.previous");
    let old = espwatch_app::keys::random_token(48).unwrap();
    let new = espwatch_app::keys::random_token(48).unwrap();
    write_secret(&secret_file, &old);

    // Before: the old secret, from its file (the audit key file made next to it).
    let file = secret_file.clone();
    let app = start_in(data.path().to_path_buf(), None, move |c| {
        c.jwt_secret = None;
        c.jwt_secret_file = Some(file);
        c.ensure_audit_key_file().unwrap();
    })
    .await;
    create_user(app.security.as_ref(), "ana", PASSWORD, Role::Viewer, None).await;
    let (old_client, tokens) = app.user_client("ana", PASSWORD).await;
    let old_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&old_client, app.url("/api/v1/auth/me")).await, 200);
    // A second session, kept for the end of the grace period.
    let (_, spare) = app.user_client("ana", PASSWORD).await;
    let spare_refresh = spare["refresh_token"].as_str().unwrap().to_owned();
    app.stop().await;

    // The rotation as the README does it: the old secret moves to jwt.secret.previous, the
    // new one takes its place in jwt.secret (same path: the audit key and anchors stay where
    // they are), and the old one is accepted for a short grace period.
    std::fs::copy(&secret_file, &previous_file).unwrap();
    write_secret(&secret_file, &new);
    let grace = 12;
    let until = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let data_s = data.path().to_str().unwrap();
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_s],
        &[
            ("ESPWATCH_JWT_SECRET", ""),
            ("ESPWATCH_JWT_SECRET_FILE", secret_file.to_str().unwrap()),
            (
                "ESPWATCH_JWT_SECRET_PREVIOUS_FILE",
                previous_file.to_str().unwrap(),
            ),
            ("ESPWATCH_JWT_PREVIOUS_VALID_UNTIL", &until_text),
        ],
    );
    // Within the grace period: the token of the old secret still works...
    assert_eq!(
        me(&old_client, server.url("/api/v1/auth/me")).await,
        200,
        "a token of the previous secret within the grace period"
    );
    // ...and its session refreshes into a token of the new secret.
    let (status, renewed) = refresh(server.url("/api/v1/auth/refresh"), &old_refresh).await;
    assert_eq!(status, 200, "{renewed}");
    let new_access = renewed["access_token"].as_str().unwrap().to_owned();
    let new_client = bearer_client(&new_access);
    assert_eq!(me(&new_client, server.url("/api/v1/auth/me")).await, 200);
    // New sign-ins too (signed with the new secret: checked by the last server below).
    let (status, fresh) = status_json(
        reqwest::Client::new()
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({ "username": "ana", "password": PASSWORD }))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    let fresh_access = fresh["access_token"].as_str().unwrap().to_owned();

    // After the grace period, on the same running server: the old secret's token is refused;
    // a session opened before the rotation still refreshes (its refresh token is no JWT).
    // (Not `auth_cache_ms` more: a remembered credential ends with the grace period, see
    // `auth::tests::a_cached_token_of_the_previous_secret_ends_with_the_grace_period`.)
    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let response = old_client
        .get(server.url("/api/v1/auth/me"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status().as_u16(),
        401,
        "a token of the previous secret after the grace period"
    );
    assert_eq!(me(&new_client, server.url("/api/v1/auth/me")).await, 200);
    let (status, body) = refresh(server.url("/api/v1/auth/refresh"), &spare_refresh).await;
    assert_eq!(
        status, 200,
        "a session of before the rotation refreshes: {body}"
    );
    assert!(server.terminate().success());
    drop(server);

    // The previous secret removed: only tokens of the new one exist and work.
    let file = secret_file.clone();
    let app = start_in(data.path().to_path_buf(), None, move |c| {
        c.jwt_secret = None;
        c.jwt_secret_file = Some(file);
    })
    .await;
    assert_eq!(me(&old_client, app.url("/api/v1/auth/me")).await, 401);
    for token in [&new_access, &fresh_access] {
        assert_eq!(
            me(&bearer_client(token), app.url("/api/v1/auth/me")).await,
            200,
            "issued during the grace period, signed with the new secret"
        );
    }
    app.stop().await;

    // The audit chain is keyed with its own file, not the JWT secret: it still verifies.
    let (ok, stdout, stderr) = run_cli(
        &["audit", "verify", "--data-dir", data_s],
        &[
            ("ESPWATCH_JWT_SECRET", ""),
            ("ESPWATCH_JWT_SECRET_FILE", secret_file.to_str().unwrap()),
        ],
        secrets.path(),
    );
    assert!(ok, "audit verify after the rotation: {stdout}{stderr}");
}

/// `espwatch serve` with more environment: whether it exited within 30 s, and its stderr
/// (a server that starts instead is killed, and counts as not having exited).
fn serve_exits(data_dir: &str, envs: &[(&str, &str)]) -> (bool, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir])
        .env("ESPWATCH_JWT_SECRET", test_jwt_secret())
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn espwatch");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if child.try_wait().expect("wait").is_some() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    (exited, stderr)
}

/// A previous secret without the end of its grace period, or a weak one, stops `serve` before
/// it listens, naming the setting.
#[test]
fn serve_refuses_a_previous_secret_without_its_end_or_a_weak_one() {
    let data = tempfile::tempdir().unwrap();
    let data_s = data.path().to_str().unwrap();
    let previous = espwatch_app::keys::random_token(48).unwrap();
    let (exited, stderr) = serve_exits(data_s, &[("ESPWATCH_JWT_SECRET_PREVIOUS", &previous)]);
    assert!(
        exited && stderr.contains("jwt_previous_valid_until"),
        "{stderr}"
    );
    let (exited, stderr) = serve_exits(
        data_s,
        &[
            (
                "ESPWATCH_JWT_SECRET_PREVIOUS",
                "0123456789abcdef0123456789abcdef",
            ),
            ("ESPWATCH_JWT_PREVIOUS_VALID_UNTIL", "2030-01-01T00:00:00Z"),
        ],
    );
    assert!(exited && stderr.contains("jwt_secret_previous"), "{stderr}");
}
