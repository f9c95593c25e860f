//! The identity backend (`backend: "identity"`), as Triton's: each output is a copy of the input in the same
//! position (OUTPUT0 of INPUT0, ...), same datatype and shape, any datatype, BYTES included (the raw
//! length-prefixed form is copied whole, so every byte sent, NUL bytes too, comes back). It reads no model
//! file, only the config, and does no per-element work, so serving it measures the server's own overhead.
use std::path::Path;

use super::{Backend, BackendError, BatchInput, BatchOutput, DeclaredIo, Instance, Placement};
use crate::proto::ModelConfig;
use crate::spec::{ModelSpec, TensorSpec};

#[derive(Default)]
pub struct IdentityBackend;

impl IdentityBackend {
    pub fn new() -> Self {
        Self
    }
}

/// The shape the backend sees for a tensor: the config's `reshape` when it has one.
fn model_dims(t: &TensorSpec) -> &[i64] {
    t.reshape.as_deref().unwrap_or(&t.dims)
}

/// For each output, in `spec.outputs` order, the name of the input it copies; checked once at load so a
/// batch never meets a mismatch.
fn pairing(spec: &ModelSpec) -> Result<Vec<String>, BackendError> {
    if spec.inputs.len() != spec.outputs.len() {
        return Err(BackendError::Load(format!(
            "model '{}': the identity backend needs as many outputs as inputs (each output copies the input in \
             its position), config has {} inputs and {} outputs",
            spec.name,
            spec.inputs.len(),
            spec.outputs.len()
        )));
    }
    spec.inputs
        .iter()
        .zip(&spec.outputs)
        .map(|(i, o)| {
            if i.datatype != o.datatype || model_dims(i) != model_dims(o) {
                return Err(BackendError::Load(format!(
                    "model '{}': identity output '{}' ({} {:?}) must match input '{}' ({} {:?})",
                    spec.name,
                    o.name,
                    o.datatype.name(),
                    model_dims(o),
                    i.name,
                    i.datatype.name(),
                    model_dims(i)
                )));
            }
            Ok(i.name.clone())
        })
        .collect()
}

impl Backend for IdentityBackend {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn platform(&self) -> &'static str {
        "identity"
    }

    fn default_model_filename(&self) -> &'static str {
        "model.identity"
    }

    fn needs_model_file(&self) -> bool {
        false
    }

    fn inspect(&self, _model_file: &Path) -> Result<DeclaredIo, BackendError> {
        Err(BackendError::Load(
            "the identity backend has no model file to read inputs and outputs from: declare them in config.pbtxt"
                .to_string(),
        ))
    }

    fn instantiate(
        &self,
        _model_file: &Path,
        spec: &ModelSpec,
        _config: &ModelConfig,
        _placement: Placement,
    ) -> Result<Box<dyn Instance>, BackendError> {
        Ok(Box::new(IdentityInstance {
            sources: pairing(spec)?,
        }))
    }
}

struct IdentityInstance {
    sources: Vec<String>,
}

impl Instance for IdentityInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        outputs.resize_with(self.sources.len(), BatchOutput::default);
        for (source, out) in self.sources.iter().zip(outputs.iter_mut()) {
            // Inputs arrive in spec order, so the search is over a handful of names; an optional input left
            // out has nothing to copy.
            let input = inputs.iter().find(|i| i.name == source).ok_or_else(|| {
                BackendError::InvalidInput(format!("input '{source}' is required by the identity backend"))
            })?;
            out.shape.clear();
            out.shape.extend_from_slice(input.shape);
            out.data.clear();
            out.data.extend_from_slice(input.data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn spec(inputs: &[(&str, DataType, &[i64])], outputs: &[(&str, DataType, &[i64])]) -> ModelSpec {
        let t = |&(name, datatype, dims): &(&str, DataType, &[i64])| TensorSpec {
            name: name.to_string(),
            datatype,
            dims: dims.to_vec(),
            reshape: None,
            optional: false,
        };
        ModelSpec {
            name: "m".to_string(),
            platform: "identity".to_string(),
            max_batch_size: 8,
            inputs: inputs.iter().map(t).collect(),
            outputs: outputs.iter().map(t).collect(),
        }
    }

    fn instance(spec: &ModelSpec) -> Result<Box<dyn Instance>, BackendError> {
        IdentityBackend::new().instantiate(Path::new("unused"), spec, &ModelConfig::default(), Placement::Cpu)
    }

    #[test]
    fn each_output_is_a_byte_exact_copy_of_the_input_in_its_position() {
        let s = spec(
            &[("INPUT0", DataType::Bytes, &[-1]), ("INPUT1", DataType::Int8, &[2])],
            &[("OUTPUT0", DataType::Bytes, &[-1]), ("OUTPUT1", DataType::Int8, &[2])],
        );
        let mut inst = instance(&s).unwrap();
        // Two BYTES elements, "a\0b" and "", length-prefixed as on the wire.
        let bytes = [3u8, 0, 0, 0, b'a', 0, b'b', 0, 0, 0, 0];
        let ints = [1u8, 0xff, 7, 0x80];
        let inputs = [
            BatchInput {
                name: "INPUT0",
                datatype: DataType::Bytes,
                shape: &[1, 2],
                data: &bytes,
            },
            BatchInput {
                name: "INPUT1",
                datatype: DataType::Int8,
                shape: &[2, 2],
                data: &ints,
            },
        ];
        let mut outputs = vec![BatchOutput {
            shape: vec![9],
            data: vec![9; 40],
        }];
        inst.execute(&inputs, &mut outputs).unwrap();
        assert_eq!(outputs.len(), 2);
        assert_eq!(
            (outputs[0].shape.as_slice(), outputs[0].data.as_slice()),
            (&[1i64, 2][..], &bytes[..])
        );
        assert_eq!(
            (outputs[1].shape.as_slice(), outputs[1].data.as_slice()),
            (&[2i64, 2][..], &ints[..])
        );
    }

    #[test]
    fn a_config_whose_outputs_do_not_mirror_its_inputs_fails_to_load() {
        let fewer = spec(
            &[("INPUT0", DataType::Fp32, &[4]), ("INPUT1", DataType::Fp32, &[4])],
            &[("OUTPUT0", DataType::Fp32, &[4])],
        );
        assert!(instance(&fewer)
            .err()
            .unwrap()
            .to_string()
            .contains("as many outputs as inputs"));
        let other_type = spec(
            &[("INPUT0", DataType::Fp32, &[4])],
            &[("OUTPUT0", DataType::Int32, &[4])],
        );
        assert!(instance(&other_type)
            .err()
            .unwrap()
            .to_string()
            .contains("must match input 'INPUT0'"));
        let other_dims = spec(
            &[("INPUT0", DataType::Fp32, &[4])],
            &[("OUTPUT0", DataType::Fp32, &[5])],
        );
        assert!(instance(&other_dims).is_err());
    }

    #[test]
    fn a_missing_optional_input_is_an_invalid_input_not_a_panic() {
        let s = spec(
            &[("INPUT0", DataType::Fp32, &[1])],
            &[("OUTPUT0", DataType::Fp32, &[1])],
        );
        let mut inst = instance(&s).unwrap();
        let err = inst.execute(&[], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
    }
}
