//! The browser harness itself: a test that panics leaves no Chromium running.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::webdriver::{self, Browser};

/// (pid → (parent pid, process group, command name, state)) of every process.
fn processes() -> HashMap<u32, (u32, u32, String, char)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let state = rest[0].chars().next().unwrap_or('?');
        all.insert(
            pid,
            (
                rest[1].parse().unwrap(),
                rest[2].parse().unwrap(),
                name,
                state,
            ),
        );
    }
    all
}

/// `root` and every process below it.
fn tree(root: u32) -> HashSet<u32> {
    let all = processes();
    let mut found: HashSet<u32> = HashSet::from([root]);
    loop {
        let more: Vec<u32> = all
            .iter()
            .filter(|(pid, (parent, ..))| found.contains(parent) && !found.contains(*pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

/// Processes of `pids` still running (zombies waiting to be reaped do not count).
fn running(pids: &HashSet<u32>) -> Vec<(u32, String)> {
    processes()
        .into_iter()
        .filter(|(pid, (.., state))| pids.contains(pid) && *state != 'Z')
        .map(|(pid, (_, _, name, _))| (pid, name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_browser_test_leaves_no_chromium_running() {
    crate::support::init();
    let (chromium, driver) = match webdriver::locate() {
        Ok(found) => found,
        Err(reason) => {
            if std::env::var("ESPWATCH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{reason}, and ESPWATCH_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping browser test: {reason}");
            return;
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A test that fails while its browser is open: the `Browser` is dropped while unwinding.
    let failing = tokio::spawn(async move {
        let b = Browser::start(&chromium, &driver).await;
        b.goto("about:blank").await;
        let group = b.process_group();
        let started = tree(group);
        let all = processes();
        let chromium_in_group: Vec<String> = started
            .iter()
            .filter_map(|pid| all.get(pid))
            .filter(|(_, pgrp, name, _)| *pgrp == group && name.starts_with("chrom"))
            .map(|(_, _, name, _)| name.clone())
            .collect();
        let _ = tx.send((group, started, chromium_in_group));
        panic!("a failing browser test");
    });
    let joined = failing.await;
    assert!(
        joined.is_err_and(|e| e.is_panic()),
        "the test task panicked"
    );
    let (group, started, chromium_in_group) = rx.await.expect("the browser started");
    // Chromium started under chromedriver, in the group chromedriver leads.
    assert!(
        chromium_in_group
            .iter()
            .any(|name| name == "chromium" || name == "chrome"),
        "no Chromium in group {group}: {chromium_in_group:?} of {started:?}"
    );
    // Everything the test started is gone: chromedriver and every Chromium process.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = running(&started);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the test panicked: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
