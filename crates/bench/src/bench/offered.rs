//! What `espwatch-bench load` (HTTP) and `broker-load` (MQTT, AMQP) share: how much load to
//! offer, for how long, over which wells, and what to sample (one `#[command(flatten)]`
//! struct, so the two commands take the same flags the same way).

use std::time::Duration;

use anyhow::bail;
use espwatch_core::duration::parse_duration_micros;

#[derive(clap::Args, Debug)]
pub struct OfferedLoad {
    /// The server's process id: its RSS is sampled from `/proc/PID/status`.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Wells the readings are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub wells: usize,
    /// Offered readings/s (open loop). Without it the sustainable rate is measured first
    /// (`--calibrate`) and `--times` that rate is offered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Multiple of the measured sustainable rate to offer when `--rate` is not given.
    #[arg(long, default_value_t = 10.0)]
    pub times: f64,
    /// How long to measure the sustainable rate (closed loop, the first quarter not counted).
    #[arg(long, default_value = "20s")]
    pub calibrate: String,
    /// How long to offer the load.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// The first readings' age: readings are timestamped one second apart per well from
    /// `now - start_ago`.
    #[arg(long, default_value = "2d")]
    pub start_ago: String,
    /// Well id prefix (default: new wells each run, `LOAD<time>` for `load`, `BRK<time>` for
    /// `broker-load`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// How often to print a progress line.
    #[arg(long, default_value = "10s")]
    pub report_every: String,
}

/// The durations of an [`OfferedLoad`], checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadDurations {
    pub calibrate: Duration,
    pub duration: Duration,
    pub start_ago: Duration,
    pub report_every: Duration,
}

impl OfferedLoad {
    pub fn durations(&self) -> anyhow::Result<LoadDurations> {
        Ok(LoadDurations {
            duration: secs_arg("duration", &self.duration)?,
            calibrate: secs_arg("calibrate", &self.calibrate)?,
            report_every: secs_arg("report-every", &self.report_every)?,
            start_ago: secs_arg("start-ago", &self.start_ago)?,
        })
    }

    /// `--prefix`, else `<default><time>` (new wells each run).
    pub fn prefix_or(&self, default: &str, now_secs: i64) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("{default}{}", now_secs % 1_000_000))
    }
}

/// A positive duration flag (`--name`), such as `20s` or `2d`.
pub fn secs_arg(name: &str, value: &str) -> anyhow::Result<Duration> {
    let micros = parse_duration_micros(value).map_err(|e| anyhow::anyhow!("--{name}: {e}"))?;
    if micros <= 0 {
        bail!("--{name} must be positive");
    }
    Ok(Duration::from_micros(micros as u64))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: OfferedLoad,
    }

    #[test]
    fn durations_are_checked_and_the_prefix_defaults_per_command() {
        let cli = Cli::parse_from(["x", "--duration", "90s", "--start-ago", "1d"]);
        let d = cli.load.durations().unwrap();
        assert_eq!(d.duration, Duration::from_secs(90));
        assert_eq!(d.calibrate, Duration::from_secs(20));
        assert_eq!(d.start_ago, Duration::from_secs(86_400));
        assert_eq!(cli.load.prefix_or("BRK", 1_234_567), "BRK234567");
        let cli = Cli::parse_from(["x", "--report-every", "0s"]);
        assert_eq!(
            cli.load.durations().unwrap_err().to_string(),
            "--report-every must be positive"
        );
        let cli = Cli::parse_from(["x", "--prefix", "P"]);
        assert_eq!(cli.load.prefix_or("LOAD", 5), "P");
    }
}
