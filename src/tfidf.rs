//! TF-IDF features: a vocabulary fitted on a corpus, and sparse, L2-normalized
//! document vectors for serving.
//!
//! The vocabulary holds word n-grams (over the normalized tokens of [`crate::text`])
//! seen in at least `min_df` training documents. Weights follow the usual smooth,
//! sublinear scheme: `tf = 1 + ln(count)`, `idf = ln((1 + n) / (1 + df)) + 1`.
//! Serving never builds a dense vocabulary-sized vector: a document becomes the
//! few (feature, weight) pairs it actually has.

use std::collections::BTreeMap;

use ndarray::Array2;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::text;

/// How terms are extracted and weighted; stored in the model so that serving
/// computes exactly what training did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSettings {
    /// Longest word n-gram (1 = single words, 2 = words and word pairs).
    pub max_ngram: u8,
    /// A term must occur in at least this many training documents to enter the vocabulary.
    pub min_df: u32,
    /// Use `1 + ln(count)` instead of the raw count.
    pub sublinear_tf: bool,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self { max_ngram: 2, min_df: 2, sublinear_tf: true }
    }
}

/// A document as the non-zero entries of its TF-IDF row, sorted by feature index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.indices.iter().zip(&self.values).map(|(&i, &v)| (i as usize, v))
    }
}

/// A fitted TF-IDF vectorizer.
#[derive(Debug, Clone)]
pub struct TfIdf {
    settings: FeatureSettings,
    terms: Vec<String>,
    idf: Vec<f32>,
    index: FxHashMap<String, u32>,
}

/// Why a stored vectorizer cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VectorizerError {
    #[error("vocabulary has {terms} terms but {idf} idf weights")]
    LengthMismatch { terms: usize, idf: usize },
    #[error("vocabulary term {0:?} appears twice")]
    DuplicateTerm(String),
    #[error("idf weight of term {0:?} is not a positive finite number")]
    BadIdf(String),
    #[error("max_ngram must be 1 to 3, not {0}")]
    BadNgram(u8),
}

impl TfIdf {
    /// Fits the vocabulary and idf weights on `documents`.
    ///
    /// The vocabulary is sorted, so the same corpus always gives the same feature
    /// indices, whatever order a hash map would visit it in.
    pub fn fit<S: AsRef<str>>(documents: &[S], settings: FeatureSettings) -> Self {
        let mut document_frequency: FxHashMap<String, u32> = FxHashMap::default();
        let mut seen: Vec<String> = Vec::new();
        for document in documents {
            seen.clear();
            for_each_term(document.as_ref(), settings.max_ngram, |term| seen.push(term.to_owned()));
            seen.sort_unstable();
            seen.dedup();
            for term in seen.drain(..) {
                *document_frequency.entry(term).or_insert(0) += 1;
            }
        }

        let kept: BTreeMap<String, u32> =
            document_frequency.into_iter().filter(|(_, df)| *df >= settings.min_df).collect();
        let n = documents.len() as f64;
        let (terms, idf): (Vec<String>, Vec<f32>) = kept
            .into_iter()
            .map(|(term, df)| {
                let idf = ((1.0 + n) / (1.0 + f64::from(df))).ln() + 1.0;
                (term, idf as f32)
            })
            .unzip();
        let index = build_index(&terms);
        Self { settings, terms, idf, index }
    }

    /// Rebuilds a vectorizer from its stored parts, checking that they fit together.
    pub fn from_parts(settings: FeatureSettings, terms: Vec<String>, idf: Vec<f32>) -> Result<Self, VectorizerError> {
        if !(1..=3).contains(&settings.max_ngram) {
            return Err(VectorizerError::BadNgram(settings.max_ngram));
        }
        if terms.len() != idf.len() {
            return Err(VectorizerError::LengthMismatch { terms: terms.len(), idf: idf.len() });
        }
        if let Some((term, _)) = terms.iter().zip(&idf).find(|(_, w)| !(w.is_finite() && **w > 0.0)) {
            return Err(VectorizerError::BadIdf(term.clone()));
        }
        let index = build_index(&terms);
        if index.len() != terms.len() {
            let mut sorted: Vec<&String> = terms.iter().collect();
            sorted.sort_unstable();
            let duplicate = sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0].clone()).unwrap_or_default();
            return Err(VectorizerError::DuplicateTerm(duplicate));
        }
        Ok(Self { settings, terms, idf, index })
    }

    pub fn settings(&self) -> &FeatureSettings {
        &self.settings
    }

    pub fn terms(&self) -> &[String] {
        &self.terms
    }

    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    pub fn vocabulary_size(&self) -> usize {
        self.terms.len()
    }

    /// The TF-IDF row of `text`: only the features it contains, L2-normalized.
    /// A text with no known term gives an empty vector.
    pub fn transform(&self, text: &str) -> SparseVector {
        let mut hits: Vec<u32> = Vec::new();
        for_each_term(text, self.settings.max_ngram, |term| {
            if let Some(&i) = self.index.get(term) {
                hits.push(i);
            }
        });
        hits.sort_unstable();

        let mut vector = SparseVector::default();
        let mut rest = hits.as_slice();
        while let Some(&feature) = rest.first() {
            let count = rest.iter().take_while(|&&f| f == feature).count();
            rest = &rest[count..];
            let tf = if self.settings.sublinear_tf { 1.0 + (count as f32).ln() } else { count as f32 };
            vector.indices.push(feature);
            vector.values.push(tf * self.idf[feature as usize]);
        }
        let norm = vector.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.values.iter_mut().for_each(|v| *v /= norm);
        }
        vector
    }

    /// Stacks sparse rows into the dense matrix linfa's solvers take for training.
    pub fn to_dense(&self, rows: &[SparseVector]) -> Array2<f64> {
        let mut dense = Array2::zeros((rows.len(), self.vocabulary_size()));
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter() {
                dense[[r, c]] = f64::from(v);
            }
        }
        dense
    }
}

fn build_index(terms: &[String]) -> FxHashMap<String, u32> {
    terms.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}

/// Calls `visit` with every word n-gram of `text` up to `max_ngram` words, n-grams
/// joined by single spaces. One buffer per n-gram length is reused across calls.
fn for_each_term(text: &str, max_ngram: u8, mut visit: impl FnMut(&str)) {
    let max_ngram = usize::from(max_ngram.max(1));
    // The last `max_ngram - 1` words, oldest first, for building longer n-grams.
    let mut window: Vec<String> = Vec::with_capacity(max_ngram);
    let mut gram = String::with_capacity(64);
    text::for_each_token(text, |word, _| {
        visit(word);
        for n in 2..=max_ngram {
            if window.len() + 1 < n {
                break;
            }
            gram.clear();
            for previous in &window[window.len() + 1 - n..] {
                gram.push_str(previous);
                gram.push(' ');
            }
            gram.push_str(word);
            visit(&gram);
        }
        if max_ngram > 1 {
            if window.len() == max_ngram - 1 {
                let mut oldest = window.remove(0);
                oldest.clear();
                oldest.push_str(word);
                window.push(oldest);
            } else {
                window.push(word.to_owned());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str, max_ngram: u8) -> Vec<String> {
        let mut out = Vec::new();
        for_each_term(text, max_ngram, |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn ngrams_follow_the_words_in_order() {
        assert_eq!(terms("a1 b2 c3", 1), ["a1", "b2", "c3"]);
        assert_eq!(terms("a1 b2 c3", 2), ["a1", "b2", "a1 b2", "c3", "b2 c3"]);
        assert_eq!(terms("a1 b2 c3", 3), ["a1", "b2", "a1 b2", "c3", "b2 c3", "a1 b2 c3"]);
    }

    #[test]
    fn vocabulary_respects_min_df_and_is_sorted() {
        let docs = ["troops shelled the town", "troops entered the camp", "aid reached the camp"];
        let settings = FeatureSettings { max_ngram: 1, min_df: 2, sublinear_tf: true };
        let tfidf = TfIdf::fit(&docs, settings);
        assert_eq!(tfidf.terms(), ["camp", "the", "troops"]);
        // "the" is in every document: the smallest idf, exactly 1.
        assert!((tfidf.idf()[1] - 1.0).abs() < 1e-6);
        assert!(tfidf.idf()[0] > tfidf.idf()[1]);
    }

    #[test]
    fn rows_are_l2_normalized_sorted_and_sublinear() {
        let docs = ["camp camp camp troops", "camp troops", "troops"];
        let tfidf = TfIdf::fit(&docs, FeatureSettings { max_ngram: 1, min_df: 1, sublinear_tf: true });
        let v = tfidf.transform("troops camp camp camp camp unknownword");
        assert_eq!(v.indices, [0, 1]);
        let norm: f32 = v.values.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-6);
        let camp_idf = tfidf.idf()[0];
        let troops_idf = tfidf.idf()[1];
        let expected_ratio = (1.0 + 4f32.ln()) * camp_idf / troops_idf;
        assert!((v.values[0] / v.values[1] - expected_ratio).abs() < 1e-5);
    }

    #[test]
    fn unknown_text_gives_an_empty_vector() {
        let tfidf = TfIdf::fit(&["alpha beta", "beta gamma"], FeatureSettings::default());
        assert!(tfidf.transform("zeta eta").is_empty());
        assert!(tfidf.transform("").is_empty());
    }

    #[test]
    fn dense_rows_match_sparse_rows() {
        let docs = ["alpha beta", "beta gamma", "gamma alpha alpha"];
        let tfidf = TfIdf::fit(&docs, FeatureSettings { max_ngram: 1, min_df: 1, sublinear_tf: true });
        let rows: Vec<SparseVector> = docs.iter().map(|d| tfidf.transform(d)).collect();
        let dense = tfidf.to_dense(&rows);
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter() {
                assert_eq!(dense[[r, c]], f64::from(v));
            }
            assert_eq!(dense.row(r).iter().filter(|x| **x != 0.0).count(), row.indices.len());
        }
    }

    #[test]
    fn stored_parts_are_checked() {
        let settings = FeatureSettings::default();
        let duplicate = TfIdf::from_parts(settings.clone(), vec!["a".into(), "a".into()], vec![1.0, 1.0]);
        assert_eq!(duplicate.unwrap_err(), VectorizerError::DuplicateTerm("a".into()));
        let short = TfIdf::from_parts(settings.clone(), vec!["a".into()], vec![]);
        assert!(matches!(short, Err(VectorizerError::LengthMismatch { .. })));
        let nan = TfIdf::from_parts(settings, vec!["a".into()], vec![f32::NAN]);
        assert!(matches!(nan, Err(VectorizerError::BadIdf(_))));
    }
}
