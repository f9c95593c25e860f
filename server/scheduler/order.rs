//! `preserve_ordering`: responses leave in the order their requests arrived, whichever instance finishes
//! first. Off, a response leaves as soon as it is ready. Only `job::Reply` calls in here, so every answer, and
//! every request that will never be answered, passes through.
use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::job::Outcome;

type Answer = (oneshot::Sender<Outcome>, Outcome);

pub(super) struct Order {
    enabled: bool,
    /// The next arrival to answer, and finished ones waiting for it (`None`: never answered here).
    pending: Mutex<(u64, BTreeMap<u64, Option<Answer>>)>,
}

impl Order {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            pending: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// Request `seq` is done: answered with `answer`, or (`None`) never to be answered here, so later ones
    /// need not wait for it.
    pub(super) fn finish(&self, seq: u64, answer: Option<Answer>) {
        if !self.enabled {
            if let Some((tx, outcome)) = answer {
                let _ = tx.send(outcome);
            }
            return;
        }
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (next, done) = &mut *guard;
        done.insert(seq, answer);
        while let Some(ready) = done.remove(next) {
            if let Some((tx, outcome)) = ready {
                let _ = tx.send(outcome);
            }
            *next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::job::Reply;
    use super::*;

    fn reply(order: &Arc<Order>, seq: u64) -> (Reply, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (Reply::new(tx, seq, order.clone()), rx)
    }

    #[test]
    fn a_later_response_waits_for_earlier_ones() {
        let order = Arc::new(Order::new(true));
        let (r0, mut rx0) = reply(&order, 0);
        let (r1, mut rx1) = reply(&order, 1);
        let (r2, mut rx2) = reply(&order, 2);
        r2.send(Ok(vec![]));
        r1.send(Ok(vec![]));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err(), "0 has not finished");
        r0.send(Ok(vec![]));
        assert!(rx0.try_recv().is_ok() && rx1.try_recv().is_ok() && rx2.try_recv().is_ok());
    }

    #[test]
    fn a_reply_dropped_unanswered_does_not_hold_up_the_rest() {
        let order = Arc::new(Order::new(true));
        let (r0, mut rx0) = reply(&order, 0);
        let (r1, mut rx1) = reply(&order, 1);
        r1.send(Ok(vec![]));
        drop(r0);
        assert!(
            rx0.try_recv().is_err(),
            "the dropped one's caller learns it was dropped"
        );
        assert!(rx1.try_recv().is_ok());
    }
}
