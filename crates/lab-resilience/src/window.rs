//! Counts over a sliding window of time, in ten buckets: what the breaker's failure ratio and the
//! retry budget's deposits are computed from.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Ten buckets: the window slides in tenths, as Polly's and Hystrix's rolling windows do, so old
/// calls leave it gradually rather than all at once.
const BUCKETS: u32 = 10;

/// Two counters (`a`, `b`) per bucket; what they mean is the owner's.
#[derive(Debug)]
pub(crate) struct Window {
    /// The whole window's span.
    span: Duration,
    /// One bucket's span.
    bucket: Duration,
    /// `(bucket start, a, b)`, oldest first.
    buckets: VecDeque<(Instant, u64, u64)>,
}

impl Window {
    pub(crate) fn new(span: Duration) -> Self {
        Self {
            span,
            bucket: (span / BUCKETS).max(Duration::from_millis(1)),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    pub(crate) fn add(&mut self, now: Instant, a: u64, b: u64) {
        self.prune(now);
        match self.buckets.back_mut() {
            Some((start, ca, cb)) if now < *start + self.bucket => {
                *ca += a;
                *cb += b;
            }
            _ => self.buckets.push_back((now, a, b)),
        }
    }

    /// The sums of `a` and `b` over the window ending at `now`.
    pub(crate) fn totals(&mut self, now: Instant) -> (u64, u64) {
        self.prune(now);
        self.buckets
            .iter()
            .fold((0, 0), |(a, b), (_, ca, cb)| (a + ca, b + cb))
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
    }

    fn prune(&mut self, now: Instant) {
        while let Some((start, _, _)) = self.buckets.front() {
            if *start + self.span <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }
}
