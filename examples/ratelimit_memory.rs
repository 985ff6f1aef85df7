//! Measures the rate limiter's memory with 1,000,000 distinct keys, and after they go idle and the
//! periodic cleanup has run. Run: `cargo run --release --example ratelimit_memory`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let toml = r#"
        [upstream]
        url = "http://127.0.0.1:1"
        [auth]
        secret_env = "S"
        [rate_limit]
        per_ip = "1000/s"
        per_ip_burst = 1
    "#;
    let config = authgate::config::Config::parse(toml, "memory.toml", &|_| Some("s".repeat(32)))
        .expect("valid config");
    let limits = authgate::ratelimit::RateLimits::new(&config.rate_limit, &config.routes);
    let baseline = rss_kib();
    for i in 0..1_000_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        // In process (no `[store]`), a decision completes on its first poll.
        let _ = futures_util::FutureExt::now_or_never(limits.check_ip(0, ip));
    }
    let full = rss_kib();
    let keys = limits.tracked_keys();
    std::thread::sleep(Duration::from_millis(50));
    limits.cleanup();
    let after = rss_kib();
    println!(
        "keys: {keys} -> {}; RSS KiB: baseline {baseline}, with 1M keys {full}, after cleanup {after}",
        limits.tracked_keys()
    );
}
