//! BERT-family sentence embeddings in the sentence-transformers layout: UTF-8 text in (BYTES), one FP32
//! vector per text out. The folder holds `model.safetensors`, `config.json` (the BERT config) and
//! `tokenizer.json`, with the sentence-transformers files `backend::text` reads (pooling, normalisation,
//! `max_seq_length`). Each batch is padded to its own longest text, with an attention mask, so a short text
//! costs no more next to a long one than alone, and rows never see each other's padding.
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::{execute_error, load_error, write_tensor};
use crate::backend::text::{read_json, texts, Pooling, TextRecipe};
use crate::backend::{BackendError, BatchInput, BatchOutput, DeclaredIo, DeclaredTensor, Instance};
use crate::spec::ModelSpec;
use crate::tensor::DataType;

fn bert_config(dir: &Path) -> Result<Config, BackendError> {
    read_json(&dir.join("config.json"))?.ok_or_else(|| BackendError::Load(format!("{}: no config.json", dir.display())))
}

fn text_recipe(dir: &Path) -> Result<TextRecipe, BackendError> {
    TextRecipe::load(dir)?.ok_or_else(|| BackendError::Load(format!("{}: no tokenizer.json", dir.display())))
}

/// Text in, `[batch, hidden_size]` FP32 out.
pub fn declared(model_file: &Path) -> Result<DeclaredIo, BackendError> {
    let config = bert_config(model_file.parent().unwrap_or(Path::new(".")))?;
    Ok(DeclaredIo {
        inputs: vec![DeclaredTensor {
            name: "TEXT".into(),
            datatype: Some(DataType::Bytes),
            shape: vec![-1, 1],
        }],
        outputs: vec![DeclaredTensor {
            name: "EMBEDDING".into(),
            datatype: Some(DataType::Fp32),
            shape: vec![-1, config.hidden_size as i64],
        }],
    })
}

pub struct SentenceInstance {
    model: BertModel,
    recipe: TextRecipe,
    device: Device,
}

impl SentenceInstance {
    pub fn load(model_file: &Path, spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        let dir = model_file.parent().unwrap_or(Path::new("."));
        let config = bert_config(dir)?;
        let recipe = text_recipe(dir)?;
        let input_ok = spec.inputs.len() == 1 && spec.inputs[0].datatype == DataType::Bytes;
        let output_ok = spec.outputs.len() == 1 && spec.outputs[0].datatype == DataType::Fp32;
        if !input_ok || !output_ok {
            return Err(BackendError::Load(format!(
                "model '{}': a sentence-embedding model takes one BYTES (text) input and gives one FP32 output",
                spec.name
            )));
        }
        let weights = candle_core::safetensors::load(model_file, &device).map_err(load_error(model_file))?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(load_error(model_file))?;
        Ok(Self { model, recipe, device })
    }

    /// Token ids and attention mask, `[rows, longest]` each.
    fn tokenize(&self, texts: Vec<&str>) -> Result<(Tensor, Tensor), BackendError> {
        let e = self.recipe.encode_batch(texts)?;
        let ids = Tensor::from_vec(e.ids, (e.rows, e.len), &self.device).map_err(execute_error)?;
        let mask = Tensor::from_vec(e.mask, (e.rows, e.len), &self.device).map_err(execute_error)?;
        Ok((ids, mask))
    }

    fn embed(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = self.model.forward(ids, &ids.zeros_like()?, Some(mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = match self.recipe.pooling {
            Pooling::Mean => {
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f32::MAX)?)?
            }
            Pooling::Cls => hidden.i((.., 0))?,
            // Padding gets a very negative value, so it is never the maximum.
            Pooling::Max => hidden.broadcast_add(&((m - 1.0)? * 1e9)?)?.max(1)?,
        };
        if self.recipe.normalize {
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norm)
        } else {
            Ok(pooled)
        }
    }
}

impl Instance for SentenceInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        let input = inputs
            .first()
            .ok_or_else(|| BackendError::Execute("a sentence-embedding model needs its text input".into()))?;
        let texts = texts(input)?;
        let (ids, mask) = self.tokenize(texts)?;
        let embeddings = self.embed(&ids, &mask).map_err(execute_error)?;
        outputs.resize_with(1, BatchOutput::default);
        write_tensor(&embeddings, &mut outputs[0])
    }
}
