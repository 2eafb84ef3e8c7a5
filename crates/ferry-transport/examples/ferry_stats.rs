//! Prints the metrics of a running Ferry server, read through its control socket (the
//! OpenMetrics text exposition, as `Server::metrics_text` gives it in the server's process).
//!
//! `cargo run -p ferry-transport --example ferry_stats -- <service name> [runtime dir] [--watch SECONDS]`
//!
//! The runtime directory defaults to the one clients use (`FERRY_RUNTIME_DIR`, else
//! `$XDG_RUNTIME_DIR/ferry`, else a per-user directory under the temporary directory). The
//! server answers only users it accepts as clients. With `--watch`, the text is printed again
//! every so many seconds until interrupted.

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn main() -> std::process::ExitCode {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    let mut name = None;
    let mut dir: Option<PathBuf> = None;
    let mut watch: Option<Duration> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--watch" => {
                let secs = args.next().and_then(|s| s.parse::<f64>().ok());
                match secs {
                    Some(s) if s > 0.0 && s.is_finite() => watch = Some(Duration::from_secs_f64(s)),
                    _ => {
                        eprintln!("--watch needs a positive number of seconds");
                        return ExitCode::from(2);
                    }
                }
            }
            "-h" | "--help" => {
                println!("usage: ferry_stats <service name> [runtime dir] [--watch SECONDS]");
                return ExitCode::SUCCESS;
            }
            _ if name.is_none() => name = Some(arg),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!(
                    "unexpected argument {arg:?}; usage: ferry_stats <service name> [runtime dir] [--watch SECONDS]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("usage: ferry_stats <service name> [runtime dir] [--watch SECONDS]");
        return ExitCode::from(2);
    };
    loop {
        match ferry_transport::read_server_metrics(&name, dir.as_deref()) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("ferry_stats: cannot read the metrics of {name:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
        match watch {
            Some(every) => std::thread::sleep(every),
            None => return ExitCode::SUCCESS,
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn main() {
    eprintln!("ferry-transport's client and server run on Linux, macOS and Windows only");
}
