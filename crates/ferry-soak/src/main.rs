//! The processes of `cargo xtask soak`: one binary, one role per process.
//!
//! ```text
//! ferry-soak server  [inject=corrupt|dup|drop|droppush|leak]   the soak server
//! ferry-soak client  id=N seed=S                          an honest client (seeded workload)
//! ferry-soak hostile mode=M seed=S                        a hostile client (see hostile.rs)
//! ferry-soak churn   ms=T seed=S                          connect/disconnect at a high rate
//! ferry-soak probe                                        one connection attempt, one call
//! ferry-soak otheruid                                     a connection attempt from uid 65534
//! ```
//!
//! The service is `soak` in `$FERRY_RUNTIME_DIR`. Every process reports on stdout in lines of
//! `kind key=value ...` (a `msg=` field, when present, runs to the end of the line): periodic
//! `prog` lines, `err` and `violation` lines as they happen, and one `final` line. Commands
//! arrive on stdin, one per line (`quit`, and for the server `fdfill`, `fdfree`, `fsize on|off`);
//! end of stdin means `quit`, so nothing outlives a killed orchestrator.

#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod hostile;
#[cfg(target_os = "linux")]
mod proto;
#[cfg(target_os = "linux")]
mod server;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("ferry-soak: Linux only (it reads /proc and signals its processes)");
}

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((role, rest)) = args.split_first() else {
        eprintln!("usage: ferry-soak server|client|hostile|churn|probe|otheruid [key=value ...]");
        std::process::exit(2);
    };
    let opts = Opts::parse(rest);
    let code = match role.as_str() {
        "server" => server::main(&opts),
        "client" => client::main(&opts),
        "hostile" => hostile::hostile(&opts),
        "churn" => hostile::churn(&opts),
        "probe" => hostile::probe(&opts),
        "otheruid" => hostile::other_uid(&opts),
        other => {
            eprintln!("ferry-soak: unknown role {other}");
            2
        }
    };
    std::process::exit(code);
}

/// `key=value` arguments.
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
pub struct Opts(Vec<(String, String)>);

#[cfg(target_os = "linux")]
impl Opts {
    fn parse(args: &[String]) -> Opts {
        Opts(
            args.iter()
                .filter_map(|a| a.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// The service every soak process uses.
#[cfg(target_os = "linux")]
pub const SERVICE: &str = "soak";

/// Prints one report line (stdout is line-buffered; one `println!` is one write of one line).
#[cfg(target_os = "linux")]
#[macro_export]
macro_rules! report {
    ($($t:tt)*) => {{
        println!($($t)*);
    }};
}

/// One word for an error, for `err kind=...` lines.
#[cfg(target_os = "linux")]
pub fn error_kind(e: &ferry_transport::Error) -> &'static str {
    use ferry_transport::Error as E;
    match e {
        E::Closed(_) => "closed",
        E::Timeout(_) => "timeout",
        E::NotRunning { .. } => "not_running",
        E::Refused { .. } => "refused",
        E::Remote { .. } => "remote",
        E::Cancelled => "cancelled",
        E::Protocol(_) => "protocol",
        E::BadSharedMemory(_) => "bad_shm",
        E::SharedMemory { .. } => "shm",
        E::TooLarge { .. } => "too_large",
        E::TooManyInFlight(_) => "too_many_in_flight",
        E::PeerNotAllowed { .. } => "peer_not_allowed",
        E::UnsafeDirectory { .. } => "unsafe_dir",
        E::Io { .. } => "io",
        _ => "other",
    }
}

/// Watches stdin for `quit` (or its end) and other commands, handing the others to `on_cmd`.
#[cfg(target_os = "linux")]
pub fn watch_stdin(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    on_cmd: impl Fn(&str) + Send + 'static,
) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let cmd = line.trim();
                    if cmd == "quit" {
                        break;
                    }
                    on_cmd(cmd);
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
    });
}

/// Milliseconds since the Unix epoch (lines carry it so the orchestrator can place events).
#[cfg(target_os = "linux")]
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
