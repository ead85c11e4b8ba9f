//! The model being served, swappable while the server runs.
//!
//! Every call takes the current model once, at its start, and keeps that `Arc` to the
//! end, so a swap never changes a model under a call in flight: old calls finish on the
//! old model, which is freed when the last of them ends. A file that does not load or
//! check out leaves the current model in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::model::Model;
use crate::model_file::{self, ModelFileError};

/// Why a reload was refused; the current model keeps serving either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("model {path} was not loaded, the current model keeps serving: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: ModelFileError,
    },
    #[error("the reload was interrupted, the current model keeps serving: {0}")]
    Interrupted(String),
}

#[derive(Debug)]
pub struct ServedModel {
    current: ArcSwap<Model>,
    /// The file the current model came from. The lock also keeps two reloads from
    /// racing, so the path always names the model being served.
    path: Mutex<PathBuf>,
}

impl ServedModel {
    pub fn new(model: Arc<Model>, path: PathBuf) -> Self {
        Self { current: ArcSwap::new(model), path: Mutex::new(path) }
    }

    /// The model new calls should use.
    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Loads and checks the model at `path` (the current path when `None`) and serves it
    /// from the next call on. Blocks while reading the file: call it off the async workers.
    pub fn reload(&self, path: Option<&Path>) -> Result<Arc<Model>, ReloadError> {
        let mut current_path = self.path.lock().unwrap_or_else(PoisonError::into_inner);
        let path = path.map_or_else(|| current_path.clone(), Path::to_path_buf);
        let model = model_file::load(&path).map_err(|source| ReloadError::Load { path: path.clone(), source })?;
        let model = Arc::new(model);
        self.current.store(Arc::clone(&model));
        *current_path = path;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::four_label_model;

    #[test]
    fn a_bad_file_keeps_the_old_model_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.model");
        model_file::save(&four_label_model(), &good).unwrap();
        let bad = dir.path().join("bad.model");
        std::fs::write(&bad, b"not a model").unwrap();

        let served = ServedModel::new(Arc::new(four_label_model()), good.clone());
        let before = served.current();
        let error = served.reload(Some(&bad)).unwrap_err();
        assert!(error.to_string().contains("current model keeps serving"), "{error}");
        assert!(Arc::ptr_eq(&before, &served.current()));
        assert_eq!(served.path(), good);

        let reloaded = served.reload(None).unwrap();
        assert!(Arc::ptr_eq(&reloaded, &served.current()));
        assert!(!Arc::ptr_eq(&before, &reloaded));
        // A call that took the old model still holds it.
        assert_eq!(before.labels(), reloaded.labels());
    }
}
