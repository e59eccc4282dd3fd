//! Waiting on real I/O without sleeping a fixed time: poll until a condition holds or a bounded
//! deadline passes.

use std::future::Future;
use std::time::Duration;

/// Between attempts: short enough that a test finishes soon after its condition holds, long
/// enough not to hammer the system under test.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Calls `attempt` until it yields `Some`, or gives up after `deadline` with `None`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
