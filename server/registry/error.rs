//! Why a remote repository could not be listed or a model's files fetched, naming the store and the cause.
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Debug, thiserror::Error)]
pub enum SyncError {
    /// Building the store's client (credentials, URL) failed.
    #[error("model repository {repository}: {cause}")]
    Setup { repository: String, cause: String },
    /// Listing the repository failed: the store is unreachable, refuses the credentials, or has no such bucket.
    #[error("cannot list model repository {repository}: {cause}")]
    List { repository: String, cause: String },
    #[error("cannot fetch {file} from {repository}: {cause}")]
    Fetch {
        repository: String,
        file: String,
        cause: String,
    },
    /// A download ended with another size than the listing gave (the object changed, or the connection was cut).
    #[error("{file} from {repository}: got {got} bytes, the listing says {want}")]
    Size {
        repository: String,
        file: String,
        got: u64,
        want: u64,
    },
    #[error("model cache {path}: {source}")]
    Cache { path: String, source: Arc<std::io::Error> },
    /// The store cannot be reached and the cache holds no complete copy of the model.
    #[error("model repository {repository} is unreachable and the cache holds no complete copy of '{model}'")]
    NotCached { repository: String, model: String },
}

impl SyncError {
    pub(crate) fn cache(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |e| SyncError::Cache {
            path: path.display().to_string(),
            source: Arc::new(e),
        }
    }
}

/// An error with its chain of causes, on one line (object_store's and reqwest's top-level messages leave out
/// what went wrong underneath: the refused connection, the store's error code).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)?;
            let mut seen = self.0.to_string();
            let mut next = self.0.source();
            while let Some(e) = next {
                let text = e.to_string();
                // Some layers repeat their source's message in their own.
                if !seen.contains(&text) {
                    write!(f, ": {text}")?;
                    seen = text;
                }
                next = e.source();
            }
            Ok(())
        }
    }
    Chain(e).to_string()
}
