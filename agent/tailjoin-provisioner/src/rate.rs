//! Rate limiting: token buckets, one for all clients and one per client address. Pure: the
//! caller passes the time.

use super::config::RateLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Bucket {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, capacity: f64, per_sec: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * per_sec).min(capacity);
        self.last = now;
    }

    /// Time until one token is available.
    fn wait(&self, per_sec: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / per_sec).max(0.0))
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    global: Bucket,
    clients: HashMap<IpAddr, Bucket>,
}

/// Most distinct clients remembered; beyond it, idle (full) buckets are forgotten.
const MAX_CLIENTS: usize = 4096;

impl RateLimiter {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        RateLimiter {
            limit,
            global: Bucket::full(f64::from(limit.burst), now),
            clients: HashMap::new(),
        }
    }

    fn client_capacity(&self) -> f64 {
        f64::from(
            self.limit
                .burst
                .min(self.limit.per_client_per_minute)
                .max(1),
        )
    }

    /// Takes one request's worth from both buckets, or says how long to wait.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let g_rate = f64::from(self.limit.per_minute) / 60.0;
        let c_rate = f64::from(self.limit.per_client_per_minute) / 60.0;
        let c_cap = self.client_capacity();
        self.global.refill(f64::from(self.limit.burst), g_rate, now);
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(&client) {
            self.clients.retain(|_, b| {
                b.refill(c_cap, c_rate, now);
                b.tokens < c_cap
            });
        }
        let bucket = self
            .clients
            .entry(client)
            .or_insert_with(|| Bucket::full(c_cap, now));
        bucket.refill(c_cap, c_rate, now);
        if bucket.tokens < 1.0 {
            return Err(bucket.wait(c_rate));
        }
        if self.global.tokens < 1.0 {
            return Err(self.global.wait(g_rate));
        }
        bucket.tokens -= 1.0;
        self.global.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_minute: u32, burst: u32, per_client: u32) -> RateLimit {
        RateLimit {
            per_minute,
            burst,
            per_client_per_minute: per_client,
        }
    }

    #[test]
    fn a_client_gets_its_share_then_waits() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limit(600, 100, 3), t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(r.check(a, t0).is_ok());
        }
        let wait = r.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(r.check(b, t0).is_ok(), "another client is not held back");
        assert!(r.check(a, t0 + Duration::from_secs(20)).is_ok(), "refilled");
    }

    #[test]
    fn the_global_bucket_bounds_all_clients_together() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limit(60, 2, 10), t0);
        assert!(r.check("10.0.0.1".parse().unwrap(), t0).is_ok());
        assert!(r.check("10.0.0.2".parse().unwrap(), t0).is_ok());
        let wait = r.check("10.0.0.3".parse().unwrap(), t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            r.check("10.0.0.3".parse().unwrap(), t0 + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn refused_requests_do_not_drain_the_other_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limit(60, 5, 1), t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(r.check(a, t0).is_ok());
        for _ in 0..10 {
            assert!(r.check(a, t0).is_err());
        }
        // The global bucket lost one token only.
        for i in 2..=5 {
            let c: IpAddr = format!("10.0.0.{i}").parse().unwrap();
            assert!(r.check(c, t0).is_ok(), "client {i}");
        }
    }
}
