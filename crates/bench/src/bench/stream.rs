//! `espwatch-bench stream`: batch ingestion with and without live subscribers (issue 19:
//! fan-out to 200 WebSocket subscribers while ingesting 1 000 readings/s leaves the batch
//! ingest p99 within 10 % of the same run without subscribers).
//!
//! Each phase is a fresh server on a fresh temporary store. An open-loop sender posts a batch
//! of RATE / BATCHES readings (one per well) BATCHES times a second for SECONDS, each batch
//! timed from the client; in the phase with subscribers, SUBSCRIBERS WebSocket clients (one
//! API key, `events=readings`, every well) are connected and draining before the first batch,
//! and each must have received readings by the end. Phases alternate (without, with) RUNS
//! times; the ratio is the median of the runs' p99 with / p99 without. Client, subscribers and
//! server share this machine, so the subscribers' own reading costs CPU the server competes
//! for: the figure is an upper bound of what fan-out costs ingestion. By default the
//! subscribers also share the bench's tokio runtime with the ingesting client and the server,
//! so their reading queues in front of the client's; `--subscribers-apart` runs them on a
//! runtime (one thread) of their own, and `--subscribers-process` in a child process (this
//! binary's hidden `stream-subscribers` command): closest to consoles on other machines, though
//! they still share this machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use espwatch_store::{EmbeddedOptions, EmbeddedStore};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{BENCH_API_KEY, Latencies, TestServer, client, ms, reading_json};

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// WebSocket subscribers in the phase with subscribers.
    #[arg(long, default_value_t = 200)]
    pub subscribers: usize,
    /// Readings ingested per second (one per well per batch).
    #[arg(long, default_value_t = 1_000)]
    pub rate: usize,
    /// Batches per second (each RATE / BATCHES readings).
    #[arg(long, default_value_t = 10)]
    pub batches: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Pairs of phases (without, with subscribers).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run the subscribers on a runtime (one thread) of their own instead of the one the
    /// server and the ingesting client run on.
    #[arg(long, conflicts_with = "subscribers_process")]
    pub subscribers_apart: bool,
    /// Run the subscribers in a child process (this binary, `stream-subscribers`), so that
    /// nothing of theirs shares the server's process: only the machine's cores.
    #[arg(long)]
    pub subscribers_process: bool,
}

/// `espwatch-bench stream-subscribers` (hidden; started by `stream --subscribers-process`):
/// COUNT subscribers to URL with the API key in `ESPWATCH_BENCH_KEY`, each connected and past
/// `subscribed` before the next. Prints `ready` once all are, reads until a line or the end of
/// its standard input, then prints `received <fewest> <total>` and exits.
#[derive(Args, Debug)]
pub struct SubscriberArgs {
    /// The stream's `ws://` URL.
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub count: usize,
}

/// The environment variable that hands the API key to `stream-subscribers` (not its
/// command line, which other users of the machine can read).
const KEY_VAR: &str = "ESPWATCH_BENCH_KEY";

/// One phase's batch latencies and what the subscribers received.
struct Phase {
    latencies: Latencies,
    /// Fewest messages any subscriber received (0 without subscribers).
    least_messages: u64,
    messages: u64,
}

pub async fn run(args: &StreamArgs) -> anyhow::Result<()> {
    if args.rate == 0 || args.batches == 0 || args.seconds == 0 || args.runs == 0 {
        bail!("--rate, --batches, --seconds and --runs must be positive");
    }
    if !args.rate.is_multiple_of(args.batches) {
        bail!("--rate must be a multiple of --batches");
    }
    println!(
        "espwatch-bench stream — {} readings/s in {} batches/s of {}, {} s per phase, {} subscribers ({}), {} runs",
        args.rate,
        args.batches,
        args.rate / args.batches,
        args.seconds,
        args.subscribers,
        if args.subscribers_process {
            "in a process of their own"
        } else if args.subscribers_apart {
            "on a runtime of their own"
        } else {
            "on the server's runtime"
        },
        args.runs
    );
    let mut ratios = Vec::new();
    for run in 1..=args.runs {
        let mut without = phase(args, 0).await?;
        let mut with = phase(args, args.subscribers).await?;
        let (p99_0, p99_1) = (
            without.latencies.percentile(99.0),
            with.latencies.percentile(99.0),
        );
        let ratio = p99_1.as_secs_f64() / p99_0.as_secs_f64().max(1e-9);
        println!(
            "run {run}: without subscribers p50 {} p99 {} | with {}: p50 {} p99 {} ({} messages, at least {} each) | p99 ratio {ratio:.3}",
            ms(without.latencies.percentile(50.0)),
            ms(p99_0),
            args.subscribers,
            ms(with.latencies.percentile(50.0)),
            ms(p99_1),
            with.messages,
            with.least_messages,
        );
        if args.subscribers > 0 && with.least_messages == 0 {
            bail!("a subscriber received nothing: the fan-out was not exercised");
        }
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "median p99 ratio (with / without subscribers) over {} runs: {median:.3} (goal: <= 1.10)",
        ratios.len()
    );
    Ok(())
}

async fn phase(args: &StreamArgs, subscribers: usize) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let server = TestServer::start_on(dir, Arc::new(store), None).await?;
    let key = BENCH_API_KEY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("the bench server has no API key")?;
    let per_batch = args.rate / args.batches;
    let ws_url = server
        .url("/api/v1/stream?events=readings")
        .replacen("http://", "ws://", 1);

    // Subscribers, connected and past their `subscribed` message before ingestion starts.
    let mut subs = if subscribers == 0 {
        Subscribers::None
    } else if args.subscribers_process {
        Subscribers::Child(Box::new(
            ChildSubscribers::start(&ws_url, &key, subscribers).await?,
        ))
    } else {
        let apart = if args.subscribers_apart {
            Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("bench-subscribers")
                    .enable_all()
                    .build()?,
            )
        } else {
            None
        };
        let spawner = apart
            .as_ref()
            .map(|r| r.handle().clone())
            .unwrap_or_else(tokio::runtime::Handle::current);
        let local = LocalSubscribers::connect(&spawner, &ws_url, &key, subscribers).await?;
        Subscribers::Local(local, apart)
    };

    // Open loop: a batch every 1/BATCHES s whether or not the previous one has returned.
    let http = client()?;
    let url = server.url("/api/v1/telemetry");
    let period = Duration::from_secs_f64(1.0 / args.batches as f64);
    let total = args.seconds as usize * args.batches;
    let interval_micros = 1_000_000 / args.batches as i64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(total);
    for b in 0..total {
        let mut body = String::with_capacity(per_batch * 400);
        body.push('[');
        for w in 0..per_batch {
            if w > 0 {
                body.push(',');
            }
            reading_json(&mut body, w, b as u64, interval_micros);
        }
        body.push(']');
        ticker.tick().await;
        let (http, url) = (http.clone(), url.clone());
        sends.push(tokio::spawn(async move {
            let t = Instant::now();
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            let took = t.elapsed();
            if !status.is_success() {
                bail!("batch refused ({status}): {text}");
            }
            anyhow::Ok(took)
        }));
    }
    let mut latencies = Latencies::default();
    for s in sends {
        latencies.0.push(s.await??);
    }
    // Let the last events reach the subscribers, then stop them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (least_messages, messages) = match &mut subs {
        Subscribers::None => (0, 0),
        Subscribers::Local(local, _) => local.stop().await,
        Subscribers::Child(child) => child.stop().await?,
    };
    if let Subscribers::Local(_, Some(runtime)) = subs {
        runtime.shutdown_background();
    }
    server.stop().await?;
    Ok(Phase {
        latencies,
        least_messages,
        messages,
    })
}

/// Where the phase's subscribers run.
enum Subscribers {
    None,
    /// On the bench's runtime, or on a runtime of their own (`--subscribers-apart`).
    Local(LocalSubscribers, Option<tokio::runtime::Runtime>),
    /// In a child process (`--subscribers-process`).
    Child(Box<ChildSubscribers>),
}

/// Subscriber tasks of this process, counting the text messages each receives.
struct LocalSubscribers {
    received: Arc<Vec<AtomicU64>>,
    stop: tokio::sync::broadcast::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LocalSubscribers {
    /// `count` subscribers on `spawner`, each connected and past `subscribed` before the next.
    async fn connect(
        spawner: &tokio::runtime::Handle,
        ws_url: &str,
        key: &str,
        count: usize,
    ) -> anyhow::Result<LocalSubscribers> {
        let received: Arc<Vec<AtomicU64>> =
            Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut tasks = Vec::new();
        for k in 0..count {
            let mut request = ws_url.into_client_request()?;
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {key}"))?,
            );
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("espwatch.v1"),
            );
            let received = received.clone();
            let mut stop = stop.subscribe();
            let (ready, connected) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
            tasks.push(spawner.spawn(async move {
                let opened = async {
                    // A 16 KiB read buffer (tungstenite's default of 128 KiB is zero-filled
                    // before every read): the subscribers share the server's cores, so their
                    // own cost is kept small, as consoles on other machines would cost nothing.
                    let config =
                        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                            .read_buffer_size(16 * 1024);
                    let (mut socket, _) =
                        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                            .await
                            .with_context(|| format!("subscriber {k} could not connect"))?;
                    let first = socket
                        .next()
                        .await
                        .context("the stream closed before `subscribed`")??;
                    if !first.to_text().unwrap_or("").contains("subscribed") {
                        bail!("unexpected first message: {first:?}");
                    }
                    anyhow::Ok(socket)
                };
                let mut socket = match opened.await {
                    Ok(socket) => {
                        let _ = ready.send(Ok(()));
                        socket
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = stop.recv() => break,
                        message = socket.next() => match message {
                            Some(Ok(m)) if m.is_text() => {
                                received[k].fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
            }));
            connected
                .await
                .context("a subscriber's task ended before connecting")??;
        }
        Ok(LocalSubscribers {
            received,
            stop,
            tasks,
        })
    }

    /// Stops every subscriber: (fewest messages any received, total).
    async fn stop(&mut self) -> (u64, u64) {
        let _ = self.stop.send(());
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let counts: Vec<u64> = self
            .received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().sum(),
        )
    }
}

/// Subscribers in a child process: this binary's `stream-subscribers`.
struct ChildSubscribers {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ChildSubscribers {
    /// Starts the child and waits until all its subscribers are connected.
    async fn start(ws_url: &str, key: &str, count: usize) -> anyhow::Result<ChildSubscribers> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("this benchmark's own path")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["stream-subscribers", "--url", ws_url, "--count"])
            .arg(count.to_string())
            .env(KEY_VAR, key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the subscribers' process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the subscribers' stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match lines.next_line().await? {
            Some(line) if line == "ready" => {}
            other => bail!("the subscribers' process did not get ready: {other:?}"),
        }
        Ok(ChildSubscribers {
            child,
            stdin,
            lines,
        })
    }

    /// Stops the child: (fewest messages any subscriber received, total).
    async fn stop(&mut self) -> anyhow::Result<(u64, u64)> {
        drop(self.stdin.take());
        let line = self
            .lines
            .next_line()
            .await?
            .context("the subscribers' process ended without its counts")?;
        let counts: Vec<u64> = line
            .strip_prefix("received ")
            .context("unexpected line from the subscribers' process")?
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad counts {line:?}"))?;
        let status = self.child.wait().await?;
        if !status.success() || counts.len() != 2 {
            bail!("the subscribers' process failed ({status}): {line}");
        }
        Ok((counts[0], counts[1]))
    }
}

/// `stream-subscribers`: see [`SubscriberArgs`].
pub async fn run_subscribers(args: &SubscriberArgs) -> anyhow::Result<()> {
    let key = std::env::var(KEY_VAR).with_context(|| format!("{KEY_VAR} is not set"))?;
    let mut local = LocalSubscribers::connect(
        &tokio::runtime::Handle::current(),
        &args.url,
        &key,
        args.count,
    )
    .await?;
    println!("ready");
    // Until the parent writes a line or closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    let (least, total) = local.stop().await;
    println!("received {least} {total}");
    Ok(())
}
