//! Where a benchmark phase's CPU went: this process (server and load generator), the local
//! PostgreSQL cluster, and the machine's idle time, read from Linux's `/proc`.
//!
//! On a shared two-core machine the server, its clients and PostgreSQL compete for the same
//! cores, so a rate alone cannot say whether the server path is slow or merely starved. CPU
//! time per reading can: PostgreSQL's share is what limits ingestion once the database has
//! cores of its own, as in production.

use std::collections::HashMap;

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, which Linux fixes at 100 on every
/// architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Cumulative CPU seconds at one instant.
#[derive(Clone, Debug)]
pub struct CpuSample {
    /// This process, all threads.
    own: f64,
    /// Per process named `postgres` (backends, WAL writer, checkpointer): its own CPU seconds;
    /// `None` without a readable `/proc`.
    postgres: Option<HashMap<u32, f64>>,
    /// Machine-wide (busy, idle) seconds summed over all cores.
    machine: Option<(f64, f64)>,
}

/// CPU spent between two samples.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    pub own: f64,
    pub postgres: Option<f64>,
    /// Fraction of the machine's core time that was idle.
    pub idle: Option<f64>,
}

impl CpuSample {
    pub fn now(count_postgres: bool) -> CpuSample {
        CpuSample {
            own: own_seconds().unwrap_or(0.0),
            postgres: count_postgres.then(postgres_seconds).flatten(),
            machine: machine_seconds(),
        }
    }

    /// PostgreSQL's share counts the processes alive at `later`: what each used since `self`,
    /// or since it started. Processes that exited in between are left out rather than taken
    /// from the postmaster's collected child time, which lags an exit and made an occasional
    /// phase read as zero; the benchmark keeps its working connections open until sampled.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        CpuUse {
            own: later.own - self.own,
            postgres: self
                .postgres
                .as_ref()
                .zip(later.postgres.as_ref())
                .map(|(before, after)| {
                    after
                        .iter()
                        .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
                        .filter(|d| *d > 0.0)
                        .sum()
                }),
            idle: self
                .machine
                .zip(later.machine)
                .map(|((busy0, idle0), (busy1, idle1))| {
                    let (busy, idle) = (busy1 - busy0, idle1 - idle0);
                    if busy + idle > 0.0 {
                        idle / (busy + idle)
                    } else {
                        0.0
                    }
                }),
        }
    }
}

impl CpuUse {
    /// "CPU per 1000 readings: PostgreSQL 9.1 ms, this process (`this_process`) 4.0 ms;
    /// machine idle 3 %", where `this_process` says what it was doing ("server and clients").
    pub fn describe(&self, readings: usize, this_process: &str) -> String {
        let per_thousand = |s: f64| s * 1e3 * 1000.0 / readings.max(1) as f64;
        let mut out = String::from("CPU per 1000 readings: ");
        if let Some(pg) = self.postgres {
            out.push_str(&format!("PostgreSQL {:.1} ms, ", per_thousand(pg)));
        }
        out.push_str(&format!(
            "this process ({this_process}) {:.1} ms",
            per_thousand(self.own)
        ));
        if let Some(idle) = self.idle {
            out.push_str(&format!("; machine idle {:.0} %", idle * 100.0));
        }
        out
    }
}

/// Fields of a `/proc/<pid>/stat` line after the command name, which is parenthesised and may
/// itself hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    Some((comm, stat.get(close + 1..)?.split_whitespace().collect()))
}

/// utime + stime in seconds. After the command name the fields are numbered from 3 (state):
/// utime is field 14, so index 11 here.
fn cpu_of(fields: &[&str]) -> Option<f64> {
    let mut ticks = 0u64;
    for f in fields.get(11..13)? {
        ticks += f.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds (all threads) of process `pid` so far.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat_fields(&stat)?;
    cpu_of(&fields)
}

fn own_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = stat_fields(&stat)?;
    cpu_of(&fields)
}

fn postgres_seconds() -> Option<HashMap<u32, f64>> {
    let mut found = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, fields)) = stat_fields(&stat) else {
            continue;
        };
        if comm == "postgres"
            && let Some(seconds) = cpu_of(&fields)
        {
            found.insert(pid, seconds);
        }
    }
    (!found.is_empty()).then_some(found)
}

/// Machine-wide busy and idle (idle + iowait) seconds from the `cpu` line of `/proc/stat`.
fn machine_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - idle;
    Some((
        busy as f64 / TICKS_PER_SECOND,
        idle as f64 / TICKS_PER_SECOND,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let line = "42 (tokio (rt) w) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 9 0 1";
        let (comm, fields) = stat_fields(line).unwrap();
        assert_eq!(comm, "tokio (rt) w");
        assert_eq!(cpu_of(&fields), Some(3.0));
    }

    #[test]
    fn this_process_uses_cpu() {
        let before = CpuSample::now(false);
        let mut x = 0u64;
        let started = Instant::now();
        // Until the process has had 0.1 s of CPU: on a busy machine (other builds sharing the
        // cores) 150 ms of wall time gave it as little as 0.02 s. At most 10 s.
        loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            if before.until(&CpuSample::now(false)).own > 0.1 || started.elapsed().as_secs() >= 10 {
                break;
            }
        }
        std::hint::black_box(x);
        let used = before.until(&CpuSample::now(false));
        if cfg!(target_os = "linux") {
            assert!(used.own > 0.05, "{used:?}");
            assert!(used.idle.is_some_and(|i| (0.0..=1.0).contains(&i)));
        }
    }
}
