//! `preserve_ordering`: responses leave in the order their requests arrived, whichever instance finishes
//! first. Off, a response leaves as soon as it is ready.
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Reply;
use crate::error::InferResult;
use crate::tensor::Tensor;

type Outcome = Option<(Reply, InferResult<Vec<Tensor>>)>;

pub struct Order {
    enabled: bool,
    /// The next arrival to answer, and finished ones waiting for it.
    pending: Mutex<(u64, BTreeMap<u64, Outcome>)>,
}

impl Order {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            pending: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// Answers request `seq` (now, or once every earlier arrival is answered).
    pub fn finish(&self, seq: u64, reply: Reply, result: InferResult<Vec<Tensor>>) {
        if self.enabled {
            self.release(seq, Some((reply, result)));
        } else {
            let _ = reply.send(result);
        }
    }

    /// Request `seq` will never be answered here (its caller is gone): later ones need not wait for it.
    pub fn skip(&self, seq: u64) {
        if self.enabled {
            self.release(seq, None);
        }
    }

    fn release(&self, seq: u64, outcome: Outcome) {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (next, done) = &mut *guard;
        done.insert(seq, outcome);
        while let Some(ready) = done.remove(next) {
            if let Some((reply, result)) = ready {
                let _ = reply.send(result);
            }
            *next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn a_later_response_waits_for_earlier_ones() {
        let order = Order::new(true);
        let (tx0, mut rx0) = oneshot::channel();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        order.finish(2, tx2, Ok(vec![]));
        order.finish(1, tx1, Ok(vec![]));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err(), "0 has not finished");
        order.finish(0, tx0, Ok(vec![]));
        assert!(rx0.try_recv().is_ok() && rx1.try_recv().is_ok() && rx2.try_recv().is_ok());
    }

    #[test]
    fn a_skipped_request_does_not_hold_up_the_rest() {
        let order = Order::new(true);
        let (tx1, mut rx1) = oneshot::channel();
        order.finish(1, tx1, Ok(vec![]));
        order.skip(0);
        assert!(rx1.try_recv().is_ok());
    }
}
