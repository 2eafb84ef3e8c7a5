//! The Linux roles of `ferry-bench` (see the crate docs).

mod alloc;
mod ferry;
#[cfg(feature = "iceoryx2")]
mod iox;
mod measure;
mod sockets;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of every role: `--key value` pairs after the role and its positional arguments.
#[derive(Debug, Default)]
pub struct Opts {
    map: BTreeMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<(Vec<String>, Opts), String> {
        let mut positional = Vec::new();
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if let Some(key) = arg.strip_prefix("--") {
                let value = it
                    .next()
                    .ok_or_else(|| format!("`--{key}` needs a value"))?;
                map.insert(key.to_owned(), value.clone());
            } else {
                positional.push(arg.clone());
            }
        }
        Ok((positional, Opts { map }))
    }

    pub fn str(&self, key: &str) -> Result<&str, String> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing `--{key} <value>`"))
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.map.get(key).map_or(default, String::as_str)
    }

    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.map.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("`--{key}` wants a whole number, got `{raw}`")),
        }
    }

    pub fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.str(key).map(PathBuf::from)
    }

    pub fn duration(&self, default_ms: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.num("duration-ms", default_ms)?))
    }

    /// `--cpu N` pins the calling process to CPU `N` (the harness's `--pin`).
    fn pin(&self) -> Result<(), String> {
        let Some(raw) = self.map.get("cpu") else {
            return Ok(());
        };
        let cpu: usize = raw
            .parse()
            .map_err(|_| format!("`--cpu` wants a CPU number, got `{raw}`"))?;
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| format!("pinning to CPU {cpu} failed: {e} (does the machine have it?)"))
    }
}

const USAGE: &str = "\
ferry-bench serve <ferry|uds|tcp> [--name N --dir D --policy adaptive|park|spin] [--path P] [--cpu N]
ferry-bench client <ferry|ferry-park|ferry-spin|ferry-async|uds|tcp|pipe|node> <rtt|oneway|pipelined|bandwidth>
            --size BYTES [--samples N --warmup N --duration-ms N --window N --threads N] [--cpu N]
            (ferry: --name N --dir D; uds, node: --path P; tcp: --port P)
ferry-bench pipe-echo
ferry-bench scale --name N --dir D --conns N --threads N --duration-ms N
ferry-bench reconnect --name N --dir D
";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Opts::parse(&args).and_then(|(pos, opts)| {
        opts.pin()?;
        let pos: Vec<&str> = pos.iter().map(String::as_str).collect();
        match pos.as_slice() {
            ["serve", "ferry"] => ferry::serve(&opts),
            ["serve", kind @ ("uds" | "tcp")] => sockets::serve(kind, &opts),
            #[cfg(feature = "iceoryx2")]
            ["serve", "iceoryx2"] => iox::serve(&opts),
            ["client", transport, scenario] => client(transport, scenario, &opts),
            ["pipe-echo"] => sockets::pipe_echo(),
            ["scale"] => ferry::scale(&opts),
            ["reconnect"] => ferry::reconnect(&opts),
            _ => Err(format!("unknown role or arguments: {args:?}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferry-bench: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn client(transport: &str, scenario: &str, opts: &Opts) -> Result<(), String> {
    let scenario = measure::Scenario::parse(scenario, opts)?;
    // The connection stays open until the harness has read the server's counters after the
    // measured window (`done`), so they do not include the disconnect.
    let (outcome, _connection): (_, Box<dyn std::any::Any>) = match transport {
        "ferry" | "ferry-park" | "ferry-spin" => {
            let (o, c) = ferry::client(transport, &scenario, opts)?;
            (o, Box::new(c))
        }
        "ferry-async" => {
            let (o, c) = ferry::async_client(&scenario, opts)?;
            (o, Box::new(c))
        }
        "uds" | "tcp" | "pipe" | "node" => {
            let (o, c) = sockets::client(transport, &scenario, opts)?;
            (o, Box::new(c))
        }
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" | "iceoryx2-block" => {
            let (o, c) = iox::client(transport, &scenario, opts)?;
            (o, Box::new(c))
        }
        other => {
            return Err(format!(
                "unknown transport `{other}` (iceoryx2 needs the `iceoryx2` feature)"
            ));
        }
    };
    outcome.print(transport, &scenario);
    measure::pause(opts, "done")
}
