//! A text request's tokens, counted at the door with its model's tokenizer (`backend::text`) before it queues:
//! the longest text sets the request's padded length, which the scheduler's token budget adds up; a text
//! longer than the model takes is cut or refused as the request's `truncate` parameter says; and the total is
//! the usage the OpenAI route reports.
use std::sync::Arc;

use crate::backend::text::{text_elements, TextRecipe};
use crate::error::{InferError, InferResult};
use crate::request::{InferRequest, ParamValue};
use crate::tensor::Tensor;

/// What a request's texts come to, each cut to the model's limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextTokens {
    /// Tokens of the longest text: every row of the request pads to it.
    pub longest: usize,
    /// Tokens of all texts together.
    pub total: usize,
}

/// The request's `truncate` parameter: whether a too-long text is cut (the default over V2, where texts have
/// always been cut) or refused.
pub fn truncate_parameter(req: &InferRequest) -> InferResult<bool> {
    match req.parameter("truncate") {
        None => Ok(true),
        Some(ParamValue::Bool(b)) => Ok(*b),
        Some(v) => Err(InferError::invalid(format!(
            "parameter 'truncate' must be a bool, got {v:?}"
        ))),
    }
}

/// Counts the tokens of every text in `text` (a BYTES tensor); a text over the limit fails the request unless
/// `truncate`.
pub fn count(recipe: &TextRecipe, model: &str, text: &Tensor, truncate: bool) -> InferResult<TextTokens> {
    let mut counted = TextTokens::default();
    for s in text_elements(&text.data, &text.name) {
        let tokens = recipe.count(s?)?;
        if tokens > recipe.max_length && !truncate {
            return Err(InferError::TextTooLong {
                model: model.to_string(),
                tokens,
                max: recipe.max_length,
            });
        }
        let tokens = tokens.min(recipe.max_length);
        counted.longest = counted.longest.max(tokens);
        counted.total += tokens;
    }
    Ok(counted)
}

/// Text past this many bytes (a few thousand tokens, half a millisecond and more to tokenize) is counted on the
/// blocking pool rather than on the front-end thread, whose other connections would wait meanwhile.
const OFF_THREAD_BYTES: usize = 16 * 1024;

/// `count`, on the blocking pool when the request's text is large.
pub async fn count_off_thread(
    recipe: &Arc<TextRecipe>,
    model: &str,
    text: &Tensor,
    truncate: bool,
) -> InferResult<TextTokens> {
    if text.data.len() < OFF_THREAD_BYTES {
        return count(recipe, model, text, truncate);
    }
    let (recipe, model, text) = (recipe.clone(), model.to_string(), text.clone());
    tokio::task::spawn_blocking(move || count(&recipe, &model, &text, truncate))
        .await
        .map_err(|e| InferError::Internal(format!("counting tokens failed: {e}")))?
}
