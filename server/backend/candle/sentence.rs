//! BERT-family sentence embeddings in the sentence-transformers layout: UTF-8 text in (BYTES), one FP32
//! vector per text out. The folder holds `model.safetensors`, `config.json` (the BERT config),
//! `tokenizer.json`, and optionally `1_Pooling/config.json` (mean, CLS or max pooling; mean by default),
//! `modules.json` (L2 normalisation when it lists a Normalize module) and `sentence_bert_config.json`
//! (`max_seq_length`). Each batch is padded to its own longest text, with an attention mask, so a short text
//! costs no more next to a long one than alone, and rows never see each other's padding.
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{execute_error, load_error, write_tensor};
use crate::backend::{BackendError, BatchInput, BatchOutput, DeclaredIo, DeclaredTensor, Instance};
use crate::spec::ModelSpec;
use crate::tensor::{bytes_elements, DataType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
    Max,
}

/// sentence-transformers' `1_Pooling/config.json` (the fields inferd acts on).
#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// How a folder's texts become vectors.
struct Recipe {
    config: Config,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, BackendError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| BackendError::Load(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| BackendError::Load(format!("{}: {e}", path.display())))
}

fn recipe(dir: &Path) -> Result<Recipe, BackendError> {
    let config: Config = read_json(&dir.join("config.json"))?
        .ok_or_else(|| BackendError::Load(format!("{}: no config.json", dir.display())))?;
    let pooling_cfg: PoolingConfig = read_json(&dir.join("1_Pooling/config.json"))?.unwrap_or_default();
    let pooling = if pooling_cfg.pooling_mode_cls_token {
        Pooling::Cls
    } else if pooling_cfg.pooling_mode_max_tokens {
        Pooling::Max
    } else {
        Pooling::Mean
    };
    let modules: Vec<Module> = read_json(&dir.join("modules.json"))?.unwrap_or_default();
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    let max_seq_length = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
        .map_or(config.max_position_embeddings, |c| c.max_seq_length)
        .min(config.max_position_embeddings);
    Ok(Recipe {
        config,
        pooling,
        normalize,
        max_seq_length,
    })
}

/// Text in, `[batch, hidden_size]` FP32 out.
pub fn declared(model_file: &Path) -> Result<DeclaredIo, BackendError> {
    let r = recipe(model_file.parent().unwrap_or(Path::new(".")))?;
    Ok(DeclaredIo {
        inputs: vec![DeclaredTensor {
            name: "TEXT".into(),
            datatype: Some(DataType::Bytes),
            shape: vec![-1, 1],
        }],
        outputs: vec![DeclaredTensor {
            name: "EMBEDDING".into(),
            datatype: Some(DataType::Fp32),
            shape: vec![-1, r.config.hidden_size as i64],
        }],
    })
}

pub struct SentenceInstance {
    model: BertModel,
    tokenizer: Tokenizer,
    recipe: Recipe,
    device: Device,
}

impl SentenceInstance {
    pub fn load(model_file: &Path, spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        let dir = model_file.parent().unwrap_or(Path::new("."));
        let recipe = recipe(dir)?;
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
        let model = BertModel::load(vb, &recipe.config).map_err(load_error(model_file))?;
        let tokenizer_file = dir.join("tokenizer.json");
        let tokenizer_error = |e: tokenizers::Error| BackendError::Load(format!("{}: {e}", tokenizer_file.display()));
        let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(tokenizer_error)?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(recipe.config.pad_token_id as u32);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: recipe.max_seq_length,
                ..Default::default()
            }))
            .map_err(tokenizer_error)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(Self {
            model,
            tokenizer,
            recipe,
            device,
        })
    }

    /// Token ids and attention mask, `[rows, longest]` each.
    fn tokenize(&self, texts: Vec<&str>) -> Result<(Tensor, Tensor), BackendError> {
        let rows = texts.len();
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| BackendError::Execute(format!("tokenizer: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, len), &self.device).map_err(execute_error)?;
        let mask = Tensor::from_vec(mask, (rows, len), &self.device).map_err(execute_error)?;
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
        let texts = bytes_elements(input.data)
            .map(|e| {
                let bytes = e.map_err(|_| BackendError::InvalidInput("malformed BYTES tensor".into()))?;
                std::str::from_utf8(bytes)
                    .map_err(|e| BackendError::InvalidInput(format!("input '{}' is not UTF-8 text: {e}", input.name)))
            })
            .collect::<Result<Vec<&str>, _>>()?;
        if texts.is_empty() {
            return Err(BackendError::InvalidInput("no text to embed".into()));
        }
        let (ids, mask) = self.tokenize(texts)?;
        let embeddings = self.embed(&ids, &mask).map_err(execute_error)?;
        outputs.resize_with(1, BatchOutput::default);
        write_tensor(&embeddings, &mut outputs[0])
    }
}
