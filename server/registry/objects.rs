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
use super::location::{Bucket, Location};
use super::remote::{Fetch, Listed, RemoteFile, RemoteModel};
use crate::model_name::ModelName;
use crate::repository::paths;

pub struct ObjectSource {
    repository: String,
    store: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
}

/// Bounded retries and timeouts: an unreachable store is reported within seconds, not minutes (the models
/// keep serving meanwhile, and the next poll tries again).
fn client_options() -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300));
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
pub(super) fn s3_store(bucket: &str, endpoint: Option<&str>) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let (options, retry) = client_options();
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
        let (options, retry) = client_options();
        let (store, bucket): (Arc<dyn ObjectStore>, &Bucket) = match location {
            Location::S3(b) => (s3_store(&b.bucket, b.endpoint.as_deref()).map_err(setup)?, b),
            Location::Gcs(b) => {
                let builder = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&b.bucket)
                    .with_retry(retry)
                    .with_client_options(options);
                (Arc::new(builder.build().map_err(setup)?), b)
            }
            Location::Azure(b) => {
                let builder = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&b.bucket)
                    .with_retry(retry)
                    .with_client_options(options);
                (Arc::new(builder.build().map_err(setup)?), b)
            }
            Location::Local(_) | Location::Mlflow(_) => {
                return Err(SyncError::Setup {
                    repository,
                    cause: "not object storage".into(),
                })
            }
        };
        let prefix = (!bucket.prefix.is_empty()).then(|| ObjectPath::from(bucket.prefix.as_str()));
        Ok(Self {
            repository,
            store,
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
                    store: self.store.clone(),
                    path: meta.location.clone(),
                },
            };
            models.entry(name).or_default().files.insert(rel, file);
        }
        // A zero-byte "folder" marker some tools write (`1/`) is a folder of other files, not a file.
        for model in models.values_mut() {
            let folders: Vec<String> = model
                .files
                .keys()
                .filter(|k| {
                    model
                        .files
                        .keys()
                        .any(|o| o.len() > k.len() && o.starts_with(&format!("{k}/")))
                })
                .cloned()
                .collect();
            for f in folders {
                model.files.remove(&f);
            }
        }
        listed.models = models;
        Ok(listed)
    }
}
