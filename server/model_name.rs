//! Model names as requests bring them. A model name becomes a folder name (the repository's, a load's staging
//! folder), so one that could climb out of its folder, or that no filesystem could hold, is refused where it
//! enters: in the front-ends' decoders, the repository scan and `--load-model`. Past that point a `ModelName`
//! is known to be one plain path component.
use std::fmt;

use crate::error::InferError;

/// The longest name, in bytes: what a folder name may be on common filesystems.
pub const MAX_MODEL_NAME_BYTES: usize = 255;

/// The rule a name breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameRule {
    #[error("a model name must not be empty")]
    Empty,
    #[error("a model name must not be '.' or '..'")]
    Dots,
    #[error("a model name must not contain '/' or '\\'")]
    Separator,
    #[error("a model name must not contain NUL or control characters")]
    Control,
    #[error("a model name must be at most {MAX_MODEL_NAME_BYTES} bytes, got {0}")]
    TooLong(usize),
}

/// A name refused, shown (escaped, and cut short when long) with the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid model name '{shown}': {rule}")]
pub struct NameError {
    shown: String,
    pub rule: NameRule,
}

impl From<NameError> for InferError {
    fn from(e: NameError) -> Self {
        InferError::InvalidArgument(e.to_string())
    }
}

/// A model name that is one plain path component.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName(String);

/// The rule `part` breaks as one plain path component (a model's folder, or a file in it), if any.
pub fn component_rule(part: &str) -> Option<NameRule> {
    if part.is_empty() {
        Some(NameRule::Empty)
    } else if part.len() > MAX_MODEL_NAME_BYTES {
        Some(NameRule::TooLong(part.len()))
    } else if part == "." || part == ".." {
        Some(NameRule::Dots)
    } else if part.contains(['/', '\\']) {
        Some(NameRule::Separator)
    } else if part.chars().any(char::is_control) {
        Some(NameRule::Control)
    } else {
        None
    }
}

/// Untrusted text as an answer or a log line may show it: escaped (no control characters get through) and,
/// past `max_chars`, cut short.
pub fn shown(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).flat_map(char::escape_debug).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

impl ModelName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        match component_rule(name) {
            None => Ok(Self(name.to_string())),
            Some(rule) => Err(NameError {
                shown: shown(name, 64),
                rule,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ModelName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for ModelName {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A model, and optionally one of its versions (a number or a traffic label), as a request names them. Built
/// by the front-ends' decoders: the name checked, and an empty version (what gRPC sends for "any") made
/// `None`, once, so nothing further in has to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    pub name: ModelName,
    pub version: Option<String>,
}

impl ModelRef {
    pub fn parse(name: &str, version: Option<&str>) -> Result<Self, NameError> {
        Ok(Self {
            name: ModelName::parse(name)?,
            version: version.filter(|v| !v.is_empty()).map(str::to_string),
        })
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> NameRule {
        ModelName::parse(name).unwrap_err().rule
    }

    #[test]
    fn a_name_is_one_plain_path_component_of_at_most_255_bytes() {
        for good in [
            "simple",
            "my-model_v2.onnx",
            "...",
            ".hidden",
            "модель",
            "a b",
            &"x".repeat(255),
        ] {
            assert_eq!(ModelName::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(rule(""), NameRule::Empty);
        assert_eq!(rule("."), NameRule::Dots);
        assert_eq!(rule(".."), NameRule::Dots);
        for sep in ["a/b", "/abs", "../x", "a\\b", "\\"] {
            assert_eq!(rule(sep), NameRule::Separator, "{sep}");
        }
        for control in ["a\0b", "a\nb", "\t", "a\u{7f}", "a\u{85}b"] {
            assert_eq!(rule(control), NameRule::Control, "{control:?}");
        }
        assert_eq!(rule(&"x".repeat(256)), NameRule::TooLong(256));
        assert_eq!(rule(&"é".repeat(128)), NameRule::TooLong(256), "bytes, not characters");
    }

    #[test]
    fn a_refusal_shows_the_name_escaped_and_short_and_names_the_rule() {
        let e = ModelName::parse("a\0b").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid model name 'a\\0b': a model name must not contain NUL or control characters"
        );
        let e = ModelName::parse(&"y".repeat(10_000)).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.ends_with("at most 255 bytes, got 10000"), "{e}");
    }

    #[test]
    fn an_empty_version_means_none() {
        assert_eq!(ModelRef::parse("m", Some("")).unwrap().version, None);
        assert_eq!(ModelRef::parse("m", Some("2")).unwrap().version(), Some("2"));
        assert!(ModelRef::parse("", None).is_err());
    }
}
