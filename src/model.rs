//! The trained model and inference: TF-IDF features times a linear layer, then a softmax.
//!
//! The weights come from linfa's multinomial logistic regression (see [`crate::train`]);
//! inference multiplies only the document's non-zero features with them, so its cost
//! does not grow with the vocabulary.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::bag::Bag;
use crate::metrics::Metrics;
use crate::tfidf::{SparseVector, TfIdf};
use crate::train::{Candidate, TrainSettings};

/// The label of out-of-scope documents: news about none of the topics.
pub const NONE: &str = "none";

/// Everything an operator wants to know about where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Identifies this model among its retrainings (not the file format).
    pub version: String,
    /// Classifier family, e.g. "logistic_regression" or "multinomial_nb".
    pub classifier: String,
    /// Seconds since the Unix epoch, UTC.
    pub trained_at: u64,
    /// SHA-256 (hex) of the corpus as read by the trainer.
    pub corpus_digest: String,
    pub corpus_documents: u64,
    /// The settings the model was trained with; retraining with them reproduces it.
    pub settings: TrainSettings,
    /// Cross-validated metrics of these settings.
    pub metrics: Metrics,
    /// Every classifier compared during model selection, with its cross-validated metrics.
    pub selection: Vec<Candidate>,
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
pub const LATEST_TIMESTAMP: u64 = 253_402_300_799;

/// Largest magnitude a weight may have. Real models stay far below it; the bound
/// keeps every sum of weights finite, so probabilities are never NaN.
pub const MAX_WEIGHT: f32 = 1.0e4;

/// `seconds` since the Unix epoch as RFC 3339 UTC, e.g. "2026-11-29T00:00:00Z";
/// `None` past [`LATEST_TIMESTAMP`].
pub fn rfc3339(seconds: u64) -> Option<String> {
    if seconds > LATEST_TIMESTAMP {
        return None;
    }
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

impl ModelMeta {
    /// Metadata for a model that is never saved, such as one fold of cross-validation.
    pub fn placeholder() -> Self {
        Self {
            version: String::new(),
            classifier: String::new(),
            trained_at: 0,
            corpus_digest: String::new(),
            corpus_documents: 0,
            settings: TrainSettings::default(),
            metrics: Metrics::default(),
            selection: Vec::new(),
        }
    }
}

/// A linear layer: `scores = x · weights + intercept`, one column per label.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    /// Features × labels.
    pub weights: Array2<f32>,
    pub intercept: Array1<f32>,
}

/// Why a model's parts do not fit together.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidModel {
    #[error("the model has no labels, or fewer than two")]
    TooFewLabels,
    #[error("label {0:?} is empty or appears twice")]
    BadLabel(String),
    #[error("weights have {rows} rows but the vocabulary has {terms} terms")]
    RowMismatch { rows: usize, terms: usize },
    #[error("{weights} weights stored for {rows} terms × {columns} labels")]
    WeightCount { weights: usize, rows: usize, columns: usize },
    #[error("weights and intercept have {columns} and {intercepts} columns for {labels} labels")]
    ColumnMismatch { columns: usize, intercepts: usize, labels: usize },
    #[error("weights contain a value that is not finite or exceeds {MAX_WEIGHT} in magnitude")]
    BadWeight,
    #[error("training time {0} is not a time RFC 3339 can express")]
    BadTimestamp(u64),
    #[error(transparent)]
    Vectorizer(#[from] crate::tfidf::VectorizerError),
}

/// A trained classifier, ready to label text.
#[derive(Debug)]
pub struct Model {
    meta: ModelMeta,
    labels: Vec<String>,
    /// Index of [`NONE`] among the labels, if the model has it.
    out_of_scope: Option<usize>,
    vectorizer: TfIdf,
    layer: LinearLayer,
    /// Per feature, its weights times its idf, then (in the last of [`scoring_stride`]
    /// floats) its idf squared: all that scoring a feature needs, in one place in memory.
    /// See [`Model::score_bag`].
    scoring: Vec<f32>,
}

/// The model's answer for one text: every label index with its probability, most
/// probable first, and the label it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub ranked: Vec<(usize, f32)>,
    label: usize,
}

impl Prediction {
    /// Ranks a linear layer's raw scores as probabilities; the answer is the most probable.
    fn from_scores(mut scores: Vec<f32>) -> Self {
        softmax(&mut scores);
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        // Ties keep the model's column order, so equal scores rank deterministically.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let label = ranked[0].0;
        Self { ranked, label }
    }

    /// Index of the label the model answers: the most probable one, except that an
    /// out-of-scope label must be more probable than every other label together (see
    /// [`Prediction::deciding_scope`]).
    pub fn label(&self) -> usize {
        self.label
    }

    /// Decides scope before topic. "Is this article about any of our topics?" is one
    /// question, and its answer is the sum of the topics' probabilities; only when that
    /// sum is under one half is the article out of scope. Comparing `none` with each
    /// topic alone would call an article `none` at 0.4 when it is 0.6 likely to be about
    /// some topic, merely because the topics split that 0.6 between them — and in a
    /// newsroom a story wrongly called `none` is a story lost.
    pub fn deciding_scope(mut self, out_of_scope: Option<usize>) -> Self {
        if out_of_scope == Some(self.label) {
            let p_none = self.ranked[0].1;
            if let Some(&(topic, _)) = self.ranked.get(1).filter(|_| p_none <= 0.5) {
                self.label = topic;
            }
        }
        self
    }
}

impl Model {
    /// Assembles a model, checking that its parts agree in shape and that its weights are
    /// finite and bounded, so that every prediction is a finite probability distribution.
    pub fn new(
        meta: ModelMeta,
        labels: Vec<String>,
        vectorizer: TfIdf,
        layer: LinearLayer,
    ) -> Result<Self, InvalidModel> {
        if labels.len() < 2 {
            return Err(InvalidModel::TooFewLabels);
        }
        for (i, label) in labels.iter().enumerate() {
            if label.is_empty() || labels[..i].contains(label) {
                return Err(InvalidModel::BadLabel(label.clone()));
            }
        }
        let (rows, columns) = layer.weights.dim();
        if rows != vectorizer.vocabulary_size() {
            return Err(InvalidModel::RowMismatch { rows, terms: vectorizer.vocabulary_size() });
        }
        if columns != labels.len() || layer.intercept.len() != labels.len() {
            return Err(InvalidModel::ColumnMismatch {
                columns,
                intercepts: layer.intercept.len(),
                labels: labels.len(),
            });
        }
        if !layer.weights.iter().chain(layer.intercept.iter()).all(|w| w.is_finite() && w.abs() <= MAX_WEIGHT) {
            return Err(InvalidModel::BadWeight);
        }
        if meta.trained_at > LATEST_TIMESTAMP {
            return Err(InvalidModel::BadTimestamp(meta.trained_at));
        }
        let out_of_scope = labels.iter().position(|l| l == NONE);
        let scoring = scoring_rows(&vectorizer, &layer);
        Ok(Self { meta, labels, out_of_scope, vectorizer, layer, scoring })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The labels, in the model's column order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn vectorizer(&self) -> &TfIdf {
        &self.vectorizer
    }

    pub fn layer(&self) -> &LinearLayer {
        &self.layer
    }

    /// Labels `text`. A text with no known term still gets finite scores: the intercept's softmax.
    pub fn predict(&self, text: &str) -> Prediction {
        let mut bag = Bag::default();
        self.vectorizer.for_each_feature(text, |feature, _| bag.add(feature));
        self.score_bag(&bag)
    }

    /// Labels counted features, as [`Model::score`] labels their TF-IDF row, but without
    /// building the row: each family's dot products are summed from [`Model::scoring`]'s
    /// idf-scaled weights and divided by the family's norm at the end. Only the rounding
    /// differs from scoring the row.
    pub fn score_bag(&self, bag: &Bag) -> Prediction {
        let classes = self.labels.len();
        let stride = scoring_stride(classes);
        // Per family, the dot product with each label's weights, then in the last lane the
        // sum of squared weights; a register's width of lanes at a time, so that the sums
        // stay in registers (one pass over the bag for up to seven labels).
        let mut sums = vec![0.0f32; 2 * stride];
        for lanes in (0..stride).step_by(LANES) {
            let mut partial = [[0.0f32; LANES]; 2];
            for (feature, count) in bag.iter() {
                let start = feature as usize * stride + lanes;
                let row = &self.scoring[start..start + LANES];
                let tf = self.vectorizer.tf(count);
                let partial = &mut partial[self.vectorizer.family(feature)];
                for lane in 0..LANES {
                    partial[lane] += tf * row[lane];
                }
                if count > 1 && lanes + LANES == stride {
                    partial[LANES - 1] += (tf * tf - tf) * row[LANES - 1];
                }
            }
            for (family, partial) in partial.iter().enumerate() {
                sums[family * stride + lanes..family * stride + lanes + LANES].copy_from_slice(partial);
            }
        }
        let mut scores = self.layer.intercept.to_vec();
        for sums in sums.chunks_exact(stride) {
            let norm = sums[stride - 1].sqrt();
            if norm > 0.0 {
                scores.iter_mut().zip(sums).for_each(|(score, dot)| *score += dot / norm);
            }
        }
        Prediction::from_scores(scores).deciding_scope(self.out_of_scope)
    }

    /// Labels a text's features.
    pub fn score(&self, features: &SparseVector) -> Prediction {
        self.layer.predict(features).deciding_scope(self.out_of_scope)
    }

    /// Index of [`NONE`] among the labels, if the model has it.
    pub fn out_of_scope(&self) -> Option<usize> {
        self.out_of_scope
    }
}

impl LinearLayer {
    /// Scores a document's features: only its non-zero entries touch the weights.
    pub fn predict(&self, features: &SparseVector) -> Prediction {
        let mut scores = self.intercept.to_vec();
        let classes = scores.len();
        // A plain slice, not ndarray row views: this loop runs for every feature of every
        // document, and the views' bookkeeping cost more than the arithmetic.
        let weights = self.weights.as_standard_layout();
        let weights = weights.as_slice().expect("a standard-layout array is one contiguous slice");
        for (feature, value) in features.iter() {
            for (score, weight) in scores.iter_mut().zip(&weights[feature * classes..(feature + 1) * classes]) {
                *score += value * weight;
            }
        }
        Prediction::from_scores(scores)
    }
}

/// Width of the vector registers [`Model::score_bag`] computes in.
const LANES: usize = 8;

/// Floats per feature in [`Model::scoring`]: a weight per label and the idf squared,
/// padded with zeros to whole register widths.
fn scoring_stride(labels: usize) -> usize {
    (labels + 1).next_multiple_of(LANES)
}

fn scoring_rows(vectorizer: &TfIdf, layer: &LinearLayer) -> Vec<f32> {
    let stride = scoring_stride(layer.weights.ncols());
    let mut rows = vec![0.0f32; layer.weights.nrows() * stride];
    for ((row, weights), &idf) in rows.chunks_exact_mut(stride).zip(layer.weights.rows()).zip(vectorizer.idf()) {
        row.iter_mut().zip(weights).for_each(|(scaled, w)| *scaled = w * idf);
        row[stride - 1] = idf * idf;
    }
    rows
}

/// Turns scores into probabilities in place; subtracting the maximum keeps `exp` finite.
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tfidf::FeatureSettings;
    use ndarray::array;

    pub(crate) fn meta() -> ModelMeta {
        ModelMeta { version: "test".into(), classifier: "logistic_regression".into(), ..ModelMeta::placeholder() }
    }

    /// Four labels like the real model's, one telling word or two each.
    pub(crate) fn four_label_model() -> Model {
        let terms = ["attacked", "camp", "football", "talked", "troops"];
        let vectorizer = TfIdf::from_parts(
            crate::tfidf::tests::words(1),
            terms.iter().map(|t| t.to_string()).collect(),
            vec![1.0; terms.len()],
        )
        .unwrap();
        // Columns: diplomacy, humanitarian, none, security.
        let weights = array![
            [-1.0, -1.0, -1.0, 3.0],
            [-1.0, 3.0, -1.0, -1.0],
            [-1.0, -1.0, 3.0, -1.0],
            [3.0, -1.0, -1.0, -1.0],
            [-1.0, -1.0, -1.0, 3.0]
        ];
        let layer = LinearLayer { weights, intercept: Array1::zeros(4) };
        let labels = ["diplomacy", "humanitarian", "none", "security"].map(String::from).to_vec();
        Model::new(meta(), labels, vectorizer, layer).unwrap()
    }

    #[test]
    fn counted_features_score_as_their_row_does() {
        let model =
            crate::model_file::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/topics.model"))
                .unwrap();
        let texts = [
            "وزير الخارجية يبحث مع نظيره سبل وقف إطلاق النار وإيصال المساعدات إلى المخيمات",
            "Troops shelled the border town overnight; the the the army said.",
            "",
        ];
        for text in texts {
            let mut bag = Bag::default();
            model.vectorizer().for_each_feature(text, |feature, _| bag.add(feature));
            let fast = model.score_bag(&bag);
            let row = model.score(&model.vectorizer().row(&bag));
            assert_eq!(fast.label(), row.label(), "{text}");
            for (a, b) in fast.ranked.iter().zip(&row.ranked) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() < 1e-6, "{text}: {a:?} {b:?}");
            }
        }
    }

    fn two_word_model() -> Model {
        let vectorizer =
            TfIdf::from_parts(crate::tfidf::tests::words(1), vec!["camp".into(), "troops".into()], vec![1.0, 1.0])
                .unwrap();
        let layer = LinearLayer { weights: array![[0.0, 4.0], [4.0, 0.0]], intercept: array![0.5, 0.0] };
        Model::new(meta(), vec!["security".into(), "humanitarian".into()], vectorizer, layer).unwrap()
    }

    #[test]
    fn columns_map_to_labels_in_order() {
        let model = two_word_model();
        let p = model.predict("troops troops");
        assert_eq!(model.labels()[p.label()], "security");
        let p = model.predict("camp");
        assert_eq!(model.labels()[p.label()], "humanitarian");
    }

    #[test]
    fn scores_are_a_sorted_probability_distribution() {
        let model = two_word_model();
        for text in ["troops camp", "camp", "", "nothing known here"] {
            let p = model.predict(text);
            let sum: f32 = p.ranked.iter().map(|(_, s)| s).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{text:?}: {sum}");
            assert!(p.ranked.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(p.ranked.iter().all(|(_, s)| s.is_finite() && *s >= 0.0));
        }
    }

    #[test]
    fn unknown_text_falls_back_to_the_intercept() {
        let model = two_word_model();
        let p = model.predict("zzz");
        let expected = 1.0 / (1.0 + (-0.5f32).exp());
        assert_eq!(p.label(), 0);
        assert!((p.ranked[0].1 - expected).abs() < 1e-6);
    }

    #[test]
    fn timestamps_format_up_to_the_year_9999() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(LATEST_TIMESTAMP).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339(LATEST_TIMESTAMP + 1), None);
        assert_eq!(rfc3339(u64::MAX), None);
    }

    #[test]
    fn extreme_scores_stay_finite() {
        let mut scores = [1e30, -1e30, 0.0];
        softmax(&mut scores);
        assert_eq!(scores, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn inconsistent_parts_are_rejected() {
        let vectorizer = || TfIdf::from_parts(FeatureSettings::default(), vec!["a".into()], vec![1.0]).unwrap();
        let labels = vec!["x".to_string(), "y".to_string()];
        let wrong_rows = LinearLayer { weights: Array2::zeros((2, 2)), intercept: Array1::zeros(2) };
        assert!(matches!(
            Model::new(meta(), labels.clone(), vectorizer(), wrong_rows),
            Err(InvalidModel::RowMismatch { .. })
        ));
        let nan = LinearLayer { weights: array![[f32::NAN, 0.0]], intercept: Array1::zeros(2) };
        assert_eq!(Model::new(meta(), labels.clone(), vectorizer(), nan).unwrap_err(), InvalidModel::BadWeight);
        let huge = LinearLayer { weights: array![[3.0e38, 3.0e38]], intercept: Array1::zeros(2) };
        assert_eq!(Model::new(meta(), labels.clone(), vectorizer(), huge).unwrap_err(), InvalidModel::BadWeight);
        let layer = LinearLayer { weights: Array2::zeros((1, 2)), intercept: Array1::zeros(2) };
        let future = ModelMeta { trained_at: u64::MAX, ..meta() };
        assert_eq!(
            Model::new(future, labels.clone(), vectorizer(), layer).unwrap_err(),
            InvalidModel::BadTimestamp(u64::MAX)
        );
        let layer = LinearLayer { weights: Array2::zeros((1, 2)), intercept: Array1::zeros(2) };
        let twice = vec!["x".to_string(), "x".to_string()];
        assert_eq!(Model::new(meta(), twice, vectorizer(), layer).unwrap_err(), InvalidModel::BadLabel("x".into()));
    }

    #[test]
    fn out_of_scope_must_outweigh_all_topics_together() {
        let ranked = |scores: &[(usize, f32)]| Prediction { ranked: scores.to_vec(), label: scores[0].0 };
        // Columns: diplomacy, humanitarian, none, security.
        let split_topics = ranked(&[(2, 0.4), (3, 0.35), (0, 0.25)]);
        assert_eq!(split_topics.clone().deciding_scope(Some(2)).label(), 3);
        assert_eq!(split_topics.deciding_scope(None).label(), 2, "without the rule, the most probable");
        let clearly_none = ranked(&[(2, 0.55), (3, 0.3), (0, 0.15)]);
        assert_eq!(clearly_none.deciding_scope(Some(2)).label(), 2);
        let topic_first = ranked(&[(3, 0.5), (2, 0.45), (0, 0.05)]);
        assert_eq!(topic_first.deciding_scope(Some(2)).label(), 3);
    }
}
