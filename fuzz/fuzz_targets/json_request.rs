//! A REST infer body without the binary extension (no `Inference-Header-Content-Length`): the whole body is
//! the JSON request, decoded as `protocol::http::infer` does, then size-checked, validated and echoed.
#![no_main]

use bytes::Bytes;
use inferd::protocol::binary::decode_request;
use inferd::tensor::count_bytes_elements;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(decoded) = decode_request(common::model(), &body, None) else {
        return;
    };
    // Output options name outputs the request asks for.
    let asked = |name: &str| decoded.request.outputs.iter().any(|o| o.name == name);
    assert!(decoded.binary.named.iter().all(|(name, _)| asked(name)));
    for t in &decoded.request.inputs {
        // JSON data holds whole elements only; BYTES is well-formed length-prefixed data.
        match t.datatype.size() {
            Some(size) => assert_eq!(t.data.len() % size, 0, "{}", t.name),
            None => {
                count_bytes_elements(&t.data, &t.name).expect("BYTES from JSON strings is well formed");
            }
        }
    }
    common::serve(&decoded.request, &decoded.binary);
});
