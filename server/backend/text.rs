//! Text models' common ground: the tokenizer and the sentence-transformers recipe read from the files beside a
//! model's weights (`tokenizer.json`; `1_Pooling/config.json` for mean, CLS or max pooling, mean by default;
//! `modules.json`, which asks for L2 normalisation when it lists a Normalize module; `sentence_bert_config.json`
//! for `max_seq_length`). The candle and ONNX Runtime backends tokenize batches with it, and serving counts a
//! request's tokens with it at the door, so both see the same tokens.
use std::path::Path;

use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{BackendError, BatchInput};
use crate::tensor::bytes_elements;

/// The file whose presence makes a folder's model a text model.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The longest input when no file says (BERT's position embeddings).
const DEFAULT_MAX_LENGTH: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

impl Pooling {
    /// The name TEI's `/info` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        }
    }
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

/// The one field of a Hugging Face `config.json` that bounds the input.
#[derive(Deserialize)]
struct PositionLimit {
    max_position_embeddings: usize,
}

/// Reads a JSON file that may be absent.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, BackendError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| BackendError::Load(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| BackendError::Load(format!("{}: {e}", path.display())))
}

/// A batch of texts as token ids and attention mask, `[rows, len]` each, padded to the longest.
#[derive(Debug, Default)]
pub struct Encoded {
    pub rows: usize,
    pub len: usize,
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

/// One token of a text, as TEI's `/tokenize` shows it.
#[derive(Debug, PartialEq)]
pub struct Token {
    pub id: u32,
    pub text: String,
    pub special: bool,
    /// Byte offsets into the text; `None` for a special token, which stands for no text.
    pub span: Option<(usize, usize)>,
}

/// How a folder's texts become token ids and its model's outputs become one vector per text.
pub struct TextRecipe {
    pub pooling: Pooling,
    pub normalize: bool,
    /// The most tokens (special ones included) the model takes per text.
    pub max_length: usize,
    /// Whole texts, as they are: for counting and for `/tokenize`.
    plain: Tokenizer,
    /// Cut to `max_length` and padded to the batch's longest: for running a batch.
    batching: Tokenizer,
}

impl TextRecipe {
    /// The recipe of the model in `dir`, or `None` when no tokenizer sits there.
    pub fn load(dir: &Path) -> Result<Option<Self>, BackendError> {
        let tokenizer_file = dir.join(TOKENIZER_FILE);
        if !tokenizer_file.is_file() {
            return Ok(None);
        }
        let tokenizer_error = |e: tokenizers::Error| BackendError::Load(format!("{}: {e}", tokenizer_file.display()));
        let mut plain = Tokenizer::from_file(&tokenizer_file).map_err(tokenizer_error)?;
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
        let positions = read_json::<PositionLimit>(&dir.join("config.json"))?.map(|c| c.max_position_embeddings);
        let max_length = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .map(|c| c.max_seq_length)
            .or_else(|| plain.get_truncation().map(|t| t.max_length))
            .or(positions)
            .unwrap_or(DEFAULT_MAX_LENGTH)
            .min(positions.unwrap_or(usize::MAX));
        if max_length == 0 {
            return Err(BackendError::Load(format!("{}: max_seq_length is 0", dir.display())));
        }
        // The file's own settings (all-MiniLM-L6-v2's pads every text to 128) give way to ours.
        plain.with_truncation(None).map_err(tokenizer_error)?;
        plain.with_padding(None);
        let mut batching = plain.clone();
        batching
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(tokenizer_error)?;
        let pad_id = batching.token_to_id("[PAD]").unwrap_or(0);
        batching.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(Some(Self {
            pooling,
            normalize,
            max_length,
            plain,
            batching,
        }))
    }

    /// How many tokens `text` is, special tokens included, before any cut.
    pub fn count(&self, text: &str) -> Result<usize, BackendError> {
        self.plain
            .encode_fast(text, true)
            .map(|e| e.len())
            .map_err(|e| BackendError::InvalidInput(format!("cannot tokenize the text: {e}")))
    }

    /// The tokens of `text`, as TEI's `/tokenize` lists them.
    pub fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Token>, BackendError> {
        let encoding = self
            .plain
            .encode(text, add_special_tokens)
            .map_err(|e| BackendError::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .map(|(((&id, token), &(start, stop)), &special)| {
                let special = special == 1;
                Token {
                    id,
                    // The text the token covers, where it covers some; a special token's own spelling else.
                    text: text
                        .get(start..stop)
                        .filter(|s| !special && !s.is_empty())
                        .unwrap_or(token)
                        .to_string(),
                    special,
                    span: (!special).then_some((start, stop)),
                }
            })
            .collect())
    }

    /// The text token ids stand for (so that token ids in can go where text goes).
    pub fn decode(&self, ids: &[u32]) -> Result<String, BackendError> {
        let size = self.plain.get_vocab_size(true);
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(BackendError::InvalidInput(format!(
                "token id {bad} is not in the model's vocabulary of {size}"
            )));
        }
        self.plain
            .decode(ids, true)
            .map_err(|e| BackendError::InvalidInput(format!("cannot decode the token ids: {e}")))
    }

    /// A batch's texts as ids and mask, each cut to `max_length` and padded to the longest.
    pub fn encode_batch(&self, texts: Vec<&str>) -> Result<Encoded, BackendError> {
        let rows = texts.len();
        let encodings = self
            .batching
            .encode_batch_fast(texts, true)
            .map_err(|e| BackendError::Execute(format!("tokenizer: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.len());
        let mut encoded = Encoded {
            rows,
            len,
            ids: Vec::with_capacity(rows * len),
            mask: Vec::with_capacity(rows * len),
        };
        for e in &encodings {
            encoded.ids.extend_from_slice(e.get_ids());
            encoded.mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(encoded)
    }
}

/// The elements of BYTES data (of tensor `name`), each as UTF-8 text.
pub fn text_elements<'a>(data: &'a [u8], name: &'a str) -> impl Iterator<Item = Result<&'a str, BackendError>> {
    bytes_elements(data).map(move |e| {
        let bytes = e.map_err(|_| BackendError::InvalidInput(format!("malformed BYTES data for '{name}'")))?;
        std::str::from_utf8(bytes)
            .map_err(|e| BackendError::InvalidInput(format!("input '{name}' is not UTF-8 text: {e}")))
    })
}

/// The texts of a batch's BYTES input, as UTF-8.
pub fn texts<'a>(input: &BatchInput<'a>) -> Result<Vec<&'a str>, BackendError> {
    let texts = text_elements(input.data, input.name).collect::<Result<Vec<&str>, _>>()?;
    if texts.is_empty() {
        return Err(BackendError::InvalidInput("no text to embed".into()));
    }
    Ok(texts)
}

/// Token vectors `[rows, len, dim]` pooled into one vector per row (`[rows, dim]`, into `out`), padding left out.
pub fn pool(pooling: Pooling, hidden: &[f32], mask: &[u32], rows: usize, len: usize, out: &mut Vec<f32>) {
    let dim = hidden.len().checked_div(rows * len).unwrap_or(0);
    out.clear();
    out.resize(rows * dim, 0.0);
    for r in 0..rows {
        let row = &mut out[r * dim..(r + 1) * dim];
        let tokens = (0..len).filter(|&t| mask[r * len + t] != 0);
        let vector = |t: usize| &hidden[(r * len + t) * dim..(r * len + t + 1) * dim];
        match pooling {
            Pooling::Cls => row.copy_from_slice(vector(0)),
            Pooling::Mean => {
                let mut n = 0usize;
                for t in tokens {
                    n += 1;
                    row.iter_mut().zip(vector(t)).for_each(|(a, b)| *a += b);
                }
                // sentence-transformers divides by the count clamped to 1e-9.
                let n = (n as f32).max(1e-9);
                row.iter_mut().for_each(|a| *a /= n);
            }
            Pooling::Max => {
                row.fill(f32::NEG_INFINITY);
                for t in tokens {
                    row.iter_mut().zip(vector(t)).for_each(|(a, &b)| *a = a.max(b));
                }
                row.iter_mut().filter(|a| a.is_infinite()).for_each(|a| *a = 0.0);
            }
        }
    }
}

/// Scales each `dim`-long row to unit length (torch's `F.normalize`: norms clamped to 1e-12).
pub fn normalize_rows(data: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in data.chunks_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_leaves_padding_out() {
        // Two rows of three tokens, dim 2; the second row's last token is padding.
        let hidden = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 1.0, 3.0, 3.0, 100.0, 100.0];
        let mask = [1, 1, 1, 1, 1, 0];
        let mut out = Vec::new();
        pool(Pooling::Mean, &hidden, &mask, 2, 3, &mut out);
        assert_eq!(out, vec![3.0, 4.0, 2.0, 2.0]);
        pool(Pooling::Max, &hidden, &mask, 2, 3, &mut out);
        assert_eq!(out, vec![5.0, 6.0, 3.0, 3.0]);
        pool(Pooling::Cls, &hidden, &mask, 2, 3, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn normalised_rows_have_unit_length_and_zero_stays_zero() {
        let mut data = [3.0, 4.0, 0.0, 0.0];
        normalize_rows(&mut data, 2);
        assert_eq!(data, [0.6, 0.8, 0.0, 0.0]);
    }
}
