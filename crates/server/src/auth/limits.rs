//! Token-bucket rate limiting keyed by identity or source address. In memory, per server
//! process; buckets idle long enough to be full again are dropped, so memory stays bounded
//! by the number of recently active keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `rate` tokens per second, up to `burst`. A rate of 0 disables the limiter.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
    last_sweep: Mutex<Instant>,
}

#[derive(Copy, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate.per_second > 0.0
    }

    /// Takes one token for `key`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut buckets, now);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Every minute, forgets buckets that have refilled completely.
    fn sweep(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(*last) < Duration::from_secs(60) {
            return;
        }
        *last = now;
        let full_after = self.rate.burst / self.rate.per_second;
        buckets.retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(Rate {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check("a", t0).unwrap();
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        limiter.check("b", t0).unwrap();
        limiter.check("a", t0 + Duration::from_millis(600)).unwrap();
    }

    #[test]
    fn zero_rate_is_off() {
        let limiter = RateLimiter::new(Rate {
            per_second: 0.0,
            burst: 0.0,
        });
        for _ in 0..100 {
            limiter.check("a", Instant::now()).unwrap();
        }
    }
}
