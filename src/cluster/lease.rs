//! A node's view of one shard lease, decided only by the results of its own compare-and-set
//! writes and a monotonic clock, never by reads (ARCHITECTURE.md rule 2).
//!
//! Owns the timing rules: renew at TTL/3 after the last successful renewal, and stop serving at
//! *send time of the last successful renewal + TTL - margin*. The lease store can only expire the
//! key at *receive time of that renewal + TTL*, which is later, so while the node's clock and
//! process run normally it stops before anyone else can acquire the shard. A paused process can
//! overrun that deadline; the store's fence epoch is what stops it from writing then. Pure: the
//! caller passes the time (a `Duration` on the node's monotonic clock).

use std::time::Duration;

/// Lease timing for the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long the lease store keeps a lease that is not renewed (the KV bucket's max age).
    pub ttl: Duration,
    /// How much earlier than the TTL the holder stops serving, for clock rate error and the
    /// time it takes to stop.
    pub margin: Duration,
}

impl LeaseTiming {
    /// Timing for `ttl`, with a margin of a tenth of it (at least 100 ms).
    pub fn new(ttl: Duration) -> LeaseTiming {
        LeaseTiming {
            ttl,
            margin: (ttl / 10).max(Duration::from_millis(100)),
        }
    }

    /// When to renew after a renewal sent at `renewed_at`.
    pub fn renew_at(&self, renewed_at: Duration) -> Duration {
        renewed_at + self.ttl / 3
    }

    /// When to stop serving after a renewal sent at `renewed_at`.
    pub fn serve_until(&self, renewed_at: Duration) -> Duration {
        (renewed_at + self.ttl).saturating_sub(self.margin)
    }
}

/// A lease this node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The fencing epoch: the revision of the acquiring write, larger than any earlier
    /// acquisition of the shard.
    pub epoch: u64,
    /// The revision to renew against (compare-and-set).
    pub revision: u64,
    /// When the last successful write (acquire or renew) was sent.
    pub renewed_at: Duration,
}

/// What the holder should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nothing yet.
    Wait,
    /// Send a renewal (compare-and-set on `revision`).
    Renew { revision: u64 },
    /// The deadline has passed without a successful renewal: stop serving the shard now.
    StopServing,
}

/// Why a renewal failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewFailure {
    /// The revision moved: someone else wrote the lease. It is lost.
    Lost,
    /// The lease store did not answer; try again until the deadline.
    Unreachable,
}

impl HeldLease {
    /// A lease acquired by a write sent at `sent_at` that returned `revision`.
    pub fn acquired(revision: u64, sent_at: Duration) -> HeldLease {
        HeldLease {
            epoch: revision,
            revision,
            renewed_at: sent_at,
        }
    }

    /// True while this node may serve the shard.
    pub fn is_serving(&self, now: Duration, timing: &LeaseTiming) -> bool {
        now < timing.serve_until(self.renewed_at)
    }

    /// What to do at `now`.
    pub fn next_action(&self, now: Duration, timing: &LeaseTiming) -> LeaseAction {
        if !self.is_serving(now, timing) {
            LeaseAction::StopServing
        } else if now >= timing.renew_at(self.renewed_at) {
            LeaseAction::Renew {
                revision: self.revision,
            }
        } else {
            LeaseAction::Wait
        }
    }

    /// The lease after a renewal sent at `sent_at` succeeded with `revision`. A success that
    /// arrives after the deadline does not revive serving on its own: the caller has stopped
    /// and must acquire again (the epoch stays what the store says).
    pub fn renewed(self, revision: u64, sent_at: Duration) -> HeldLease {
        HeldLease {
            epoch: self.epoch,
            revision,
            renewed_at: self.renewed_at.max(sent_at),
        }
    }

    /// The lease after a failed renewal: `None` when it is lost for good.
    pub fn renew_failed(self, failure: RenewFailure) -> Option<HeldLease> {
        match failure {
            RenewFailure::Lost => None,
            RenewFailure::Unreachable => Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn renews_at_a_third_and_stops_before_the_ttl() {
        let timing = LeaseTiming::new(TTL);
        let lease = HeldLease::acquired(7, Duration::from_secs(10));
        assert_eq!(
            lease.next_action(Duration::from_millis(10_500), &timing),
            LeaseAction::Wait
        );
        assert_eq!(
            lease.next_action(Duration::from_secs(11), &timing),
            LeaseAction::Renew { revision: 7 }
        );
        assert!(lease.is_serving(Duration::from_millis(12_600), &timing));
        assert_eq!(
            lease.next_action(Duration::from_millis(12_700), &timing),
            LeaseAction::StopServing
        );
        let renewed = lease.renewed(9, Duration::from_secs(11));
        assert_eq!(renewed.epoch, 7, "renewals keep the fencing epoch");
        assert!(renewed.is_serving(Duration::from_millis(13_600), &timing));
        assert_eq!(lease.renew_failed(RenewFailure::Lost), None);
    }

    proptest! {
        /// Whatever the network delays, the holder never believes it serves after the lease
        /// store could have expired the lease (receive time of the last renewal + TTL), as long
        /// as its clock runs at the same rate.
        #[test]
        fn never_serves_past_the_store_expiry(
            delays in proptest::collection::vec((0u64..2000, 0u64..2000, any::<bool>()), 1..30),
        ) {
            let timing = LeaseTiming::new(TTL);
            let mut now = Duration::ZERO;
            let mut lease = HeldLease::acquired(1, now);
            let mut store_expires_at = now + TTL;
            for (delay, wait, succeeds) in delays {
                let sent_at = now;
                let received_at = sent_at + Duration::from_millis(delay);
                now = received_at + Duration::from_millis(wait);
                if succeeds && received_at < store_expires_at {
                    lease = lease.renewed(lease.revision + 1, sent_at);
                    store_expires_at = received_at + TTL;
                }
                if lease.is_serving(now, &timing) {
                    prop_assert!(now < store_expires_at, "serving at {:?} after the store expiry {:?}", now, store_expires_at);
                }
            }
        }
    }
}
