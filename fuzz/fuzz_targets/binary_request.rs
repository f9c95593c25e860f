//! A REST infer body with Triton's binary tensor data extension: the first two bytes (u16, little-endian)
//! are the `Inference-Header-Content-Length` header, the rest is the body (a JSON header, then the binary
//! section). Decoded as `protocol::http::infer` does, then size-checked, validated and echoed.
#![no_main]

use bytes::Bytes;
use inferd::protocol::binary::decode_request;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((len, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let header_length = usize::from(u16::from_le_bytes(*len));
    let body = Bytes::copy_from_slice(body);
    let Ok(decoded) = decode_request(common::model(), &body, Some(header_length)) else {
        return;
    };
    // Every byte after the JSON header belongs to exactly one binary input.
    let body_start = body.as_ptr() as usize;
    let binary: usize = decoded
        .request
        .inputs
        .iter()
        .filter(|t| {
            let start = t.data.as_ptr() as usize;
            start >= body_start + header_length && start < body_start + body.len()
        })
        .map(|t| t.data.len())
        .sum();
    assert_eq!(binary, body.len() - header_length);
    common::serve(&decoded.request, &decoded.binary);
});
