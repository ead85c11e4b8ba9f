//! Offline training: corpus → TF-IDF → linfa multinomial logistic regression → [`Model`],
//! with stratified k-fold cross-validation for the evaluation report.
//!
//! Training is deterministic: the same corpus, settings and timestamp give a model
//! that encodes to the same bytes. Folds come from a seeded shuffle, the vocabulary
//! is sorted, and linfa's L-BFGS solver has no randomness.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use sha2::{Digest, Sha256};

use crate::corpus::{Corpus, Document};
use crate::metrics::{Metrics, Outcome};
use crate::model::{InvalidModel, LinearLayer, Model, ModelMeta};
use crate::tfidf::{FeatureSettings, TfIdf};

pub const CLASSIFIER: &str = "logistic_regression";

/// Everything that decides what model a corpus trains into.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub features: FeatureSettings,
    /// L2 penalty weight of the logistic regression (linfa's `alpha`; like 1/C in scikit-learn).
    pub alpha: f64,
    /// Upper bound on L-BFGS iterations.
    pub max_iterations: u64,
    /// Cross-validation folds for the report; 0 or 1 skips cross-validation.
    pub folds: u32,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self { features: FeatureSettings::default(), alpha: 0.1, max_iterations: 300, folds: 5, seed: 17 }
    }
}

impl TrainSettings {
    fn describe(&self) -> BTreeMap<String, String> {
        [
            ("max_ngram", self.features.max_ngram.to_string()),
            ("min_df", self.features.min_df.to_string()),
            ("sublinear_tf", self.features.sublinear_tf.to_string()),
            ("alpha", self.alpha.to_string()),
            ("max_iterations", self.max_iterations.to_string()),
            ("folds", self.folds.to_string()),
            ("seed", self.seed.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the corpus has {0} distinct label(s); a classifier needs at least two")]
    TooFewLabels(usize),
    #[error("label {label:?} has {documents} document(s), fewer than the {folds} cross-validation folds")]
    TooFewDocuments { label: String, documents: usize, folds: u32 },
    #[error("no document has a known term after min_df={0}; lower --min-df or add documents")]
    EmptyVocabulary(u32),
    #[error("the logistic regression solver failed: {0}")]
    Solver(#[from] linfa_logistic::error::Error),
    #[error("training produced an unusable model: {0}")]
    Invalid(#[from] InvalidModel),
}

/// Trains on the whole corpus after cross-validating the same recipe.
///
/// `trained_at` (seconds since the Unix epoch) is recorded, not read from the clock,
/// so that retraining can reproduce a file byte for byte. `version` defaults to the
/// training date plus a digest of corpus and settings.
pub fn train(
    corpus: &Corpus,
    settings: &TrainSettings,
    trained_at: u64,
    version: Option<String>,
) -> Result<Model, TrainError> {
    let labels = label_set(&corpus.documents);
    if labels.len() < 2 {
        return Err(TrainError::TooFewLabels(labels.len()));
    }
    let targets: Vec<usize> = corpus
        .documents
        .iter()
        .map(|d| {
            labels.binary_search_by(|l| l.as_str().cmp(d.primary_label())).expect("label set holds every primary label")
        })
        .collect();

    let metrics =
        if settings.folds > 1 { cross_validate(corpus, &labels, &targets, settings)? } else { Metrics::default() };

    let texts: Vec<&str> = corpus.documents.iter().map(|d| d.text.as_str()).collect();
    let (vectorizer, layer) = fit(&texts, &targets, labels.len(), settings)?;

    let meta = ModelMeta {
        version: version.unwrap_or_else(|| default_version(corpus, settings, trained_at)),
        classifier: CLASSIFIER.to_string(),
        trained_at,
        corpus_digest: corpus.digest.clone(),
        corpus_documents: corpus.documents.len() as u64,
        settings: settings.describe(),
        metrics,
    };
    Ok(Model::new(meta, labels, vectorizer, layer)?)
}

/// The distinct primary labels, sorted: the model's column order.
fn label_set(documents: &[Document]) -> Vec<String> {
    let mut labels: Vec<String> = documents.iter().map(|d| d.primary_label().to_string()).collect();
    labels.sort_unstable();
    labels.dedup();
    labels
}

fn default_version(corpus: &Corpus, settings: &TrainSettings, trained_at: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(corpus.digest.as_bytes());
    hasher.update(format!("{:?}", settings.describe()).as_bytes());
    let recipe = crate::hex(&hasher.finalize()[..4]);
    let date = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(trained_at)).to_string();
    format!("{}-{recipe}", date[..10].replace('-', ""))
}

/// Fits TF-IDF and the logistic regression on `texts`, returning the layer with one
/// column per label in label order.
fn fit(
    texts: &[&str],
    targets: &[usize],
    labels: usize,
    settings: &TrainSettings,
) -> Result<(TfIdf, LinearLayer), TrainError> {
    let vectorizer = TfIdf::fit(texts, settings.features.clone());
    if vectorizer.vocabulary_size() == 0 {
        return Err(TrainError::EmptyVocabulary(settings.features.min_df));
    }
    let rows: Vec<_> = texts.iter().map(|t| vectorizer.transform(t)).collect();
    let dataset = Dataset::new(vectorizer.to_dense(&rows), Array1::from(targets.to_vec()));
    let fitted = MultiLogisticRegression::default()
        .alpha(settings.alpha)
        .max_iterations(settings.max_iterations)
        .fit(&dataset)?;

    // linfa orders its columns by the sorted classes it saw; place each under its label.
    let mut weights = Array2::<f32>::zeros((vectorizer.vocabulary_size(), labels));
    let mut intercept = Array1::<f32>::zeros(labels);
    for (column, &label) in fitted.classes().iter().enumerate() {
        weights.column_mut(label).assign(&fitted.params().column(column).mapv(|w| w as f32));
        intercept[label] = fitted.intercept()[column] as f32;
    }
    if fitted.classes().len() != labels {
        // A label with no training document would otherwise score as a neutral zero column.
        let present: Vec<usize> = fitted.classes().to_vec();
        for label in (0..labels).filter(|l| !present.contains(l)) {
            intercept[label] = -1.0e4;
        }
    }
    Ok((vectorizer, LinearLayer { weights, intercept }))
}

/// Stratified k-fold cross-validation: every fold holds about 1/k of each label.
/// TF-IDF is refitted inside each fold, so held-out documents never shape the vocabulary.
fn cross_validate(
    corpus: &Corpus,
    labels: &[String],
    targets: &[usize],
    settings: &TrainSettings,
) -> Result<Metrics, TrainError> {
    let folds = settings.folds as usize;
    let mut fold_of = vec![0usize; targets.len()];
    let mut rng = SplitMix64(settings.seed);
    for (label_index, label) in labels.iter().enumerate() {
        let mut members: Vec<usize> = (0..targets.len()).filter(|&i| targets[i] == label_index).collect();
        if members.len() < folds {
            return Err(TrainError::TooFewDocuments {
                label: label.clone(),
                documents: members.len(),
                folds: settings.folds,
            });
        }
        rng.shuffle(&mut members);
        for (position, &document) in members.iter().enumerate() {
            fold_of[document] = position % folds;
        }
    }

    let documents = &corpus.documents;
    let mut predicted = vec![0usize; targets.len()];
    for fold in 0..folds {
        let (held_out, training): (Vec<usize>, Vec<usize>) = (0..targets.len()).partition(|&i| fold_of[i] == fold);
        let texts: Vec<&str> = training.iter().map(|&i| documents[i].text.as_str()).collect();
        let fold_targets: Vec<usize> = training.iter().map(|&i| targets[i]).collect();
        let (vectorizer, layer) = fit(&texts, &fold_targets, labels.len(), settings)?;
        let model = Model::new(ModelMeta::placeholder(), labels.to_vec(), vectorizer, layer)?;
        for i in held_out {
            predicted[i] = model.predict(&documents[i].text).top();
        }
    }

    let outcomes: Vec<Outcome<'_>> = (0..targets.len())
        .map(|i| Outcome { truth: targets[i], predicted: predicted[i], language: &documents[i].lang })
        .collect();
    Ok(Metrics::compute(labels, &outcomes, settings.folds))
}

/// A small, fixed pseudo-random generator: fold assignment must not change with a
/// dependency's algorithm, or retraining would not reproduce the committed model.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::traits::Predict;

    fn doc(id: usize, lang: &str, text: &str, label: &str) -> Document {
        Document { id: id.to_string(), lang: lang.into(), text: text.into(), labels: vec![label.into()] }
    }

    /// A small separable corpus: each label has its own vocabulary plus shared filler.
    pub(crate) fn toy_corpus() -> Corpus {
        let topics = [
            ("security", ["troops", "clashes", "militants", "ambush", "artillery"]),
            ("diplomacy", ["ambassador", "summit", "envoy", "talks", "treaty"]),
            ("humanitarian", ["refugees", "camp", "convoy", "famine", "shelter"]),
        ];
        let mut documents = Vec::new();
        for (t, (label, words)) in topics.iter().enumerate() {
            for i in 0..10 {
                let text =
                    format!("the {} and {} reported on day {} in the region", words[i % 5], words[(i + t + 1) % 5], i);
                documents.push(doc(documents.len(), if i % 2 == 0 { "en" } else { "xx" }, &text, label));
            }
        }
        Corpus { documents, digest: "toy".into() }
    }

    fn settings() -> TrainSettings {
        TrainSettings {
            features: FeatureSettings { max_ngram: 1, min_df: 1, sublinear_tf: true },
            ..TrainSettings::default()
        }
    }

    #[test]
    fn trains_a_model_that_separates_the_toy_topics() {
        let model = train(&toy_corpus(), &settings(), 0, None).unwrap();
        assert_eq!(model.labels(), ["diplomacy", "humanitarian", "security"]);
        for (text, label) in
            [("militants ambush", "security"), ("envoy summit", "diplomacy"), ("famine camp", "humanitarian")]
        {
            assert_eq!(model.labels()[model.predict(text).top()], label, "{text}");
        }
        let metrics = &model.meta().metrics;
        assert_eq!(metrics.folds, 5);
        assert_eq!(metrics.documents, 30);
        assert!(metrics.accuracy > 0.9, "{metrics}");
        assert_eq!(model.meta().version, "19700101-".to_string() + &model.meta().version[9..]);
    }

    #[test]
    fn sparse_inference_matches_linfa_predict() {
        let corpus = toy_corpus();
        let texts: Vec<&str> = corpus.documents.iter().map(|d| d.text.as_str()).collect();
        let targets: Vec<usize> = (0..30).map(|i| i / 10).collect();
        let s = settings();
        let vectorizer = TfIdf::fit(&texts, s.features.clone());
        let rows: Vec<_> = texts.iter().map(|t| vectorizer.transform(t)).collect();
        let dense = vectorizer.to_dense(&rows);
        let dataset = Dataset::new(dense.clone(), Array1::from(targets.clone()));
        let fitted =
            MultiLogisticRegression::default().alpha(s.alpha).max_iterations(s.max_iterations).fit(&dataset).unwrap();
        let linfa_probabilities = fitted.predict_probabilities(&dense);
        let linfa_labels = fitted.predict(&dense);

        let (vectorizer, layer) = fit(&texts, &targets, 3, &s).unwrap();
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let model = Model::new(ModelMeta::placeholder(), labels, vectorizer, layer).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let ours = model.predict(text);
            assert_eq!(ours.top(), linfa_labels[i]);
            for &(label, p) in &ours.ranked {
                assert!((f64::from(p) - linfa_probabilities[[i, label]]).abs() < 1e-5, "doc {i} label {label}");
            }
        }
    }

    #[test]
    fn training_is_deterministic() {
        let a = train(&toy_corpus(), &settings(), 1_700_000_000, None).unwrap();
        let b = train(&toy_corpus(), &settings(), 1_700_000_000, None).unwrap();
        assert_eq!(crate::model_file::encode(&a), crate::model_file::encode(&b));
    }

    #[test]
    fn refuses_corpora_it_cannot_cross_validate() {
        let mut corpus = toy_corpus();
        corpus.documents.truncate(12);
        let err = train(&corpus, &settings(), 0, None).unwrap_err();
        assert!(matches!(err, TrainError::TooFewDocuments { documents: 2, .. }), "{err}");
        corpus.documents.truncate(10);
        assert!(matches!(train(&corpus, &settings(), 0, None), Err(TrainError::TooFewLabels(1))));
    }

    #[test]
    fn stratified_folds_are_balanced() {
        let mut rng = SplitMix64(1);
        let mut items: Vec<usize> = (0..10).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
