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
    let files: Vec<String> = args.collect();
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
