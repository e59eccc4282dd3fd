//! linkerd's retry budget for one upstream: retries may add at most a share of the first
//! attempts in a sliding window, plus a small allowance per second, so retries cannot multiply
//! the load of an outage.

use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::policy::BudgetPolicy;
use crate::window::Window;

/// Deposits (first attempts) and withdrawals (retries) over the window.
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    /// First attempts (`a`) and retries (`b`); held for arithmetic only.
    window: Mutex<Window>,
}

impl RetryBudget {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            window: Mutex::new(Window::new(policy.window)),
        }
    }

    /// Counts a first attempt, which earns the budget a fraction of a retry.
    pub fn deposit(&self) {
        self.lock().add(Instant::now(), 1, 0);
    }

    /// Takes one retry out of the budget; false when there is none left.
    pub fn withdraw(&self) -> bool {
        let now = Instant::now();
        let mut window = self.lock();
        let (deposits, retries) = window.totals(now);
        let floor = u64::from(self.policy.min_retries_per_second) * self.policy.window.as_secs();
        let earned = deposits * u64::from(self.policy.retry_percent) / 100;
        if retries < floor + earned {
            window.add(now, 0, 1);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
