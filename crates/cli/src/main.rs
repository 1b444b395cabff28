//! The `espwatch` binary: one subcommand per job (server, bulk loader, registry import,
//! simulator and demo, diagnostics backtesting, identities and audit, configuration). The
//! benchmarks are a separate binary, `espwatch-bench` (crates/bench).

mod admin;
mod archivecmd;
mod askcmd;
mod diagnose;
mod families;
mod ingest;
mod serve;
mod settings;
mod simulate;
mod storecmd;
mod timeline;
mod vault;
mod webhooks;
mod wells;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "espwatch",
    version,
    about = "Surveillance and diagnostics for electrical submersible pumps (ESPs)"
)]
struct Cli {
    /// Configuration file (TOML). Default: ./espwatch.toml if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: human or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP API (embedded store, or PostgreSQL with --database-url).
    Serve(ServeArgs),
    /// Bulk-load CSV or NDJSON telemetry files, into a local data dir or to a server.
    Ingest(ingest::IngestArgs),
    /// Manage the wells registry.
    #[command(subcommand)]
    Wells(wells::WellsCommand),
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    Simulate(simulate::SimulateArgs),
    /// Start the server with a simulated fleet streaming into it: the first command to run.
    Demo(simulate::DemoArgs),
    Diagnose(diagnose::DiagnoseArgs),
    /// Ask the fleet a question in plain words ("average motor current of ESP-003 yesterday"),
    /// of a server (--url) or straight from a store (--data-dir / --database-url).
    Ask(askcmd::AskArgs),
    Eval(diagnose::EvalArgs),
    /// Apply pending PostgreSQL schema migrations (also done at every start) and report.
    Migrate(MigrateArgs),
    /// Manage users (no default account exists: create the first admin with `users add`).
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Manage API keys for machine clients (SCADA gateways, the simulator).
    #[command(subcommand)]
    Apikeys(admin::ApiKeysCommand),
    /// Check or read the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Create the token-signing secret (which also keys the audit trail).
    #[command(subcommand)]
    Secret(admin::SecretCommand),
    /// Check the embedded store for damaged segments and log batches, or quarantine them.
    #[command(subcommand)]
    Store(storecmd::StoreCommand),
    /// Retention and the Parquet archive: apply the policy now, list, restore.
    #[command(subcommand)]
    Archive(archivecmd::ArchiveCommand),
    /// Alarm webhooks of a running server (--url, an admin --api-key): add, list, remove, test,
    /// deliveries.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

#[derive(Args, Debug)]
struct MigrateArgs {
    /// PostgreSQL URL; default: the configured `database_url`.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://...); selects the PostgreSQL store instead of the embedded one.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    database_url: Option<String>,
}

/// Where a command that works on the store directly finds it (no `--listen`: it serves nothing).
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Directory of the embedded store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://...); selects the PostgreSQL store instead of the embedded one.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    database_url: Option<String>,
}

impl DataArgs {
    pub fn store_args(&self) -> StoreArgs {
        StoreArgs {
            listen: None,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (file < environment < flags) as TOML, secrets redacted.
    Show(ServeArgs),
    /// Print an example espwatch.toml: every setting with its documentation and default (the
    /// repository's espwatch.example.toml is this output).
    Example,
}

impl Cli {
    fn overrides(&self, store: &StoreArgs) -> settings::Overrides {
        settings::Overrides {
            listen: store.listen.clone(),
            data_dir: store.data_dir.clone(),
            database_url: store.database_url.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

impl Command {
    /// Commands whose product is what they print: `espwatch eval ... | head` must end quietly
    /// when the reader goes away, as any Unix filter does, not panic on the broken pipe.
    /// Long-running commands (serve, demo, ingest) keep Rust's default of ignoring SIGPIPE.
    fn prints_a_report(&self) -> bool {
        !matches!(
            self,
            Command::Serve(_) | Command::Demo(_) | Command::Ingest(_) | Command::Migrate(_)
        )
    }
}

/// Rust ignores SIGPIPE so that writes fail with EPIPE; `println!` then panics. For a report
/// command the Unix convention (terminate silently) is the right one.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    // reqwest is built without a bundled crypto provider; choose ring once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if cli.command.prints_a_report() {
        restore_default_sigpipe();
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let mut config = settings::load(cli.config.as_deref(), &cli.overrides(&args.store))?;
            serve::init_logging(config.log_format);
            vault::resolve(&mut config).await?;
            serve::run(config).await
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{}", settings::example()?);
            Ok(())
        }
        Command::Config(ConfigCommand::Show(args)) => {
            let config = settings::load(cli.config.as_deref(), &cli.overrides(&args.store))?;
            print!("{}", settings::render(&config)?);
            Ok(())
        }
        Command::Ingest(args) => {
            let config = settings::load(
                cli.config.as_deref(),
                &cli.overrides(&args.target.store_args()),
            )?;
            serve::init_cli_logging();
            ingest::run(args, config).await
        }
        Command::Webhooks(cmd) => {
            serve::init_cli_logging();
            webhooks::run(cmd).await
        }
        Command::Ask(args) => {
            let config = settings::load(
                cli.config.as_deref(),
                &cli.overrides(&args.target.store_args()),
            )?;
            serve::init_cli_logging();
            askcmd::run(args, config).await
        }
        Command::Wells(cmd) => {
            let config = settings::load(
                cli.config.as_deref(),
                &cli.overrides(&cmd.target().store_args()),
            )?;
            serve::init_cli_logging();
            wells::run(cmd, config).await
        }
        Command::Simulate(args) => {
            serve::init_cli_logging();
            simulate::run(args).await
        }
        Command::Demo(args) => {
            let overrides = settings::Overrides {
                listen: Some(args.listen.clone()),
                data_dir: Some(args.data_dir.clone()),
                log_format: cli.log_format.clone(),
                ..Default::default()
            };
            let config = settings::load(cli.config.as_deref(), &overrides)?;
            serve::init_cli_logging();
            simulate::run_demo(args, config).await
        }
        Command::Diagnose(args) => {
            let args = args.clone();
            tokio::task::spawn_blocking(move || diagnose::run_diagnose(&args)).await?
        }
        Command::Eval(args) => diagnose::run_eval(args),
        Command::Migrate(args) => {
            let overrides = settings::Overrides {
                database_url: args.database_url.clone(),
                log_format: cli.log_format.clone(),
                ..Default::default()
            };
            let config = settings::load(cli.config.as_deref(), &overrides)?;
            serve::init_cli_logging();
            serve::migrate(&config).await
        }
        Command::Secret(cmd) => admin::run_secret(cmd),
        Command::Users(cmd) => {
            let config = settings::load(cli.config.as_deref(), &cli.overrides(&cmd.store_args()))?;
            serve::init_cli_logging();
            admin::run_users(cmd, &config).await
        }
        Command::Apikeys(cmd) => {
            let config = settings::load(cli.config.as_deref(), &cli.overrides(&cmd.store_args()))?;
            serve::init_cli_logging();
            admin::run_apikeys(cmd, &config).await
        }
        Command::Store(cmd) => {
            let store = StoreArgs {
                data_dir: cmd.data_dir(),
                ..StoreArgs::default()
            };
            let config = settings::load(cli.config.as_deref(), &cli.overrides(&store))?;
            serve::init_cli_logging();
            let cmd = cmd.clone();
            let clean = tokio::task::spawn_blocking(move || storecmd::run(cmd, &config)).await??;
            if !clean {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit(cmd) => {
            let config = settings::load(cli.config.as_deref(), &cli.overrides(&cmd.store_args()))?;
            serve::init_cli_logging();
            admin::run_audit(cmd, &config).await
        }
        Command::Archive(cmd) => {
            let config = settings::load(
                cli.config.as_deref(),
                &cli.overrides(&cmd.target().store.store_args()),
            )?;
            serve::init_cli_logging();
            archivecmd::run(cmd, config).await
        }
    }
}

/// Where a client command sends its data: a local data dir or a running server.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Local data directory to write to (the server must not be running on it).
    #[arg(long, value_name = "DIR", conflicts_with = "url")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL database to write to directly (servers may keep running on it).
    #[arg(long, value_name = "URL", conflicts_with_all = ["url", "data_dir"])]
    database_url: Option<String>,
    /// Base URL of a running espwatch server, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// API key for --url (or env ESPWATCH_API_KEY); see `espwatch apikeys create`.
    #[arg(long, env = "ESPWATCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl Target {
    /// An HTTP client for `--url` that sends the API key with every request.
    pub fn http_client(&self, timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the API key contains invalid characters"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .build()?)
    }

    fn store_args(&self) -> StoreArgs {
        StoreArgs {
            listen: None,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        }
    }

    /// The configured store for a command writing locally. A data directory that does not
    /// exist is created only when named with `--data-dir`: a command run in the wrong place
    /// must not leave a fresh `./espwatch-data` behind.
    pub async fn open_local(
        &self,
        config: &espwatch_app::Config,
    ) -> anyhow::Result<espwatch_app::OpenedStore> {
        self.check_local(config)?;
        espwatch_app::open_store(config).await
    }

    /// As [`Target::open_local`], for a bulk load (`espwatch_app::open_store_for_loading`).
    pub async fn open_local_for_loading(
        &self,
        config: &espwatch_app::Config,
    ) -> anyhow::Result<espwatch_app::OpenedStore> {
        self.check_local(config)?;
        espwatch_app::open_store_for_loading(config).await
    }

    fn check_local(&self, config: &espwatch_app::Config) -> anyhow::Result<()> {
        if config.database_url.is_none() && self.data_dir.is_none() && !config.data_dir.exists() {
            anyhow::bail!(
                "no store at {} (the default data directory): say where the data goes with \
                 --data-dir DIR (created if missing; the server must not be running on it), \
                 --database-url URL, or --url http://HOST:PORT to send to a running server",
                config.data_dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
