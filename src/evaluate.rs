//! Scores a trained model on a labeled data set (never used in training): the
//! figures `topics evaluate` prints.
//!
//! Single-label documents are scored as a classification task; mixed documents by
//! whether the predicted label is among their labels; out-of-scope documents
//! (labeled [`NONE`]) by how often the model says "none", and in-scope ones by how
//! rarely it wrongly does.

use std::fmt;

use serde::Serialize;

use crate::classify::{Classification, Options};
use crate::corpus::Document;
use crate::metrics::{Metrics, Outcome};
use crate::model::{Model, NONE};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub documents: usize,
    /// Documents with one label, scored on every label the model or the data knows.
    pub single_label: Metrics,
    /// Mean F1 of the topic labels (all but "none") on single-label documents.
    pub topic_macro_f1: f64,
    /// The same per language.
    pub topic_macro_f1_by_language: Vec<(String, f64)>,
    /// Every in-scope document scored on its primary label, as scikit-learn baselines
    /// that drop out-of-scope rows report it.
    pub in_scope_primary: Metrics,
    /// Mean F1 of the topic labels over those documents.
    pub in_scope_topic_macro_f1: f64,
    pub mixed: MixedScores,
    pub out_of_scope: OutOfScope,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixedScores {
    pub documents: usize,
    /// Predicted label is the dominant (first) label.
    pub primary_hit_rate: f64,
    /// Predicted label is one of the document's labels.
    pub any_hit_rate: f64,
    /// Mean share of a mixed document's labels that the answer's `labels` list.
    pub labels_recall: f64,
    /// The answer's `labels` are exactly the document's, as a set.
    pub labels_exact_rate: f64,
    /// Single-label in-scope documents whose answer lists more than one topic.
    pub single_extra_labels_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfScope {
    pub documents: usize,
    /// Out-of-scope documents the model calls "none".
    pub recall: f64,
    pub in_scope_documents: usize,
    /// In-scope documents the model wrongly calls "none".
    pub false_none_rate: f64,
}

/// Runs `model` on every document and scores the answers.
pub fn evaluate(model: &Model, documents: &[Document]) -> Evaluation {
    // Labels the data uses but the model lacks (say "none" for a model without it) still
    // need a row in the confusion matrix: every such document is an error.
    let mut labels: Vec<String> = model.labels().to_vec();
    for document in documents {
        for label in &document.labels {
            if !labels.contains(label) {
                labels.push(label.clone());
            }
        }
    }
    let index = |label: &str| labels.iter().position(|l| l == label).expect("every label was added");
    let answers: Vec<Classification> = documents.iter().map(|d| model.classify(&d.text, Options::default())).collect();
    let predicted: Vec<usize> = answers.iter().map(|a| a.prediction.label()).collect();
    let covered = |i: usize| -> Vec<&str> { answers[i].labels.iter().map(|&l| labels[l].as_str()).collect() };
    let outcome = |i: usize| Outcome {
        truth: index(documents[i].primary_label()),
        predicted: predicted[i],
        language: &documents[i].lang,
    };

    let single: Vec<Outcome<'_>> =
        (0..documents.len()).filter(|&i| documents[i].labels.len() == 1).map(outcome).collect();
    let single_label = Metrics::compute(&labels, &single, 0);
    let topics: Vec<usize> = (0..labels.len()).filter(|&l| labels[l] != NONE).collect();
    let topic_macro_f1 = mean_f1(&single_label, &topics);
    let topic_macro_f1_by_language = single_label
        .per_language
        .iter()
        .map(|l| {
            let subset: Vec<Outcome<'_>> = single.iter().copied().filter(|o| o.language == l.language).collect();
            (l.language.clone(), mean_f1(&Metrics::compute(&labels, &subset, 0), &topics))
        })
        .collect();

    let in_scope: Vec<Outcome<'_>> =
        (0..documents.len()).filter(|&i| documents[i].primary_label() != NONE).map(outcome).collect();
    let in_scope_primary = Metrics::compute(&labels, &in_scope, 0);
    let in_scope_topic_macro_f1 = mean_f1(&in_scope_primary, &topics);

    let mixed: Vec<usize> = (0..documents.len()).filter(|&i| documents[i].labels.len() > 1).collect();
    let mixed_scores = MixedScores {
        documents: mixed.len(),
        primary_hit_rate: share(
            mixed.iter().filter(|&&i| predicted[i] == index(documents[i].primary_label())).count(),
            mixed.len(),
        ),
        any_hit_rate: share(
            mixed.iter().filter(|&&i| documents[i].labels.iter().any(|l| index(l) == predicted[i])).count(),
            mixed.len(),
        ),
        labels_recall: if mixed.is_empty() {
            0.0
        } else {
            mixed
                .iter()
                .map(|&i| {
                    share(
                        documents[i].labels.iter().filter(|l| covered(i).contains(&l.as_str())).count(),
                        documents[i].labels.len(),
                    )
                })
                .sum::<f64>()
                / mixed.len() as f64
        },
        labels_exact_rate: share(
            mixed
                .iter()
                .filter(|&&i| {
                    let mut answer = covered(i);
                    answer.sort_unstable();
                    let mut truth: Vec<&str> = documents[i].labels.iter().map(String::as_str).collect();
                    truth.sort_unstable();
                    answer == truth
                })
                .count(),
            mixed.len(),
        ),
        single_extra_labels_rate: {
            let single_in_scope: Vec<usize> = (0..documents.len())
                .filter(|&i| documents[i].labels.len() == 1 && documents[i].primary_label() != NONE)
                .collect();
            share(single_in_scope.iter().filter(|&&i| answers[i].labels.len() > 1).count(), single_in_scope.len())
        },
    };

    let says_none = |i: usize| labels[predicted[i]] == NONE;
    let out: Vec<usize> = (0..documents.len()).filter(|&i| documents[i].primary_label() == NONE).collect();
    let inside: Vec<usize> = (0..documents.len()).filter(|&i| documents[i].primary_label() != NONE).collect();
    let out_of_scope = OutOfScope {
        documents: out.len(),
        recall: share(out.iter().filter(|&&i| says_none(i)).count(), out.len()),
        in_scope_documents: inside.len(),
        false_none_rate: share(inside.iter().filter(|&&i| says_none(i)).count(), inside.len()),
    };

    Evaluation {
        documents: documents.len(),
        single_label,
        topic_macro_f1,
        topic_macro_f1_by_language,
        in_scope_primary,
        in_scope_topic_macro_f1,
        mixed: mixed_scores,
        out_of_scope,
    }
}

/// Mean F1 of `labels` (indices); a label with no document and no prediction counts as absent.
fn mean_f1(metrics: &Metrics, labels: &[usize]) -> f64 {
    let present: Vec<f64> = labels
        .iter()
        .map(|&l| &metrics.per_class[l])
        .filter(|c| c.support > 0 || c.precision > 0.0)
        .map(|c| c.f1)
        .collect();
    if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} documents", self.documents)?;
        writeln!(f)?;
        writeln!(f, "== single-label documents")?;
        write!(f, "{}", self.single_label)?;
        writeln!(f)?;
        write!(f, "topic macro-F1 (excluding \"none\")  {:.4}", self.topic_macro_f1)?;
        for (language, f1) in &self.topic_macro_f1_by_language {
            write!(f, "   {language} {f1:.4}")?;
        }
        writeln!(f)?;
        writeln!(f)?;
        writeln!(
            f,
            "== in-scope documents on their primary label: {} documents, accuracy {:.4}, topic macro-F1 {:.4}",
            self.in_scope_primary.documents, self.in_scope_primary.accuracy, self.in_scope_topic_macro_f1
        )?;
        writeln!(
            f,
            "== mixed documents: {}, predicted label is the dominant one {:.4}, is one of theirs {:.4}",
            self.mixed.documents, self.mixed.primary_hit_rate, self.mixed.any_hit_rate
        )?;
        writeln!(
            f,
            "== topics covered (`labels`): recall of mixed documents' labels {:.4}, exact set {:.4}; \
             single-topic documents given extra topics {:.4}",
            self.mixed.labels_recall, self.mixed.labels_exact_rate, self.mixed.single_extra_labels_rate
        )?;
        writeln!(
            f,
            "== out of scope: {} documents, recall of \"none\" {:.4}; false \"none\" on {} in-scope documents {:.4}",
            self.out_of_scope.documents,
            self.out_of_scope.recall,
            self.out_of_scope.in_scope_documents,
            self.out_of_scope.false_none_rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinearLayer, ModelMeta};
    use crate::tfidf::TfIdf;
    use ndarray::array;

    /// Says security for "troops", humanitarian for "camp", none otherwise.
    fn model() -> Model {
        let vectorizer =
            TfIdf::from_parts(crate::tfidf::tests::words(1), vec!["camp".into(), "troops".into()], vec![1.0, 1.0])
                .unwrap();
        let layer = LinearLayer { weights: array![[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]], intercept: array![0.0, 0.0, 1.0] };
        Model::new(
            ModelMeta::placeholder(),
            vec!["security".into(), "humanitarian".into(), "none".into()],
            vectorizer,
            layer,
        )
        .unwrap()
    }

    fn doc(text: &str, labels: &[&str]) -> Document {
        Document {
            id: text.into(),
            lang: "en".into(),
            text: text.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn scores_every_group() {
        let documents = [
            doc("troops", &["security"]),
            doc("camp", &["humanitarian"]),
            doc("weather", &["humanitarian"]),
            doc("football", &["none"]),
            doc("troops", &["none"]),
            doc("camp", &["security", "humanitarian"]),
            doc("troops", &["security", "diplomacy"]),
            doc("weather", &["diplomacy", "security"]),
        ];
        let e = evaluate(&model(), &documents);
        assert_eq!(e.documents, 8);
        assert_eq!(e.single_label.documents, 5);
        assert_eq!(e.mixed.documents, 3);
        assert!((e.mixed.primary_hit_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((e.mixed.any_hit_rate - 2.0 / 3.0).abs() < 1e-12);
        // One paragraph each, so one topic each: half of two mixed documents, none of the third.
        assert!((e.mixed.labels_recall - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.mixed.labels_exact_rate, 0.0);
        assert_eq!(e.mixed.single_extra_labels_rate, 0.0);
        assert_eq!(e.out_of_scope.documents, 2);
        assert!((e.out_of_scope.recall - 0.5).abs() < 1e-12);
        assert_eq!(e.out_of_scope.in_scope_documents, 6);
        assert!((e.out_of_scope.false_none_rate - 2.0 / 6.0).abs() < 1e-12);
        // "diplomacy" is unknown to the model but still a row of the confusion matrix.
        assert_eq!(e.in_scope_primary.per_class.len(), 4);
        // Topics on single-label docs: security p=1/2 r=1 → 2/3; humanitarian p=1 r=1/2 → 2/3.
        assert!((e.topic_macro_f1 - 2.0 / 3.0).abs() < 1e-12, "{e}");
        assert_eq!(e.topic_macro_f1_by_language.len(), 1);
        assert!(e.to_string().contains("recall of \"none\" 0.5000"));
    }
}
