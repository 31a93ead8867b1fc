//! The product statistics' own thread.
//!
//! A purchase changes two things: its customer (record, profile, scores) and
//! the shared product statistics behind recommendations. Only the first is
//! part of the answer to the client. So a shard writer updates its customers,
//! records the purchases of its batch in an [`Observed`] batch, hands the
//! batch to this thread and answers without waiting. The thread applies
//! batches in the order each shard sent them ([`ItemStats::apply`]: one lock
//! per segment per batch) and returns the emptied buffers for reuse.
//!
//! Readers that need the statistics complete (the `products` table, the
//! recommendation refresh, a snapshot) call [`ItemFeed::settle`]: it waits
//! until every batch sent before the call is applied. A snapshot settles
//! while the shard writers are paused at its cut, so the statistics it saves
//! hold exactly the events before the cut.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crossbeam::channel::{Receiver, Sender, bounded};

#[cfg(doc)]
use crate::items::ItemStats;
use crate::items::Observed;

/// Counts of batches sent and applied; what [`ItemFeed::settle`] waits on.
#[derive(Debug, Default)]
pub(crate) struct ItemFeed {
    sent: AtomicU64,
    applied: Mutex<u64>,
    caught_up: Condvar,
}

impl ItemFeed {
    /// Waits until every batch sent before this call is applied.
    pub(crate) fn settle(&self) {
        let target = self.sent.load(Ordering::Acquire);
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        while *applied < target {
            applied = self.caught_up.wait(applied).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Batches sent and not yet applied.
    pub(crate) fn behind(&self) -> u64 {
        let applied = *self.applied.lock().unwrap_or_else(|p| p.into_inner());
        self.sent.load(Ordering::Acquire).saturating_sub(applied)
    }

    fn done(&self) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.caught_up.notify_all();
    }
}

/// A shard writer's end of the feed.
#[derive(Clone, Debug)]
pub(crate) struct FeedSender {
    batches: Sender<Observed>,
    recycled: Receiver<Observed>,
}

/// The feed thread is gone (it panicked outside a batch, or was never started).
#[derive(Debug)]
pub(crate) struct FeedStopped;

impl FeedSender {
    /// An empty batch, reusing the buffers of one already applied if any.
    pub(crate) fn spare(&self) -> Observed {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Hands `observed` to the feed thread (waiting while it is
    /// [`FEED_QUEUE`] batches behind); an empty batch is not sent.
    pub(crate) fn send(&self, feed: &ItemFeed, observed: Observed) -> Result<(), FeedStopped> {
        if observed.is_empty() {
            return Ok(());
        }
        feed.sent.fetch_add(1, Ordering::AcqRel);
        self.batches.send(observed).map_err(|_| {
            // Never applied: count it so that settle does not wait for it.
            feed.done();
            FeedStopped
        })
    }
}

/// Batches the feed thread may be behind before shard writers wait for it.
pub(crate) const FEED_QUEUE: usize = 8;

/// The channels of a feed: the senders' end, and the thread's.
pub(crate) fn channels() -> (FeedSender, FeedReceiver) {
    let (batches_tx, batches_rx) = bounded(FEED_QUEUE);
    let (recycled_tx, recycled_rx) = bounded(FEED_QUEUE);
    (
        FeedSender { batches: batches_tx, recycled: recycled_rx },
        FeedReceiver { batches: batches_rx, recycled: recycled_tx },
    )
}

/// The feed thread's end.
#[derive(Debug)]
pub(crate) struct FeedReceiver {
    batches: Receiver<Observed>,
    recycled: Sender<Observed>,
}

impl FeedReceiver {
    /// Applies batches until every sender is gone. `apply` runs one batch
    /// (the engine wraps [`ItemStats::apply`] to catch a panic); a batch
    /// counts as applied afterwards either way.
    pub(crate) fn run(self, feed: &ItemFeed, mut apply: impl FnMut(&mut Observed)) {
        for mut observed in self.batches.iter() {
            apply(&mut observed);
            feed.done();
            if observed.is_empty() {
                // A full or closed return channel just drops the buffers.
                let _ = self.recycled.try_send(observed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{BasketLine, ItemStats};
    use crate::profile::PurchaseProfile;

    fn line(product: u32) -> BasketLine<'static> {
        BasketLine { product, category: None, units: 1, revenue_minor: 100 }
    }

    #[test]
    fn settle_waits_for_every_batch_sent_before_it_and_buffers_come_back() {
        let items = ItemStats::default();
        let feed = ItemFeed::default();
        let (sender, receiver) = channels();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| receiver.run(&feed, |o| items.apply(o)));
            let mut profile = PurchaseProfile::default();
            for day in 0..50 {
                let mut observed = sender.spare();
                items.record(&mut observed, &mut profile, 20_000 + day, [line(1), line(2)], 32);
                sender.send(&feed, observed).unwrap();
            }
            sender.send(&feed, Observed::default()).unwrap();
            feed.settle();
            assert_eq!(feed.behind(), 0);
            assert_eq!(items.product(1).map(|p| p.orders), Some(50), "all 50 applied once settled");
            drop(sender);
            worker.join().unwrap();
        });
    }

    #[test]
    fn a_send_to_a_stopped_feed_fails_and_does_not_hang_settle() {
        let feed = ItemFeed::default();
        let (sender, receiver) = channels();
        drop(receiver);
        let items = ItemStats::default();
        let mut observed = Observed::default();
        items.record(&mut observed, &mut PurchaseProfile::default(), 20_000, [line(1)], 32);
        assert!(sender.send(&feed, observed).is_err());
        feed.settle();
        assert_eq!(feed.behind(), 0);
    }
}
