//! Offline training: corpus → TF-IDF → a linfa classifier → [`Model`], with stratified
//! k-fold cross-validation for model selection and for the evaluation report (above
//! [`HOLDOUT_ABOVE`] documents, one stratified held-out fold instead).
//!
//! Memory stays bounded as the corpus grows. Document frequencies for the whole corpus
//! and for every fold come from one pass over the texts, which also keeps each
//! document's terms. Logistic regression needs the dense documents × vocabulary matrix,
//! so it is a candidate only while that matrix fits [`TrainLimits::max_dense_bytes`];
//! beyond it, it is skipped (and reported), and naive Bayes is fitted from per-class sums
//! of sparse rows weighed from the kept terms one document at a time.
//!
//! Training is deterministic: the same corpus, settings and timestamp give a model
//! that encodes to the same bytes. Folds come from a seeded shuffle, the vocabulary
//! is in canonical order, and neither linfa solver has randomness. Folds run on
//! parallel threads, each on its own data, so threading does not change results.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::{ClassifierSettings, FitError, NaiveBayesSums};
use crate::corpus::{Corpus, Document};
use crate::metrics::{Metrics, Outcome};
use crate::model::{InvalidModel, LinearLayer, Model, ModelMeta, NONE, Prediction};
use crate::tfidf::{DocumentFrequencies, DocumentTerms, FeatureSettings, SharedFeatures, TfIdf, VectorizerError};

/// Above this many documents, model selection holds out one stratified fold (1/k of the
/// corpus: 20% with the default 5 folds) and scores every candidate on it, instead of
/// cross-validating on all k folds. At that size one fold holds thousands of documents
/// per label, enough to rank candidates, and k-fold would cost k times the fits and
/// scoring. The bundled corpus (under 2,000 documents) is cross-validated as before.
pub const HOLDOUT_ABOVE: usize = 20_000;

/// Bytes of one cell of the dense training matrix (f32).
const CELL_BYTES: u64 = 4;

/// How much memory training may take. Not part of [`TrainSettings`]: it decides which
/// candidates can run on a machine, not what a given candidate learns, and it is not
/// recorded in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainLimits {
    /// The largest dense documents × vocabulary matrix training may build.
    pub max_dense_bytes: u64,
    /// Above this many documents, one held-out fold replaces k-fold cross-validation
    /// ([`HOLDOUT_ABOVE`] by default).
    pub holdout_above: usize,
}

/// 1 GiB: the bundled corpus (1,789 documents × 40,000 features, 286 MB) fits several
/// times over, so that two folds can hold theirs at once; about 6,700 documents at the
/// full default vocabulary do.
pub const DEFAULT_MAX_DENSE_BYTES: u64 = 1 << 30;

impl Default for TrainLimits {
    fn default() -> Self {
        Self { max_dense_bytes: DEFAULT_MAX_DENSE_BYTES, holdout_above: HOLDOUT_ABOVE }
    }
}

/// A candidate that was not trained, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub classifier: ClassifierSettings,
    pub documents: usize,
    pub features: usize,
    pub max_dense_bytes: u64,
}

impl Skipped {
    /// Bytes of the dense matrix the candidate would need.
    pub fn dense_bytes(&self) -> u64 {
        dense_bytes(self.documents, self.features)
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "needs a dense {} × {} matrix ({}) over the limit of {}",
            self.documents,
            self.features,
            bytes_for_people(self.dense_bytes()),
            bytes_for_people(self.max_dense_bytes)
        )
    }
}

/// What [`train_selecting`] made: the model, every trained candidate's scores in the
/// order given, and the candidates it skipped.
#[derive(Debug)]
pub struct Selection {
    pub model: Model,
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skipped>,
    /// Whether the documents never formed a dense matrix (naive Bayes from streamed sums).
    pub streamed: bool,
}

fn dense_bytes(documents: usize, features: usize) -> u64 {
    (documents as u64).saturating_mul(features as u64).saturating_mul(CELL_BYTES)
}

/// `bytes` in KiB, MiB or GiB, for messages.
pub fn bytes_for_people(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match units.iter().find(|(_, size)| bytes >= *size) {
        Some((unit, size)) => format!("{:.1} {unit}", bytes as f64 / *size as f64),
        None => format!("{bytes} B"),
    }
}

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
    #[error(
        "no candidate fits the memory limit: {0}; raise --max-dense-bytes, lower --max-features, or use --classifier naive-bayes"
    )]
    OverBudget(Skipped),
    #[error(transparent)]
    Features(#[from] VectorizerError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("training produced an unusable model: {0}")]
    Invalid(#[from] InvalidModel),
}

/// Trains with exactly `settings`, cross-validating them first for the report, within the default [`TrainLimits`].
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
    let selection =
        train_selecting(corpus, settings, &[settings.classifier], &TrainLimits::default(), trained_at, version)?;
    Ok(selection.model)
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

/// Cross-validates every classifier in `candidates` that fits `limits` on the same folds,
/// keeps one by the one-standard-error rule (see [`choose`]), and trains it on the whole corpus.
pub fn train_selecting(
    corpus: &Corpus,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    limits: &TrainLimits,
    trained_at: u64,
    version: Option<String>,
) -> Result<Selection, TrainError> {
    train_with_progress(corpus, settings, candidates, limits, trained_at, version, &|_| {})
}

/// [`train_selecting`], telling `progress` about each step as it ends. Folds run on
/// several threads, so `progress` is called from them.
pub fn train_with_progress(
    corpus: &Corpus,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    limits: &TrainLimits,
    trained_at: u64,
    version: Option<String>,
    progress: &(dyn Fn(TrainProgress) + Sync),
) -> Result<Selection, TrainError> {
    if candidates.is_empty() {
        return Err(TrainError::NoCandidates);
    }
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
    let folds = if settings.folds > 1 { settings.folds as usize } else { 1 };
    let fold_of = if folds > 1 { assign_folds(&labels, &targets, settings)? } else { vec![0; targets.len()] };
    // The folds whose documents are held out and scored: every fold, or at scale only the first.
    let scored: Vec<usize> = match folds {
        1 => Vec::new(),
        _ if corpus.documents.len() > limits.holdout_above => vec![0],
        _ => (0..folds).collect(),
    };
    let holdout = scored.len() == 1;
    let held: Vec<usize> = (0..targets.len()).filter(|&i| scored.contains(&fold_of[i])).collect();

    // One pass over the texts counts the document frequencies of the whole corpus and of
    // every fold, and keeps each document's terms for the streamed plan.
    let parted: Vec<(&str, usize)> =
        corpus.documents.iter().map(|d| d.text.as_str()).zip(fold_of.iter().copied()).collect();
    let started = std::time::Instant::now();
    let (frequencies, kept) = DocumentFrequencies::count_keeping(&parted, folds, settings.features.clone(), true)?;
    drop(parted);
    let vectorizer = vectorizer(&frequencies, None, settings)?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "counted document frequencies");

    // A fold's matrix is never larger than the whole corpus's: fewer documents, and no term
    // more frequent in a part than in the whole, so no larger vocabulary.
    let documents = corpus.documents.len();
    let dense = dense_bytes(documents, vectorizer.vocabulary_size()) <= limits.max_dense_bytes;
    let (runnable, skipped): (Vec<ClassifierSettings>, Vec<ClassifierSettings>) =
        candidates.iter().partition(|c| dense || c.streams());
    let skipped: Vec<Skipped> = skipped
        .into_iter()
        .map(|classifier| Skipped {
            classifier,
            documents,
            features: vectorizer.vocabulary_size(),
            max_dense_bytes: limits.max_dense_bytes,
        })
        .collect();
    let Some(&first) = runnable.first() else {
        return Err(TrainError::OverBudget(skipped.into_iter().next().expect("every candidate was skipped")));
    };
    let plan = Plan {
        corpus,
        targets: &targets,
        labels: labels.len(),
        out_of_scope: labels.iter().position(|l| l == NONE),
        limits,
        features: vectorizer.vocabulary_size(),
    };

    // The streamed plan gathers the whole corpus's naive Bayes sums in the same passes as the folds'.
    if !scored.is_empty() {
        progress(TrainProgress::Started { fits: scored.len() as u64 * runnable.len() as u64 });
    }
    let validation = Validation { fold_of: &fold_of, scored: &scored, held: &held };
    let (predictions, whole_sums) = match kept {
        Some(kept) if !dense => {
            let (predictions, sums) =
                stream(&plan, &frequencies, &kept, &vectorizer, &validation, settings, &runnable, progress)?;
            (predictions, Some(sums))
        }
        _ if scored.is_empty() => (None, None),
        _ => (Some(cross_validate(&plan, &frequencies, &validation, settings, &runnable, progress)?), None),
    };

    let (chosen, metrics, results) = if let Some(predictions) = predictions {
        let results: Vec<Candidate> = runnable
            .iter()
            .zip(predictions)
            .map(|(&classifier, predicted)| {
                let outcomes: Vec<Outcome<'_>> = predicted
                    .iter()
                    .zip(&held)
                    .map(|(p, &i)| Outcome { truth: targets[i], predicted: p.label(), language: &corpus.documents[i].lang })
                    .collect();
                // The spread of the per-fold scores; with a holdout, of the scores of k
                // interleaved shares of the held-out documents.
                let part_of = |j: usize| if holdout { j % folds } else { fold_of[held[j]] };
                let fold_scores: Vec<f64> = (0..folds)
                    .map(|part| {
                        let held_out: Vec<Outcome<'_>> =
                            outcomes.iter().enumerate().filter(|&(j, _)| part_of(j) == part).map(|(_, o)| *o).collect();
                        Metrics::compute(&labels, &held_out, 0).macro_f1
                    })
                    .collect();
                Candidate {
                    classifier,
                    metrics: Metrics::compute(&labels, &outcomes, if holdout { 1 } else { settings.folds }),
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
    let layer = match (&whole_sums, chosen) {
        (Some(sums), ClassifierSettings::NaiveBayes { alpha }) => sums.fit(alpha)?,
        _ => {
            let all: Vec<usize> = (0..documents).collect();
            plan.fit(&vectorizer, &all, &[chosen], |_| {})?.pop().expect("one layer per candidate")
        }
    };

    let meta = ModelMeta {
        version: version.unwrap_or_else(|| default_version(corpus, &settings, trained_at)),
        classifier: chosen.family().to_string(),
        trained_at,
        corpus_digest: corpus.digest.clone(),
        corpus_documents: documents as u64,
        settings,
        metrics,
        selection: results.clone(),
    };
    let model = Model::new(meta, labels, vectorizer, layer)?;
    Ok(Selection { model, candidates: results, skipped, streamed: !dense })
}

/// How the candidates are fitted on a set of documents.
struct Plan<'a> {
    corpus: &'a Corpus,
    targets: &'a [usize],
    labels: usize,
    /// The `none` column, for the decision rule held-out predictions are scored with.
    out_of_scope: Option<usize>,
    limits: &'a TrainLimits,
    /// The whole corpus's vocabulary size, which bounds every fold's.
    features: usize,
}

impl Plan<'_> {
    /// Fits every candidate on the dense matrix of the documents `training`, featurized by
    /// `vectorizer`, calling `fitted` after each.
    fn fit(
        &self,
        vectorizer: &TfIdf,
        training: &[usize],
        candidates: &[ClassifierSettings],
        fitted: impl Fn(ClassifierSettings),
    ) -> Result<Vec<LinearLayer>, TrainError> {
        let documents = &self.corpus.documents;
        let rows: Vec<_> = training.iter().map(|&i| vectorizer.transform(&documents[i].text)).collect();
        let x = vectorizer.to_dense(&rows);
        drop(rows);
        let y: Vec<usize> = training.iter().map(|&i| self.targets[i]).collect();
        let fit = |&candidate: &ClassifierSettings| {
            let layer = candidate.fit(&x, &y, self.labels);
            fitted(candidate);
            layer
        };
        Ok(candidates.iter().map(fit).collect::<Result<_, _>>()?)
    }

    /// How many folds may be fitted at once: as many dense matrices of
    /// `training` documents as fit the limit together (at least one).
    fn concurrent_folds(&self, training: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let each = dense_bytes(training, self.features).max(1);
        cores.min((self.limits.max_dense_bytes / each).max(1) as usize)
    }
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

/// The vectorizer of every fold but `excluded`, refusing an empty vocabulary.
fn vectorizer(
    frequencies: &DocumentFrequencies,
    excluded: Option<usize>,
    settings: &TrainSettings,
) -> Result<TfIdf, TrainError> {
    let vectorizer = frequencies.vectorizer(excluded)?;
    if vectorizer.vocabulary_size() == 0 {
        return Err(TrainError::EmptyVocabulary(settings.features.min_df));
    }
    Ok(vectorizer)
}

/// Stratified fold assignment: every fold holds about 1/k of each label.
fn assign_folds(labels: &[String], targets: &[usize], settings: &TrainSettings) -> Result<Vec<usize>, TrainError> {
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
    Ok(fold_of)
}

/// Contiguous shares of the documents that the streamed passes hand out to threads. A
/// constant, not the number of cores: the sums of each share are added in share order,
/// so a model does not depend on the machine it was trained on.
const SHARES: usize = 8;

/// Runs `work` on each share of `0..documents` on every core; results in share order.
fn per_share<T: Send>(documents: usize, work: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let size = documents.div_ceil(SHARES).max(1);
    let ranges: Vec<_> = (0..documents).step_by(size).map(|start| start..(start + size).min(documents)).collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(ranges.len().max(1));
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let share = next.fetch_add(1, Ordering::Relaxed);
                        let Some(range) = ranges.get(share) else { return done };
                        done.push((share, work(range.clone())));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a training worker panicked")).collect()
    });
    done.sort_unstable_by_key(|(share, _)| *share);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Per candidate, the held-out prediction of every document.
type HeldOut = Vec<Vec<Prediction>>;

/// Which documents are held out, and from which folds.
struct Validation<'a> {
    /// Every document's fold.
    fold_of: &'a [usize],
    /// The folds held out and scored in turn (all, or one for a holdout); none without validation.
    scored: &'a [usize],
    /// The documents of the scored folds, in corpus order: held-out predictions follow it.
    held: &'a [usize],
}

/// The streamed plan, for naive Bayes only: per-class sums of every scored fold's
/// training documents and of the whole corpus, gathered in one pass over the documents'
/// kept terms (the texts were analyzed once, when counting), then the held-out
/// predictions in a second pass. Memory holds a few classes × vocabulary arrays per fold
/// and share, whatever the number of documents.
/// Returns the held-out predictions (when some fold is scored) and the whole corpus's sums.
#[allow(clippy::too_many_arguments)]
fn stream(
    plan: &Plan<'_>,
    frequencies: &DocumentFrequencies,
    kept: &DocumentTerms,
    whole: &TfIdf,
    validation: &Validation<'_>,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    progress: &(dyn Fn(TrainProgress) + Sync),
) -> Result<(Option<HeldOut>, NaiveBayesSums), TrainError> {
    let Validation { fold_of, scored, held } = *validation;
    let fold_vectorizers =
        scored.iter().map(|&fold| vectorizer(frequencies, Some(fold), settings)).collect::<Result<Vec<_>, _>>()?;
    // Vectorizer `whole_index` is the whole corpus's; vectorizer v < whole_index leaves out fold scored[v].
    let whole_index = scored.len();
    let vectorizers: Vec<&TfIdf> = fold_vectorizers.iter().chain([whole]).collect();
    let shared = SharedFeatures::new(vectorizers.clone())?;
    let positions = shared.positions(frequencies);
    let documents = plan.corpus.documents.len();
    let empty_sums =
        || vectorizers.iter().map(|v| NaiveBayesSums::new(v.vocabulary_size(), plan.labels)).collect::<Vec<_>>();

    let started = std::time::Instant::now();
    let mut sums = empty_sums();
    for share in per_share(documents, |range| {
        let mut sums = empty_sums();
        let mut scratch = Vec::new();
        for i in range {
            let label = plan.targets[i];
            shared.for_each_kept_row(
                kept.terms(i),
                &positions,
                &mut scratch,
                |v| v == whole_index || scored[v] != fold_of[i],
                |v, row| sums[v].add(&row, label),
            );
        }
        sums
    }) {
        for (total, part) in sums.iter_mut().zip(&share) {
            total.merge(part);
        }
    }
    let whole_sums = sums.pop().expect("the whole corpus's sums");
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "streamed naive Bayes sums");
    if scored.is_empty() {
        return Ok((None, whole_sums));
    }

    let alphas: Vec<f64> = candidates
        .iter()
        .map(|c| match *c {
            ClassifierSettings::NaiveBayes { alpha } => alpha,
            ClassifierSettings::Logistic { .. } => unreachable!("only candidates that stream are planned"),
        })
        .collect();
    // Every alpha of a fold is fitted from the fold's one set of sums; the fits run on every core.
    let fits: Vec<(usize, usize)> = (0..scored.len()).flat_map(|v| (0..alphas.len()).map(move |c| (v, c))).collect();
    let fitted = per_share(fits.len(), |range| {
        fits[range]
            .iter()
            .map(|&(v, c)| {
                let layer = sums[v].fit(alphas[c]);
                progress(TrainProgress::Fitted { fold: scored[v], candidate: candidates[c] });
                layer
            })
            .collect::<Vec<_>>()
    });
    let mut layers: Vec<Vec<LinearLayer>> = vec![Vec::with_capacity(alphas.len()); scored.len()];
    for (&(v, _), layer) in fits.iter().zip(fitted.into_iter().flatten()) {
        layers[v].push(layer?);
    }
    drop(sums);
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "fitted the folds' naive Bayes");

    let shares = per_share(held.len(), |range| {
        let mut scratch = Vec::new();
        held[range]
            .iter()
            .map(|&i| {
                let mut predicted = Vec::new();
                let scoring = scored.iter().position(|&fold| fold == fold_of[i]);
                shared.for_each_kept_row(
                    kept.terms(i),
                    &positions,
                    &mut scratch,
                    |v| Some(v) == scoring,
                    |v, row| {
                        predicted = layers[v]
                            .iter()
                            .map(|layer| layer.predict(&row).deciding_scope(plan.out_of_scope))
                            .collect()
                    },
                );
                predicted
            })
            .collect::<Vec<Vec<Prediction>>>()
    });
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "scored the held-out documents");
    let mut predictions: Vec<Vec<Prediction>> = vec![Vec::with_capacity(held.len()); candidates.len()];
    for per_document in shares.into_iter().flatten() {
        for (c, prediction) in per_document.into_iter().enumerate() {
            predictions[c].push(prediction);
        }
    }
    Ok((Some(predictions), whole_sums))
}

/// Stratified cross-validation over the scored folds of `validation`. TF-IDF is refitted
/// for each fold (from the fold counts in `frequencies`), so held-out documents never
/// shape the vocabulary; every candidate is fitted on the same fold features.
/// Returns, per candidate, the held-out prediction of every held-out document.
fn cross_validate(
    plan: &Plan<'_>,
    frequencies: &DocumentFrequencies,
    validation: &Validation<'_>,
    settings: &TrainSettings,
    candidates: &[ClassifierSettings],
    progress: &(dyn Fn(TrainProgress) + Sync),
) -> Result<Vec<Vec<Prediction>>, TrainError> {
    let Validation { fold_of, scored, held } = *validation;
    let folds = settings.folds as usize;
    let documents = &plan.corpus.documents;
    let run_fold = |fold: usize| -> Result<Vec<(usize, Vec<Prediction>)>, TrainError> {
        let vectorizer = vectorizer(frequencies, Some(fold), settings)?;
        let (held_out, training): (Vec<usize>, Vec<usize>) = (0..fold_of.len()).partition(|&i| fold_of[i] == fold);
        let layers = plan.fit(&vectorizer, &training, candidates, |candidate| {
            progress(TrainProgress::Fitted { fold, candidate })
        })?;
        let out_of_scope = plan.out_of_scope;
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
    let largest_training = fold_of.len() - fold_of.len() / folds;
    let workers = plan.concurrent_folds(largest_training).min(scored.len());
    let next = AtomicUsize::new(0);
    let fold_results: Vec<Result<Vec<_>, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut results = Vec::new();
                    loop {
                        let Some(&fold) = scored.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return results;
                        };
                        results.push(run_fold(fold));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a cross-validation worker panicked")).collect()
    });

    let mut predictions: Vec<Vec<Option<Prediction>>> = vec![vec![None; fold_of.len()]; candidates.len()];
    for fold in fold_results {
        for (document, per_candidate) in fold? {
            for (c, prediction) in per_candidate.into_iter().enumerate() {
                predictions[c][document] = Some(prediction);
            }
        }
    }
    Ok(predictions
        .into_iter()
        .map(|mut per_document| {
            held.iter().map(|&i| per_document[i].take().expect("a scored fold's document is held out once")).collect()
        })
        .collect())
}

/// A small, fixed pseudo-random generator: fold assignment must not change with a
/// dependency's algorithm, or retraining would not reproduce the committed model.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (with a negligible modulo bias for small `n`); `n` must not be 0.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
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
        let selection =
            train_selecting(&toy_corpus(), &settings(), &candidates, &TrainLimits::default(), 0, None).unwrap();
        let (model, results) = (selection.model, selection.candidates);
        assert!(selection.skipped.is_empty() && !selection.streamed);
        assert_eq!(results.len(), 2);
        let best = results.iter().map(|c| c.metrics.macro_f1).fold(0.0, f64::max);
        assert_eq!(model.meta().metrics.macro_f1, best);
        let winner = results.iter().find(|c| c.metrics.macro_f1 == best).unwrap();
        assert_eq!(model.meta().settings.classifier, winner.classifier);
        assert_eq!(model.meta().selection, results);
        assert!(results.iter().all(|c| c.macro_f1_standard_error.is_finite()));
    }

    #[test]
    fn logistic_regression_over_the_memory_limit_is_skipped_and_naive_bayes_streams() {
        let corpus = toy_corpus();
        let logistic = ClassifierSettings::Logistic { alpha: 0.1, max_iterations: 100 };
        let bayes = ClassifierSettings::NaiveBayes { alpha: 0.1 };
        let features = train(&corpus, &settings(), 0, None).unwrap().vectorizer().vocabulary_size();
        // One byte short of the 30 × features × 4 bytes matrix.
        let tight = TrainLimits { max_dense_bytes: 30 * features as u64 * 4 - 1, ..TrainLimits::default() };
        let selection = train_selecting(&corpus, &settings(), &[logistic, bayes], &tight, 0, None).unwrap();
        assert!(selection.streamed);
        assert_eq!(
            selection.skipped,
            [Skipped { classifier: logistic, documents: 30, features, max_dense_bytes: tight.max_dense_bytes }]
        );
        assert_eq!(selection.candidates.len(), 1);
        assert_eq!(selection.candidates[0].classifier, bayes);
        assert_eq!(selection.model.meta().settings.classifier, bayes);
        let reason = selection.skipped[0].to_string();
        assert!(reason.contains("30 × ") && reason.contains("over the limit"), "{reason}");

        // The same naive Bayes, trained on a dense matrix within the limit.
        let roomy = TrainLimits { max_dense_bytes: 30 * features as u64 * 4, ..TrainLimits::default() };
        let dense = train_selecting(&corpus, &settings(), &[logistic, bayes], &roomy, 0, None).unwrap();
        assert!(!dense.streamed && dense.skipped.is_empty() && dense.candidates.len() == 2);
        let dense_bayes = train_selecting(&corpus, &settings(), &[bayes], &roomy, 0, None).unwrap();
        assert_eq!(dense_bayes.candidates[0].metrics, selection.candidates[0].metrics);
        let (a, b) = (dense_bayes.model.layer(), selection.model.layer());
        let largest =
            (&a.weights - &b.weights).iter().chain(&(&a.intercept - &b.intercept)).fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(largest < 1e-5, "{largest}");

        let err = train_selecting(&corpus, &settings(), &[logistic], &tight, 0, None).unwrap_err();
        assert!(matches!(err, TrainError::OverBudget(_)), "{err}");
        assert!(err.to_string().contains("--max-dense-bytes"), "{err}");
    }

    #[test]
    fn above_the_holdout_size_one_fold_is_scored_streamed_or_dense() {
        let corpus = toy_corpus();
        let bayes = [ClassifierSettings::NaiveBayes { alpha: 0.1 }, ClassifierSettings::NaiveBayes { alpha: 1.0 }];
        let steps = std::sync::Mutex::new(Vec::new());
        let record = |step: TrainProgress| steps.lock().unwrap().push(step);
        let holdout = TrainLimits { holdout_above: 29, ..TrainLimits::default() };
        let dense = train_with_progress(&corpus, &settings(), &bayes, &holdout, 0, None, &record).unwrap();
        assert!(!dense.streamed);
        // Fold 0 of 5 holds 2 of each label's 10 documents.
        for candidate in &dense.candidates {
            assert_eq!((candidate.metrics.folds, candidate.metrics.documents), (1, 6));
            assert!(candidate.macro_f1_standard_error.is_finite());
        }
        assert_eq!(dense.model.meta().metrics.folds, 1);
        let steps = steps.into_inner().unwrap();
        assert_eq!(steps.first(), Some(&TrainProgress::Started { fits: 2 }));
        assert_eq!(steps.iter().filter(|s| matches!(s, TrainProgress::Fitted { fold: 0, .. })).count(), 2);

        let tight = TrainLimits { max_dense_bytes: 1, ..holdout };
        let streamed = train_selecting(&corpus, &settings(), &bayes, &tight, 0, None).unwrap();
        assert!(streamed.streamed);
        assert_eq!(streamed.candidates, dense.candidates);

        // At the threshold, every fold is still cross-validated.
        let at = TrainLimits { holdout_above: 30, ..TrainLimits::default() };
        let kfold = train_selecting(&corpus, &settings(), &bayes, &at, 0, None).unwrap();
        assert!(kfold.candidates.iter().all(|c| c.metrics.folds == 5 && c.metrics.documents == 30));
    }

    #[test]
    fn folds_refit_the_vocabulary_without_their_held_out_documents() {
        // A term only in one label's held-out documents must not be in that fold's vocabulary:
        // compare the counts-derived fold vectorizers with fits on the fold's own texts.
        let corpus = toy_corpus();
        let labels = label_set(&corpus.documents);
        let targets: Vec<usize> =
            corpus.documents.iter().map(|d| labels.iter().position(|l| l == d.primary_label()).unwrap()).collect();
        let settings = settings();
        let fold_of = assign_folds(&labels, &targets, &settings).unwrap();
        let parted: Vec<(&str, usize)> =
            corpus.documents.iter().map(|d| d.text.as_str()).zip(fold_of.iter().copied()).collect();
        let frequencies = DocumentFrequencies::count(&parted, 5, settings.features.clone()).unwrap();
        for fold in 0..5 {
            let own: Vec<&str> = corpus
                .documents
                .iter()
                .zip(&fold_of)
                .filter(|(_, f)| **f != fold)
                .map(|(d, _)| d.text.as_str())
                .collect();
            let expected = TfIdf::fit(&own, settings.features.clone()).unwrap();
            let derived = vectorizer(&frequencies, Some(fold), &settings).unwrap();
            assert_eq!((derived.terms(), derived.idf()), (expected.terms(), expected.idf()), "fold {fold}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes_for_people(512), "512 B");
        assert_eq!(bytes_for_people(3 << 20), "3.0 MiB");
        assert_eq!(bytes_for_people(DEFAULT_MAX_DENSE_BYTES), "1.0 GiB");
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
