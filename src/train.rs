//! Offline training: corpus → TF-IDF → a linfa classifier → [`Model`], with stratified
//! k-fold cross-validation for model selection and for the evaluation report.
//!
//! Training is deterministic: the same corpus, settings and timestamp give a model
//! that encodes to the same bytes. Folds come from a seeded shuffle, the vocabulary
//! is in canonical order, and neither linfa solver has randomness. Folds run on
//! parallel threads, each on its own data, so threading does not change results.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::{ClassifierSettings, FitError};
use crate::corpus::{Corpus, Document};
use crate::metrics::{Metrics, Outcome};
use crate::model::{InvalidModel, Model, ModelMeta, NONE, Prediction};
use crate::tfidf::{FeatureSettings, TfIdf, VectorizerError};

/// Everything that decides what model a corpus trains into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub features: FeatureSettings,
    pub classifier: ClassifierSettings,
    /// Cross-validation folds; 0 or 1 skips cross-validation.
    pub folds: u32,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self { features: FeatureSettings::default(), classifier: ClassifierSettings::default(), folds: 5, seed: 17 }
    }
}

impl TrainSettings {
    /// The settings as name/value pairs, for people and for ModelInfo.
    pub fn describe(&self) -> Vec<(String, String)> {
        let analyzer = &self.features.analyzer;
        let (char_min, char_max) = analyzer.char_ngrams;
        [
            ("classifier", self.classifier.to_string()),
            ("word_ngrams", format!("1-{}", analyzer.max_ngram)),
            ("char_ngrams", if char_max == 0 { "off".to_string() } else { format!("{char_min}-{char_max}") }),
            ("stemming", format!("{:?}", analyzer.stemming).to_lowercase()),
            ("stop_words", analyzer.stop_words.to_string()),
            ("min_df", self.features.min_df.to_string()),
            ("max_features", self.features.max_features.to_string()),
            ("sublinear_tf", self.features.sublinear_tf.to_string()),
            ("folds", self.folds.to_string()),
            ("seed", self.seed.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// One classifier's cross-validated scores during model selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub classifier: ClassifierSettings,
    pub metrics: Metrics,
    /// Standard error of the macro-F1 across folds.
    pub macro_f1_standard_error: f64,
}

/// The one-standard-error rule: among the candidates of the best-scoring family whose
/// macro-F1 is within one standard error of the best, keep the most regularized. Scores
/// that close are a tie on this corpus, and the simpler model is the safer bet on news
/// that differs from it.
fn choose(results: &[Candidate]) -> &Candidate {
    let best = results
        .iter()
        .reduce(|best, c| if c.metrics.macro_f1 > best.metrics.macro_f1 { c } else { best })
        .expect("at least one candidate");
    let floor = best.metrics.macro_f1 - best.macro_f1_standard_error;
    results
        .iter()
        .filter(|c| c.classifier.family() == best.classifier.family() && c.metrics.macro_f1 >= floor)
        .reduce(|kept, c| if c.classifier.regularization() > kept.classifier.regularization() { c } else { kept })
        .unwrap_or(best)
}

fn standard_error(scores: &[f64]) -> f64 {
    if scores.len() < 2 {
        return 0.0;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (variance / n).sqrt()
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the corpus has {0} distinct label(s); a classifier needs at least two")]
    TooFewLabels(usize),
    #[error("label {label:?} has {documents} document(s), fewer than the {folds} cross-validation folds")]
    TooFewDocuments { label: String, documents: usize, folds: u32 },
    #[error("no document has a known term after min_df={0}; lower --min-df or add documents")]
    EmptyVocabulary(u32),
    #[error("no classifier to train")]
    NoCandidates,
    #[error(transparent)]
    Features(#[from] VectorizerError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("training produced an unusable model: {0}")]
    Invalid(#[from] InvalidModel),
}

/// Trains with exactly `settings`, cross-validating them first for the report.
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
    let (model, _) = train_selecting(corpus, settings, &[settings.classifier], trained_at, version)?;
    Ok(model)
}

/// What training is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainProgress {
    /// Cross-validation starts: `fits` fits (folds × candidates) to go, then the final fit.
    Started { fits: u64 },
    /// One candidate was fitted on one fold's training part and scored on the rest.
    Fitted { fold: usize, candidate: ClassifierSettings },
    /// The kept classifier is being fitted on the whole corpus.
    FinalFit { classifier: ClassifierSettings },
}

/// Cross-validates every classifier in `candidates` on the same folds, keeps one by
/// the one-standard-error rule (see [`choose`]), and trains it on the whole corpus.
/// Returns the model and every candidate's scores, in the order given.
pub fn train_selecting(
    corpus: &Corpus,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    trained_at: u64,
    version: Option<String>,
) -> Result<(Model, Vec<Candidate>), TrainError> {
    train_with_progress(corpus, settings, candidates, trained_at, version, &|_| {})
}

/// [`train_selecting`], telling `progress` about each step as it ends. Folds run on
/// several threads, so `progress` is called from them.
pub fn train_with_progress(
    corpus: &Corpus,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    trained_at: u64,
    version: Option<String>,
    progress: &(dyn Fn(TrainProgress) + Sync),
) -> Result<(Model, Vec<Candidate>), TrainError> {
    let Some(&first) = candidates.first() else { return Err(TrainError::NoCandidates) };
    if trained_at > crate::model::LATEST_TIMESTAMP {
        return Err(InvalidModel::BadTimestamp(trained_at).into());
    }
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

    let (chosen, metrics, results) = if settings.folds > 1 {
        progress(TrainProgress::Started { fits: u64::from(settings.folds) * candidates.len() as u64 });
        let (predictions, fold_of) = cross_validate(corpus, &labels, &targets, settings, candidates, progress)?;
        let results: Vec<Candidate> = candidates
            .iter()
            .zip(predictions)
            .map(|(&classifier, predicted)| {
                let outcomes: Vec<Outcome<'_>> = predicted
                    .iter()
                    .zip(&targets)
                    .zip(&corpus.documents)
                    .map(|((p, &truth), d)| Outcome { truth, predicted: p.label(), language: &d.lang })
                    .collect();
                let fold_scores: Vec<f64> = (0..settings.folds as usize)
                    .map(|fold| {
                        let held_out: Vec<Outcome<'_>> =
                            outcomes.iter().zip(&fold_of).filter(|(_, f)| **f == fold).map(|(o, _)| *o).collect();
                        Metrics::compute(&labels, &held_out, 0).macro_f1
                    })
                    .collect();
                Candidate {
                    classifier,
                    metrics: Metrics::compute(&labels, &outcomes, settings.folds),
                    macro_f1_standard_error: standard_error(&fold_scores),
                }
            })
            .collect();
        let chosen = choose(&results);
        (chosen.classifier, chosen.metrics.clone(), results)
    } else {
        (first, Metrics::default(), Vec::new())
    };

    progress(TrainProgress::FinalFit { classifier: chosen });
    let settings = TrainSettings { classifier: chosen, ..settings.clone() };
    let texts: Vec<&str> = corpus.documents.iter().map(|d| d.text.as_str()).collect();
    let vectorizer = fit_vectorizer(&texts, &settings.features)?;
    let rows: Vec<_> = texts.iter().map(|t| vectorizer.transform(t)).collect();
    let layer = chosen.fit(&vectorizer.to_dense(&rows), &targets, labels.len())?;

    let meta = ModelMeta {
        version: version.unwrap_or_else(|| default_version(corpus, &settings, trained_at)),
        classifier: chosen.family().to_string(),
        trained_at,
        corpus_digest: corpus.digest.clone(),
        corpus_documents: corpus.documents.len() as u64,
        settings,
        metrics,
        selection: results.clone(),
    };
    Ok((Model::new(meta, labels, vectorizer, layer)?, results))
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
    hasher.update(format!("{settings:?}").as_bytes());
    let recipe = crate::hex(&hasher.finalize()[..4]);
    let date = crate::model::rfc3339(trained_at).unwrap_or_default();
    format!("{}-{recipe}", date.get(..10).unwrap_or("undated").replace('-', ""))
}

fn fit_vectorizer(texts: &[&str], settings: &FeatureSettings) -> Result<TfIdf, TrainError> {
    let vectorizer = TfIdf::fit(texts, settings.clone())?;
    if vectorizer.vocabulary_size() == 0 {
        return Err(TrainError::EmptyVocabulary(settings.min_df));
    }
    Ok(vectorizer)
}

/// Stratified k-fold cross-validation: every fold holds about 1/k of each label.
/// TF-IDF is refitted inside each fold, so held-out documents never shape the
/// vocabulary; every candidate is fitted on the same fold features.
/// Returns, per candidate, the held-out prediction of every document, and every
/// document's fold.
fn cross_validate(
    corpus: &Corpus,
    labels: &[String],
    targets: &[usize],
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    progress: &(dyn Fn(TrainProgress) + Sync),
) -> Result<(Vec<Vec<Prediction>>, Vec<usize>), TrainError> {
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
    let run_fold = |fold: usize| -> Result<Vec<(usize, Vec<Prediction>)>, TrainError> {
        let (held_out, training): (Vec<usize>, Vec<usize>) = (0..targets.len()).partition(|&i| fold_of[i] == fold);
        let texts: Vec<&str> = training.iter().map(|&i| documents[i].text.as_str()).collect();
        let fold_targets: Vec<usize> = training.iter().map(|&i| targets[i]).collect();
        let vectorizer = fit_vectorizer(&texts, &settings.features)?;
        let rows: Vec<_> = texts.iter().map(|t| vectorizer.transform(t)).collect();
        let x = vectorizer.to_dense(&rows);
        drop(rows);
        let layers = candidates
            .iter()
            .map(|&candidate| {
                let layer = candidate.fit(&x, &fold_targets, labels.len());
                progress(TrainProgress::Fitted { fold, candidate });
                layer
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out_of_scope = labels.iter().position(|l| l == NONE);
        // Each held-out document is featurized once and scored by every candidate.
        Ok(held_out
            .into_iter()
            .map(|i| {
                let features = vectorizer.transform(&documents[i].text);
                (i, layers.iter().map(|layer| layer.predict(&features).deciding_scope(out_of_scope)).collect())
            })
            .collect())
    };

    // Folds are independent: spread them over the cores, each worker taking the next fold.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(folds);
    let next = AtomicUsize::new(0);
    let fold_results: Vec<Result<Vec<_>, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut results = Vec::new();
                    loop {
                        let fold = next.fetch_add(1, Ordering::Relaxed);
                        if fold >= folds {
                            return results;
                        }
                        results.push(run_fold(fold));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a cross-validation worker panicked")).collect()
    });

    let mut predictions: Vec<Vec<Option<Prediction>>> = vec![vec![None; targets.len()]; candidates.len()];
    for fold in fold_results {
        for (document, per_candidate) in fold? {
            for (c, prediction) in per_candidate.into_iter().enumerate() {
                predictions[c][document] = Some(prediction);
            }
        }
    }
    let predictions = predictions
        .into_iter()
        .map(|per_document| per_document.into_iter().map(|p| p.expect("every document is held out once")).collect())
        .collect();
    Ok((predictions, fold_of))
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

    fn doc(id: usize, lang: &str, text: &str, label: &str) -> Document {
        Document { id: id.to_string(), lang: lang.into(), text: text.into(), labels: vec![label.into()] }
    }

    /// A small separable corpus: each label has its own vocabulary plus shared filler.
    fn toy_corpus() -> Corpus {
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
        TrainSettings { features: crate::tfidf::tests::words(1), ..TrainSettings::default() }
    }

    #[test]
    fn trains_a_model_that_separates_the_toy_topics() {
        let model = train(&toy_corpus(), &settings(), 0, None).unwrap();
        assert_eq!(model.labels(), ["diplomacy", "humanitarian", "security"]);
        for (text, label) in
            [("militants ambush", "security"), ("envoy summit", "diplomacy"), ("famine camp", "humanitarian")]
        {
            assert_eq!(model.labels()[model.predict(text).label()], label, "{text}");
        }
        let metrics = &model.meta().metrics;
        assert_eq!(metrics.folds, 5);
        assert_eq!(metrics.documents, 30);
        assert!(metrics.accuracy > 0.9, "{metrics}");
        assert!(model.meta().version.starts_with("19700101-"), "{}", model.meta().version);
    }

    #[test]
    fn selection_scores_every_candidate_and_keeps_the_best() {
        let candidates = [
            ClassifierSettings::NaiveBayes { alpha: 1000.0 },
            ClassifierSettings::Logistic { alpha: 0.1, max_iterations: 100 },
        ];
        let (model, results) = train_selecting(&toy_corpus(), &settings(), &candidates, 0, None).unwrap();
        assert_eq!(results.len(), 2);
        let best = results.iter().map(|c| c.metrics.macro_f1).fold(0.0, f64::max);
        assert_eq!(model.meta().metrics.macro_f1, best);
        let winner = results.iter().find(|c| c.metrics.macro_f1 == best).unwrap();
        assert_eq!(model.meta().settings.classifier, winner.classifier);
        assert_eq!(model.meta().selection, results);
        assert!(results.iter().all(|c| c.macro_f1_standard_error.is_finite()));
    }

    fn candidate(classifier: ClassifierSettings, macro_f1: f64, se: f64) -> Candidate {
        Candidate { classifier, metrics: Metrics { macro_f1, ..Metrics::default() }, macro_f1_standard_error: se }
    }

    #[test]
    fn one_standard_error_rule_prefers_the_simpler_model_on_a_tie() {
        let logistic = |alpha| ClassifierSettings::Logistic { alpha, max_iterations: 100 };
        let results = [
            candidate(logistic(0.03), 0.960, 0.005),
            candidate(logistic(0.3), 0.957, 0.006),
            candidate(logistic(1.0), 0.950, 0.006),
            candidate(ClassifierSettings::NaiveBayes { alpha: 1.0 }, 0.959, 0.005),
        ];
        assert_eq!(choose(&results).classifier, logistic(0.3));
        assert_eq!(standard_error(&[1.0, 1.0, 1.0]), 0.0);
        assert!((standard_error(&[0.0, 2.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sparse_inference_matches_linfa_predict() {
        use linfa::traits::{Fit, Predict};
        use linfa_logistic::MultiLogisticRegression;
        let corpus = toy_corpus();
        let texts: Vec<&str> = corpus.documents.iter().map(|d| d.text.as_str()).collect();
        let targets: Vec<usize> = (0..30).map(|i| i / 10).collect();
        let vectorizer = TfIdf::fit(&texts, settings().features).unwrap();
        let rows: Vec<_> = texts.iter().map(|t| vectorizer.transform(t)).collect();
        let dense = vectorizer.to_dense(&rows);
        let dataset = linfa::Dataset::new(dense.clone(), ndarray::Array1::from(targets.clone()));
        let linfa_model = MultiLogisticRegression::default().alpha(0.1f32).max_iterations(300).fit(&dataset).unwrap();
        let linfa_probabilities = linfa_model.predict_probabilities(&dense).mapv(f64::from);
        let linfa_labels = linfa_model.predict(&dense);

        let classifier = ClassifierSettings::Logistic { alpha: 0.1, max_iterations: 300 };
        let layer = classifier.fit(&dense, &targets, 3).unwrap();
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let model = Model::new(ModelMeta::placeholder(), labels, vectorizer, layer).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let ours = model.predict(text);
            assert_eq!(ours.label(), linfa_labels[i]);
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
    fn shuffle_is_a_permutation() {
        let mut rng = SplitMix64(1);
        let mut items: Vec<usize> = (0..10).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
