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
    #[error("model {path} was not loaded, the current model keeps serving: {source}")]
    WrongLabels {
        path: PathBuf,
        #[source]
        source: LabelMismatch,
    },
    #[error("the reload was interrupted, the current model keeps serving: {0}")]
    Interrupted(String),
}

/// The labels a server was told its models must have, so that a model trained for other
/// topics (or missing one) is never served to clients that rely on the label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLabels(Vec<String>);

/// A model whose label set is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its labels are [{}], but the server expects [{}] (--expect-labels){}{}",
    found.join(", "),
    expected.join(", "),
    listed(" missing: ", missing),
    listed(" unexpected: ", unexpected)
)]
pub struct LabelMismatch {
    pub expected: Vec<String>,
    pub found: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
}

fn listed(prefix: &str, labels: &[String]) -> String {
    if labels.is_empty() { String::new() } else { format!(";{prefix}{}", labels.join(", ")) }
}

impl ExpectedLabels {
    /// The set of `labels`, trimmed, without blanks or repeats; `None` when nothing is left.
    pub fn new<S: AsRef<str>>(labels: impl IntoIterator<Item = S>) -> Option<Self> {
        let mut set: Vec<String> =
            labels.into_iter().map(|l| l.as_ref().trim().to_string()).filter(|l| !l.is_empty()).collect();
        set.sort_unstable();
        set.dedup();
        (!set.is_empty()).then_some(Self(set))
    }

    pub fn labels(&self) -> &[String] {
        &self.0
    }

    /// Whether `model` has exactly these labels, in any order.
    pub fn check(&self, model: &Model) -> Result<(), LabelMismatch> {
        let mut found = model.labels().to_vec();
        found.sort_unstable();
        if found == self.0 {
            return Ok(());
        }
        Err(LabelMismatch {
            missing: self.0.iter().filter(|l| !found.contains(l)).cloned().collect(),
            unexpected: found.iter().filter(|l| !self.0.contains(l)).cloned().collect(),
            expected: self.0.clone(),
            found,
        })
    }
}

#[derive(Debug)]
pub struct ServedModel {
    current: ArcSwap<Model>,
    /// The file the current model came from. The lock also keeps two reloads from
    /// racing, so the path always names the model being served.
    path: Mutex<PathBuf>,
    /// When set, every model served must have exactly these labels.
    expected: Option<ExpectedLabels>,
}

impl ServedModel {
    pub fn new(model: Arc<Model>, path: PathBuf) -> Self {
        Self { current: ArcSwap::new(model), path: Mutex::new(path), expected: None }
    }

    /// Like [`ServedModel::new`], for a server whose models must have the labels
    /// `expected`: the first model is checked here, and each reload before it is swapped in.
    pub fn expecting(model: Arc<Model>, path: PathBuf, expected: ExpectedLabels) -> Result<Self, LabelMismatch> {
        expected.check(&model)?;
        Ok(Self { expected: Some(expected), ..Self::new(model, path) })
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
        if let Some(expected) = &self.expected {
            expected.check(&model).map_err(|source| ReloadError::WrongLabels { path: path.clone(), source })?;
        }
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

    #[test]
    fn a_model_with_other_labels_is_refused_at_the_start_and_on_reload() {
        use crate::model::LinearLayer;
        use crate::tfidf::TfIdf;
        use ndarray::array;

        let four = || Arc::new(four_label_model());
        let expected = |labels: &[&str]| ExpectedLabels::new(labels).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let two_labels = dir.path().join("two.model");
        let vectorizer = TfIdf::from_parts(crate::tfidf::tests::words(1), vec!["camp".into()], vec![1.0]).unwrap();
        let layer = LinearLayer { weights: array![[1.0, -1.0]], intercept: array![0.0, 0.0] };
        let model =
            Model::new(crate::model::tests::meta(), vec!["security".into(), "sports".into()], vectorizer, layer);
        model_file::save(&model.unwrap(), &two_labels).unwrap();
        let path = dir.path().join("four.model");
        model_file::save(&four_label_model(), &path).unwrap();

        let refused =
            ServedModel::expecting(four(), path.clone(), expected(&["security", "diplomacy", "humanitarian"]))
                .unwrap_err();
        assert_eq!(refused.missing, Vec::<String>::new());
        assert_eq!(refused.unexpected, ["none"]);
        assert_eq!(
            refused.to_string(),
            "its labels are [diplomacy, humanitarian, none, security], but the server expects \
             [diplomacy, humanitarian, security] (--expect-labels); unexpected: none"
        );

        // The same set in another order, with blanks and repeats, is the same set.
        let all = expected(&["security", " none", "", "diplomacy", "humanitarian", "none"]);
        let served = ServedModel::expecting(four(), path.clone(), all).unwrap();
        let before = served.current();
        served.reload(None).expect("a model with the expected labels reloads");
        let error = served.reload(Some(&two_labels)).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ReloadError::WrongLabels { .. }), "{error:?}");
        assert!(message.contains("current model keeps serving"), "{message}");
        assert!(message.contains("[security, sports]"), "{message}");
        assert!(message.contains("missing: diplomacy, humanitarian, none; unexpected: sports"), "{message}");
        assert_eq!(served.path(), path, "the refused file is not remembered");
        assert_eq!(served.current().labels(), before.labels());

        assert!(ExpectedLabels::new([" ", ""]).is_none());
    }
}
