//! TF-IDF features: a vocabulary fitted on a corpus, and sparse document vectors
//! for serving.
//!
//! The vocabulary holds the [`Analyzer`]'s terms seen in at least `min_df` training
//! documents: word n-grams first, then character n-grams, each family sorted. Weights
//! follow the usual smooth, sublinear scheme: `tf = 1 + ln(count)`,
//! `idf = ln((1 + n) / (1 + df)) + 1`. Each family is L2-normalized on its own, as a
//! union of two vectorizers would be, so that the many character n-grams of a
//! document do not drown its few words. Serving never builds a dense
//! vocabulary-sized vector: a document becomes the (feature, weight) pairs it has.

use std::ops::Range;

use ndarray::Array2;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, AnalyzerError, AnalyzerSettings, CHAR_MARK, Hashed, term_hash};
use crate::bag::Bag;
use crate::gram_memo;

/// How terms are extracted and weighted; stored in the model so that serving
/// computes exactly what training did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSettings {
    pub analyzer: AnalyzerSettings,
    /// A term must occur in at least this many training documents to enter the vocabulary.
    pub min_df: u32,
    /// Keep at most this many terms of each family (word n-grams, character n-grams),
    /// the most frequent by document frequency; 0 keeps all. Training time and the
    /// dense training matrix grow with the vocabulary.
    pub max_features: u32,
    /// Use `1 + ln(count)` instead of the raw count.
    pub sublinear_tf: bool,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self { analyzer: AnalyzerSettings::default(), min_df: 2, max_features: 20_000, sublinear_tf: true }
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
#[derive(Debug)]
pub struct TfIdf {
    settings: FeatureSettings,
    analyzer: Analyzer,
    terms: Vec<String>,
    idf: Vec<f32>,
    /// Index of the first character n-gram; word n-grams come before it.
    first_char_feature: usize,
    /// Feature index by [`term_hash`] of the term.
    index: FxHashMap<u64, u32>,
    /// Tells [`gram_memo`] which vocabulary it remembers features of.
    memo_id: u64,
}

/// Why a stored vectorizer cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VectorizerError {
    #[error("vocabulary has {terms} terms but {idf} idf weights")]
    LengthMismatch { terms: usize, idf: usize },
    #[error("vocabulary term {0:?} appears twice")]
    DuplicateTerm(String),
    #[error("vocabulary terms {0:?} and {1:?} have the same hash; drop one (e.g. with a smaller --max-features)")]
    HashCollision(String, String),
    #[error("vocabulary is not in canonical order at term {0:?}")]
    Unordered(String),
    #[error("idf weight of term {0:?} is not a positive number of at most {MAX_IDF}")]
    BadIdf(String),
    #[error(transparent)]
    Analyzer(#[from] AnalyzerError),
}

/// Largest idf weight a stored vectorizer may have. A fitted idf is at most
/// `ln(1 + n) + 1`, under 46 for any corpus size; an idf near `f32::MAX` makes a repeated
/// term's weight infinite, and its L2 normalization NaN, so every score of the text NaN.
pub const MAX_IDF: f32 = 1.0e3;

/// Word n-grams first, then character n-grams, each family in byte order.
fn canonical_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.starts_with(CHAR_MARK), a).cmp(&(b.starts_with(CHAR_MARK), b))
}

impl TfIdf {
    /// Fits the vocabulary and idf weights on `documents`.
    ///
    /// The vocabulary is in canonical order, so the same corpus always gives the same
    /// feature indices, whatever order a hash map would visit it in.
    pub fn fit<S: AsRef<str>>(documents: &[S], settings: FeatureSettings) -> Result<Self, VectorizerError> {
        let analyzer = Analyzer::new(settings.analyzer.clone())?;
        let mut document_frequency: FxHashMap<String, u32> = FxHashMap::default();
        let mut seen: Vec<String> = Vec::new();
        for document in documents {
            seen.clear();
            analyzer.for_each_term(document.as_ref(), |term, _| seen.push(term.to_owned()));
            seen.sort_unstable();
            seen.dedup();
            for term in seen.drain(..) {
                *document_frequency.entry(term).or_insert(0) += 1;
            }
        }

        type Counted = Vec<(String, u32)>;
        let (mut words, mut chars): (Counted, Counted) = document_frequency
            .into_iter()
            .filter(|(_, df)| *df >= settings.min_df)
            .partition(|(term, _)| !term.starts_with(CHAR_MARK));
        if settings.max_features > 0 {
            for family in [&mut words, &mut chars] {
                // Most frequent first; ties broken by the term, so the cut is deterministic.
                family.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                family.truncate(settings.max_features as usize);
            }
        }
        let mut kept = words;
        kept.append(&mut chars);
        kept.sort_unstable_by(|a, b| canonical_order(&a.0, &b.0));
        let n = documents.len() as f64;
        let (terms, idf): (Vec<String>, Vec<f32>) = kept
            .into_iter()
            .map(|(term, df)| {
                let idf = ((1.0 + n) / (1.0 + f64::from(df))).ln() + 1.0;
                (term, idf as f32)
            })
            .unzip();
        Self::assemble(settings, analyzer, terms, idf)
    }

    /// Rebuilds a vectorizer from its stored parts, checking that they fit together.
    pub fn from_parts(settings: FeatureSettings, terms: Vec<String>, idf: Vec<f32>) -> Result<Self, VectorizerError> {
        if terms.len() != idf.len() {
            return Err(VectorizerError::LengthMismatch { terms: terms.len(), idf: idf.len() });
        }
        if let Some((term, _)) = terms.iter().zip(&idf).find(|(_, w)| !(**w > 0.0 && **w <= MAX_IDF)) {
            return Err(VectorizerError::BadIdf(term.clone()));
        }
        for pair in terms.windows(2) {
            match canonical_order(&pair[0], &pair[1]) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(VectorizerError::DuplicateTerm(pair[1].clone())),
                std::cmp::Ordering::Greater => return Err(VectorizerError::Unordered(pair[1].clone())),
            }
        }
        let analyzer = Analyzer::new(settings.analyzer.clone())?;
        Self::assemble(settings, analyzer, terms, idf)
    }

    fn assemble(
        settings: FeatureSettings,
        analyzer: Analyzer,
        terms: Vec<String>,
        idf: Vec<f32>,
    ) -> Result<Self, VectorizerError> {
        let first_char_feature = terms.partition_point(|t| !t.starts_with(CHAR_MARK));
        let mut index = FxHashMap::with_capacity_and_hasher(terms.len(), Default::default());
        for (i, term) in terms.iter().enumerate() {
            if let Some(other) = index.insert(term_hash(term), i as u32) {
                return Err(VectorizerError::HashCollision(terms[other as usize].clone(), term.clone()));
            }
        }
        Ok(Self { settings, analyzer, terms, idf, first_char_feature, index, memo_id: gram_memo::new_vocabulary_id() })
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

    /// Calls `visit` with the feature index of every known term occurrence in `text`
    /// and the byte range of the surface text it came from.
    pub fn for_each_feature(&self, text: &str, mut visit: impl FnMut(u32, Range<usize>)) {
        self.analyzer.for_each_hashed(text, |hashed, span| match hashed {
            Hashed::Term(hash) => {
                if let Some(&feature) = self.index.get(&hash) {
                    visit(feature, span);
                }
            }
            Hashed::Word(marked) => gram_memo::for_each_word_feature(
                self.memo_id,
                marked,
                |features| {
                    self.analyzer.char_gram_hashes(marked, |hash| features.extend(self.index.get(&hash).copied()))
                },
                |feature| visit(feature, span.clone()),
            ),
        });
    }

    /// The TF-IDF row of `text`: only the features it contains, each family L2-normalized.
    /// A text with no known term gives an empty vector.
    pub fn transform(&self, text: &str) -> SparseVector {
        let mut bag = Bag::default();
        self.for_each_feature(text, |feature, _| bag.add(feature));
        self.row(&bag)
    }

    /// The TF-IDF row of counted features: each family L2-normalized, in feature order.
    pub fn row(&self, bag: &Bag) -> SparseVector {
        let mut counted: Vec<(u32, u32)> = bag.iter().collect();
        counted.sort_unstable();
        let (indices, mut values): (Vec<u32>, Vec<f32>) =
            counted.into_iter().map(|(feature, count)| (feature, self.weight(feature, count))).unzip();
        let split = indices.partition_point(|&i| (i as usize) < self.first_char_feature);
        let (words, chars) = values.split_at_mut(split);
        normalize(words);
        normalize(chars);
        SparseVector { indices, values }
    }

    /// Which family `feature` belongs to: 0 for word n-grams, 1 for character n-grams.
    /// Each family is L2-normalized on its own.
    pub fn family(&self, feature: u32) -> usize {
        usize::from(feature as usize >= self.first_char_feature)
    }

    /// The term-frequency factor of a feature counted `count` times.
    pub fn tf(&self, count: u32) -> f32 {
        // ln(1) is 0: the common single occurrence needs no logarithm.
        match count {
            1 => 1.0,
            _ if self.settings.sublinear_tf => 1.0 + (count as f32).ln(),
            _ => count as f32,
        }
    }

    fn weight(&self, feature: u32, count: u32) -> f32 {
        self.tf(count) * self.idf[feature as usize]
    }

    /// Stacks sparse rows into the dense matrix linfa's solvers take for training.
    pub fn to_dense(&self, rows: &[SparseVector]) -> Array2<f32> {
        let mut dense = Array2::zeros((rows.len(), self.vocabulary_size()));
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter() {
                dense[[r, c]] = v;
            }
        }
        dense
    }
}

fn normalize(values: &mut [f32]) {
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyzer::Stemming;

    /// Plain single words, no stemming, stop words or character n-grams: for tests that
    /// build vocabularies by hand.
    pub(crate) fn words(min_df: u32) -> FeatureSettings {
        FeatureSettings {
            analyzer: AnalyzerSettings {
                max_ngram: 1,
                char_ngrams: (0, 0),
                stemming: Stemming::None,
                stop_words: false,
            },
            min_df,
            max_features: 0,
            sublinear_tf: true,
        }
    }

    #[test]
    fn max_features_keeps_the_most_frequent_terms_of_each_family() {
        let mut settings = words(1);
        settings.max_features = 2;
        settings.analyzer.char_ngrams = (3, 3);
        let docs = ["aa bb cc", "aa bb", "aa dd"];
        let tfidf = TfIdf::fit(&docs, settings).unwrap();
        let (chars, words): (Vec<&String>, Vec<&String>) = tfidf.terms().iter().partition(|t| t.starts_with(CHAR_MARK));
        assert_eq!(words, ["aa", "bb"]);
        assert_eq!(chars.len(), 2);
    }

    #[test]
    fn vocabulary_respects_min_df_and_is_sorted() {
        let docs = ["troops shelled the town", "troops entered the camp", "aid reached the camp"];
        let tfidf = TfIdf::fit(&docs, words(2)).unwrap();
        assert_eq!(tfidf.terms(), ["camp", "the", "troops"]);
        // "the" is in every document: the smallest idf, exactly 1.
        assert!((tfidf.idf()[1] - 1.0).abs() < 1e-6);
        assert!(tfidf.idf()[0] > tfidf.idf()[1]);
    }

    #[test]
    fn rows_are_l2_normalized_sorted_and_sublinear() {
        let docs = ["camp camp camp troops", "camp troops", "troops"];
        let tfidf = TfIdf::fit(&docs, words(1)).unwrap();
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
    fn word_and_character_families_are_normalized_apart() {
        let mut settings = words(1);
        settings.analyzer.char_ngrams = (3, 3);
        let docs = ["camp", "troops", "camp troops"];
        let tfidf = TfIdf::fit(&docs, settings).unwrap();
        let first_char = tfidf.terms().iter().position(|t| t.starts_with(CHAR_MARK)).unwrap();
        assert!(tfidf.terms()[..first_char].iter().all(|t| !t.starts_with(CHAR_MARK)));
        assert!(tfidf.terms()[first_char..].iter().all(|t| t.starts_with(CHAR_MARK)));
        let v = tfidf.transform("camp troops");
        let norm = |keep: &dyn Fn(usize) -> bool| v.iter().filter(|(i, _)| keep(*i)).map(|(_, x)| x * x).sum::<f32>();
        assert!((norm(&|i| i < first_char) - 1.0).abs() < 1e-5);
        assert!((norm(&|i| i >= first_char) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn unknown_text_gives_an_empty_vector() {
        let tfidf = TfIdf::fit(&["alpha beta", "beta gamma"], FeatureSettings::default()).unwrap();
        assert!(tfidf.transform("xyz qqq").is_empty());
        assert!(tfidf.transform("").is_empty());
    }

    #[test]
    fn dense_rows_match_sparse_rows() {
        let docs = ["alpha beta", "beta gamma", "gamma alpha alpha"];
        let tfidf = TfIdf::fit(&docs, FeatureSettings { min_df: 1, ..FeatureSettings::default() }).unwrap();
        let rows: Vec<SparseVector> = docs.iter().map(|d| tfidf.transform(d)).collect();
        let dense = tfidf.to_dense(&rows);
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter() {
                assert_eq!(dense[[r, c]], v);
            }
            assert_eq!(dense.row(r).iter().filter(|x| **x != 0.0).count(), row.indices.len());
        }
    }

    #[test]
    fn remembered_word_features_are_the_features_of_the_terms() {
        let docs = ["وصلت المساعدات إلى المخيمات", "The envoys met in Geneva", "قصف المخيمات والمساعدات"];
        let settings = FeatureSettings { min_df: 1, ..FeatureSettings::default() };
        let tfidf = TfIdf::fit(&docs, settings).unwrap();
        let text = "المساعدات وصلت المخيمات، والمساعدات met the envoys in Geneva";
        let mut expected = Vec::new();
        tfidf.analyzer.for_each_term(text, |term, span| {
            if let Some(feature) = tfidf.terms.iter().position(|t| t == term) {
                expected.push((feature as u32, span));
            }
        });
        expected.sort_by_key(|(feature, span)| (*feature, span.start, span.end));
        // The first pass fills this thread's memo, the second reads from it.
        for _ in 0..2 {
            let mut got = Vec::new();
            tfidf.for_each_feature(text, |feature, span| got.push((feature, span)));
            got.sort_by_key(|(feature, span)| (*feature, span.start, span.end));
            assert_eq!(got, expected);
        }
        assert!(expected.len() > 50);
    }

    #[test]
    fn stored_parts_are_checked() {
        let settings = words(1);
        let duplicate = TfIdf::from_parts(settings.clone(), vec!["a".into(), "a".into()], vec![1.0, 1.0]);
        assert_eq!(duplicate.unwrap_err(), VectorizerError::DuplicateTerm("a".into()));
        let unordered = TfIdf::from_parts(settings.clone(), vec!["~ab".into(), "a".into()], vec![1.0, 1.0]);
        assert_eq!(unordered.unwrap_err(), VectorizerError::Unordered("a".into()));
        let short = TfIdf::from_parts(settings.clone(), vec!["a".into()], vec![]);
        assert!(matches!(short, Err(VectorizerError::LengthMismatch { .. })));
        let nan = TfIdf::from_parts(settings, vec!["a".into()], vec![f32::NAN]);
        assert!(matches!(nan, Err(VectorizerError::BadIdf(_))));
    }

    /// Found by the `model_file` fuzz target: a model file whose idf was near `f32::MAX`
    /// loaded, and a text repeating that term scored NaN for every label.
    #[test]
    fn an_idf_that_overflows_a_weight_is_refused() {
        let mut settings = words(1);
        settings.sublinear_tf = false;
        let huge = TfIdf::from_parts(settings.clone(), vec!["camp".into()], vec![3.0e38]);
        assert_eq!(huge.unwrap_err(), VectorizerError::BadIdf("camp".into()));
        let infinite = TfIdf::from_parts(settings.clone(), vec!["camp".into()], vec![f32::INFINITY]);
        assert!(matches!(infinite, Err(VectorizerError::BadIdf(_))));
        // The largest allowed idf keeps a much-repeated term's weight finite.
        let largest = TfIdf::from_parts(settings, vec!["camp".into()], vec![MAX_IDF]).unwrap();
        let row = largest.transform(&"camp ".repeat(10_000));
        assert_eq!(row.values, [1.0]);
    }
}
