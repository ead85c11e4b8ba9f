//! Classification metrics: accuracy, per-class precision/recall/F1, macro-F1, the
//! confusion matrix and a per-language breakdown, with a plain-text report.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Documents whose true label this is.
    pub support: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LanguageMetrics {
    pub language: String,
    pub documents: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// An evaluation of predictions against true labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Cross-validation folds the predictions came from (0 when not cross-validated; 1
    /// for one stratified held-out fold, which training uses on large corpora).
    pub folds: u32,
    pub documents: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    pub per_language: Vec<LanguageMetrics>,
    /// `confusion[true][predicted]`, in label order.
    pub confusion: Vec<Vec<u64>>,
}

/// One evaluated document: its true and predicted label indices and its language.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub truth: usize,
    pub predicted: usize,
    pub language: &'a str,
}

impl Metrics {
    /// Computes every metric over `outcomes`, for labels `0..labels.len()`.
    pub fn compute(labels: &[String], outcomes: &[Outcome<'_>], folds: u32) -> Self {
        let (accuracy, macro_f1, per_class, confusion) = scores(labels, outcomes);

        let mut by_language: BTreeMap<&str, Vec<Outcome<'_>>> = BTreeMap::new();
        for outcome in outcomes {
            by_language.entry(outcome.language).or_default().push(*outcome);
        }
        let per_language = by_language
            .into_iter()
            .map(|(language, subset)| {
                let (accuracy, macro_f1, _, _) = scores(labels, &subset);
                LanguageMetrics { language: language.to_string(), documents: subset.len() as u64, accuracy, macro_f1 }
            })
            .collect();

        Self { folds, documents: outcomes.len() as u64, accuracy, macro_f1, per_class, per_language, confusion }
    }
}

/// Accuracy, macro-F1 over the labels present in truth or predictions, per-class metrics, confusion matrix.
fn scores(labels: &[String], outcomes: &[Outcome<'_>]) -> (f64, f64, Vec<ClassMetrics>, Vec<Vec<u64>>) {
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for o in outcomes {
        confusion[o.truth][o.predicted] += 1;
    }
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let accuracy = ratio(correct, outcomes.len() as u64);

    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let true_positive = confusion[c][c];
            let predicted: u64 = (0..k).map(|t| confusion[t][c]).sum();
            let support: u64 = confusion[c].iter().sum();
            let precision = ratio(true_positive, predicted);
            let recall = ratio(true_positive, support);
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            ClassMetrics { label: labels[c].clone(), precision, recall, f1, support }
        })
        .collect();

    // A label absent from both truth and predictions says nothing about this subset.
    let present: Vec<&ClassMetrics> = per_class
        .iter()
        .enumerate()
        .filter(|(c, m)| m.support > 0 || (0..k).any(|t| confusion[t][*c] > 0))
        .map(|(_, m)| m)
        .collect();
    let macro_f1 =
        if present.is_empty() { 0.0 } else { present.iter().map(|m| m.f1).sum::<f64>() / present.len() as f64 };
    (accuracy, macro_f1, per_class, confusion)
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 { 0.0 } else { numerator as f64 / denominator as f64 }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.folds == 1 {
            writeln!(f, "one stratified held-out fold of {} documents", self.documents)?;
        } else if self.folds > 0 {
            writeln!(f, "{}-fold cross-validation over {} documents", self.folds, self.documents)?;
        } else {
            writeln!(f, "evaluation over {} documents", self.documents)?;
        }
        writeln!(f, "accuracy  {:.4}", self.accuracy)?;
        writeln!(f, "macro-F1  {:.4}", self.macro_f1)?;
        writeln!(f)?;
        let width = self.per_class.iter().map(|m| m.label.len()).max().unwrap_or(5).max(5);
        writeln!(f, "{:width$}  precision  recall      f1  support", "label")?;
        for m in &self.per_class {
            writeln!(f, "{:width$}  {:9.4}  {:6.4}  {:6.4}  {:7}", m.label, m.precision, m.recall, m.f1, m.support)?;
        }
        writeln!(f)?;
        writeln!(f, "confusion matrix (rows: true label, columns: predicted)")?;
        write!(f, "{:width$}", "")?;
        for m in &self.per_class {
            write!(f, "  {:>w$}", m.label, w = m.label.len().max(5))?;
        }
        writeln!(f)?;
        for (row, m) in self.confusion.iter().zip(&self.per_class) {
            write!(f, "{:width$}", m.label)?;
            for (count, column) in row.iter().zip(&self.per_class) {
                write!(f, "  {:>w$}", count, w = column.label.len().max(5))?;
            }
            writeln!(f)?;
        }
        writeln!(f)?;
        writeln!(f, "language  documents  accuracy  macro-F1")?;
        for l in &self.per_language {
            writeln!(f, "{:8}  {:9}  {:8.4}  {:8.4}", l.language, l.documents, l.accuracy, l.macro_f1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn outcome(truth: usize, predicted: usize, language: &str) -> Outcome<'_> {
        Outcome { truth, predicted, language }
    }

    #[test]
    fn hand_computed_example() {
        let outcomes =
            [outcome(0, 0, "ar"), outcome(0, 1, "ar"), outcome(1, 1, "en"), outcome(2, 2, "en"), outcome(2, 0, "ar")];
        let m = Metrics::compute(&labels(), &outcomes, 5);
        assert_eq!(m.confusion, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 1]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // a: p=1/2 r=1/2; b: p=1/2 r=1; c: p=1 r=1/2.
        let f1 = [0.5, 2.0 / 3.0, 2.0 / 3.0];
        for (metrics, expected) in m.per_class.iter().zip(f1) {
            assert!((metrics.f1 - expected).abs() < 1e-12, "{metrics:?}");
        }
        assert!((m.macro_f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert_eq!(m.per_language.len(), 2);
        assert_eq!(m.per_language[0].language, "ar");
        assert_eq!(m.per_language[0].documents, 3);
        assert!((m.per_language[1].accuracy - 1.0).abs() < 1e-12);
    }

    #[test]
    fn labels_absent_from_a_subset_do_not_drag_macro_f1_down() {
        let m = Metrics::compute(&labels(), &[outcome(0, 0, "en"), outcome(1, 1, "en")], 0);
        assert_eq!(m.macro_f1, 1.0);
    }

    #[test]
    fn report_names_every_label() {
        let m = Metrics::compute(&labels(), &[outcome(0, 0, "en")], 0);
        let report = m.to_string();
        for needle in ["accuracy", "macro-F1", "confusion matrix", "language"] {
            assert!(report.contains(needle), "{report}");
        }
    }
}
