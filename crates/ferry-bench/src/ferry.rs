//! Ferry's side of the benchmark: the echo server and the measuring clients.

use std::io::BufRead as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_transport::{
    Client, ClientConfig, Connection, Handler, Request, Server, ServerConfig, WaitPolicy,
};

use crate::measure::{self, AllocWindow, Outcome, Scenario};
use crate::opts::Opts;

fn policy(name: &str) -> Result<WaitPolicy, String> {
    name.parse().map_err(|e| format!("{e}"))
}

struct Echo {
    notifications: AtomicU64,
}

impl Handler for Echo {
    fn on_request(&self, request: Request<'_>) {
        let payload = request.payload();
        let _ = request.respond(payload);
    }
    fn on_notification(&self, _connection: &Connection, _payload: &[u8]) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }
}

/// `serve ferry --name N --dir D [--policy P]`.
pub fn serve(opts: &Opts) -> Result<(), String> {
    let name = opts.str("name")?;
    let config = ServerConfig::default()
        .with_policy(policy(opts.str_or("policy", "adaptive"))?)
        .with_runtime_dir(opts.path("dir")?);
    // Taken before `bind`, so a reconnect time measured from it includes the bind itself.
    let t = measure::monotonic_ns();
    let echo = Echo {
        notifications: AtomicU64::new(0),
    };
    let server = Server::bind(name, config, echo).map_err(|e| format!("bind: {e}"))?;
    println!("ready t_ns={t}");
    measure::serve_stdin(|| {
        let s = server.stats();
        format!(
            "conns={} accepted={} requests={} notifications={}",
            s.connections_open, s.connections_accepted, s.requests, s.notifications,
        )
    })
}

fn connect(opts: &Opts, policy_name: &str) -> Result<Client, String> {
    let name = opts.str("name")?;
    let config = ClientConfig::default()
        .with_policy(policy(policy_name)?)
        .with_runtime_dir(opts.path("dir")?);
    Client::connect_with(name, config).map_err(|e| format!("connect: {e}"))
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn round_trip(client: &Client, payload: &[u8]) -> Result<(), String> {
    let response = client.call(payload).map_err(|e| format!("call: {e}"))?;
    if *response != *payload {
        return Err(format!(
            "the echo of a {}-byte request came back as {} different bytes",
            payload.len(),
            response.len()
        ));
    }
    Ok(())
}

/// `client ferry|ferry-park|ferry-spin <scenario>`.
pub fn client(
    transport: &str,
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, Client), String> {
    let policy_name = match transport {
        "ferry-park" => "park",
        "ferry-spin" => "spin",
        _ => "adaptive",
    };
    let client = connect(opts, policy_name)?;
    let payload = pattern(scenario.size());
    let mut hist = measure::histogram();
    match *scenario {
        Scenario::Rtt {
            samples, warmup, ..
        } => {
            for _ in 0..warmup {
                round_trip(&client, &payload)?;
            }
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let mut t0 = start;
            for _ in 0..samples {
                round_trip(&client, &payload)?;
                let t1 = Instant::now();
                measure::record(&mut hist, t1 - t0);
                t0 = t1;
            }
            Ok((
                Outcome {
                    hist,
                    msgs: samples,
                    bytes: samples * payload.len() as u64,
                    elapsed: start.elapsed(),
                    allocs: allocs.end(),
                },
                client,
            ))
        }
        Scenario::OneWay { duration, .. } => {
            round_trip(&client, &payload)?;
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let mut msgs = 0u64;
            while start.elapsed() < duration {
                for _ in 0..64 {
                    client
                        .notify(&payload)
                        .map_err(|e| format!("notify: {e}"))?;
                }
                msgs += 64;
            }
            // The server handles a connection's messages in order: this answer comes after
            // every notification above was taken out of the ring and handed to the handler.
            round_trip(&client, &payload)?;
            Ok((
                Outcome {
                    hist,
                    msgs,
                    bytes: msgs * payload.len() as u64,
                    elapsed: start.elapsed(),
                    allocs: allocs.end(),
                },
                client,
            ))
        }
        Scenario::Load { .. } => Err("the load test runs through `ferry::load`".into()),
        Scenario::Pipelined {
            duration, window, ..
        } => {
            // One thread keeps `window` calls in flight on one connection (`start_call`), the
            // same window the socket peers keep.
            round_trip(&client, &payload)?;
            let mut in_flight = std::collections::VecDeque::with_capacity(window as usize);
            measure::pause(opts, "warm")?;
            let allocs = AllocWindow::start();
            let start = Instant::now();
            let (mut done, mut stopping) = (0u64, false);
            loop {
                while !stopping && (in_flight.len() as u64) < window {
                    in_flight.push_back(
                        client
                            .start_call(&payload)
                            .map_err(|e| format!("start_call: {e}"))?,
                    );
                }
                let Some(call) = in_flight.pop_front() else {
                    break;
                };
                let response = call.wait().map_err(|e| format!("call: {e}"))?;
                if *response != *payload {
                    return Err("a pipelined answer differs from its request".into());
                }
                drop(response);
                done += 1;
                stopping = stopping || (done % 64 == 0 && start.elapsed() >= duration);
            }
            let elapsed = start.elapsed();
            let allocs = allocs.end();
            Ok((
                Outcome {
                    hist,
                    msgs: done,
                    bytes: done * payload.len() as u64,
                    elapsed,
                    allocs,
                },
                client,
            ))
        }
    }
}

/// `client ferry|ferry-async load-<callers>`. `ferry`: a connection and a thread per caller,
/// blocking calls (the default wait policy). `ferry-async`: one [`AsyncClient`] shared by a
/// tokio task per caller, on a multi-threaded runtime with a worker per CPU.
///
/// [`AsyncClient`]: ferry_transport::tokio::AsyncClient
pub fn load(
    transport: &str,
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, Box<dyn std::any::Any>), String> {
    let Scenario::Load { size, conns, calls } = *scenario else {
        return Err("not a load scenario".into());
    };
    let payload = pattern(size);
    if transport == "ferry" {
        let mut clients = (0..conns)
            .map(|_| connect(opts, "adaptive"))
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = measure::load(opts, &mut clients, calls, size as u64, |c| {
            round_trip(c, &payload)
        })?;
        return Ok((outcome, Box::new(clients)));
    }
    if transport != "ferry-async" {
        return Err(format!("the load test has no Ferry client `{transport}`"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let config = ClientConfig::default().with_runtime_dir(opts.path("dir")?);
    let name = opts.str("name")?.to_owned();
    let client = runtime
        .block_on(ferry_transport::tokio::AsyncClient::connect_with(
            &name, config,
        ))
        .map_err(|e| format!("connect: {e}"))?;
    let payload = std::sync::Arc::new(payload);
    // One task per caller; each echo checked.
    let run = |n: u64, timed: bool| {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let (client, payload) = (client.clone(), payload.clone());
                runtime.spawn(async move {
                    let mut hist = measure::histogram();
                    for _ in 0..n {
                        let t0 = Instant::now();
                        let response = client
                            .call(&payload)
                            .await
                            .map_err(|e| format!("call: {e}"))?;
                        if *response != **payload {
                            return Err("an async echo differs from its request".to_owned());
                        }
                        drop(response);
                        if timed {
                            measure::record(&mut hist, t0.elapsed());
                        }
                    }
                    Ok::<_, String>(hist)
                })
            })
            .collect();
        runtime.block_on(async {
            let mut hist = measure::histogram();
            for t in tasks {
                let h = t
                    .await
                    .map_err(|e| format!("a caller task failed: {e}"))??;
                hist.add(&h).map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(hist)
        })
    };
    run(10, false)?;
    measure::pause(opts, "warm")?;
    let allocs = AllocWindow::start();
    let start = Instant::now();
    let hist = run(calls, true)?;
    let elapsed = start.elapsed();
    let allocs = allocs.end();
    let msgs = calls * conns as u64;
    Ok((
        Outcome {
            hist,
            msgs,
            bytes: msgs * size as u64,
            elapsed,
            allocs,
        },
        Box::new((client, runtime)),
    ))
}

/// `client ferry-async rtt`: the same round trips through the tokio API (`AsyncClient::call`
/// awaited on a multi-threaded runtime with one worker), default wait policy.
pub fn async_client(
    scenario: &Scenario,
    opts: &Opts,
) -> Result<(Outcome, ferry_transport::tokio::AsyncClient), String> {
    let Scenario::Rtt {
        samples, warmup, ..
    } = *scenario
    else {
        return Err("ferry-async measures round trips (`rtt`) only".into());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let config = ClientConfig::default().with_runtime_dir(opts.path("dir")?);
    let name = opts.str("name")?.to_owned();
    let payload = pattern(scenario.size());
    let client = runtime
        .block_on(ferry_transport::tokio::AsyncClient::connect_with(
            &name, config,
        ))
        .map_err(|e| format!("connect: {e}"))?;
    let call = |client: &ferry_transport::tokio::AsyncClient| {
        runtime.block_on(async {
            let response = client
                .call(&payload)
                .await
                .map_err(|e| format!("call: {e}"))?;
            if *response != *payload {
                return Err("an async echo differs from its request".to_owned());
            }
            Ok(())
        })
    };
    for _ in 0..warmup {
        call(&client)?;
    }
    measure::pause(opts, "warm")?;
    let mut hist = measure::histogram();
    let (start, allocs) = runtime.block_on(async {
        let allocs = AllocWindow::start();
        let start = Instant::now();
        let mut t0 = start;
        for _ in 0..samples {
            let response = client
                .call(&payload)
                .await
                .map_err(|e| format!("call: {e}"))?;
            if *response != *payload {
                return Err("an async echo differs from its request".to_owned());
            }
            drop(response);
            let t1 = Instant::now();
            measure::record(&mut hist, t1 - t0);
            t0 = t1;
        }
        Ok((start, allocs.end()))
    })?;
    let elapsed = start.elapsed();
    // The runtime must outlive the client's use; it is dropped here, the client with the caller.
    drop(runtime);
    Ok((
        Outcome {
            hist,
            msgs: samples,
            bytes: samples * payload.len() as u64,
            elapsed,
            allocs,
        },
        client,
    ))
}

/// `scale --conns N --threads T --duration-ms D`: open `N` connections, report `connected`,
/// wait for `go` on stdin, then let `T` threads call round robin over all of them.
pub fn scale(opts: &Opts) -> Result<(), String> {
    let conns = usize::try_from(opts.num("conns", 100)?).map_err(|e| e.to_string())?;
    let threads = usize::try_from(opts.num("threads", 2)?.max(1)).map_err(|e| e.to_string())?;
    let duration = opts.duration(2000)?;
    let size = usize::try_from(opts.num("size", 64)?).map_err(|e| e.to_string())?;
    let clients = (0..conns)
        .map(|_| connect(opts, opts.str_or("policy", "adaptive")))
        .collect::<Result<Vec<_>, _>>()?;
    println!("connected n={conns}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "go" {
        return Err(format!("expected `go` on stdin, got {line:?}"));
    }
    let payload = pattern(size);
    let stop = AtomicBool::new(false);
    // Which connections completed at least one call.
    let served: Vec<AtomicBool> = (0..conns).map(|_| AtomicBool::new(false)).collect();
    let start = Instant::now();
    let results: Vec<Result<(hdrhistogram::Histogram<u64>, u64), String>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (clients, payload, stop, served) = (&clients, &payload, &stop, &served);
                    s.spawn(move || {
                        let mut hist = measure::histogram();
                        let mut n = 0u64;
                        let mut i = t;
                        let mut t0 = Instant::now();
                        // Run for the duration, and at least once round every connection this
                        // thread owns (so "served" means every connection answered a call).
                        let round = clients.len().div_ceil(threads) as u64;
                        while n < round || !stop.load(Ordering::Relaxed) {
                            let k = i % clients.len();
                            round_trip(&clients[k], payload)?;
                            served[k].store(true, Ordering::Relaxed);
                            let t1 = Instant::now();
                            measure::record(&mut hist, t1 - t0);
                            t0 = t1;
                            n += 1;
                            i += threads;
                        }
                        Ok((hist, n))
                    })
                })
                .collect();
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a caller panicked".into())))
                .collect()
        });
    let elapsed = start.elapsed();
    let mut hist = measure::histogram();
    let mut msgs = 0;
    for r in results {
        let (h, n) = r?;
        hist.add(&h).map_err(|e| e.to_string())?;
        msgs += n;
    }
    let open = clients.iter().filter(|c| c.is_connected()).count();
    let served = served.iter().filter(|s| s.load(Ordering::Relaxed)).count();
    println!(
        "result transport=ferry scenario=scale size={size} msgs={msgs} bytes={} elapsed_ns={} cpu={} open={open} served={served}",
        msgs * size as u64,
        elapsed.as_nanos(),
        measure::current_cpu()
    );
    println!("hist {}", measure::dump(&hist));
    Ok(())
}

/// `reconnect`: call steadily; when the harness kills the server and starts a new one, report
/// the time of the first answer that came over a new connection (and, if a call failed in
/// between, when and how).
pub fn reconnect(opts: &Opts) -> Result<(), String> {
    let client = connect(opts, "adaptive")?;
    let payload = pattern(64);
    round_trip(&client, &payload)?;
    let connects = || client.stats().connects;
    let first = connects();
    println!("connected");
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut lost = false;
    while Instant::now() < give_up {
        match client.call_timeout(&payload, Duration::from_secs(1)) {
            Ok(response) if connects() > first => {
                if *response != *payload {
                    return Err(
                        "the first answer after reconnecting differs from the request".into(),
                    );
                }
                println!("reconnected t_ns={}", measure::monotonic_ns());
                return Ok(());
            }
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => {
                if !lost {
                    lost = true;
                    println!("lost t_ns={} error={e}", measure::monotonic_ns());
                }
            }
        }
    }
    Err("no answer over a new connection within 30 s after the server went away".into())
}
