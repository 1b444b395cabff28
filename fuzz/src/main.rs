//! `espwatch-fuzz TARGET [FILE...]`: runs one fuzz target on each FILE, or on stdin without
//! one (how `afl-fuzz` feeds it). A panic aborts the process, which AFL++ counts as a crash.
//! `espwatch-fuzz --list`: the targets this build has, one a line.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--list") {
        for (name, _) in espwatch_fuzz::TARGETS {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(run) = args.next().as_deref().and_then(espwatch_fuzz::target) else {
        let names: Vec<&str> = espwatch_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "usage: espwatch-fuzz TARGET [FILE...]; targets: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    espwatch_fuzz::prepare(&std::env::args().nth(1).unwrap_or_default());
    // Under afl-fuzz the fork server starts here, after the target's fixed set-up.
    #[cfg(fuzzing)]
    afl::start_fork_server();
    let files: Vec<String> = args.collect();
    // Under afl-fuzz, persistent mode: one process runs many inputs (afl-fuzz rewrites the
    // file behind stdin and rewinds it for each), no fork per input.
    #[cfg(fuzzing)]
    if files.is_empty() {
        let mut data = Vec::new();
        while afl::next_input() {
            data.clear();
            if std::io::stdin().lock().read_to_end(&mut data).is_ok() {
                run(&data);
            }
        }
        return ExitCode::SUCCESS;
    }
    if files.is_empty() {
        let mut data = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut data) {
            eprintln!("reading stdin: {e}");
            return ExitCode::from(2);
        }
        run(&data);
    }
    for file in files {
        match std::fs::read(&file) {
            Ok(data) => run(&data),
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

/// AFL++'s deferred fork server and persistent mode: afl-fuzz finds the signatures in the
/// binary (NUL included) and tells the runtime (linked by `scripts/fuzz.sh`) to wait for
/// `__afl_manual_init` instead of forking from the start of the process, so every execution
/// begins after `prepare`, and to let one process loop over up to `PER_PROCESS` inputs.
#[cfg(fuzzing)]
mod afl {
    #[used]
    static DEFER_SIGNATURE: &[u8] = b"##SIG_AFL_DEFER_FORKSRV##\0";
    #[used]
    static PERSISTENT_SIGNATURE: &[u8] = b"##SIG_AFL_PERSISTENT##\0";
    /// Inputs per process before afl-fuzz forks a fresh one.
    const PER_PROCESS: u32 = 10_000;

    unsafe extern "C" {
        fn __afl_manual_init();
        fn __afl_persistent_loop(max: u32) -> i32;
    }

    /// Whether there is another input (always once when not run by afl-fuzz).
    pub fn next_input() -> bool {
        // SAFETY: the AFL++ runtime's loop counter; it stops the process between inputs
        // until afl-fuzz has written the next one.
        unsafe { __afl_persistent_loop(PER_PROCESS) != 0 }
    }

    pub fn start_fork_server() {
        // SAFETY: the AFL++ runtime's entry point, without arguments; it returns in each
        // forked child (and at once when not run by afl-fuzz).
        unsafe { __afl_manual_init() }
    }
}
