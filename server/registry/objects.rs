//! Object storage as a model repository, through `object_store` (S3 and S3-compatible stores, GCS, Azure Blob):
//! the Triton layout under a prefix, `<prefix>/<model>/config.pbtxt` and `<prefix>/<model>/<version>/<file>`.
//! Credentials come the way each provider's own tools find them (for S3: `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, web
//! identity through `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, the container and instance metadata
//! services; anonymous with `AWS_SKIP_SIGNATURE=true`).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::error::{chain, SyncError};
use super::location::Location;
use super::remote::{Fetch, Listed, RemoteFile, RemoteModel};
use crate::model_name::ModelName;
use crate::repository::paths;

pub struct ObjectSource {
    repository: String,
    /// Listings: a short timeout, so an unreachable store is reported in seconds.
    store: Arc<dyn ObjectStore>,
    /// Downloads: a model file may take long.
    downloads: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
}

/// How long one listing request may take, and one download.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bounded retries and timeouts: an unreachable store is reported within seconds, not minutes (the models
/// keep serving meanwhile, and the next poll tries again). `total`: one request, its body included.
fn client_options(total: Duration) -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(total);
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    };
    (options, retry)
}

/// Whether the environment names an endpoint over plain HTTP (a MinIO or other in-cluster store).
fn env_endpoint_is_http() -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v.starts_with("http://")))
}

/// An S3 bucket's client: credentials, region and endpoint from the environment as AWS tools read them, or the
/// endpoint a Triton-style URL names (an S3-compatible store at its own address: path-style requests, plain
/// HTTP if it says so).
pub(super) fn s3_store(
    bucket: &str,
    endpoint: Option<&str>,
    total: Duration,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let (options, retry) = client_options(total);
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_client_options(options.with_allow_http(env_endpoint_is_http()));
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    Ok(Arc::new(builder.build()?))
}

impl ObjectSource {
    pub fn new(location: &Location) -> Result<Self, SyncError> {
        let repository = location.to_string();
        let setup = |e: object_store::Error| SyncError::Setup {
            repository: repository.clone(),
            cause: chain(&e),
        };
        let bucket = match location {
            Location::S3(b) | Location::Gcs(b) | Location::Azure(b) => b,
            Location::Local(_) | Location::Mlflow(_) => {
                return Err(SyncError::Setup {
                    repository,
                    cause: "not object storage".into(),
                })
            }
        };
        let build = |total: Duration| -> Result<Arc<dyn ObjectStore>, object_store::Error> {
            let (options, retry) = client_options(total);
            Ok(match location {
                Location::Gcs(b) => Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&b.bucket)
                        .with_retry(retry)
                        .with_client_options(options)
                        .build()?,
                ),
                Location::Azure(b) => Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_container_name(&b.bucket)
                        .with_retry(retry)
                        .with_client_options(options)
                        .build()?,
                ),
                _ => s3_store(&bucket.bucket, bucket.endpoint.as_deref(), total)?,
            })
        };
        let store = build(LIST_TIMEOUT).map_err(setup)?;
        let downloads = build(DOWNLOAD_TIMEOUT).map_err(setup)?;
        let prefix = (!bucket.prefix.is_empty()).then(|| ObjectPath::from(bucket.prefix.as_str()));
        Ok(Self {
            repository,
            store,
            downloads,
            prefix,
        })
    }

    /// Every object under the prefix, grouped by model folder.
    pub async fn list(&self) -> Result<Listed, SyncError> {
        let objects: Vec<_> =
            self.store
                .list(self.prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| SyncError::List {
                    repository: self.repository.clone(),
                    cause: chain(&e),
                })?;
        let mut listed = Listed::default();
        let mut models: BTreeMap<ModelName, RemoteModel> = BTreeMap::new();
        let skip = self.prefix.as_ref().map_or(0, |p| p.parts().count());
        for meta in objects {
            let parts: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_string())
                .collect();
            // Files beside the model folders (a README) are not models.
            let [model, rest @ ..] = &parts[..] else { continue };
            if rest.is_empty() {
                continue;
            }
            let name = match ModelName::parse(model) {
                Ok(name) => name,
                Err(e) => {
                    listed.passed_over.push(e.to_string());
                    continue;
                }
            };
            let rel = rest.join("/");
            if paths::remote_file(&rel).is_none() {
                listed.passed_over.push(format!(
                    "{}: no file of a model folder can be called that",
                    meta.location
                ));
                continue;
            }
            let etag = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
            let file = RemoteFile {
                etag,
                size: meta.size,
                fetch: Fetch::Object {
                    store: self.downloads.clone(),
                    path: meta.location.clone(),
                },
            };
            models.entry(name).or_default().files.insert(rel, file);
        }
        // A zero-byte "folder" marker some tools write (`1/`) is a folder of other files, not a file. Keys are
        // sorted, and a folder's files sort right after it (`1`, then `1/...`), unless a name such as `1.txt`
        // sorts between: compare each key with the next few.
        for model in models.values_mut() {
            let keys: Vec<&String> = model.files.keys().collect();
            let folders: Vec<String> = keys
                .iter()
                .enumerate()
                .filter(|(i, k)| {
                    keys[i + 1..]
                        .iter()
                        .take_while(|o| o.starts_with(k.as_str()))
                        .any(|o| o.as_bytes().get(k.len()) == Some(&b'/'))
                })
                .map(|(_, k)| (*k).clone())
                .collect();
            for f in folders {
                model.files.remove(&f);
            }
        }
        listed.models = models;
        Ok(listed)
    }
}
