//! The linfa classifiers the trainer can fit, each reduced to the same linear layer
//! (`scores = x · W + b`, probabilities by softmax) that serving evaluates sparsely.
//!
//! - Multinomial logistic regression (linfa-logistic): `W`, `b` are its parameters.
//! - Multinomial naive Bayes (linfa-bayes): the joint log-likelihood is linear in the
//!   features, `ln P(c) + Σ x_j ln P(j | c)`, so `W` holds the feature log-probabilities
//!   and `b` the log-priors; the softmax of the joint log-likelihood is the posterior.

use std::sync::Mutex;

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_bayes::MultinomialNb;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::model::LinearLayer;

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

    /// Fits on rows `x` with label indices `y` in `0..labels`, returning one column per label.
    /// A label with no training row gets a column that never wins.
    pub fn fit(&self, x: &Array2<f32>, y: &[usize], labels: usize) -> Result<LinearLayer, FitError> {
        let dataset = Dataset::new(x.clone(), Array1::from(y.to_vec()));
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

        let mut layer =
            LinearLayer { weights: Array2::zeros((x.ncols(), labels)), intercept: Array1::from_elem(labels, -1.0e4) };
        for (column, &label) in classes.iter().enumerate() {
            layer.weights.column_mut(label).assign(&weights.column(column));
            layer.intercept[label] = intercept[column];
        }
        Ok(layer)
    }
}

/// linfa-bayes 0.8.1 prints every class histogram to standard error with a leftover
/// `dbg!` on each fit (megabytes for a real vocabulary). Fits are serialized and that
/// output is silenced while they run.
static QUIET_FIT: Mutex<()> = Mutex::new(());

type Parameters = (Vec<usize>, Array2<f32>, Array1<f32>);

fn naive_bayes(dataset: &Dataset<f32, usize, ndarray::Ix1>, alpha: f64) -> Result<Parameters, FitError> {
    let fitted = {
        let _serialized = QUIET_FIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _quiet = gag::Gag::stderr().ok();
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

    #[test]
    fn a_label_without_rows_never_wins() {
        let (x, y) = data();
        let layer = ClassifierSettings::default().fit(&x, &y, 4).unwrap();
        let p = probabilities(&layer, &x);
        assert!(p.column(3).iter().all(|&v| v < 1e-6));
    }
}
