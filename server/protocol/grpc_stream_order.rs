//! Requests on one gRPC stream run concurrently, except that the requests of one sequence (same model, same
//! `sequence_id`) are served one after another in the order they were sent: the sequence batcher must see a
//! sequence's START before its other requests, and it runs them one at a time anyway.
use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::proto::infer_parameter::ParameterChoice;
use crate::proto::ModelInferRequest;

/// Past this many sequences seen on a stream, entries of finished ones are dropped.
const PRUNE_AT: usize = 1024;

#[derive(Default)]
pub struct SequenceOrder {
    /// Per sequence: signalled (or dropped) when its latest request has been served.
    last: HashMap<String, oneshot::Receiver<()>>,
}

/// A request's place in its sequence: wait for `after`, then drop `done` once served.
pub struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until the sequence's previous request on this stream has been served.
    pub async fn wait(&mut self) {
        if let Some(after) = &mut self.after {
            // Answered or dropped: either way the previous request is done.
            let _ = after.await;
            self.after = None;
        }
    }
}

impl SequenceOrder {
    /// The turn of `request`: requests outside any sequence wait for nothing.
    pub fn turn(&mut self, request: &ModelInferRequest) -> Turn {
        let Some(key) = sequence_key(request) else {
            return Turn {
                after: None,
                done: None,
            };
        };
        if self.last.len() >= PRUNE_AT {
            self.last
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done, rx) = oneshot::channel();
        let after = self.last.insert(key, rx);
        Turn {
            after,
            done: Some(done),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// The model and correlation id of a sequence request; none for 0, "" or no `sequence_id`.
fn sequence_key(request: &ModelInferRequest) -> Option<String> {
    let id = match request.parameters.get("sequence_id")?.parameter_choice.as_ref()? {
        ParameterChoice::Int64Param(0) | ParameterChoice::Uint64Param(0) => return None,
        ParameterChoice::StringParam(s) if s.is_empty() => return None,
        ParameterChoice::Int64Param(i) => format!("n{i}"),
        ParameterChoice::Uint64Param(u) => format!("n{u}"),
        ParameterChoice::StringParam(s) => format!("s{s}"),
        _ => return None,
    };
    Some(format!("{}\0{id}", request.model_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::InferParameter;

    fn request(id: i64) -> ModelInferRequest {
        let mut r = ModelInferRequest {
            model_name: "m".into(),
            ..Default::default()
        };
        r.parameters.insert(
            "sequence_id".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(id)),
            },
        );
        r
    }

    #[tokio::test]
    async fn a_sequences_second_request_waits_for_its_first_and_others_do_not() {
        let mut order = SequenceOrder::default();
        let first = order.turn(&request(1));
        let mut second = order.turn(&request(1));
        let mut other = order.turn(&request(2));
        let mut none = order.turn(&request(0));
        other.wait().await;
        none.wait().await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), second.wait()).await;
        assert!(waiting.is_err(), "the second request must wait for the first");
        drop(first);
        second.wait().await;
    }
}
