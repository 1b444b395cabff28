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

    /// Whether `key` may start a request now: its bucket is not in debt (`Err(wait)` until it
    /// is). Takes nothing; [`RateLimiter::charge`] takes the cost once it is known.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut buckets, now);
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 0.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                -bucket.tokens / self.rate.per_second,
            ))
        }
    }

    /// Takes `cost` tokens from `key`, going into debt if needed: a request whose cost is
    /// known only once it is done (readings in a telemetry batch) is served, and the
    /// identity's next requests wait until the debt is repaid.
    pub fn charge(&self, key: &str, cost: f64, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.rate.burst;
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        self.refill(bucket, now);
        bucket.tokens -= cost;
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        bucket.updated = now;
    }

    /// Every minute, forgets buckets that have refilled completely.
    fn sweep(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(*last) < Duration::from_secs(60) {
            return;
        }
        *last = now;
        let full_after = self.rate.burst / self.rate.per_second;
        buckets.retain(|_, b| {
            let refill = (self.rate.burst - b.tokens) / self.rate.per_second;
            now.saturating_duration_since(b.updated).as_secs_f64() < full_after.max(refill)
        });
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
    fn charges_go_into_debt_and_admit_waits_for_repayment() {
        let limiter = RateLimiter::new(Rate {
            per_second: 100.0,
            burst: 200.0,
        });
        let t0 = Instant::now();
        limiter.admit("gw", t0).unwrap();
        limiter.charge("gw", 500.0, t0);
        let wait = limiter.admit("gw", t0).unwrap_err();
        assert!((2.9..=3.1).contains(&wait.as_secs_f64()), "{wait:?}");
        limiter.admit("gw", t0 + Duration::from_secs(3)).unwrap();
        limiter.admit("other", t0).unwrap();
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
