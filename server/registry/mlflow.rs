//! An MLflow Model Registry as a model repository, through the tracking server's REST API. Every registered
//! model with a version in MLflow's `onnx` flavour (`MLmodel` + `model.onnx` in the version's artifacts) is a
//! model; MLflow's version numbers are its versions. Served: the newest ready version and every version an alias
//! names. Each alias (`champion`, `challenger`) is a traffic label; weights come from tags, a version's
//! `inferd.weight` or the model's `inferd.weight.<alias or version>`; without any, a request that names no
//! version goes to `champion` (or else the newest). The config is the one logged beside the newest served
//! version (`config.pbtxt` or `extra_files/config.pbtxt`), or else completed from the ONNX file; the server
//! writes the labels, weights and versions into it. Artifacts come through the tracking server's artifact proxy
//! (`mlflow-artifacts:` URIs), or straight from object storage when a version's artifacts are on `s3://`.
//!
//! A ready version's artifacts do not change, so each is listed once; the registry's models, versions, aliases
//! and tags are read at every listing (moving an alias changes no timestamp there).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::{chain, SyncError};
use super::remote::{Fetch, Listed, RemoteFile, RemoteModel};
use crate::model_name::ModelName;
use crate::proto::model_version_policy::{PolicyChoice, Specific};
use crate::proto::{ModelConfig, ModelParameter, ModelVersionPolicy};
use crate::repository::{config, paths};

/// Most registered models (and versions) one page asks for: the registry's own upper bound.
const PAGE: &str = "1000";
/// Most pages one search may take (a million items at the registry's largest page).
const MAX_PAGES: usize = 1000;
/// How deep a version's artifact folders are followed.
const MAX_DEPTH: usize = 4;

#[derive(Deserialize, Default)]
struct Tag {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct Alias {
    alias: String,
    version: String,
}

#[derive(Deserialize)]
struct RegisteredModel {
    name: String,
    #[serde(default)]
    aliases: Vec<Alias>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
struct ModelVersion {
    name: String,
    version: String,
    #[serde(default)]
    status: String,
    /// What the version was registered from (a model deleted and registered again has another).
    #[serde(default)]
    source: String,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// A ready version, as the registry lists it.
struct ReadyVersion {
    tags: Vec<Tag>,
    source: String,
}

#[derive(Deserialize, Default)]
struct ModelsPage {
    #[serde(default)]
    registered_models: Vec<RegisteredModel>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct VersionsPage {
    #[serde(default)]
    model_versions: Vec<ModelVersion>,
    next_page_token: Option<String>,
}

/// One page of a search: its items, and the token of the next page (none on the last).
trait Page: DeserializeOwned + Default {
    type Item;
    fn split(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for ModelsPage {
    type Item = RegisteredModel;
    fn split(self) -> (Vec<RegisteredModel>, Option<String>) {
        (self.registered_models, self.next_page_token)
    }
}

impl Page for VersionsPage {
    type Item = ModelVersion;
    fn split(self) -> (Vec<ModelVersion>, Option<String>) {
        (self.model_versions, self.next_page_token)
    }
}

#[derive(Deserialize, Default)]
struct DownloadUri {
    #[serde(default)]
    artifact_uri: String,
}

#[derive(Deserialize)]
struct ArtifactFile {
    path: String,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    file_size: u64,
}

#[derive(Deserialize, Default)]
struct ArtifactList {
    #[serde(default)]
    files: Vec<ArtifactFile>,
}

/// One file of a version's artifacts: its path in the version's folder, size, and where it comes from.
#[derive(Clone)]
struct Artifact {
    path: String,
    size: u64,
    /// Names the file for the cache: the artifact's location (a ready version's artifacts never change).
    tag: String,
    fetch: Fetch,
}

type VersionKey = (String, i64, String);

/// A ready version's artifacts, listed once; None when the version is not in the onnx flavour.
type VersionFiles = Option<Arc<Vec<Artifact>>>;

pub struct MlflowSource {
    repository: String,
    base: Url,
    client: reqwest::Client,
    /// By (model, version, source).
    versions: Mutex<HashMap<VersionKey, VersionFiles>>,
    /// Each model as last listed, answering for a model whose versions cannot be read this time.
    last: Mutex<BTreeMap<ModelName, RemoteModel>>,
    /// Logged configs by their artifact tag (fetched once).
    configs: Mutex<HashMap<String, Arc<String>>>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl MlflowSource {
    pub fn new(repository: &str, base: &str) -> Result<Self, SyncError> {
        let setup = |cause: String| SyncError::Setup {
            repository: repository.to_string(),
            cause,
        };
        let base = Url::parse(&format!("{}/", base.trim_end_matches('/'))).map_err(|e| setup(e.to_string()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| setup(chain(&e.without_url())))?;
        Ok(Self {
            repository: repository.to_string(),
            base,
            client,
            versions: Default::default(),
            last: Default::default(),
            configs: Default::default(),
            stores: Default::default(),
        })
    }

    fn list_error(&self, cause: String) -> SyncError {
        SyncError::List {
            repository: self.repository.clone(),
            cause,
        }
    }

    fn url(&self, path: &str) -> Result<Url, SyncError> {
        self.base.join(path).map_err(|e| self.list_error(e.to_string()))
    }

    /// GETs one REST call of the tracking server; an error answer is reported with MLflow's own message.
    async fn get<T: DeserializeOwned + Default>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, SyncError> {
        let url = self.url(path)?;
        let response = self
            .client
            .get(url)
            .query(query)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.list_error(chain(&e.without_url())))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.list_error(chain(&e.without_url())))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(self.list_error(format!("{path}: {status}: {message}")));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&body).map_err(|e| self.list_error(format!("{path}: {e}")))
    }

    /// Every item of a paged search, following `next_page_token` to the last page.
    async fn all_pages<P: Page>(&self, path: &str) -> Result<Vec<P::Item>, SyncError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        loop {
            let mut query = vec![("max_results", PAGE)];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let (items, next) = self.get::<P>(path, &query).await?.split();
            all.extend(items);
            match next.filter(|t| !t.is_empty()) {
                // A server that hands back a token it gave before would be paged forever.
                Some(t) if seen.insert(t.clone()) && seen.len() <= MAX_PAGES => token = Some(t),
                Some(_) => {
                    return Err(self.list_error(format!(
                        "{path}: the server's pages do not end (a page token repeats, or over {MAX_PAGES} pages)"
                    )))
                }
                None => return Ok(all),
            }
        }
    }

    /// A version's artifacts (listed once per version).
    async fn version_files(&self, model: &str, version: i64, source: &str) -> Result<VersionFiles, SyncError> {
        let key = (model.to_string(), version, source.to_string());
        if let Some(known) = self.versions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(known.clone());
        }
        let v = version.to_string();
        let uri: DownloadUri = self
            .get(
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", model), ("version", &v)],
            )
            .await?;
        let artifacts = match uri.artifact_uri.split_once(':') {
            Some(("mlflow-artifacts", rest)) => self.proxied(rest).await?,
            Some(("s3", _)) => self.listed_on_s3(&uri.artifact_uri).await?,
            _ => {
                tracing::warn!(
                    repository = %self.repository,
                    "MLflow model '{model}' version {version}: artifacts at {}, which the server cannot read (it \
                     reads the tracking server's artifact proxy, mlflow-artifacts:, and s3://)",
                    uri.artifact_uri
                );
                Vec::new()
            }
        };
        let is_onnx = ["MLmodel", "model.onnx"]
            .iter()
            .all(|f| artifacts.iter().any(|a| a.path == *f));
        let files = is_onnx.then(|| Arc::new(artifacts));
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, files.clone());
        Ok(files)
    }

    /// Every file under an `mlflow-artifacts:` URI, through the tracking server's proxy.
    async fn proxied(&self, rest: &str) -> Result<Vec<Artifact>, SyncError> {
        // `mlflow-artifacts:/<path>` or `mlflow-artifacts://host:port/<path>`: the proxy serves the path.
        let root = match rest.strip_prefix("//") {
            Some(authority_and_path) => authority_and_path.split_once('/').map_or("", |(_, p)| p),
            None => rest,
        }
        .trim_matches('/')
        .to_string();
        let mut out = Vec::new();
        let mut folders = vec![(String::new(), 0usize)];
        while let Some((folder, depth)) = folders.pop() {
            let path = if folder.is_empty() {
                root.clone()
            } else {
                format!("{root}/{folder}")
            };
            let list: ArtifactList = self
                .get("api/2.0/mlflow-artifacts/artifacts", &[("path", &path)])
                .await?;
            for f in list.files {
                // Names come relative to the folder listed (older servers: relative to the root).
                let name = f.path.rsplit('/').next().unwrap_or_default().to_string();
                let rel = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                if paths::remote_file(&rel).is_none() {
                    continue;
                }
                if f.is_dir {
                    if depth < MAX_DEPTH {
                        folders.push((rel, depth + 1));
                    }
                    continue;
                }
                let mut url = self.url("api/2.0/mlflow-artifacts/artifacts/")?;
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty();
                    segments.extend(root.split('/').chain(rel.split('/')));
                }
                out.push(Artifact {
                    tag: format!("mlflow-artifacts:/{root}/{rel}"),
                    path: rel,
                    size: f.file_size,
                    fetch: Fetch::Http {
                        client: self.client.clone(),
                        url: url.to_string(),
                    },
                });
            }
        }
        Ok(out)
    }

    /// Every file under an `s3://bucket/prefix` artifact URI, read with the AWS credentials the server has.
    async fn listed_on_s3(&self, uri: &str) -> Result<Vec<Artifact>, SyncError> {
        let rest = uri.trim_start_matches("s3://");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store = {
            let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
            match stores.get(bucket) {
                Some(s) => s.clone(),
                None => {
                    let store = super::objects::s3_store(bucket, None, super::objects::DOWNLOAD_TIMEOUT)
                        .map_err(|e| self.list_error(chain(&e)))?;
                    stores.insert(bucket.to_string(), store.clone());
                    store
                }
            }
        };
        let prefix = ObjectPath::from(prefix.trim_matches('/'));
        let skip = prefix.parts().count();
        let objects: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.list_error(chain(&e)))?;
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                let rel = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                paths::remote_file(&rel)?;
                Some(Artifact {
                    tag: format!("{uri}/{rel}#{}", meta.e_tag.clone().unwrap_or_default()),
                    path: rel,
                    size: meta.size,
                    fetch: Fetch::Object {
                        store: store.clone(),
                        path: meta.location,
                    },
                })
            })
            .collect())
    }

    /// The config logged beside a version (`config.pbtxt` or `extra_files/config.pbtxt`), fetched once.
    async fn logged_config(&self, files: &[Artifact]) -> Result<Option<Arc<String>>, SyncError> {
        let Some(file) = ["config.pbtxt", "extra_files/config.pbtxt"]
            .iter()
            .find_map(|name| files.iter().find(|a| a.path == *name))
        else {
            return Ok(None);
        };
        if let Some(text) = self.configs.lock().unwrap_or_else(|p| p.into_inner()).get(&file.tag) {
            return Ok(Some(text.clone()));
        }
        let failed = |cause: String| SyncError::Fetch {
            repository: self.repository.clone(),
            file: file.tag.clone(),
            cause,
        };
        let text = match &file.fetch {
            Fetch::Http { client, url } => client
                .get(url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| failed(chain(&e.without_url())))?
                .text()
                .await
                .map_err(|e| failed(chain(&e.without_url())))?,
            Fetch::Object { store, path } => {
                use object_store::ObjectStoreExt;
                let bytes = store
                    .get(path)
                    .await
                    .map_err(|e| failed(chain(&e)))?
                    .bytes()
                    .await
                    .map_err(|e| failed(chain(&e)))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Fetch::Inline(_) | Fetch::Cached => return Ok(None),
        };
        let text = Arc::new(text);
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.tag.clone(), text.clone());
        Ok(Some(text))
    }

    /// One registered model as a Triton model folder: its served versions' artifacts and the config it is
    /// served with; None when no served version is in the onnx flavour.
    async fn model(
        &self,
        name: &ModelName,
        model: &RegisteredModel,
        versions: &BTreeMap<i64, ReadyVersion>,
    ) -> Result<Option<RemoteModel>, SyncError> {
        let aliases: BTreeMap<String, i64> = model
            .aliases
            .iter()
            .filter_map(|a| Some((a.alias.clone(), a.version.parse::<i64>().ok()?)))
            .filter(|(_, v)| versions.contains_key(v))
            .collect();
        let mut served: BTreeSet<i64> = aliases.values().copied().collect();
        served.extend(versions.keys().next_back());
        let mut files = BTreeMap::new();
        for v in &served {
            let source = versions.get(v).map_or("", |r| r.source.as_str());
            if let Some(f) = self.version_files(&model.name, *v, source).await? {
                files.insert(*v, f);
            }
        }
        let Some(newest_files) = files.values().next_back() else {
            return Ok(None);
        };
        let logged = self.logged_config(newest_files).await?;
        let config = served_config(name, logged.as_deref().map(String::as_str), model, versions, &files)
            .map_err(|e| self.list_error(format!("its logged config.pbtxt: {e}")))?;
        let mut remote = RemoteModel::default();
        let config = Arc::<[u8]>::from(config.into_bytes());
        remote.files.insert(
            "config.pbtxt".into(),
            RemoteFile {
                etag: hex::encode(&Sha256::digest(&config)[..12]),
                size: config.len() as u64,
                fetch: Fetch::Inline(config),
            },
        );
        for (v, artifacts) in &files {
            for a in artifacts.iter() {
                let file = RemoteFile {
                    etag: a.tag.clone(),
                    size: a.size,
                    fetch: a.fetch.clone(),
                };
                remote.files.insert(format!("{v}/{}", a.path), file);
            }
        }
        Ok(Some(remote))
    }

    /// Every registered model with an ONNX version, as a Triton model folder.
    pub async fn list(&self) -> Result<Listed, SyncError> {
        let models = self
            .all_pages::<ModelsPage>("api/2.0/mlflow/registered-models/search")
            .await?;
        let mut ready: BTreeMap<String, BTreeMap<i64, ReadyVersion>> = BTreeMap::new();
        for v in self
            .all_pages::<VersionsPage>("api/2.0/mlflow/model-versions/search")
            .await?
        {
            if v.status != "READY" {
                continue;
            }
            if let Ok(n) = v.version.parse::<i64>() {
                let ready_version = ReadyVersion {
                    tags: v.tags,
                    source: v.source,
                };
                ready.entry(v.name).or_default().insert(n, ready_version);
            }
        }
        let mut listed = Listed::default();
        let mut keep = HashSet::new();
        for model in models {
            let Some(versions) = ready.get(&model.name) else {
                continue;
            };
            let name = match ModelName::parse(&model.name) {
                Ok(n) => n,
                Err(e) => {
                    listed.passed_over.push(e.to_string());
                    continue;
                }
            };
            keep.extend(versions.iter().map(|(v, r)| (model.name.clone(), *v, r.source.clone())));
            match self.model(&name, &model, versions).await {
                Ok(Some(remote)) => {
                    listed.models.insert(name, remote);
                }
                Ok(None) => listed.passed_over.push(format!(
                    "MLflow model '{}': no served version is in the onnx flavour",
                    model.name
                )),
                // One model's trouble (its artifacts unreadable, its logged config broken) is not the
                // registry's: it stays as last listed, and the others follow the registry.
                Err(e) => {
                    listed.passed_over.push(format!("MLflow model '{}': {e}", model.name));
                    let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(remote) = last.get(&name) {
                        listed.models.insert(name, remote.clone());
                    }
                }
            }
        }
        // What is no longer listed is forgotten.
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep.contains(k));
        let tags: HashSet<String> = listed
            .models
            .values()
            .flat_map(|m| m.files.values().map(|f| f.etag.clone()))
            .collect();
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|tag, _| tags.contains(tag));
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = listed.models.clone();
        Ok(listed)
    }
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}

/// The config an MLflow model is served with: the logged one (or an empty one, completed from the ONNX file at
/// load), its versions the served ones, with a label per alias and the weights the tags give.
fn served_config(
    name: &ModelName,
    logged: Option<&str>,
    model: &RegisteredModel,
    versions: &BTreeMap<i64, ReadyVersion>,
    files: &BTreeMap<i64, Arc<Vec<Artifact>>>,
) -> Result<String, config::ConfigError> {
    let mut cfg = match logged {
        Some(text) => config::parse_pbtxt(text)?,
        None => ModelConfig::default(),
    };
    cfg.name = name.to_string();
    if cfg.backend.is_empty() && cfg.platform.is_empty() {
        cfg.platform = "onnxruntime_onnx".into();
    }
    cfg.default_model_filename = "model.onnx".into();
    cfg.version_policy = Some(ModelVersionPolicy {
        policy_choice: Some(PolicyChoice::Specific(Specific {
            versions: files.keys().copied().collect(),
        })),
    });
    // The registry says which versions carry which label and weight, not a config logged when other versions
    // were current.
    cfg.parameters
        .retain(|k, _| !k.starts_with("label.") && !k.starts_with("weight."));
    let served = |v: i64| files.contains_key(&v);
    let mut set = |key: String, value: String| {
        cfg.parameters.insert(key, ModelParameter { string_value: value });
    };
    let mut labels = BTreeMap::new();
    for a in &model.aliases {
        if let Ok(v) = a.version.parse::<i64>() {
            if served(v) {
                labels.insert(a.alias.clone(), v);
                set(format!("label.{}", a.alias), v.to_string());
            }
        }
    }
    // Weights: a version's own tag, then the model's per alias or per version (the model's win).
    let mut weights: BTreeMap<i64, String> = BTreeMap::new();
    for (v, ready) in versions {
        if let (true, Some(w)) = (served(*v), tag(&ready.tags, "inferd.weight")) {
            weights.insert(*v, w.to_string());
        }
    }
    for t in &model.tags {
        let Some(target) = t.key.strip_prefix("inferd.weight.") else {
            continue;
        };
        let v = labels.get(target).copied().or_else(|| target.parse::<i64>().ok());
        if let Some(v) = v.filter(|v| served(*v)) {
            weights.insert(v, t.value.clone());
        }
    }
    if weights.is_empty() {
        if let Some(v) = labels.get("champion") {
            weights.insert(*v, "1".into());
        }
    }
    for (v, w) in weights {
        set(format!("weight.{v}"), w);
    }
    Ok(config::to_pbtxt(&cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(aliases: &[(&str, &str)], tags: &[(&str, &str)]) -> RegisteredModel {
        RegisteredModel {
            name: "fraud".into(),
            aliases: aliases
                .iter()
                .map(|(a, v)| Alias {
                    alias: a.to_string(),
                    version: v.to_string(),
                })
                .collect(),
            tags: tags
                .iter()
                .map(|(k, v)| Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    fn ready(weight: Option<&str>) -> ReadyVersion {
        ReadyVersion {
            tags: weight
                .map(|w| Tag {
                    key: "inferd.weight".into(),
                    value: w.into(),
                })
                .into_iter()
                .collect(),
            source: String::new(),
        }
    }

    fn served(versions: &[i64]) -> BTreeMap<i64, Arc<Vec<Artifact>>> {
        versions.iter().map(|v| (*v, Arc::new(Vec::new()))).collect()
    }

    fn parameters(text: &str) -> BTreeMap<String, String> {
        config::parse_pbtxt(text)
            .unwrap()
            .parameters
            .into_iter()
            .map(|(k, v)| (k, v.string_value))
            .collect()
    }

    #[test]
    fn aliases_are_labels_and_tags_are_weights_of_the_served_versions_only() {
        let name = ModelName::parse("fraud").unwrap();
        let model = registered(
            &[("champion", "1"), ("challenger", "2"), ("old", "7")],
            &[("inferd.weight.champion", "90"), ("inferd.weight.7", "5")],
        );
        let versions = BTreeMap::from([(1, ready(None)), (2, ready(Some("10"))), (7, ready(None))]);
        let text = served_config(&name, None, &model, &versions, &served(&[1, 2])).unwrap();
        let want = [
            ("label.champion", "1"),
            ("label.challenger", "2"),
            ("weight.1", "90"),
            ("weight.2", "10"),
        ];
        assert_eq!(
            parameters(&text),
            want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        );
        let cfg = config::parse_pbtxt(&text).unwrap();
        assert_eq!(cfg.name, "fraud");
        assert!(
            matches!(cfg.version_policy.and_then(|p| p.policy_choice), Some(PolicyChoice::Specific(s)) if s.versions == [1, 2])
        );
    }

    #[test]
    fn without_weights_requests_naming_no_version_go_to_champion() {
        let name = ModelName::parse("fraud").unwrap();
        let model = registered(&[("champion", "1")], &[]);
        let versions = BTreeMap::from([(1, ready(None)), (2, ready(None))]);
        let text = served_config(&name, None, &model, &versions, &served(&[1, 2])).unwrap();
        assert_eq!(parameters(&text).get("weight.1").map(String::as_str), Some("1"));
        assert!(!parameters(&text).contains_key("weight.2"));
    }

    #[test]
    fn a_logged_config_keeps_its_settings_but_not_labels_or_weights_of_its_own() {
        let name = ModelName::parse("fraud").unwrap();
        let logged = r#"
            name: "something_else"
            max_batch_size: 8
            parameters { key: "label.stale" value { string_value: "9" } }
            parameters { key: "weight.9" value { string_value: "100" } }
            parameters { key: "intra_op_thread_count" value { string_value: "2" } }
        "#;
        let model = registered(&[("champion", "2")], &[]);
        let versions = BTreeMap::from([(2, ready(None))]);
        let text = served_config(&name, Some(logged), &model, &versions, &served(&[2])).unwrap();
        let cfg = config::parse_pbtxt(&text).unwrap();
        assert_eq!((cfg.name.as_str(), cfg.max_batch_size), ("fraud", 8));
        let params = parameters(&text);
        assert_eq!(params.get("intra_op_thread_count").map(String::as_str), Some("2"));
        assert!(
            !params.contains_key("label.stale") && !params.contains_key("weight.9"),
            "{params:?}"
        );
        assert_eq!(params.get("label.champion").map(String::as_str), Some("2"));
    }
}
