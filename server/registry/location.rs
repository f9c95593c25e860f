//! Where a repository lives, as `--model-repository` names it: a local folder; object storage in Triton's forms
//! (`s3://bucket/prefix`, `s3://host:port/bucket/prefix` over plain HTTP, `s3://https://host:port/bucket/prefix`),
//! `gs://bucket/prefix`, `az://container/prefix`; or an MLflow Model Registry (`mlflow://host:port` over HTTP,
//! `mlflow+https://host:port`).
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(Bucket),
    Gcs(Bucket),
    Azure(Bucket),
    /// The tracking server's base URL (`http://host:port[/path]`).
    Mlflow(String),
}

/// A bucket (or Azure container), with the endpoint a Triton-style URL names and the prefix models sit under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// `http(s)://host:port` for an S3-compatible store; None: the provider's own (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the whole bucket.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("model repository '{text}': {why}")]
pub struct LocationError {
    text: String,
    why: &'static str,
}

impl Location {
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

fn bucket(text: &str, rest: &str, endpoint: Option<String>) -> Result<Bucket, LocationError> {
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(LocationError {
            text: text.into(),
            why: "no bucket named",
        });
    }
    Ok(Bucket {
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// Triton's S3 forms: an explicit scheme before the host, or a first segment with a port (`host:port`, plain
/// HTTP), names an endpoint; otherwise the first segment is the bucket.
fn s3(text: &str, rest: &str) -> Result<Bucket, LocationError> {
    for scheme in ["http://", "https://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(LocationError {
                    text: text.into(),
                    why: "no host named after the endpoint's scheme",
                });
            }
            return bucket(text, path, Some(format!("{scheme}{host}")));
        }
    }
    let first = rest.split('/').next().unwrap_or_default();
    if first.contains(':') {
        let path = &rest[first.len()..];
        return bucket(text, path, Some(format!("http://{first}")));
    }
    bucket(text, rest, None)
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let fail = |why| LocationError { text: text.into(), why };
        let Some((scheme, rest)) = text.split_once("://") else {
            if text.is_empty() {
                return Err(fail("empty"));
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        match scheme {
            "s3" => Ok(Location::S3(s3(text, rest)?)),
            "gs" => Ok(Location::Gcs(bucket(text, rest, None)?)),
            "az" => Ok(Location::Azure(bucket(text, rest, None)?)),
            "mlflow" | "mlflow+http" | "mlflow+https" => {
                let host = rest.trim_end_matches('/');
                if host.is_empty() {
                    return Err(fail("no host named"));
                }
                let http = if scheme == "mlflow+https" { "https" } else { "http" };
                Ok(Location::Mlflow(format!("{http}://{host}")))
            }
            _ => Err(fail(
                "unsupported scheme (a folder, s3://, gs://, az://, mlflow:// or mlflow+https://)",
            )),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_prefix = |f: &mut fmt::Formatter<'_>, scheme: &str, b: &Bucket| {
            write!(f, "{scheme}://")?;
            // Triton's forms: a plain-HTTP endpoint as `host:port`, an HTTPS one with its scheme.
            if let Some(e) = &b.endpoint {
                write!(f, "{}/", e.strip_prefix("http://").unwrap_or(e))?;
            }
            write!(f, "{}", b.bucket)?;
            if !b.prefix.is_empty() {
                write!(f, "/{}", b.prefix)?;
            }
            Ok(())
        };
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(b) => with_prefix(f, "s3", b),
            Location::Gcs(b) => with_prefix(f, "gs", b),
            Location::Azure(b) => with_prefix(f, "az", b),
            Location::Mlflow(url) => {
                let (scheme, rest) = match url.strip_prefix("https://") {
                    Some(rest) => ("mlflow+https", rest),
                    None => ("mlflow", url.trim_start_matches("http://")),
                };
                // Credentials in the URL (`user:password@host`) stay out of logs, errors and metric labels.
                let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
                let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
                write!(f, "{scheme}://{host}")?;
                if !path.is_empty() {
                    write!(f, "/{path}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: Option<&str>, bucket: &str, prefix: &str) -> Location {
        Location::S3(Bucket {
            endpoint: endpoint.map(str::to_string),
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn triton_s3_forms_name_a_bucket_a_prefix_and_maybe_an_endpoint() {
        let cases = [
            ("s3://models", s3(None, "models", "")),
            ("s3://models/team/a/", s3(None, "models", "team/a")),
            (
                "s3://127.0.0.1:9000/models/p",
                s3(Some("http://127.0.0.1:9000"), "models", "p"),
            ),
            ("s3://minio:9000/models", s3(Some("http://minio:9000"), "models", "")),
            (
                "s3://https://s3.example.com:443/models/x",
                s3(Some("https://s3.example.com:443"), "models", "x"),
            ),
            ("s3://http://host:80/b", s3(Some("http://host:80"), "b", "")),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Location>().unwrap(), want, "{text}");
        }
    }

    #[test]
    fn other_schemes_and_folders() {
        assert_eq!("models".parse::<Location>().unwrap(), Location::Local("models".into()));
        assert_eq!(
            "mlflow://127.0.0.1:5000".parse::<Location>().unwrap(),
            Location::Mlflow("http://127.0.0.1:5000".into())
        );
        assert_eq!(
            "mlflow+https://mlflow.example.com/".parse::<Location>().unwrap(),
            Location::Mlflow("https://mlflow.example.com".into())
        );
        assert!(matches!("gs://b/p".parse::<Location>().unwrap(), Location::Gcs(_)));
        assert!(matches!("az://c".parse::<Location>().unwrap(), Location::Azure(_)));
    }

    #[test]
    fn credentials_in_an_mlflow_url_are_not_shown() {
        let shown = "mlflow+https://ci:s3cret@mlflow.example.com/api"
            .parse::<Location>()
            .unwrap()
            .to_string();
        assert_eq!(shown, "mlflow+https://mlflow.example.com/api");
    }

    #[test]
    fn a_location_without_a_bucket_or_with_an_unknown_scheme_is_refused_with_the_reason() {
        for (text, why) in [
            ("s3://", "no bucket"),
            ("s3://host:9000/", "no bucket"),
            ("s3://https:///b", "no host"),
            ("ftp://x/y", "unsupported scheme"),
            ("mlflow://", "no host"),
        ] {
            let e = text.parse::<Location>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn a_location_prints_as_it_was_given() {
        for text in [
            "s3://127.0.0.1:9000/models/p",
            "s3://https://h:443/b/p",
            "s3://b",
            "gs://b/p",
            "az://c/p",
            "mlflow://h:5000",
            "mlflow+https://h",
        ] {
            assert_eq!(text.parse::<Location>().unwrap().to_string(), text);
        }
    }
}
