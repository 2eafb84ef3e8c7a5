//! Echo client: measures round trips against `echo_server` and prints percentiles.
//!
//! `cargo run --release -p ferry-transport --example echo_client -- [service] [calls] [size]`

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
mod example {
    use std::time::Instant;

    use ferry_transport::Client;

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args().skip(1);
        let name = args.next().unwrap_or_else(|| "ferry-echo".into());
        let calls: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
        let size: usize = args.next().map_or(Ok(64), |s| s.parse())?;
        let client = Client::connect_with(
            &name,
            ferry_transport::ClientConfig::default().with_policy(policy_from_env()?),
        )?;
        let msg = vec![0x5a; size];
        for _ in 0..calls.min(10_000) {
            client.call(&msg)?; // warm-up
        }
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            let r = client.call(&msg)?;
            samples.push(t.elapsed().as_nanos() as u64);
            assert_eq!(r.len(), size);
        }
        samples.sort_unstable();
        let pct = |p: f64| {
            samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
        };
        println!(
            "{calls} round trips of {size} B: p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  max {:.2} µs",
            pct(0.50),
            pct(0.99),
            pct(0.999),
            *samples.last().unwrap() as f64 / 1000.0
        );
        Ok(())
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
