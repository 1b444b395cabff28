//! Test harness: the real server on port 0 with a fresh temporary store, in-process or as a
//! child process of the real binary, plus typed helpers so tests read as user stories.
//!
//! HTTP tests wrapped in `both_backends!` run twice: on the embedded store and on PostgreSQL
//! (a fresh database per test, cloned from a migrated template; skipped with a printed reason
//! when PostgreSQL is unreachable, unless ESPWATCH_REQUIRE_SERVICES=1).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use espwatch_app::{Config, SecretString};
use espwatch_core::access::Role;
use espwatch_server::AppState;
use espwatch_store::{NewUser, SecurityStore};
use espwatch_store_postgres::testing::TestDatabase;
use serde_json::Value;
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_espwatch");

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

/// The backend of the running test, and (PostgreSQL) its database, kept across restarts.
pub struct BackendContext {
    backend: Backend,
    database: Mutex<Option<Arc<TestDatabase>>>,
}

tokio::task_local! {
    static BACKEND: BackendContext;
}

fn backend() -> Backend {
    BACKEND.try_with(|c| c.backend).unwrap_or(Backend::Embedded)
}

/// Runs a test body with `spawn_app` and `start_in` on the given backend; on PostgreSQL,
/// skips (printing why) when the server is unreachable and services are not required.
pub async fn run_on(backend: Backend, body: impl std::future::Future<Output = ()>) {
    init();
    let database = match backend {
        Backend::Embedded => None,
        Backend::Postgres => match TestDatabase::create().await {
            Some(db) => Some(Arc::new(db)),
            None => return,
        },
    };
    let context = BackendContext {
        backend,
        database: Mutex::new(database),
    };
    BACKEND.scope(context, body).await;
}

/// Each test inside runs once per backend, as `NAME::embedded` and `NAME::postgres`.
macro_rules! both_backends {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn embedded() {
                $crate::support::run_on($crate::support::Backend::Embedded, async move $body).await
            }

            $(#[$attr])*
            async fn postgres() {
                $crate::support::run_on($crate::support::Backend::Postgres, async move $body).await
            }
        }
    };
}
pub(crate) use both_backends;

pub use espwatch_app::OpenedStore;

/// The JWT secret of every server a test starts (in-process or child): random per process.
pub fn test_jwt_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| espwatch_app::keys::random_token(48).expect("randomness"))
}

/// The test's store, opened as `serve` opens it: embedded in `config.data_dir`, or the test's
/// PostgreSQL database.
async fn open_store(config: &mut Config) -> OpenedStore {
    if backend() == Backend::Postgres {
        let db = BACKEND.with(|c| {
            c.database
                .lock()
                .unwrap()
                .clone()
                .expect("run_on created the database")
        });
        config.database_url = Some(db.url.clone());
        config.database_pool_size = 4;
    }
    espwatch_app::open_store(config).await.expect("open store")
}

/// A server running inside the test process.
pub struct TestApp {
    pub address: SocketAddr,
    /// Sends an admin API key with every request (most tests are not about access control).
    pub client: reqwest::Client,
    /// No credentials at all.
    pub anonymous: reqwest::Client,
    pub admin_key: String,
    /// The server's security store, for arranging users and keys directly.
    pub security: Arc<dyn SecurityStore>,
    /// The server's alarm store, for arranging alarms directly.
    pub alarms: Option<Arc<dyn espwatch_store::AlarmStore>>,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Kept last so the directory outlives the server.
    _dir: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    start_in(path, Some(dir), tweak).await
}

/// Starts a server on an existing data dir (for restart tests).
pub async fn start_in(
    data_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    init();
    // Rate limits off unless a test turns them on: tests fire requests quickly.
    let mut config = Config {
        data_dir: data_dir.clone(),
        jwt_secret: Some(SecretString(test_jwt_secret().to_owned())),
        rate_limit_per_identity: 0.0,
        rate_limit_per_source: 0.0,
        telemetry_readings_per_identity: 0.0,
        login_rate_per_minute: 10_000.0,
        // Every test client connects from 127.0.0.1; load tests open many connections.
        max_connections_per_source: 0,
        ..Config::default()
    };
    tweak(&mut config);
    let store = open_store(&mut config).await;
    let security = store.security.clone();
    let alarms = store.alarms.clone();
    let admin_key = create_key(security.as_ref(), "test-admin", Role::Admin, None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let state = AppState::new(store.store, config, store.security)
        .expect("app state")
        .with_optional_alarms(store.alarms);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(espwatch_server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: bearer_client(&admin_key),
        anonymous: reqwest::Client::new(),
        admin_key,
        security,
        alarms,
        data_dir,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The arguments that point an `espwatch` command at this server's store: `--data-dir`,
    /// or `--database-url` of the test's PostgreSQL database.
    pub fn cli_store_args(&self) -> Vec<String> {
        let database = BACKEND
            .try_with(|c| c.database.lock().unwrap().clone())
            .ok()
            .flatten();
        match database {
            Some(db) => vec!["--database-url".into(), db.url.clone()],
            None => vec![
                "--data-dir".into(),
                self.data_dir.to_str().expect("UTF-8 path").into(),
            ],
        }
    }

    /// Graceful stop; returns the temp dir so a test can restart on it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server exited cleanly");
        }
        self._dir.take()
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        status_json(response).await
    }

    pub async fn ingest_json(&self, body: &Value) -> (u16, Value) {
        self.post("/api/v1/telemetry", "application/json", body.to_string())
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        status_json(response).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        status_json(request.send().await.expect("request")).await
    }

    /// Raw points of a well over a wide range, never downsampled.
    pub async fn all_points(&self, well: &str) -> Value {
        let (status, body) = self
            .get(&format!(
                "/api/v1/wells/{well}/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z&max_points=1000000"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A client that sends `Authorization: Bearer <token>` with every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Creates an API key directly in the store; returns the key.
pub async fn create_key(
    security: &dyn SecurityStore,
    name: &str,
    role: Role,
    wells: Option<Vec<String>>,
) -> String {
    let request = espwatch_app::keys::KeyRequest {
        name: name.into(),
        role,
        wells,
        // Admin keys must expire (issue 18 item 11).
        expires: (role == Role::Admin).then(|| "1d".to_owned()),
        created_by: "test".into(),
    };
    let (_, key) = espwatch_app::keys::issue_api_key(security, request)
        .await
        .expect("create key");
    key
}

/// Creates a user directly in the store (hashing with the real Argon2 parameters).
pub async fn create_user(
    security: &dyn SecurityStore,
    name: &str,
    password: &str,
    role: Role,
    wells: Option<Vec<String>>,
) {
    let password = password.to_owned();
    let hash =
        tokio::task::spawn_blocking(move || espwatch_app::password::hash_blocking(&password))
            .await
            .expect("join")
            .expect("hash");
    security
        .create_user(
            NewUser {
                name: name.into(),
                role,
                password_hash: hash,
                wells: espwatch_core::access::WellScope::parse_list(wells).expect("well ids"),
            },
            espwatch_core::Timestamp::from_datetime(chrono::Utc::now()),
        )
        .await
        .expect("create user");
}

impl TestApp {
    /// Signs in; returns the whole token response.
    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.send(
            self.anonymous
                .post(self.url("/api/v1/auth/login"))
                .json(&serde_json::json!({ "username": user, "password": password })),
        )
        .await
    }

    /// Signs in and returns a client carrying the access token.
    pub async fn user_client(&self, user: &str, password: &str) -> (reqwest::Client, Value) {
        let (status, body) = self.login(user, password).await;
        assert_eq!(status, 200, "login of {user}: {body}");
        (
            bearer_client(body["access_token"].as_str().expect("token")),
            body,
        )
    }
}

pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// The real binary as a child process, serving on a free port.
pub struct ChildServer {
    pub child: Child,
    pub address: SocketAddr,
    /// An admin API key made with `espwatch apikeys create` before the start (`start` only).
    pub api_key: Option<String>,
    /// Everything the child printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Everything it printed on stderr (its log), when started with
    /// [`ChildServer::start_logged`]; otherwise stderr is the test's.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// `espwatch serve` on `data` with `config` and `envs`, holding an admin API key made for it.
pub fn serve_with_admin_key(data: &Path, config: &Path, envs: &[(&str, &str)]) -> ChildServer {
    let data_s = data.to_str().unwrap();
    let key = cli_api_key(&["--data-dir", data_s], "admin");
    let mut server = ChildServer::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_s,
            "--config",
            config.to_str().unwrap(),
        ],
        envs,
    );
    server.api_key = Some(key);
    server
}

/// `espwatch apikeys create` on a data dir; returns the key it printed.
pub fn cli_api_key(store_args: &[&str], role: &str) -> String {
    let mut args = vec!["apikeys", "create", "--name", "test", "--role", role];
    if role == "admin" {
        args.extend_from_slice(&["--expires", "1d"]);
    }
    args.extend_from_slice(store_args);
    let (ok, stdout, stderr) = run_cli(&args, &[], Path::new("."));
    assert!(ok, "apikeys create failed: {stderr}");
    stdout.trim().to_owned()
}

impl ChildServer {
    pub fn start(data_dir: &Path) -> ChildServer {
        let dir = data_dir.to_str().expect("utf-8 path");
        let key = cli_api_key(&["--data-dir", dir], "admin");
        let mut server =
            ChildServer::start_with(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir]);
        server.api_key = Some(key);
        server
    }

    /// A client carrying the admin key (`start` only).
    /// The address of the unauthenticated metrics listener, as the server prints it after the
    /// API's (started with `metrics_listen` set); waits up to 10 s for the line.
    pub fn metrics_address(&self) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found = self.stdout.lock().unwrap().iter().find_map(|l| {
                l.strip_prefix("espwatch metrics (no credentials) on http://")
                    .and_then(|rest| rest.strip_suffix("/metrics"))
                    .map(str::to_owned)
            });
            if let Some(address) = found {
                return address;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no metrics_listen line"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn client(&self) -> reqwest::Client {
        bearer_client(self.api_key.as_deref().expect("started with a key"))
    }

    /// Any subcommand that serves (`serve`, `demo`): waits for its "listening on" line.
    pub fn start_with(args: &[&str]) -> ChildServer {
        ChildServer::start_with_env(args, &[])
    }

    /// [`ChildServer::start_with`] with more environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> ChildServer {
        ChildServer::spawn(args, envs, false)
    }

    /// [`ChildServer::start_with_env`], keeping the server's log (stderr) in `stderr`.
    pub fn start_logged(args: &[&str], envs: &[(&str, &str)]) -> ChildServer {
        ChildServer::spawn(args, envs, true)
    }

    fn spawn(args: &[&str], envs: &[(&str, &str)], capture_stderr: bool) -> ChildServer {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("ESPWATCH_JWT_SECRET", test_jwt_secret())
            .env("ESPWATCH_RATE_LIMIT_PER_IDENTITY", "0")
            .env("ESPWATCH_RATE_LIMIT_PER_SOURCE", "0")
            .env("ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY", "0")
            .env("ESPWATCH_MAX_CONNECTIONS_PER_SOURCE", "0")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn espwatch");
        let logged = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = logged.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("espwatch listening on http://") {
                break rest.trim().parse().expect("address");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = printed.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        ChildServer {
            child,
            address,
            api_key: None,
            stdout: printed,
            stderr: logged,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the server's process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit within 10 s of SIGTERM");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with arguments, returning (success, stdout, stderr). The test servers'
/// JWT secret is in its environment (it keys the audit chain), unless `envs` says otherwise.
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("ESPWATCH_JWT_SECRET", test_jwt_secret())
        .envs(envs.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("run espwatch");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A canonical reading as JSON.
pub fn reading(well: &str, ts: &str, current: f64) -> Value {
    serde_json::json!({
        "well_id": well,
        "ts": ts,
        "frequency_hz": 55.0,
        "motor_current_a": current,
        "intake_pressure_psi": 850.5,
    })
}

/// `2026-01-01T00:00:00Z` plus `secs` seconds, RFC 3339.
pub fn ts(secs: i64) -> String {
    espwatch_core::Timestamp::from_secs(1_767_225_600 + secs).to_rfc3339()
}

/// The timestamps stored for each of `wells` (its motor-current readings over the whole test
/// era), as a client reads them back; a well the server does not know is left out.
pub async fn stored_timestamps(
    server: &ChildServer,
    wells: &[String],
) -> std::collections::HashMap<String, std::collections::BTreeSet<String>> {
    let http = server.client();
    let mut stored = std::collections::HashMap::new();
    for well in wells {
        let response = http
            .get(server.url(&format!(
                "/api/v1/wells/{well}/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z&max_points=1000000&fields=motor_current_a"
            )))
            .send()
            .await
            .expect("query");
        if response.status() == 404 {
            continue;
        }
        let body: Value = response.json().await.expect("json");
        let ts = body["ts"]
            .as_array()
            .expect("ts")
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect();
        stored.insert(well.clone(), ts);
    }
    stored
}

/// Whether the services tests need must be there (`ESPWATCH_REQUIRE_SERVICES=1`): a missing
/// one fails the test instead of skipping it.
pub fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A free port for a server a test stops and starts again on the same port (a broker, an
/// object store): below the kernel's ephemeral range, so that while the server is down no
/// port-0 listener or outgoing connection of a concurrent test can take it (one did, and the
/// restarted broker's clients reached another test's broker), and unique within this
/// process.
pub fn restartable_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_100));
    // A different start per process, so that concurrent test binaries rarely meet.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = high - low;
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(span)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// A real S3-compatible server (`moto_server`) a test started. Every request it takes is
/// recorded (moto's recorder), so [`Moto::restart`] brings it back on the same port holding
/// the same objects: a destination that went down and came back.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    recording: tempfile::TempDir,
}

impl Moto {
    /// Kills the server (`kill -9`): connections to its port are refused until a restart.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on its port and replays the recorded requests into it.
    pub fn restart(&mut self) {
        self.stop();
        // A request cut off by the kill may have left half a line: drop it.
        let file = self.recording_file();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        std::fs::write(file, &text[..whole]).expect("trimming the recording");
        self.spawn();
        let replayed = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                &format!(
                    "http://127.0.0.1:{}/moto-api/recorder/replay-recording",
                    self.port
                ),
            ])
            .status()
            .expect("curl");
        assert!(replayed.success(), "replaying moto's recording");
    }

    fn recording_file(&self) -> PathBuf {
        self.recording.path().join("requests.jsonl")
    }

    fn spawn(&mut self) {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", self.recording_file())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `moto_server` (a real S3-compatible server) on a free port with bucket `bucket`; `None`
/// (reason printed) when it is not installed, unless services are required.
pub fn start_moto(bucket: &str) -> Option<Moto> {
    if let Err(e) = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        let msg =
            format!("moto_server not available ({e}); install it: pip install 'moto[server]'");
        assert!(!require_services(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let port = restartable_port();
    let mut moto = Moto {
        child: None,
        port,
        recording: tempfile::tempdir().expect("temp dir"),
    };
    moto.spawn();
    // moto accepts an unsigned bucket creation.
    let created = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            &format!("http://127.0.0.1:{port}/{bucket}"),
        ])
        .status()
        .unwrap();
    assert!(created.success(), "creating the bucket");
    Some(moto)
}

/// 2026-01-01T00:00:00Z, a segment window boundary: the start of the older of the two windows
/// [`store_with_a_damaged_older_segment`] writes.
pub const DAMAGED_WINDOW_START: i64 = 1_767_225_600_000_000;

/// An embedded store in `data` holding three readings of `well` in two sealed windows, the
/// older one's segment then damaged on disk (which the open does not look at, so the store
/// still opens). For the corruption paths: `store check`/`repair`, a failed read.
pub async fn store_with_a_damaged_older_segment(data: &Path, well: &str) {
    use espwatch_core::{Field, Measurements, Reading, Timestamp, WellId};
    use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};
    let well = WellId::parse(well).unwrap();
    let t0 = DAMAGED_WINDOW_START;
    let readings: Vec<Reading> = [0i64, 10, 5 * 3600]
        .iter()
        .map(|s| {
            let mut values = Measurements::empty();
            values.set(Field::FrequencyHz, Some(50.0));
            Reading {
                well_id: well.clone(),
                ts: Timestamp(t0 + s * 1_000_000),
                values,
            }
        })
        .collect();
    let store = EmbeddedStore::open(data, EmbeddedOptions::default()).unwrap();
    store
        .append(
            readings,
            AppendOptions {
                auto_register_wells: true,
            },
        )
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let db = rusqlite::Connection::open(data.join("espwatch.db")).unwrap();
    let n = db
        .execute(
            "UPDATE segments SET data = x'01ff' WHERE window_start = ?1",
            [t0],
        )
        .unwrap();
    assert_eq!(n, 1);
}
