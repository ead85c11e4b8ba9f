//! The linfa classifiers the trainer can fit, each reduced to the same linear layer
//! (`scores = x · W + b`, probabilities by softmax) that serving evaluates sparsely.
//!
//! - Multinomial logistic regression (linfa-logistic): `W`, `b` are its parameters.
//! - Multinomial naive Bayes (linfa-bayes): the joint log-likelihood is linear in the
//!   features, `ln P(c) + Σ x_j ln P(j | c)`, so `W` holds the feature log-probabilities
//!   and `b` the log-priors; the softmax of the joint log-likelihood is the posterior.
//!
//! Logistic regression needs every training document as a dense row. Naive Bayes only
//! needs per-class sums of the rows, so [`NaiveBayesSums`] can gather them from sparse
//! rows one document at a time, in memory of classes × vocabulary whatever the corpus size.

use std::sync::Mutex;

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_bayes::MultinomialNb;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::model::LinearLayer;
use crate::tfidf::SparseVector;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ClassifierSettings {
    /// L2-regularized multinomial logistic regression; `alpha` is linfa's penalty weight (like 1/C).
    Logistic { alpha: f64, max_iterations: u64 },
    /// Multinomial naive Bayes with additive smoothing `alpha`.
    NaiveBayes { alpha: f64 },
}

/// L-BFGS iterations allowed by default; on our corpora the solver settles well before.
pub const DEFAULT_MAX_ITERATIONS: u64 = 100;

impl Default for ClassifierSettings {
    fn default() -> Self {
        ClassifierSettings::Logistic { alpha: 0.1, max_iterations: DEFAULT_MAX_ITERATIONS }
    }
}

impl std::fmt::Display for ClassifierSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassifierSettings::Logistic { alpha, .. } => write!(f, "logistic_regression(alpha={alpha})"),
            ClassifierSettings::NaiveBayes { alpha } => write!(f, "multinomial_nb(alpha={alpha})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("logistic regression failed: {0}")]
    Logistic(#[from] linfa_logistic::error::Error),
    #[error("naive Bayes failed: {0}")]
    NaiveBayes(#[from] linfa_bayes::NaiveBayesError),
    #[error("logistic regression made no progress in {0} iterations; raise --max-iterations")]
    NoProgress(u64),
    #[error("naive Bayes has no training document")]
    NoDocuments,
    #[error("cannot read the fitted naive Bayes model: {0}")]
    Unreadable(String),
}

impl ClassifierSettings {
    /// The family name recorded in the model.
    pub fn family(&self) -> &'static str {
        match self {
            ClassifierSettings::Logistic { .. } => "logistic_regression",
            ClassifierSettings::NaiveBayes { .. } => "multinomial_nb",
        }
    }

    /// How strongly the model is pulled toward simplicity: the L2 weight of the logistic
    /// regression, the additive smoothing of naive Bayes. Larger is simpler.
    pub fn regularization(&self) -> f64 {
        match *self {
            ClassifierSettings::Logistic { alpha, .. } | ClassifierSettings::NaiveBayes { alpha } => alpha,
        }
    }

    /// Whether it can be fitted from [`NaiveBayesSums`], without a dense matrix of every document.
    pub fn streams(&self) -> bool {
        matches!(self, ClassifierSettings::NaiveBayes { .. })
    }

    /// Fits on rows `x` with label indices `y` in `0..labels`, returning one column per label.
    /// A label with no training row gets a column that never wins.
    pub fn fit(&self, x: &Array2<f32>, y: &[usize], labels: usize) -> Result<LinearLayer, FitError> {
        // A view: linfa reads the rows in place, and a copy would double the largest allocation of training.
        let targets = Array1::from(y.to_vec());
        let dataset = DatasetBase::new(x.view(), targets.view());
        let (classes, weights, intercept) = match *self {
            ClassifierSettings::Logistic { alpha, max_iterations } => {
                let fitted = MultiLogisticRegression::default()
                    .alpha(alpha as f32)
                    .max_iterations(max_iterations)
                    .fit(&dataset)?;
                // linfa hands back its starting point (all zeros) when the solver made no progress.
                if fitted.params().iter().all(|&w| w == 0.0) {
                    return Err(FitError::NoProgress(max_iterations));
                }
                (fitted.classes().to_vec(), fitted.params().clone(), fitted.intercept().clone())
            }
            ClassifierSettings::NaiveBayes { alpha } => naive_bayes(&dataset, alpha)?,
        };
        Ok(widen(x.ncols(), labels, &classes, weights, intercept))
    }
}

/// The layer with one column per label from the columns of the labels a solver saw.
fn widen(
    features: usize,
    labels: usize,
    classes: &[usize],
    weights: Array2<f32>,
    intercept: Array1<f32>,
) -> LinearLayer {
    let mut layer =
        LinearLayer { weights: Array2::zeros((features, labels)), intercept: Array1::from_elem(labels, -1.0e4) };
    for (column, &label) in classes.iter().enumerate() {
        layer.weights.column_mut(label).assign(&weights.column(column));
        layer.intercept[label] = intercept[column];
    }
    layer
}

/// Per-class sums of TF-IDF rows and per-class document counts: all that multinomial
/// naive Bayes learns from its training documents.
///
/// linfa-bayes sums a class's rows and smooths the sums; handing it one row per class,
/// the sum of that class's documents, gives the same feature log-probabilities as
/// handing it every document, in memory of classes × vocabulary. (Its incremental
/// `fit_with` over mini-batches of documents would also bound memory, but 0.8.1 prints
/// two vocabulary-sized arrays per class to standard error on every call: about 0.8 s a
/// call at 40,000 features, over a minute for one fit of 100,000 documents in batches.)
/// Only the priors, which linfa counts in rows, come from the document counts here.
#[derive(Debug, Clone)]
pub struct NaiveBayesSums {
    /// Labels × features; f64, so that adding many small weights loses nothing.
    sums: Array2<f64>,
    documents: Vec<u64>,
}

impl NaiveBayesSums {
    pub fn new(features: usize, labels: usize) -> Self {
        Self { sums: Array2::zeros((labels, features)), documents: vec![0; labels] }
    }

    /// Adds one document of label `label`; its features must be below `features`.
    pub fn add(&mut self, row: &SparseVector, label: usize) {
        let mut sums = self.sums.row_mut(label);
        for (feature, value) in row.iter() {
            sums[feature] += f64::from(value);
        }
        self.documents[label] += 1;
    }

    /// Adds another set of sums over the same features and labels (a worker's share of the documents).
    pub fn merge(&mut self, other: &NaiveBayesSums) {
        self.sums += &other.sums;
        for (mine, theirs) in self.documents.iter_mut().zip(&other.documents) {
            *mine += theirs;
        }
    }

    /// Multinomial naive Bayes with smoothing `alpha`, fitted by linfa-bayes on the sums.
    pub fn fit(&self, alpha: f64) -> Result<LinearLayer, FitError> {
        let classes: Vec<usize> = (0..self.documents.len()).filter(|&c| self.documents[c] > 0).collect();
        if classes.is_empty() {
            return Err(FitError::NoDocuments);
        }
        let rows = self.sums.select(ndarray::Axis(0), &classes).mapv(|v| v as f32);
        let targets = Array1::from(classes.clone());
        let dataset = DatasetBase::new(rows.view(), targets.view());
        let (fitted_classes, weights, _) = naive_bayes(&dataset, alpha)?;
        if fitted_classes != classes {
            return Err(FitError::Unreadable(format!("fitted classes {fitted_classes:?}, expected {classes:?}")));
        }
        // As linfa computes a prior from its row counts, in f32, so that both paths agree to the bit.
        let total = self.documents.iter().sum::<u64>() as f32;
        let intercept = classes.iter().map(|&c| (self.documents[c] as f32 / total).ln()).collect();
        Ok(widen(self.sums.ncols(), self.documents.len(), &classes, weights, intercept))
    }
}

/// linfa-bayes 0.8.1 prints every class histogram to standard error with a leftover
/// `dbg!` on each fit (megabytes for a real vocabulary), so standard error is silenced
/// while any fit runs. The redirection is process-wide and only one can exist at a time:
/// the first fit to start installs it and the last to end removes it, so that fits on
/// parallel folds need not wait for each other.
static QUIET: Mutex<(usize, Option<gag::Gag>)> = Mutex::new((0, None));

struct QuietStderr;

impl QuietStderr {
    fn new() -> Self {
        let mut quiet = QUIET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if quiet.0 == 0 {
            quiet.1 = gag::Gag::stderr().ok();
        }
        quiet.0 += 1;
        QuietStderr
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        let mut quiet = QUIET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        quiet.0 -= 1;
        if quiet.0 == 0 {
            quiet.1 = None;
        }
    }
}

type Parameters = (Vec<usize>, Array2<f32>, Array1<f32>);

fn naive_bayes(
    dataset: &DatasetBase<ArrayView2<'_, f32>, ArrayView1<'_, usize>>,
    alpha: f64,
) -> Result<Parameters, FitError> {
    let fitted = {
        let _quiet = QuietStderr::new();
        MultinomialNb::params().alpha(alpha as f32).fit(dataset)?
    };

    // linfa-bayes keeps the log-probabilities private; its serde form exposes them,
    // and a test checks the result against its joint log-likelihood.
    let stored: StoredNb = serde_json::to_value(&fitted)
        .and_then(serde_json::from_value)
        .map_err(|e| FitError::Unreadable(e.to_string()))?;
    let features = dataset.records().ncols();
    let mut classes: Vec<usize> = stored.class_info.keys().copied().collect();
    classes.sort_unstable();
    let mut weights = Array2::<f32>::zeros((features, classes.len()));
    let mut intercept = Array1::<f32>::zeros(classes.len());
    for (column, class) in classes.iter().enumerate() {
        let histogram = &stored.class_info[class];
        if histogram.feature_log_prob.data.len() != features {
            return Err(FitError::Unreadable(format!(
                "class {class} has {} log-probabilities",
                histogram.feature_log_prob.data.len()
            )));
        }
        weights.column_mut(column).assign(&Array1::from(histogram.feature_log_prob.data.clone()));
        intercept[column] = histogram.prior.ln();
    }
    Ok((classes, weights, intercept))
}

/// The parts of linfa-bayes' serialized `MultinomialNb` that make its linear form.
#[derive(Deserialize)]
struct StoredNb {
    class_info: std::collections::HashMap<usize, StoredHistogram>,
}

#[derive(Deserialize)]
struct StoredHistogram {
    prior: f32,
    feature_log_prob: StoredArray,
}

/// ndarray's serde form of a one-dimensional array.
#[derive(Deserialize)]
struct StoredArray {
    data: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::Dataset;
    use linfa::traits::Predict;
    use linfa_bayes::NaiveBayes;
    use linfa_logistic::MultiLogisticRegression;
    use ndarray::array;

    fn data() -> (Array2<f32>, Vec<usize>) {
        let x = array![
            [0.9, 0.1, 0.0, 0.0],
            [0.8, 0.0, 0.2, 0.0],
            [0.0, 0.9, 0.1, 0.0],
            [0.1, 0.7, 0.0, 0.2],
            [0.0, 0.0, 0.6, 0.8],
            [0.0, 0.2, 0.0, 0.9]
        ];
        (x, vec![0, 0, 1, 1, 2, 2])
    }

    fn probabilities(layer: &LinearLayer, x: &Array2<f32>) -> Array2<f64> {
        let mut scores = x.dot(&layer.weights) + &layer.intercept;
        for mut row in scores.rows_mut() {
            let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        scores.mapv(f64::from)
    }

    #[test]
    fn logistic_layer_reproduces_linfa() {
        let (x, y) = data();
        let settings = ClassifierSettings::Logistic { alpha: 0.1, max_iterations: 100 };
        let layer = settings.fit(&x, &y, 3).unwrap();
        let dataset = Dataset::new(x.clone(), Array1::from(y));
        let linfa = MultiLogisticRegression::default().alpha(0.1f32).max_iterations(100).fit(&dataset).unwrap();
        let expected = linfa.predict_probabilities(&x).mapv(f64::from);
        assert!((probabilities(&layer, &x) - expected).iter().all(|d| d.abs() < 1e-5));
    }

    #[test]
    fn naive_bayes_layer_reproduces_linfa() {
        let (x, y) = data();
        let layer = ClassifierSettings::NaiveBayes { alpha: 0.5 }.fit(&x, &y, 3).unwrap();
        let dataset = Dataset::new(x.clone(), Array1::from(y));
        let linfa = MultinomialNb::params().alpha(0.5f32).fit(&dataset).unwrap();
        let ours = probabilities(&layer, &x);
        let likelihood = linfa.joint_log_likelihood(x.view());
        for row in 0..x.nrows() {
            let jll: Vec<f64> = (0..3).map(|c| f64::from(likelihood[&c][row])).collect();
            let max = jll.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = jll.iter().map(|v| (v - max).exp()).sum();
            for c in 0..3 {
                assert!((ours[[row, c]] - (jll[c] - max).exp() / total).abs() < 1e-5, "row {row} class {c}");
            }
        }
        let predicted = linfa.predict(&x);
        for row in 0..x.nrows() {
            let best = (0..3).max_by(|&a, &b| ours[[row, a]].total_cmp(&ours[[row, b]])).unwrap();
            assert_eq!(best, predicted[row]);
        }
    }

    fn sums_of(x: &Array2<f32>, y: &[usize], labels: usize, order: impl Iterator<Item = usize>) -> NaiveBayesSums {
        let mut sums = NaiveBayesSums::new(x.ncols(), labels);
        for row in order {
            let (indices, values) =
                x.row(row).iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, &v)| (i as u32, v)).unzip();
            sums.add(&SparseVector { indices, values }, y[row]);
        }
        sums
    }

    #[test]
    fn naive_bayes_from_sums_equals_the_fit_on_every_row() {
        // Dyadic values add exactly in any order: the two paths must agree to the bit.
        let x = array![
            [0.5, 0.25, 0.0, 0.0],
            [0.75, 0.0, 0.125, 0.0],
            [0.0, 0.5, 0.5, 0.0],
            [0.25, 0.5, 0.0, 0.25],
            [0.0, 0.0, 0.375, 0.625],
            [0.0, 0.125, 0.0, 0.875],
            [0.5, 0.0, 0.0, 0.5]
        ];
        let y = [0, 0, 1, 1, 2, 2, 0];
        let one_shot = ClassifierSettings::NaiveBayes { alpha: 0.5 }.fit(&x, &y, 4).unwrap();
        // Documents in another order, and split between two workers whose sums are merged.
        let mut streamed = sums_of(&x, &y, 4, [6, 4, 2, 0].into_iter());
        streamed.merge(&sums_of(&x, &y, 4, [1, 3, 5].into_iter()));
        let layer = streamed.fit(0.5).unwrap();
        assert_eq!(layer.weights, one_shot.weights);
        assert_eq!(layer.intercept, one_shot.intercept);

        // Real-valued rows: equal up to the rounding of the sums.
        let (x, y) = data();
        let one_shot = ClassifierSettings::NaiveBayes { alpha: 0.1 }.fit(&x, &y, 3).unwrap();
        let layer = sums_of(&x, &y, 3, 0..x.nrows()).fit(0.1).unwrap();
        let largest = (&layer.weights - &one_shot.weights)
            .iter()
            .chain(&(&layer.intercept - &one_shot.intercept))
            .fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(largest < 1e-5, "{largest}");
    }

    #[test]
    fn naive_bayes_from_sums_leaves_unseen_labels_out() {
        let (x, y) = data();
        let layer = sums_of(&x, &y, 5, 0..x.nrows()).fit(1.0).unwrap();
        assert_eq!(layer.weights.dim(), (4, 5));
        assert!(layer.intercept[3] < -1000.0 && layer.intercept[4] < -1000.0);
        assert!(NaiveBayesSums::new(4, 2).fit(1.0).is_err(), "no documents at all");
    }

    #[test]
    fn a_label_without_rows_never_wins() {
        let (x, y) = data();
        let layer = ClassifierSettings::default().fit(&x, &y, 4).unwrap();
        let p = probabilities(&layer, &x);
        assert!(p.column(3).iter().all(|&v| v < 1e-6));
    }
}
