//! Checks a request's tensors against the model's declared inputs, with messages that name the input and
//! what was expected, and orders them the way the model declares them.
use crate::error::{InferError, InferResult};
use crate::spec::ModelSpec;
use crate::tensor::{count_bytes_elements, element_count, Tensor};

/// A request that passed validation: inputs in the model's order (`None` for an absent optional input).
pub struct Validated {
    pub inputs: Vec<Option<Tensor>>,
    /// Rows along the batch dimension (1 for a model that does not batch).
    pub batch: usize,
}

fn fmt_shape(s: &[i64]) -> String {
    let parts: Vec<String> = s.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

pub fn validate(spec: &ModelSpec, tensors: Vec<Tensor>) -> InferResult<Validated> {
    let model = &spec.name;
    let mut inputs: Vec<Option<Tensor>> = vec![None; spec.inputs.len()];
    let mut batch: Option<usize> = None;
    for t in tensors {
        let Some(idx) = spec.inputs.iter().position(|i| i.name == t.name) else {
            return Err(InferError::invalid(format!(
                "unexpected inference input '{}' for model '{model}'",
                t.name
            )));
        };
        let want = &spec.inputs[idx];
        if inputs[idx].is_some() {
            return Err(InferError::invalid(format!(
                "input '{}' was given more than once for model '{model}'",
                t.name
            )));
        }
        if t.datatype != want.datatype {
            return Err(InferError::invalid(format!(
                "inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                t.name, t.datatype, want.datatype
            )));
        }
        let expected = spec.metadata_shape(want);
        let dims = if spec.batches() {
            t.shape.get(1..)
        } else {
            Some(&t.shape[..])
        };
        let fits = dims.is_some_and(|d| {
            d.len() == want.dims.len() && d.iter().zip(&want.dims).all(|(&g, &w)| g >= 0 && (w == -1 || g == w))
        }) && t.shape.iter().all(|&d| d >= 0);
        if !fits {
            return Err(InferError::invalid(format!(
                "unexpected shape for input '{}' for model '{model}'. Expected {}, got {}",
                t.name,
                fmt_shape(&expected),
                fmt_shape(&t.shape)
            )));
        }
        if spec.batches() {
            let rows = t.shape[0] as usize;
            if rows == 0 || rows > spec.max_batch_size {
                return Err(InferError::invalid(format!(
                    "inference request batch-size must be <= {} for '{model}', got {rows} for input '{}'",
                    spec.max_batch_size, t.name
                )));
            }
            match batch {
                Some(b) if b != rows => {
                    return Err(InferError::invalid(format!(
                        "input '{}' has batch size {rows} but other inputs of the request have {b} for model '{model}'",
                        t.name
                    )))
                }
                _ => batch = Some(rows),
            }
        }
        let elements = element_count(&t.shape).ok_or_else(|| {
            InferError::invalid(format!(
                "shape {} of input '{}' is too large",
                fmt_shape(&t.shape),
                t.name
            ))
        })?;
        match t.datatype.size() {
            Some(size) => {
                let expected_bytes = elements.saturating_mul(size);
                if t.data.len() != expected_bytes {
                    return Err(InferError::invalid(format!(
                        "input byte size mismatch for input '{}' for model '{model}'. Expected {expected_bytes}, got {}",
                        t.name,
                        t.data.len()
                    )));
                }
            }
            None => {
                let got = count_bytes_elements(&t.data, &t.name)?;
                if got != elements {
                    return Err(InferError::invalid(format!(
                        "unexpected number of string elements {got} for input '{}' for model '{model}', expecting {elements}",
                        t.name
                    )));
                }
            }
        }
        inputs[idx] = Some(t);
    }
    let missing: Vec<&str> = spec
        .inputs
        .iter()
        .zip(&inputs)
        .filter(|(s, t)| t.is_none() && !s.optional)
        .map(|(s, _)| s.name.as_str())
        .collect();
    if !missing.is_empty() {
        let given: Vec<&str> = inputs.iter().flatten().map(|t| t.name.as_str()).collect();
        return Err(InferError::invalid(format!(
            "expected {} inputs but got {} inputs for model '{model}'. Got input(s) {given:?}, but missing required input(s) {missing:?}. Please provide all required input(s).",
            spec.inputs.iter().filter(|s| !s.optional).count(),
            given.len()
        )));
    }
    Ok(Validated {
        inputs,
        batch: batch.unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TensorSpec;
    use crate::tensor::DataType;
    use bytes::Bytes;

    fn spec() -> ModelSpec {
        let t = |n: &str| TensorSpec {
            name: n.into(),
            datatype: DataType::Int32,
            dims: vec![16],
            reshape: None,
            optional: false,
        };
        ModelSpec {
            name: "simple".into(),
            platform: String::new(),
            max_batch_size: 8,
            inputs: vec![t("INPUT0"), t("INPUT1")],
            outputs: vec![t("OUTPUT0")],
        }
    }

    fn input(name: &str, shape: Vec<i64>, bytes: usize) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Int32,
            shape,
            data: Bytes::from(vec![0u8; bytes]),
        }
    }

    fn err(r: InferResult<Validated>) -> String {
        match r {
            Err(InferError::InvalidArgument(m)) => m,
            Err(e) => panic!("wrong kind: {e:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn accepts_inputs_in_any_order_and_returns_model_order() {
        let v = validate(
            &spec(),
            vec![input("INPUT1", vec![2, 16], 128), input("INPUT0", vec![2, 16], 128)],
        )
        .unwrap();
        assert_eq!(v.batch, 2);
        assert_eq!(v.inputs[0].as_ref().unwrap().name, "INPUT0");
    }

    #[test]
    fn names_the_input_and_the_expectation() {
        assert!(err(validate(&spec(), vec![input("X", vec![1, 16], 64)])).contains("unexpected inference input 'X'"));
        assert!(err(validate(
            &spec(),
            vec![input("INPUT0", vec![1, 15], 60), input("INPUT1", vec![1, 16], 64)]
        ))
        .contains("Expected [-1,16], got [1,15]"));
        assert!(err(validate(
            &spec(),
            vec![
                input("INPUT0", vec![9, 16], 9 * 64),
                input("INPUT1", vec![9, 16], 9 * 64)
            ]
        ))
        .contains("must be <= 8"));
        assert!(err(validate(
            &spec(),
            vec![input("INPUT0", vec![1, 16], 60), input("INPUT1", vec![1, 16], 64)]
        ))
        .contains("Expected 64, got 60"));
        assert!(err(validate(&spec(), vec![input("INPUT0", vec![1, 16], 64)]))
            .contains("missing required input(s) [\"INPUT1\"]"));
        let mut wrong_type = input("INPUT0", vec![1, 16], 64);
        wrong_type.datatype = DataType::Fp32;
        assert!(err(validate(&spec(), vec![wrong_type]))
            .contains("data-type is 'FP32', but model 'simple' expects 'INT32'"));
    }
}
