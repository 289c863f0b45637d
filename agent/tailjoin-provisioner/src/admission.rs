//! Mint admission control: at most a few key requests mint at the same time; the others wait
//! their turn, in arrival order, for a bounded time.
//!
//! Found by the boot-storm benchmark: 200 machines asking at once made 200 concurrent mint calls,
//! headscale answered each more slowly, mints ran past the provisioner's mint timeout (502) or
//! past the machines' own request timeout (keys minted for nobody), the machines asked again, and
//! the fleet never settled (9.5 mint calls per machine, 132 of 200 stranded). Queued here, the
//! same storm makes one mint call per machine.
//!
//! A request that waits is an `async` future parked on a fair semaphore: when its client gives up
//! (closes the connection), hyper drops it and it leaves the queue without minting anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Mint calls in flight at most.
    pub concurrent_mints: u32,
    /// How long a key request waits for its turn before it is answered 503 (with Retry-After).
    pub queue_wait: Duration,
}

/// The mint queue was full for longer than `queue_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Requests still waiting when this one gave up (for the log).
    pub waiting: usize,
    /// What to put in Retry-After.
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct MintAdmission {
    settings: AdmissionSettings,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Counts a request as waiting for as long as it is.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A turn to mint; the next waiting request gets it when this is dropped.
#[derive(Debug)]
pub struct MintTurn {
    _permit: OwnedSemaphorePermit,
    /// How long the request waited for it.
    pub waited: Duration,
    /// Requests that were waiting when this one was let in (itself excluded).
    pub behind: usize,
}

impl MintAdmission {
    pub fn new(settings: AdmissionSettings) -> Self {
        MintAdmission {
            slots: Arc::new(Semaphore::new(settings.concurrent_mints.max(1) as usize)),
            settings,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a turn to mint, at most `queue_wait`.
    pub async fn admit(&self) -> Result<MintTurn, Busy> {
        let started = tokio::time::Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.waiting);
        let acquired =
            tokio::time::timeout(self.settings.queue_wait, self.slots.clone().acquire_owned())
                .await;
        let others = self.waiting.load(Ordering::Relaxed).saturating_sub(1);
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(MintTurn {
                _permit: permit,
                waited: started.elapsed(),
                behind: others,
            }),
            // The semaphore is never closed; treat it like a full queue all the same.
            Ok(Err(_)) | Err(_) => Err(Busy {
                waiting: others,
                retry_after: retry_after(self.settings, others),
            }),
        }
    }
}

/// Retry-After for a request turned away: roughly the time the queue ahead needs at one second
/// per mint per slot, at least 1 s and at most 60 s. Pure.
pub fn retry_after(settings: AdmissionSettings, waiting: usize) -> Duration {
    let per_slot = waiting as u64 / u64::from(settings.concurrent_mints.max(1));
    Duration::from_secs(per_slot.clamp(1, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(concurrent_mints: u32, wait_ms: u64) -> AdmissionSettings {
        AdmissionSettings {
            concurrent_mints,
            queue_wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_configured_number_mint_at_once_and_the_rest_wait_in_order() {
        let adm = Arc::new(MintAdmission::new(settings(2, 10_000)));
        let first = adm.admit().await.expect("a free slot");
        let second = adm.admit().await.expect("a free slot");
        assert_eq!(first.waited, Duration::ZERO);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (adm, order) = (adm.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let turn = adm.admit().await.expect("a turn within the wait");
                order.lock().expect("lock").push(i);
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(turn);
            }));
            // Let each one queue before the next arrives.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            order.lock().expect("lock").is_empty(),
            "nobody gets in while both slots are held"
        );
        drop(first);
        drop(second);
        for w in waiters {
            w.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("lock"), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_is_turned_away_with_a_retry_after() {
        let adm = MintAdmission::new(settings(1, 500));
        let _held = adm.admit().await.expect("a free slot");
        let busy = adm.admit().await.expect_err("no slot within 500 ms");
        assert_eq!(busy.waiting, 0);
        assert_eq!(busy.retry_after, Duration::from_secs(1));
        // Turned away, it no longer counts as waiting.
        assert_eq!(adm.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_that_is_dropped_leaves_the_queue() {
        let adm = Arc::new(MintAdmission::new(settings(1, 60_000)));
        let held = adm.admit().await.expect("a free slot");
        let gone = {
            let adm = adm.clone();
            tokio::spawn(async move { adm.admit().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(adm.waiting.load(Ordering::Relaxed), 1);
        gone.abort();
        let _ = gone.await;
        assert_eq!(adm.waiting.load(Ordering::Relaxed), 0);
        drop(held);
        let next = adm.admit().await.expect("the slot is free again");
        assert_eq!(next.behind, 0);
    }

    #[test]
    fn retry_after_grows_with_the_queue_and_is_bounded() {
        let s = settings(4, 1000);
        assert_eq!(retry_after(s, 0), Duration::from_secs(1));
        assert_eq!(retry_after(s, 40), Duration::from_secs(10));
        assert_eq!(retry_after(s, 100_000), Duration::from_secs(60));
    }
}
