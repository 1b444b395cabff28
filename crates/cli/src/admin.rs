//! `espwatch users ...`, `espwatch apikeys ...`, `espwatch audit ...`: identity administration
//! straight on the store. On the embedded store these work while a server runs on the same
//! data directory (the security database is separate from the telemetry lock); a running
//! server sees the change within `auth_cache_ms`. Every change is written to the audit trail
//! with the actor `cli:<login>`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use espwatch_app::Config;
use espwatch_app::keys::{KeyRequest, issue_api_key};
use espwatch_app::password::hash_blocking;
use espwatch_core::Timestamp;
use espwatch_core::access::{Role, WellScope, check_password, valid_user_name};
use espwatch_store::security::{case_duplicate_sets, plan_case_duplicates};
use espwatch_store::{
    AuditEvent, AuditFilter, AuditPruneScope, DuplicateAction, NewUser, SecurityStore, UserChange,
};

use crate::{DataArgs, StoreArgs};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user. The password comes from ESPWATCH_PASSWORD or standard input, never a flag.
    Add {
        name: String,
        /// admin, operator, analyst, viewer, api_client or monitoring.
        #[arg(long)]
        role: String,
        /// Limit the user to these wells (comma-separated); default: all wells.
        #[arg(long, value_delimiter = ',')]
        wells: Option<Vec<String>>,
        #[command(flatten)]
        store: DataArgs,
    },
    /// List users (never their password hashes).
    List {
        #[command(flatten)]
        store: DataArgs,
    },
    /// Disable a user: its sessions end at once and it cannot sign in.
    Disable {
        name: String,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Enable a disabled user.
    Enable {
        name: String,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Change a user's role (its sessions end).
    SetRole {
        name: String,
        role: String,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Set a user's password (ESPWATCH_PASSWORD or standard input); its sessions end.
    Passwd {
        name: String,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Remove a user and its sessions (its audit records stay).
    Remove {
        name: String,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Repair a store written before user names were unique ignoring case: it refuses to
    /// open while it holds names such as `Admin` and `admin`. Without --rename or --disable,
    /// lists each group and what would be done, changing nothing. One account of each group
    /// keeps its name (--keep NAME, else the oldest enabled one); the others get a free name
    /// (`admin` → `admin-2`) and lose their sessions, and with --disable are disabled too.
    /// Every rename is audited (`user_rename`). Run it with espwatch stopped.
    ResolveDuplicates {
        /// Rename the other accounts of each group; they keep working under the new name.
        #[arg(long, conflicts_with = "disable")]
        rename: bool,
        /// Rename and disable the other accounts of each group.
        #[arg(long)]
        disable: bool,
        /// The account that keeps its name in its group (its exact spelling; repeatable).
        #[arg(long, value_name = "NAME")]
        keep: Vec<String>,
        #[command(flatten)]
        store: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create an API key and print it once (only its hash is stored).
    Create {
        /// What the key is for, e.g. "scada-gateway-north".
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "api_client")]
        role: String,
        /// Limit the key to these wells (comma-separated); default: all wells.
        #[arg(long, value_delimiter = ',')]
        wells: Option<Vec<String>>,
        /// Lifetime, e.g. 90d; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        store: DataArgs,
    },
    /// List keys (ids, names, roles, status; never the keys).
    List {
        #[command(flatten)]
        store: DataArgs,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit trail's hash chain (keyed with the JWT secret) and hold it against the
    /// newest signed anchor; names the first broken record, or the deleted newest ones. Exit
    /// code 1 if broken.
    Verify {
        /// Anchor file written by the server (default: `audit_anchor_file`, else
        /// `<jwt_secret_file>.anchors`).
        #[arg(long)]
        anchors: Option<std::path::PathBuf>,
        /// A syslog file (e.g. /var/log/auth.log, or an export from the log server) holding
        /// the anchors the server sent with `audit_anchor_syslog`; checked as well.
        #[arg(long, value_name = "FILE")]
        syslog_anchors: Vec<std::path::PathBuf>,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Retention: remove the request records of the oldest part of the trail (the longest
    /// prefix of the chain older than the cut), carry its security events forward as
    /// `audit_carried` records (as the server's `audit_retention` does), and append a keyed
    /// `audit_pruned` record naming the removed range and the last removed hash, from which
    /// `audit verify` checks the rest. Needs the audit key.
    Prune {
        /// Remove records older than this (a duration of at least 1d, e.g. "365d").
        #[arg(long, conflicts_with = "before")]
        older_than: Option<String>,
        /// Remove records before this instant (RFC 3339).
        #[arg(long)]
        before: Option<String>,
        /// Remove only request records (the default; kept for scripts written when it was not).
        #[arg(long, conflicts_with = "include_security_events")]
        requests_only: bool,
        /// Remove the security events of the range too (login failures, lockouts, user and
        /// role changes, key changes...): they are deleted, not carried forward.
        #[arg(long)]
        include_security_events: bool,
        #[command(flatten)]
        store: DataArgs,
    },
    /// Print the newest audit records as JSON lines.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this actor (`user:NAME`, `key:ID`, `cli:LOGIN`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this kind (`request`, `login_failure`, ...).
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        store: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Write a new random secret (48 bytes from the OS, base64url) to a file created
    /// owner-only (0600), then point ESPWATCH_JWT_SECRET_FILE at it. Refuses to overwrite.
    Init {
        /// The file to create. Keep it outside the data directory.
        #[arg(long, default_value = "jwt.secret")]
        out: std::path::PathBuf,
        /// Replace an existing file: to rotate without signing everyone out, copy the old
        /// one first and name it in jwt_secret_previous_file (README "Rotating the JWT
        /// secret").
        #[arg(long)]
        force: bool,
    },
}

/// `espwatch secret init`.
pub fn run_secret(cmd: &SecretCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let SecretCommand::Init { out, force } = cmd;
    let secret = espwatch_app::keys::random_token(48)?;
    espwatch_app::config::check_secret(secret.as_bytes())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if *force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; keep it (it signs the sessions and keys the audit trail) or pass --force",
                out.display()
            )
        } else {
            anyhow::anyhow!("creating {}: {e}", out.display())
        }
    })?;
    #[cfg(unix)]
    {
        // An existing file replaced with --force keeps its old mode: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    let shown = std::fs::canonicalize(out).unwrap_or_else(|_| out.clone());
    println!("wrote a new secret to {} (mode 0600)", shown.display());
    println!("export ESPWATCH_JWT_SECRET_FILE={}", shown.display());
    Ok(())
}

impl UsersCommand {
    pub fn store_args(&self) -> StoreArgs {
        match self {
            UsersCommand::Add { store, .. }
            | UsersCommand::List { store }
            | UsersCommand::Disable { store, .. }
            | UsersCommand::Enable { store, .. }
            | UsersCommand::SetRole { store, .. }
            | UsersCommand::Passwd { store, .. }
            | UsersCommand::Remove { store, .. }
            | UsersCommand::ResolveDuplicates { store, .. } => store.store_args(),
        }
    }
}

impl ApiKeysCommand {
    pub fn store_args(&self) -> StoreArgs {
        match self {
            ApiKeysCommand::Create { store, .. }
            | ApiKeysCommand::List { store }
            | ApiKeysCommand::Revoke { store, .. } => store.store_args(),
        }
    }
}

impl AuditCommand {
    pub fn store_args(&self) -> StoreArgs {
        match self {
            AuditCommand::Verify { store, .. }
            | AuditCommand::Prune { store, .. }
            | AuditCommand::List { store, .. } => store.store_args(),
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

fn parse_role(text: &str) -> anyhow::Result<Role> {
    Ok(text.parse::<Role>()?)
}

fn parse_wells(wells: &Option<Vec<String>>) -> anyhow::Result<WellScope> {
    Ok(WellScope::parse_list(wells.clone())?)
}

/// `cli:<login>` of the operating-system user running the command: `$USER`/`$LOGNAME`, or
/// (services, containers, `sudo -i` shells without them) the account of the process's uid in
/// `/etc/passwd`, or `cli:uid:<n>`.
fn cli_actor() -> String {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|l| !l.trim().is_empty())
        .or_else(os_login)
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{login}")
}

#[cfg(unix)]
fn os_login() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's real user.
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

#[cfg(not(unix))]
fn os_login() -> Option<String> {
    std::env::var("USERNAME").ok()
}

async fn audit(store: &dyn SecurityStore, kind: &str, detail: serde_json::Value) {
    let event = AuditEvent {
        ts: now(),
        kind: kind.into(),
        request_id: None,
        method: None,
        route: None,
        status: None,
        actor: Some(cli_actor()),
        role: Some("admin".into()),
        source: Some("local".into()),
        duration_ms: None,
        detail,
    };
    if let Err(e) = store.append_audit(vec![event]).await {
        eprintln!("warning: the change was made but could not be audited: {e}");
    }
}

/// Reads a password from ESPWATCH_PASSWORD, or from standard input (without echo on a
/// terminal, asked twice).
fn read_password(user: &str) -> anyhow::Result<String> {
    let password = match std::env::var("ESPWATCH_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                let first = prompt_hidden(&format!("Password for {user}: "))?;
                let second = prompt_hidden("Again: ")?;
                if first != second {
                    bail!("the two passwords differ");
                }
                first
            } else {
                let mut line = String::new();
                stdin.lock().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        }
    };
    check_password(user, &password).map_err(|p| anyhow::anyhow!("password refused: {p}"))?;
    Ok(password)
}

fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let hidden = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        let _ = stty("echo");
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn run_users(cmd: &UsersCommand, config: &Config) -> anyhow::Result<()> {
    if let UsersCommand::ResolveDuplicates {
        rename,
        disable,
        keep,
        ..
    } = cmd
    {
        let action = match (*rename, *disable) {
            (_, true) => Some(DuplicateAction::Disable),
            (true, false) => Some(DuplicateAction::Rename),
            (false, false) => None,
        };
        return resolve_duplicates(config, action, keep).await;
    }
    let store = espwatch_app::open_security_store(config).await?;
    let store = store.as_ref();
    match cmd {
        UsersCommand::Add {
            name, role, wells, ..
        } => {
            if !valid_user_name(name) {
                bail!("user names are 1–64 characters of letters, digits, . _ - @");
            }
            let role = parse_role(role)?;
            let wells = parse_wells(wells)?;
            if let Some(existing) = store.get_user_any_case(name).await? {
                bail!(
                    "user {:?} already exists (user names are compared ignoring case)",
                    existing.name
                );
            }
            let password = read_password(name)?;
            let user = store
                .create_user(
                    NewUser {
                        name: name.clone(),
                        role,
                        password_hash: hash(password).await?,
                        wells,
                    },
                    now(),
                )
                .await?;
            audit(
                store,
                "user_create",
                serde_json::json!({ "user": user.name, "role": role.name(), "wells": user.wells }),
            )
            .await;
            println!("created user {} ({})", user.name, role);
        }
        UsersCommand::List { .. } => {
            let at = now();
            println!("{:<24} {:<11} {:<9} wells", "name", "role", "state");
            for u in store.list_users().await? {
                let state = if u.disabled {
                    "disabled"
                } else if u.locked_until.is_some_and(|t| t > at) {
                    "locked"
                } else {
                    "active"
                };
                let wells = u.wells.as_list().map_or("all".to_owned(), |w| {
                    w.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(",")
                });
                println!("{:<24} {:<11} {:<9} {wells}", u.name, u.role.name(), state);
            }
        }
        UsersCommand::Disable { name, .. } => {
            change(store, name, UserChange::Disable, "disable").await?;
            println!("disabled {name}; its sessions have ended");
        }
        UsersCommand::Enable { name, .. } => {
            change(store, name, UserChange::Enable, "enable").await?;
            println!("enabled {name}");
        }
        UsersCommand::SetRole { name, role, .. } => {
            let role = parse_role(role)?;
            change(
                store,
                name,
                UserChange::SetRole(role),
                &format!("role={role}"),
            )
            .await?;
            println!("{name} is now {role}; its sessions have ended");
        }
        UsersCommand::Passwd { name, .. } => {
            if store.get_user(name).await?.is_none() {
                bail!("no user {name:?}");
            }
            let password = read_password(name)?;
            let hashed = hash(password).await?;
            change(store, name, UserChange::SetPassword(hashed), "password").await?;
            println!("password of {name} changed; its sessions have ended");
        }
        UsersCommand::Remove { name, .. } => {
            if !store.remove_user(name).await? {
                bail!("no user {name:?}");
            }
            audit(store, "user_remove", serde_json::json!({ "user": name })).await;
            println!("removed {name}");
        }
        UsersCommand::ResolveDuplicates { .. } => unreachable!("handled before the store opens"),
    }
    Ok(())
}

/// `espwatch users resolve-duplicates`: reads the accounts without opening the store (it
/// refuses to open while names differ only in case), prints the groups and the plan, and with
/// an action applies it, then opens the store (which now creates its unique index) to audit
/// each rename.
async fn resolve_duplicates(
    config: &Config,
    action: Option<DuplicateAction>,
    keep: &[String],
) -> anyhow::Result<()> {
    let options = espwatch_app::stores::postgres_options(config);
    let accounts = match &config.database_url {
        Some(url) => espwatch_store_postgres::read_user_accounts(url, &options).await?,
        None => {
            let dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || espwatch_store::embedded::read_user_accounts(&dir))
                .await??
        }
    };
    let taken: Vec<String> = accounts.iter().map(|a| a.name.clone()).collect();
    let groups = case_duplicate_sets(accounts);
    if groups.is_empty() {
        println!("no user names differ only in case: nothing to do");
        return Ok(());
    }
    let plan = plan_case_duplicates(
        &groups,
        keep,
        action.unwrap_or(DuplicateAction::Rename),
        &taken,
    )
    .map_err(anyhow::Error::msg)?;
    println!(
        "{} group(s) of user names that differ only in case:",
        groups.len()
    );
    let verb = match action {
        Some(DuplicateAction::Disable) => "renamed and disabled",
        Some(DuplicateAction::Rename) => "renamed",
        None => "to rename",
    };
    for group in &groups {
        for user in group {
            let state = if user.disabled { "disabled" } else { "active" };
            let created = user.created_at.to_rfc3339();
            let fate = plan.iter().find(|r| r.from == user.name).map_or_else(
                || "keeps its name".to_owned(),
                |r| format!("{verb}: {}", r.to),
            );
            println!(
                "  {:<24} {:<11} {:<8} created {created}  {fate}",
                user.name, user.role, state
            );
        }
    }
    let Some(action) = action else {
        println!(
            "nothing changed. Run again with --rename (the others keep working under their new \
             names) or --disable (renamed and disabled); --keep NAME chooses the account that \
             keeps its name. Their sessions end."
        );
        return Ok(());
    };
    match &config.database_url {
        Some(url) => {
            espwatch_store_postgres::rename_user_accounts(url, &options, &plan, now()).await?;
        }
        None => {
            let dir = config.data_dir.clone();
            let renames = plan.clone();
            tokio::task::spawn_blocking(move || {
                espwatch_store::embedded::rename_user_accounts(&dir, &renames, now())
            })
            .await??;
        }
    }
    let store = espwatch_app::open_security_store(config)
        .await
        .context("the accounts were renamed, but the store still does not open")?;
    for rename in &plan {
        audit(
            store.as_ref(),
            "user_rename",
            serde_json::json!({
                "user": rename.to,
                "from": rename.from,
                "to": rename.to,
                "disabled": action == DuplicateAction::Disable,
                "kept": rename.kept,
                "reason": "user names differing only in case",
            }),
        )
        .await;
    }
    println!(
        "{} account(s) {verb}; their sessions have ended. User names are now unique ignoring \
         case and the store opens.",
        plan.len()
    );
    Ok(())
}

async fn change(
    store: &dyn SecurityStore,
    name: &str,
    change: UserChange,
    what: &str,
) -> anyhow::Result<()> {
    if store.update_user(name, change, now()).await?.is_none() {
        bail!("no user {name:?}");
    }
    audit(
        store,
        "user_change",
        serde_json::json!({ "user": name, "changes": [what] }),
    )
    .await;
    Ok(())
}

pub async fn run_apikeys(cmd: &ApiKeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = espwatch_app::open_security_store(config).await?;
    let store = store.as_ref();
    match cmd {
        ApiKeysCommand::Create {
            name,
            role,
            wells,
            expires,
            ..
        } => {
            let (id, key) = create_api_key(
                store,
                name,
                parse_role(role)?,
                wells.clone(),
                expires.as_deref(),
            )
            .await?;
            eprintln!("created API key {id} ({name}, {role}); it is shown once, store it now:");
            println!("{key}");
        }
        ApiKeysCommand::List { .. } => {
            let at = now();
            println!(
                "{:<14} {:<28} {:<11} {:<8} expires",
                "id", "name", "role", "status"
            );
            for k in store.list_api_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= at) {
                    "expired"
                } else {
                    "active"
                };
                let expires = k.expires_at.map_or("never".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{:<14} {:<28} {:<11} {:<8} {expires}",
                    k.id,
                    k.name,
                    k.role.name(),
                    status
                );
            }
        }
        ApiKeysCommand::Revoke { id, .. } => {
            if !store.revoke_api_key(id, now()).await? {
                bail!("no active API key {id:?}");
            }
            audit(store, "apikey_revoke", serde_json::json!({ "key": id })).await;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Creates and audits a key; returns `(id, key)`.
pub async fn create_api_key(
    store: &dyn SecurityStore,
    name: &str,
    role: Role,
    wells: Option<Vec<String>>,
    expires: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let (stored, key) = issue_api_key(
        store,
        KeyRequest {
            name: name.to_owned(),
            role,
            wells,
            expires: expires.map(str::to_owned),
            created_by: cli_actor(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (id, name) = (stored.id, stored.name);
    audit(
        store,
        "apikey_create",
        serde_json::json!({ "key": id, "name": name, "role": role.name() }),
    )
    .await;
    Ok((id, key))
}

pub async fn run_audit(cmd: &AuditCommand, config: &Config) -> anyhow::Result<()> {
    let store = espwatch_app::open_security_store(config).await?;
    match cmd {
        AuditCommand::Verify {
            anchors,
            syslog_anchors,
            ..
        } => {
            let report = store.verify_audit().await?;
            if let Some(id) = report.first_broken {
                println!(
                    "audit trail BROKEN at record {id}: {} ({} records verified before it)",
                    report.reason.as_deref().unwrap_or("mismatch"),
                    report.records
                );
                std::process::exit(1);
            }
            let key = config.audit_key();
            let anchor_path = anchors.clone().or_else(|| config.audit_anchor_path());
            let mut anchored = String::from("no anchor file");
            let mut from_syslog = Vec::new();
            for file in syslog_anchors {
                from_syslog.extend(espwatch_app::anchors::read_syslog_anchors(file)?);
            }
            if !syslog_anchors.is_empty() && key.is_none() {
                anyhow::bail!(
                    "--syslog-anchors needs the audit key (the JWT secret and audit key file the server uses)"
                );
            }
            if let (Some(key), false) = (&key, syslog_anchors.is_empty()) {
                let (problems, newest) = espwatch_app::anchors::check_anchors(
                    store.as_ref(),
                    &report,
                    &from_syslog,
                    key,
                )
                .await?;
                if !problems.is_empty() {
                    for problem in &problems {
                        println!("audit trail BROKEN (syslog anchors): {problem}");
                    }
                    std::process::exit(1);
                }
                if let Some(a) = newest {
                    println!(
                        "syslog anchors: consistent with the newest (record {} on {})",
                        a.id, a.ts
                    );
                } else {
                    println!("syslog anchors: none found");
                }
            }
            if let (Some(key), Some(path)) = (&key, &anchor_path) {
                let lines = espwatch_app::anchors::read_anchors(path)?;
                let (problems, newest) =
                    espwatch_app::anchors::check_anchors(store.as_ref(), &report, &lines, key)
                        .await?;
                if !problems.is_empty() {
                    for problem in &problems {
                        println!("audit trail BROKEN: {problem}");
                    }
                    std::process::exit(1);
                }
                anchored = match newest {
                    Some(a) => format!(
                        "consistent with the newest anchor (record {} on {}, {})",
                        a.id,
                        a.ts,
                        path.display()
                    ),
                    None => format!("no anchor yet in {}", path.display()),
                };
            }
            println!(
                "audit trail intact: {} records verified ({} keyed, {} unkeyed from before keying{}); {anchored}",
                report.records,
                report.records - report.unkeyed,
                report.unkeyed,
                if key.is_none() {
                    "; no JWT secret configured, so no key to check keyed records with"
                } else {
                    ""
                }
            );
            Ok(())
        }
        AuditCommand::Prune {
            older_than,
            before,
            include_security_events,
            ..
        } => {
            let cut = match (older_than, before) {
                (Some(age), None) => {
                    let micros = espwatch_core::duration::parse_duration_micros(age)
                        .ok()
                        .filter(|m| *m >= 86_400_000_000)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "--older-than must be a duration of at least 1d (got {age:?})"
                            )
                        })?;
                    Timestamp(now().0 - micros)
                }
                (None, Some(at)) => Timestamp::from_datetime(
                    chrono::DateTime::parse_from_rfc3339(at)
                        .with_context(|| format!("--before {at:?} is not RFC 3339"))?
                        .with_timezone(&chrono::Utc),
                ),
                _ => anyhow::bail!("give --older-than DURATION or --before TIME"),
            };
            let by = AuditEvent {
                ts: now(),
                kind: String::new(),
                request_id: None,
                method: None,
                route: None,
                status: None,
                actor: Some(cli_actor()),
                role: Some("admin".into()),
                source: Some("local".into()),
                duration_ms: None,
                detail: serde_json::Value::Null,
            };
            let scope = if *include_security_events {
                AuditPruneScope::IncludingSecurityEvents
            } else {
                AuditPruneScope::Requests
            };
            match store.prune_audit(cut, by, scope, None).await? {
                Some(p) => println!(
                    "pruned audit records {}..={} ({} records, {} security events carried forward, last hash {}); recorded as audit_pruned record {}",
                    p.first_id, p.last_id, p.count, p.carried, p.last_hash, p.record_id
                ),
                None if scope == AuditPruneScope::Requests => println!(
                    "no audit records to prune before {}: none of them is a request record (security events are kept unless --include-security-events)",
                    cut.to_rfc3339()
                ),
                None => println!("no audit records to prune before {}", cut.to_rfc3339()),
            }
            Ok(())
        }
        AuditCommand::List {
            limit, actor, kind, ..
        } => {
            let records = store
                .list_audit(&AuditFilter {
                    actor: actor.clone(),
                    kind: kind.clone(),
                    limit: *limit,
                    ..AuditFilter::default()
                })
                .await?;
            for r in records {
                // One JSON object per line, the time as RFC 3339 like the HTTP API shows it.
                let mut line = serde_json::to_value(&r)?;
                line["ts"] = r.event.ts.to_rfc3339().into();
                println!("{line}");
            }
            Ok(())
        }
    }
}
