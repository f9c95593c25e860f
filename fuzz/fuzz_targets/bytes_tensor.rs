//! BYTES tensor data (u32 little-endian length, then the bytes, per element) as it arrives in a binary input
//! or `raw_input_contents`: the element iterator, the count validation relies on, the offsets the scheduler
//! splits batch outputs at, and the round trip through `push_bytes_element` and JSON.
#![no_main]

use bytes::Bytes;
use inferd::protocol::json::{decode_data, JsonData};
use inferd::tensor::{bytes_elements, bytes_offset, count_bytes_elements, push_bytes_element, DataType, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let items: Vec<Result<&[u8], ()>> = bytes_elements(data).collect();
    // At most one error, and only as the last item: the iterator stops at a truncated element.
    let errors = items.iter().filter(|e| e.is_err()).count();
    assert!(errors <= 1);
    assert!(errors == 0 || items.last().unwrap().is_err());
    let elems: Vec<&[u8]> = items.iter().filter_map(|e| e.ok()).collect();
    let well_formed = errors == 0;
    // The count is the iterator's, and an error exactly when the iterator reports one.
    match count_bytes_elements(data, "t") {
        Ok(n) => {
            assert!(well_formed);
            assert_eq!(n, elems.len());
        }
        Err(_) => assert!(!well_formed),
    }
    // Offsets: element i starts after i (length, bytes) pairs, never past the end, and at the end beyond
    // the last element.
    let mut rebuilt = Vec::with_capacity(data.len());
    for (i, e) in elems.iter().enumerate() {
        let at = bytes_offset(data, i);
        assert_eq!(at, rebuilt.len());
        assert_eq!(&data[at + 4..at + 4 + e.len()], *e);
        push_bytes_element(&mut rebuilt, e);
    }
    let end = bytes_offset(data, elems.len());
    assert_eq!(end, rebuilt.len());
    assert_eq!(&data[..end], &rebuilt[..]);
    for extra in [1, 2, 1000] {
        let at = bytes_offset(data, elems.len() + extra);
        assert!(at <= data.len());
        if well_formed {
            assert_eq!(at, data.len());
        }
    }
    if well_formed {
        assert_eq!(end, data.len());
    }
    // Splitting at element boundaries (as batch outputs are split per request) and concatenating gives back
    // the buffer.
    if well_formed && !elems.is_empty() {
        let cut = bytes_offset(data, elems.len() / 2);
        let left = count_bytes_elements(&data[..cut], "t").unwrap();
        let right = count_bytes_elements(&data[cut..], "t").unwrap();
        assert_eq!(left + right, elems.len());
    }
    // As an output written to JSON and sent back as an input: the same bytes when every element is UTF-8.
    let t = Tensor {
        name: "t".into(),
        datatype: DataType::Bytes,
        shape: vec![elems.len() as i64],
        data: Bytes::copy_from_slice(data),
    };
    let json = serde_json::to_string(&JsonData(&t)).expect("BYTES serialize");
    let mut back = Vec::new();
    decode_data(&json, DataType::Bytes, "t", &mut back).expect("our JSON reads back");
    if elems.iter().all(|e| std::str::from_utf8(e).is_ok()) {
        assert_eq!(&back[..], &data[..end]);
    }
    assert_eq!(count_bytes_elements(&back, "t").unwrap(), elems.len());
});
