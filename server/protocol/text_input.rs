//! What the OpenAI and TEI routes share: their API key check, and their `input` / `inputs` field, which holds
//! a string, a list of strings, a list of token ids, or a list of such lists.
use axum::http::header;
use axum::http::request::Parts;
use serde_json::Value;

use crate::admin::access::same_secret;
use crate::error::{InferError, InferResult};

/// The key the text routes want (`--api-key`), if any: sent as `Authorization: Bearer <key>`, as OpenAI clients
/// always send one.
#[derive(Clone, Debug, Default)]
pub struct ApiKey(pub Option<String>);

impl ApiKey {
    pub fn check(&self, parts: &Parts) -> InferResult<()> {
        let Some(key) = &self.0 else { return Ok(()) };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if same_secret(presented.trim(), key) {
            Ok(())
        } else {
            Err(InferError::Unauthenticated(
                "Incorrect API key provided: send 'Authorization: Bearer <key>' with the key inferd was started \
                 with (--api-key)"
                    .into(),
            ))
        }
    }
}

/// Token ids as a list of numbers, if `value` is one.
fn token_ids(value: &[Value]) -> Option<Vec<u32>> {
    value
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// The texts `value` (the field `field`) holds; token ids are turned into text by `decode`.
pub fn texts(value: &Value, field: &str, decode: impl Fn(&[u32]) -> InferResult<String>) -> InferResult<Vec<String>> {
    let wrong = || {
        InferError::invalid(format!(
            "'{field}' must be a string, a list of strings, a list of token ids or a list of lists of token ids"
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => Err(InferError::invalid(format!("'{field}' is empty"))),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        }
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Ok(vec![decode(&token_ids(items).ok_or_else(wrong)?)?])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(ids) if !ids.is_empty() => decode(&token_ids(ids).ok_or_else(wrong)?),
                _ => Err(wrong()),
            })
            .collect(),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> InferResult<Vec<String>> {
        texts(&v, "input", |ids| Ok(format!("{ids:?}")))
    }

    #[test]
    fn input_is_a_string_strings_token_ids_or_lists_of_them() {
        assert_eq!(read(json!("a")).unwrap(), ["a"]);
        assert_eq!(read(json!(["a", "b"])).unwrap(), ["a", "b"]);
        assert_eq!(read(json!([1, 2])).unwrap(), ["[1, 2]"]);
        assert_eq!(read(json!([[1], [2, 3]])).unwrap(), ["[1]", "[2, 3]"]);
        for bad in [
            json!([]),
            json!(3),
            json!(["a", 1]),
            json!([[]]),
            json!([-1]),
            json!({"a": 1}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad} is refused");
        }
    }
}
