//! Explains a decision by the terms of the text that pushed it: for a linear model, a
//! feature's push toward a label is its TF-IDF value times the label's coefficient.
//!
//! Features are stems, word pairs and character n-grams, which mean nothing to a
//! reader, so each feature's push is credited to the words it was read from, as they
//! are written in the text: a word collects its stem's push and its n-grams' pushes.

use std::ops::Range;

use rustc_hash::FxHashMap;

use crate::model::Model;
use crate::tfidf::SparseVector;

/// Most terms one explanation may list; asking for more gives this many.
pub const MAX_TERMS: usize = 64;

/// One term's push toward the label it pushed hardest.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The term as written in the text.
    pub term: String,
    /// Index of the label, in the model's order.
    pub label: usize,
    pub weight: f32,
}

/// The (at most `n`, capped at [`MAX_TERMS`]) terms of `text` with the strongest positive
/// push toward any label, strongest first. `found` must be every feature occurrence of
/// `text` with its span, and `features` its TF-IDF row.
pub fn explain(
    model: &Model,
    text: &str,
    found: &[(u32, Range<usize>)],
    features: &SparseVector,
    n: usize,
) -> Vec<Contribution> {
    let n = n.min(MAX_TERMS);
    if n == 0 || features.is_empty() {
        return Vec::new();
    }
    // Where each feature occurs; a feature found in several words is shared among them
    // by how often it occurs in each.
    let mut occurrences: FxHashMap<u32, Vec<Range<usize>>> = FxHashMap::default();
    for (feature, span) in found {
        occurrences.entry(*feature).or_default().push(span.clone());
    }

    let labels = model.labels().len();
    let weights = &model.layer().weights;
    let mut pushes: FxHashMap<&str, Vec<f32>> = FxHashMap::default();
    for (feature, value) in features.iter() {
        let Some(spans) = occurrences.get(&(feature as u32)) else { continue };
        let share = value / spans.len() as f32;
        for span in spans {
            let push = pushes.entry(&text[span.clone()]).or_insert_with(|| vec![0.0; labels]);
            for (total, weight) in push.iter_mut().zip(weights.row(feature)) {
                *total += share * weight;
            }
        }
    }

    let mut terms: Vec<Contribution> = pushes
        .into_iter()
        .filter_map(|(term, push)| {
            let (label, &weight) = push.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
            (weight > 0.0).then(|| Contribution { term: term.to_owned(), label, weight })
        })
        .collect();
    // Equal weights fall back to the term, so that answers are reproducible.
    terms.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.term.cmp(&b.term)));
    terms.truncate(n);
    terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::four_label_model;

    fn explain_text(model: &Model, text: &str, n: usize) -> Vec<Contribution> {
        let mut found = Vec::new();
        model.vectorizer().for_each_feature(text, |feature, span| found.push((feature, span)));
        explain(model, text, &found, &model.vectorizer().transform(text), n)
    }

    #[test]
    fn terms_are_surface_words_with_the_label_they_push() {
        let model = four_label_model();
        let text = "Troops attacked; envoys TALKED about troops.";
        let terms = explain_text(&model, text, 10);
        let labels: Vec<(&str, &str)> =
            terms.iter().map(|c| (c.term.as_str(), model.labels()[c.label].as_str())).collect();
        assert!(labels.contains(&("Troops", "security")), "{labels:?}");
        assert!(labels.contains(&("troops", "security")), "{labels:?}");
        assert!(labels.iter().any(|&(term, label)| term == "TALKED" && label == "diplomacy"), "{labels:?}");
        for pair in terms.windows(2) {
            assert!(pair[0].weight >= pair[1].weight);
        }
        assert!(terms.iter().all(|c| c.weight > 0.0 && c.weight.is_finite()));
    }

    #[test]
    fn asking_for_none_or_too_many_is_bounded() {
        let model = four_label_model();
        let text = "troops talked";
        assert!(explain_text(&model, text, 0).is_empty());
        assert!(explain_text(&model, text, usize::MAX).len() <= MAX_TERMS);
        let unknown = "nothing known here";
        assert!(explain_text(&model, unknown, 5).is_empty());
    }
}
