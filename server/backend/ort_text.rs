//! ONNX Runtime models that take text: a graph with `input_ids` and `attention_mask` (and `token_type_ids`, when
//! it has one) whose folder holds a `tokenizer.json`, served with one BYTES input. The texts of a batch are
//! tokenized here with the same recipe the candle path uses, padded to the batch's longest text. A graph that
//! gives token vectors (`[batch, seq, dim]`, as Hugging Face exports do) is pooled here as its
//! `1_Pooling/config.json` says; one that gives sentence vectors (`[batch, dim]`) is taken as pooled. Either is
//! L2-normalised when `modules.json` lists a Normalize module (a no-op for a graph that normalised already).
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::text::{normalize_rows, pool, texts, TextRecipe};
use super::{BackendError, BatchInput, BatchOutput, Instance};

/// The graph's inputs a tokenized batch feeds.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
const TOKEN_TYPE_IDS: &str = "token_type_ids";

pub struct OrtTextInstance {
    session: Session,
    recipe: TextRecipe,
    output: String,
    token_types: bool,
    /// Reused per batch: ids, mask and token types as the graph takes them, and pooled vectors.
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
    pooled: Vec<f32>,
}

fn exec_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Execute(format!("onnxruntime: {e}"))
}

impl OrtTextInstance {
    /// A text-in instance of `session`, whose output `output` is the embedding; fails unless the graph takes
    /// token ids and an attention mask.
    pub fn new(session: Session, recipe: TextRecipe, output: String) -> Result<Self, BackendError> {
        let has = |name: &str| session.inputs().iter().any(|i| i.name() == name);
        if !has(INPUT_IDS) || !has(ATTENTION_MASK) {
            return Err(BackendError::Load(format!(
                "a text-in ONNX model's graph takes '{INPUT_IDS}' and '{ATTENTION_MASK}'"
            )));
        }
        let token_types = has(TOKEN_TYPE_IDS);
        Ok(Self {
            session,
            recipe,
            output,
            token_types,
            ids: Vec::new(),
            mask: Vec::new(),
            types: Vec::new(),
            pooled: Vec::new(),
        })
    }
}

impl Instance for OrtTextInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        let input = inputs
            .first()
            .ok_or_else(|| BackendError::Execute("a text model needs its text input".into()))?;
        let encoded = self.recipe.encode_batch(texts(input)?)?;
        let (rows, len) = (encoded.rows, encoded.len);
        self.ids.clear();
        self.ids.extend(encoded.ids.iter().map(|&i| i64::from(i)));
        self.mask.clear();
        self.mask.extend(encoded.mask.iter().map(|&m| i64::from(m)));
        let shape = vec![rows as i64, len as i64];
        let mut feed: Vec<(&str, SessionInputValue<'_>)> = vec![
            (
                INPUT_IDS,
                TensorRef::from_array_view((shape.clone(), &self.ids[..]))
                    .map_err(exec_err)?
                    .into(),
            ),
            (
                ATTENTION_MASK,
                TensorRef::from_array_view((shape.clone(), &self.mask[..]))
                    .map_err(exec_err)?
                    .into(),
            ),
        ];
        if self.token_types {
            self.types.clear();
            self.types.resize(rows * len, 0);
            feed.push((
                TOKEN_TYPE_IDS,
                TensorRef::from_array_view((shape, &self.types[..]))
                    .map_err(exec_err)?
                    .into(),
            ));
        }
        let results = self.session.run(feed).map_err(exec_err)?;
        let value = results
            .get(self.output.as_str())
            .ok_or_else(|| exec_err(format!("the model produced no output '{}'", self.output)))?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(exec_err)?;
        outputs.resize_with(1, BatchOutput::default);
        let out = &mut outputs[0];
        let dim = match **out_shape {
            [r, d] if r as usize == rows => {
                self.pooled.clear();
                self.pooled.extend_from_slice(data);
                d as usize
            }
            [r, s, d] if r as usize == rows && s as usize == len => {
                pool(self.recipe.pooling, data, &encoded.mask, rows, len, &mut self.pooled);
                d as usize
            }
            ref other => {
                return Err(exec_err(format!(
                    "output '{}' has shape {other:?}: a text model gives [batch, dim] or [batch, seq, dim]",
                    self.output
                )))
            }
        };
        if self.recipe.normalize {
            normalize_rows(&mut self.pooled, dim);
        }
        out.shape.clear();
        out.shape.extend_from_slice(&[rows as i64, dim as i64]);
        out.data.clear();
        out.data.extend_from_slice(bytemuck::cast_slice(&self.pooled));
        Ok(())
    }
}
