//! The rate-limit demo's own bucket: a visitor picks its shape (within bounds), then takes one
//! decision or fires a burst and sees each request's fate. It is a real bucket, in Redis like the
//! others, so what the demo shows is what the limiter does.

use lab_http::Problem;

use super::{Bucket, Decision, RateLimiter};

/// The largest demo bucket: enough to see a burst drain it, small enough to read the results.
pub const MAX_CAPACITY: u32 = 50;
/// The fastest demo refill: a burst of 50 in-process calls is still "faster than refill".
pub const MAX_REFILL_PER_S: f64 = 10.0;
/// The slowest demo refill: one token per 100 s, already "never" within a demo.
pub const MIN_REFILL_PER_S: f64 = 0.01;
/// The largest burst: each is a Redis round trip inside one HTTP request.
pub const MAX_BURST: u32 = 50;

/// A demo bucket's shape, checked against the bounds.
#[derive(Debug, Clone, Copy)]
pub struct DemoBucket(Bucket);

impl DemoBucket {
    /// 422 naming the field when `capacity` or `refill_per_s` is out of bounds.
    pub fn parse(capacity: u32, refill_per_s: f64) -> Result<Self, Problem> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(Problem::invalid_field(
                "capacity",
                format!("capacity must be between 1 and {MAX_CAPACITY}, not {capacity}"),
            ));
        }
        if !(MIN_REFILL_PER_S..=MAX_REFILL_PER_S).contains(&refill_per_s) {
            return Err(Problem::invalid_field(
                "refill_per_s",
                format!(
                    "refill_per_s must be between {MIN_REFILL_PER_S} and {MAX_REFILL_PER_S}, not {refill_per_s}"
                ),
            ));
        }
        Ok(Self(Bucket {
            capacity,
            refill_per_s,
        }))
    }

    pub fn bucket(&self) -> Bucket {
        self.0
    }
}

impl RateLimiter {
    fn demo_key(scope: &str) -> String {
        format!("demo:{scope}")
    }

    /// Starts `scope`'s demo bucket afresh (full), whatever shape it had before.
    pub async fn demo_configure(&self, scope: &str) {
        self.buckets.reset(&Self::demo_key(scope)).await;
    }

    /// One decision from `scope`'s demo bucket of shape `bucket`.
    pub async fn demo_take(&self, scope: &str, bucket: DemoBucket) -> Decision {
        let decision = self.buckets.take(&Self::demo_key(scope), bucket.0).await;
        self.publish(scope, None, &decision);
        decision
    }

    /// `n` decisions in a row, as fast as they go; 422 when `n` is out of bounds.
    pub async fn demo_burst(
        &self,
        scope: &str,
        bucket: DemoBucket,
        n: u32,
    ) -> Result<Vec<Decision>, Problem> {
        if !(1..=MAX_BURST).contains(&n) {
            return Err(Problem::invalid_field(
                "burst",
                format!("burst must be between 1 and {MAX_BURST}, not {n}"),
            ));
        }
        let mut decisions = Vec::with_capacity(n as usize);
        for _ in 0..n {
            decisions.push(self.demo_take(scope, bucket).await);
        }
        Ok(decisions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_bucket_out_of_bounds_is_a_422_naming_the_field() {
        for (capacity, refill, field) in [
            (0, 1.0, "capacity"),
            (51, 1.0, "capacity"),
            (5, 0.0, "refill_per_s"),
            (5, 11.0, "refill_per_s"),
            (5, f64::NAN, "refill_per_s"),
        ] {
            let problem = DemoBucket::parse(capacity, refill).err();

            let problem = problem.unwrap_or_else(|| panic!("{capacity}/{refill} was accepted"));
            assert_eq!(problem.status, 422);
            assert_eq!(problem.extensions["field"], field);
        }
        assert!(DemoBucket::parse(50, 10.0).is_ok());
    }
}
