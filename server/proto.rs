//! Types generated from `proto/` (package `inference`): the gRPC protocol and Triton's ModelConfig.
#![allow(clippy::all, missing_docs)]
tonic::include_proto!("inference");

/// The compiled descriptors of both files, for reading config.pbtxt and writing config JSON by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");

impl model_infer_request::InferInputTensor {
    /// An input by name, datatype and shape, whose data travels in `raw_input_contents`.
    pub fn raw(name: &str, datatype: &str, shape: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        }
    }
}
