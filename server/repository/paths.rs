//! Paths a config or a load request names, checked before anything is read or written through them. Each must
//! stay inside the model's own folder (the repository's, or a load's staging folder): a config's file names
//! (`default_model_filename`, an output's `label_filename`) are one plain path component, and a load's
//! `file:<version>/<path>` overrides are a version folder and plain components under it. The check is made on
//! the text alone, so the answer is the same whether or not something exists where a bad path points.
use std::path::{Component, Path, PathBuf};

use crate::model_name::{component_rule, shown};

/// Most path components an override file may have under its version folder, and most bytes in all: well
/// inside what a filesystem takes below the staging folder.
const MAX_OVERRIDE_DEPTH: usize = 16;
const MAX_OVERRIDE_BYTES: usize = 1024;

/// A path from a config or a request that would leave the model's folder, or cannot name a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{field} '{value}' must be a file name inside the model's folder (no '/', '\\', '.' or '..', NUL or control characters, at most 255 bytes)")]
    FileName { field: &'static str, value: String },
    #[error("file override 'file:{0}' must be '<version>/<file name>', inside the model's folder")]
    Override(String),
    #[error("file overrides 'file:{0}' and 'file:{1}' cannot both be written: one would be a folder of the other, or they are the same file")]
    OverrideClash(String, String),
}

/// One plain path component: what a file or folder in a model's folder may be called (a model name's rules).
fn plain(part: &str) -> bool {
    component_rule(part).is_none()
}

/// A file name a config gives (`field` says which), refused if it is not one plain component.
pub fn file_name<'a>(field: &'static str, name: &'a str) -> Result<&'a str, PathError> {
    if plain(name) {
        Ok(name)
    } else {
        Err(PathError::FileName {
            field,
            value: shown(name, 128),
        })
    }
}

/// `dir/name` for a file name a config gives, as `file_name` checks it.
pub fn file_in(dir: &Path, field: &'static str, name: &str) -> Result<PathBuf, PathError> {
    file_name(field, name).map(|n| dir.join(n))
}

/// Where a `file:<version>/<path>` override goes, relative to the model's folder: a numbered version folder,
/// then one or more plain components (at most `MAX_OVERRIDE_DEPTH`, `MAX_OVERRIDE_BYTES` in all).
pub fn override_file(rel: &str) -> Result<PathBuf, PathError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let ok = (2..=MAX_OVERRIDE_DEPTH + 1).contains(&parts.len())
        && rel.len() <= MAX_OVERRIDE_BYTES
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts.iter().all(|p| plain(p));
    // Belt and braces: what the path means to the OS must agree with what the text says.
    let path = PathBuf::from(rel);
    if ok && path.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(path)
    } else {
        Err(PathError::Override(shown(rel, 128)))
    }
}

/// Where a file a remote repository lists under a model's folder goes in the model's cached copy: plain
/// components (a file at the top, such as `config.pbtxt`, or under version folders), as deep and as long as an
/// override may be. None for a key no Triton layout has (`..`, an empty part): such a file is passed over.
pub fn remote_file(rel: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    let ok = parts.len() <= MAX_OVERRIDE_DEPTH + 1 && rel.len() <= MAX_OVERRIDE_BYTES && parts.iter().all(|p| plain(p));
    let path = PathBuf::from(rel);
    (ok && path.components().all(|c| matches!(c, Component::Normal(_)))).then_some(path)
}

/// Every override of a load request, checked one by one and together: no file may be written twice, or
/// where another needs a folder.
pub fn override_files<'a>(rels: impl IntoIterator<Item = &'a str>) -> Result<Vec<PathBuf>, PathError> {
    let paths = rels.into_iter().map(override_file).collect::<Result<Vec<_>, _>>()?;
    for (i, a) in paths.iter().enumerate() {
        if let Some(b) = paths[i + 1..].iter().find(|b| b.starts_with(a) || a.starts_with(b)) {
            return Err(PathError::OverrideClash(
                shown(&a.to_string_lossy(), 128),
                shown(&b.to_string_lossy(), 128),
            ));
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_key_maps_into_the_model_folder_or_is_passed_over() {
        for ok in ["config.pbtxt", "1/model.onnx", "2/sub/dir/weights.bin", "labels.txt"] {
            assert_eq!(remote_file(ok), Some(PathBuf::from(ok)), "{ok}");
        }
        for bad in ["", "../x", "1/../../x", "1//x", "./x", "1/x/", "a\\b", "1/\u{0}"] {
            assert_eq!(remote_file(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_config_file_name_is_one_plain_component() {
        let dir = Path::new("/repo/m");
        assert_eq!(
            file_in(dir, "label_filename", "labels.txt").unwrap(),
            dir.join("labels.txt")
        );
        assert_eq!(
            file_in(dir, "x", "model.savedmodel").unwrap(),
            dir.join("model.savedmodel")
        );
        for bad in [
            "",
            ".",
            "..",
            "../labels.txt",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            let err = file_in(dir, "default_model_filename", bad).unwrap_err().to_string();
            assert!(err.starts_with("default_model_filename '"), "{err}");
        }
    }

    #[test]
    fn an_override_file_is_a_version_folder_then_plain_components() {
        assert_eq!(override_file("1/model.onnx").unwrap(), PathBuf::from("1/model.onnx"));
        assert_eq!(
            override_file("12/sub/vocab.txt").unwrap(),
            PathBuf::from("12/sub/vocab.txt")
        );
        for bad in [
            "1",
            "model.onnx",
            "x/model.onnx",
            "1/../x",
            "../1/x",
            "/1/x",
            "1//x",
            "1/./x",
            "1/a\0b",
            "-1/x",
        ] {
            assert!(override_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overrides_must_not_clash_or_nest_too_deep() {
        assert!(override_files(["1/model.onnx", "1/vocab/a.txt", "2/model.onnx"]).is_ok());
        for clash in [["1/a", "1/a/b"], ["1/a/b", "1/a"], ["1/a", "1/a"]] {
            let err = override_files(clash).unwrap_err().to_string();
            assert!(err.contains("cannot both be written"), "{err}");
        }
        let deep = format!("1/{}", vec!["d"; MAX_OVERRIDE_DEPTH + 1].join("/"));
        assert!(override_file(&deep).is_err());
        let long = format!("1/{}", vec!["x".repeat(200); 6].join("/"));
        assert!(override_file(&long).is_err());
    }

    #[test]
    fn the_refusal_does_not_depend_on_what_exists() {
        let dir = Path::new("/");
        let a = file_in(dir, "f", "../etc/passwd").unwrap_err().to_string();
        let b = file_in(dir, "f", "../etc/no-such-file").unwrap_err().to_string();
        assert_eq!(a.replace("passwd", "X"), b.replace("no-such-file", "X"));
    }
}
