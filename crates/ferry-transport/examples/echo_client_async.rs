//! Async echo client: the tokio twin of `echo_client` (same arguments, same output), measuring
//! round trips of `AsyncClient::call` against `echo_server` on a current-thread runtime.
//!
//! `cargo run --release -p ferry-transport --features tokio --example echo_client_async -- [service] [calls] [size]`
//!
//! `FERRY_TASKS=n` (default 1) runs `n` tasks calling concurrently on a multi-thread runtime
//! (then the percentiles are per call, over all tasks).

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod example {
    use std::time::Instant;

    use ferry_transport::tokio::AsyncClient;

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args().skip(1);
        let name = args.next().unwrap_or_else(|| "ferry-echo".into());
        let calls: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
        let size: usize = args.next().map_or(Ok(64), |s| s.parse())?;
        let tasks: usize = std::env::var("FERRY_TASKS").map_or(Ok(1), |s| s.parse())?;
        let runtime = if tasks > 1 {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        };
        runtime.block_on(async move {
            let client = AsyncClient::connect_with(
                &name,
                ferry_transport::ClientConfig::default().with_policy(policy_from_env()?),
            )
            .await?;
            let per_task = calls / tasks.max(1);
            let mut handles = Vec::new();
            for _ in 0..tasks.max(1) {
                let client = client.clone();
                handles.push(tokio::spawn(async move {
                    let msg = vec![0x5a; size];
                    for _ in 0..per_task.min(10_000) {
                        client.call(&msg).await?; // warm-up
                    }
                    let mut samples = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let t = Instant::now();
                        let r = client.call(&msg).await?;
                        samples.push(t.elapsed().as_nanos() as u64);
                        assert_eq!(r.len(), size);
                    }
                    Ok::<_, ferry_transport::Error>(samples)
                }));
            }
            let mut samples = Vec::with_capacity(calls);
            for h in handles {
                samples.extend(h.await??);
            }
            samples.sort_unstable();
            let pct = |p: f64| {
                samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64
                    / 1000.0
            };
            println!(
                "{} round trips of {size} B: p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
                samples.len(),
                pct(0.50),
                pct(0.99),
                pct(0.999),
                *samples.last().unwrap() as f64 / 1000.0
            );
            Ok::<(), Box<dyn std::error::Error>>(())
        })
    }

    /// `FERRY_POLICY=spin|park|adaptive` (default adaptive) picks the wait policy.
    fn policy_from_env() -> Result<ferry_transport::WaitPolicy, Box<dyn std::error::Error>> {
        let name = std::env::var("FERRY_POLICY").unwrap_or_else(|_| "adaptive".into());
        Ok(name.parse()?)
    }
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    example::main()
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn main() {
    eprintln!("ferry-transport's client and server run on Linux, macOS and Windows only");
}
