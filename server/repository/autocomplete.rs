//! Triton's auto-complete: a model with no config, or a config without inputs and outputs, gets them from the
//! model file itself, including whether the first dimension is a batch dimension.
use crate::backend::{DeclaredIo, DeclaredTensor};
use crate::proto::{ModelConfig, ModelInput, ModelOutput};

/// Triton's `--backend-config=default-max-batch-size`: what a batchable model without one gets.
pub const DEFAULT_MAX_BATCH_SIZE: i32 = 4;

/// A model file whose tensors cannot complete its config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AutoCompleteError {
    #[error("max_batch_size is {0} but the model's tensors have no dynamic first dimension to batch along")]
    NoBatchDimension(i32),
    #[error("tensor '{0}' has a type inferd cannot serve")]
    UnservableType(String),
}

fn all_batchable(tensors: &[DeclaredTensor]) -> bool {
    tensors.iter().all(|t| t.shape.first() == Some(&-1))
}

pub fn complete(cfg: &mut ModelConfig, io: &DeclaredIo) -> Result<(), AutoCompleteError> {
    if !cfg.input.is_empty() && !cfg.output.is_empty() {
        return Ok(());
    }
    // The first dimension batches only if every input and output leaves it dynamic.
    let batchable = all_batchable(&io.inputs) && all_batchable(&io.outputs);
    if cfg.max_batch_size == 0 && batchable {
        cfg.max_batch_size = DEFAULT_MAX_BATCH_SIZE;
    }
    let skip = usize::from(cfg.max_batch_size > 0);
    if skip == 1 && !batchable {
        return Err(AutoCompleteError::NoBatchDimension(cfg.max_batch_size));
    }
    let dims = |t: &DeclaredTensor| -> Result<(i32, Vec<i64>), AutoCompleteError> {
        let datatype = t
            .datatype
            .ok_or_else(|| AutoCompleteError::UnservableType(t.name.clone()))?;
        Ok((
            datatype.to_config() as i32,
            t.shape.get(skip..).unwrap_or_default().to_vec(),
        ))
    };
    if cfg.input.is_empty() {
        for t in &io.inputs {
            let (data_type, dims) = dims(t)?;
            cfg.input.push(ModelInput {
                name: t.name.clone(),
                data_type,
                dims,
                ..Default::default()
            });
        }
    }
    if cfg.output.is_empty() {
        for t in &io.outputs {
            let (data_type, dims) = dims(t)?;
            cfg.output.push(ModelOutput {
                name: t.name.clone(),
                data_type,
                dims,
                ..Default::default()
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn io(shape: Vec<i64>) -> DeclaredIo {
        let t = |n: &str| DeclaredTensor {
            name: n.into(),
            datatype: Some(DataType::Fp32),
            shape: shape.clone(),
        };
        DeclaredIo {
            inputs: vec![t("x")],
            outputs: vec![t("y")],
        }
    }

    #[test]
    fn a_dynamic_first_dimension_becomes_the_batch_dimension() {
        let mut cfg = ModelConfig::default();
        complete(&mut cfg, &io(vec![-1, 64])).unwrap();
        assert_eq!(cfg.max_batch_size, DEFAULT_MAX_BATCH_SIZE);
        assert_eq!(cfg.input[0].dims, vec![64]);
        assert_eq!(cfg.output[0].name, "y");
    }

    #[test]
    fn a_fixed_first_dimension_means_no_batching() {
        let mut cfg = ModelConfig::default();
        complete(&mut cfg, &io(vec![3, 64])).unwrap();
        assert_eq!(cfg.max_batch_size, 0);
        assert_eq!(cfg.input[0].dims, vec![3, 64]);
    }

    #[test]
    fn a_complete_config_is_left_alone() {
        let mut cfg = ModelConfig {
            max_batch_size: 2,
            ..Default::default()
        };
        cfg.input.push(ModelInput {
            name: "x".into(),
            dims: vec![5],
            ..Default::default()
        });
        cfg.output.push(ModelOutput {
            name: "y".into(),
            dims: vec![5],
            ..Default::default()
        });
        let before = cfg.clone();
        complete(&mut cfg, &io(vec![-1, 64])).unwrap();
        assert_eq!(cfg, before);
    }
}
