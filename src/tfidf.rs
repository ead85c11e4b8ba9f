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

use crate::analyzer::{Analyzer, AnalyzerError, AnalyzerSettings, CHAR_MARK, Found, Hashed, term_hash};
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
    #[error("vectorizers with different analyzers cannot share features: {0}")]
    MixedAnalyzers(String),
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
        let documents: Vec<(&str, usize)> = documents.iter().map(|d| (d.as_ref(), 0)).collect();
        DocumentFrequencies::count(&documents, 1, settings)?.vectorizer(None)
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
        let distinct = counted.len();
        self.weigh_counted(counted.into_iter().map(|(feature, count)| (feature, count as usize)), distinct)
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

    /// The TF-IDF row of (feature, occurrences) pairs already counted, in increasing
    /// feature order; `capacity` is a hint of how many there are. Serving's [`TfIdf::row`]
    /// and training's shared rows, which count once for several vectorizers, both end here.
    fn weigh_counted(&self, counted: impl Iterator<Item = (u32, usize)>, capacity: usize) -> SparseVector {
        let mut vector = SparseVector { indices: Vec::with_capacity(capacity), values: Vec::with_capacity(capacity) };
        for (feature, count) in counted {
            vector.indices.push(feature);
            vector.values.push(self.tf(u32::try_from(count).unwrap_or(u32::MAX)) * self.idf[feature as usize]);
        }
        let split = vector.indices.partition_point(|&i| (i as usize) < self.first_char_feature);
        let (words, chars) = vector.values.split_at_mut(split);
        normalize(words);
        normalize(chars);
        vector
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

/// Document frequencies of every term of a corpus whose documents each belong to one of
/// a few parts (the folds of cross-validation), counted in one pass over the texts.
///
/// The vectorizer of the whole corpus, or of all parts but one, then follows from the
/// counts alone: cross-validation does not analyze the corpus again for every fold, and
/// gets exactly the vocabulary that fitting on the fold's own documents would give.
/// Memory grows with the number of distinct terms, not with the documents.
///
/// Terms are told apart by their [`term_hash`], as serving does: looking a 64-bit key up
/// is several times faster than comparing strings scattered over the heap, and two of a
/// corpus's terms sharing a hash is about as likely as winning a lottery twice.
#[derive(Debug)]
pub struct DocumentFrequencies {
    settings: FeatureSettings,
    parts: usize,
    /// Term hash → its index in `terms` and its row of `counts`.
    ids: FxHashMap<u64, usize>,
    terms: Vec<Box<str>>,
    /// Per term, one document count per part.
    counts: Vec<u32>,
    documents_per_part: Vec<usize>,
}

impl DocumentFrequencies {
    /// Counts, for every term, the documents of each part that contain it. `documents`
    /// gives each document's text and part (below `parts`); the texts are analyzed on
    /// every core, each thread taking a contiguous share of the documents (counts are
    /// integers, so the result does not depend on how many).
    pub fn count(
        documents: &[(&str, usize)],
        parts: usize,
        settings: FeatureSettings,
    ) -> Result<Self, VectorizerError> {
        Ok(Self::count_keeping(documents, parts, settings, false)?.0)
    }

    /// [`DocumentFrequencies::count`], also keeping every document's terms and their
    /// occurrences when `keep` is set: training at scale weighs the documents for every
    /// fold and scores them from these, without analyzing any text again.
    pub fn count_keeping(
        documents: &[(&str, usize)],
        parts: usize,
        settings: FeatureSettings,
        keep: bool,
    ) -> Result<(Self, Option<DocumentTerms>), VectorizerError> {
        let parts = parts.max(1);
        let analyzer = Analyzer::new(settings.analyzer.clone())?;
        let empty = || Self {
            settings: settings.clone(),
            parts,
            ids: FxHashMap::default(),
            terms: Vec::new(),
            counts: Vec::new(),
            documents_per_part: vec![0; parts],
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(documents.len().max(1));
        let share = documents.len().div_ceil(threads).max(1);
        let mut shares: Vec<(Self, DocumentTerms)> = std::thread::scope(|scope| {
            let handles: Vec<_> = documents
                .chunks(share)
                .map(|chunk| {
                    let (analyzer, mut counted) = (&analyzer, empty());
                    scope.spawn(move || {
                        let kept = counted.add(analyzer, chunk, keep);
                        (counted, kept)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a document-frequency worker panicked")).collect()
        });
        // Counts are integers: merging the shares in any order gives the same result; the
        // kept terms are appended in share order, which is document order.
        let (mut whole, mut kept) =
            if shares.is_empty() { (empty(), DocumentTerms::default()) } else { shares.remove(0) };
        for (other, mut other_kept) in shares {
            let renumbered = whole.merge(other);
            for id in &mut other_kept.ids {
                *id = renumbered[*id as usize];
            }
            kept.append(other_kept);
        }
        Ok((whole, keep.then_some(kept)))
    }

    /// Counts `documents` into `self` (empty so far), returning their terms if `keep`.
    fn add(&mut self, analyzer: &Analyzer, documents: &[(&str, usize)], keep: bool) -> DocumentTerms {
        let Self { parts, ids, terms, counts, documents_per_part, .. } = self;
        let parts = *parts;
        // Word n-grams by term hash, character n-grams by their term's hash, both to an id.
        // Character n-grams, nine occurrences in ten but few distinct, get their own table:
        // small enough to stay in cache instead of spreading over the many rare word n-grams'.
        let mut word_ids: FxHashMap<u64, u32> = FxHashMap::default();
        let mut char_ids: FxHashMap<u64, u32> = FxHashMap::default();
        // A word's character n-gram ids, remembered the first time the word is met: words
        // repeat (Zipf), and most of the analysis is spelling out their n-grams.
        let mut words: FxHashMap<Box<[char]>, (u32, u32)> = FxHashMap::default();
        let mut word_grams: Vec<u32> = Vec::new();
        // Per id: 1 + the index of the last document it was counted in (a term counts once
        // per document), and where it is in that document's list of terms.
        let mut last: Vec<u32> = Vec::new();
        let mut slot: Vec<u32> = Vec::new();
        let mut document: Vec<(u32, u32)> = Vec::new();
        let mut kept = DocumentTerms::default();
        let mut gram = String::with_capacity(64);
        let mut new_term = |term: &str, hash: u64, last: &mut Vec<u32>, slot: &mut Vec<u32>, counts: &mut Vec<u32>| {
            let id = terms.len() as u32;
            terms.push(term.into());
            counts.resize(counts.len() + parts, 0);
            last.push(0);
            slot.push(0);
            ids.insert(hash, id as usize);
            id
        };
        for (index, &(text, part)) in documents.iter().enumerate() {
            let part = part.min(parts - 1);
            documents_per_part[part] += 1;
            let stamp = index as u32 + 1;
            document.clear();
            let mut occur = |id: u32, last: &mut [u32], slot: &mut [u32], counts: &mut [u32]| {
                let i = id as usize;
                if last[i] != stamp {
                    last[i] = stamp;
                    counts[i * parts + part] += 1;
                    slot[i] = document.len() as u32;
                    document.push((id, 1));
                } else {
                    let occurrences = &mut document[slot[i] as usize].1;
                    *occurrences = occurrences.saturating_add(1);
                }
            };
            analyzer.walk(text, |found, _| match found {
                Found::Word(term) => {
                    let hash = term_hash(term);
                    let id = match word_ids.get(&hash) {
                        Some(&id) => id,
                        None => {
                            let id = new_term(term, hash, &mut last, &mut slot, counts);
                            word_ids.insert(hash, id);
                            id
                        }
                    };
                    occur(id, &mut last, &mut slot, counts);
                }
                Found::Marked(marked) => {
                    let (start, len) = match words.get(marked) {
                        Some(&range) => range,
                        None => {
                            let start = word_grams.len() as u32;
                            for chars in analyzer.grams(marked) {
                                gram.clear();
                                gram.push(CHAR_MARK);
                                gram.extend(chars);
                                let hash = term_hash(&gram);
                                let id = match char_ids.get(&hash) {
                                    Some(&id) => id,
                                    None => {
                                        let id = new_term(&gram, hash, &mut last, &mut slot, counts);
                                        char_ids.insert(hash, id);
                                        id
                                    }
                                };
                                word_grams.push(id);
                            }
                            let range = (start, word_grams.len() as u32 - start);
                            words.insert(marked.into(), range);
                            range
                        }
                    };
                    for &id in &word_grams[start as usize..(start + len) as usize] {
                        occur(id, &mut last, &mut slot, counts);
                    }
                }
            });
            if keep {
                kept.push(&document);
            }
        }
        kept
    }

    /// Adds `other`'s counts; returns, for each of `other`'s term ids, its id here.
    fn merge(&mut self, other: Self) -> Vec<u32> {
        let parts = self.parts;
        for (mine, theirs) in self.documents_per_part.iter_mut().zip(&other.documents_per_part) {
            *mine += theirs;
        }
        let mut renumbered = vec![0u32; other.terms.len()];
        for (hash, id) in other.ids {
            let mine = *self.ids.entry(hash).or_insert_with(|| {
                self.terms.push(other.terms[id].clone());
                self.counts.resize(self.counts.len() + parts, 0);
                self.terms.len() - 1
            });
            renumbered[id] = mine as u32;
            for part in 0..parts {
                self.counts[mine * parts + part] += other.counts[id * parts + part];
            }
        }
        renumbered
    }

    /// Every counted term's [`term_hash`] and id (the ids [`DocumentTerms`] holds).
    pub fn term_ids(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.ids.iter().map(|(&hash, &id)| (hash, id))
    }

    /// How many distinct terms were counted.
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// Documents counted in all parts but `excluded`.
    pub fn documents(&self, excluded: Option<usize>) -> usize {
        let excluded = excluded.and_then(|p| self.documents_per_part.get(p)).copied().unwrap_or(0);
        self.documents_per_part.iter().sum::<usize>() - excluded
    }

    /// The vectorizer fitted on the documents of every part but `excluded` (all of them for `None`).
    pub fn vectorizer(&self, excluded: Option<usize>) -> Result<TfIdf, VectorizerError> {
        let parts = self.documents_per_part.len();
        let document_frequency = |id: usize| -> u32 {
            let row = &self.counts[id * parts..(id + 1) * parts];
            row.iter().enumerate().filter(|&(p, _)| Some(p) != excluded).map(|(_, &n)| n).sum()
        };
        type Counted<'t> = Vec<(&'t str, u32)>;
        let (mut words, mut chars): (Counted<'_>, Counted<'_>) = self
            .terms
            .iter()
            .enumerate()
            .map(|(id, term)| (&**term, document_frequency(id)))
            .filter(|&(_, df)| df > 0 && df >= self.settings.min_df)
            .partition(|(term, _)| !term.starts_with(CHAR_MARK));
        if self.settings.max_features > 0 {
            for family in [&mut words, &mut chars] {
                // Most frequent first; ties broken by the term, so the cut is deterministic.
                family.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                family.truncate(self.settings.max_features as usize);
            }
        }
        let mut kept = words;
        kept.append(&mut chars);
        kept.sort_unstable_by(|a, b| canonical_order(a.0, b.0));
        let n = self.documents(excluded) as f64;
        let (terms, idf): (Vec<String>, Vec<f32>) = kept
            .into_iter()
            .map(|(term, df)| {
                let idf = ((1.0 + n) / (1.0 + f64::from(df))).ln() + 1.0;
                (term.to_string(), idf as f32)
            })
            .unzip();
        let analyzer = Analyzer::new(self.settings.analyzer.clone())?;
        TfIdf::assemble(self.settings.clone(), analyzer, terms, idf)
    }
}

/// Every document's distinct terms (ids of a [`DocumentFrequencies`]) and how often each
/// occurs, kept from the one analysis of the texts. About six bytes per distinct term of a
/// document: a few hundred megabytes for 100,000 news-length documents.
#[derive(Debug, Default)]
pub struct DocumentTerms {
    /// Where each document's terms start in `ids` and `occurrences`; one more entry than documents.
    starts: Vec<usize>,
    ids: Vec<u32>,
    occurrences: Vec<u16>,
}

impl DocumentTerms {
    fn push(&mut self, document: &[(u32, u32)]) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        for &(id, occurrences) in document {
            self.ids.push(id);
            // A term repeated more than 65,535 times in one document weighs as if that often.
            self.occurrences.push(u16::try_from(occurrences).unwrap_or(u16::MAX));
        }
        self.starts.push(self.ids.len());
    }

    fn append(&mut self, other: DocumentTerms) {
        let base = self.ids.len();
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.starts.extend(other.starts.iter().skip(1).map(|start| start + base));
        self.ids.extend(other.ids);
        self.occurrences.extend(other.occurrences);
    }

    pub fn documents(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Document `document`'s (term id, occurrences), in no particular order.
    pub fn terms(&self, document: usize) -> impl Iterator<Item = (u32, usize)> + '_ {
        let range = self.starts[document]..self.starts[document + 1];
        self.ids[range.clone()].iter().zip(&self.occurrences[range]).map(|(&id, &n)| (id, usize::from(n)))
    }
}

/// Rows of one text for several vectorizers of the same analyzer settings (the folds of
/// cross-validation and the whole corpus) from a single analysis of the text.
///
/// Terms are looked up once in the union of the vocabularies, numbered in canonical
/// order, so that each vectorizer's features follow in the same order as the union's; a
/// row then costs a pass over the text's distinct terms, and equals the vectorizer's own
/// [`TfIdf::transform`] bit for bit.
pub struct SharedFeatures<'v> {
    vectorizers: Vec<&'v TfIdf>,
    analyzer: Analyzer,
    /// Term hash → position in the union vocabulary.
    union: FxHashMap<u64, u32>,
    /// Per vectorizer, its feature for each union position ([`SharedFeatures::ABSENT`] if none).
    features: Vec<Vec<u32>>,
}

impl<'v> SharedFeatures<'v> {
    const ABSENT: u32 = u32::MAX;

    /// All `vectorizers` must share their analyzer settings.
    pub fn new(vectorizers: Vec<&'v TfIdf>) -> Result<Self, VectorizerError> {
        let settings = vectorizers.first().map(|v| v.settings.analyzer.clone()).unwrap_or_default();
        if let Some(other) = vectorizers.iter().find(|v| v.settings.analyzer != settings) {
            return Err(VectorizerError::MixedAnalyzers(format!("{:?} and {:?}", settings, other.settings.analyzer)));
        }
        let mut terms: Vec<&str> = vectorizers.iter().flat_map(|v| v.terms.iter().map(String::as_str)).collect();
        terms.sort_unstable_by(|a, b| canonical_order(a, b));
        terms.dedup();
        let union: FxHashMap<u64, u32> = terms.iter().enumerate().map(|(i, t)| (term_hash(t), i as u32)).collect();
        let features = vectorizers
            .iter()
            .map(|v| {
                let mut features = vec![Self::ABSENT; terms.len()];
                for (feature, term) in v.terms.iter().enumerate() {
                    features[union[&term_hash(term)] as usize] = feature as u32;
                }
                features
            })
            .collect();
        Ok(Self { vectorizers, analyzer: Analyzer::new(settings)?, union, features })
    }

    /// Calls `visit` with the index and the row of `text` of every vectorizer that `wanted` accepts.
    pub fn for_each_row(
        &self,
        text: &str,
        wanted: impl FnMut(usize) -> bool,
        visit: impl FnMut(usize, SparseVector),
    ) {
        let mut hits: Vec<u32> = Vec::new();
        self.analyzer.for_each_term_hash(text, |hash, _| {
            if let Some(&position) = self.union.get(&hash) {
                hits.push(position);
            }
        });
        hits.sort_unstable();
        let mut counted: Vec<(u32, usize)> = Vec::new();
        let mut rest = &*hits;
        while let Some(&position) = rest.first() {
            let count = rest.iter().take_while(|&&p| p == position).count();
            rest = &rest[count..];
            counted.push((position, count));
        }
        self.rows_of_counted(&counted, wanted, visit);
    }

    /// Each term of `frequencies` by its id: its position in the union of the vocabularies,
    /// or [`SharedFeatures::ABSENT`] when no vectorizer kept it.
    pub fn positions(&self, frequencies: &DocumentFrequencies) -> Vec<u32> {
        let mut positions = vec![Self::ABSENT; frequencies.term_count()];
        for (hash, id) in frequencies.term_ids() {
            if let Some(&position) = self.union.get(&hash) {
                positions[id] = position;
            }
        }
        positions
    }

    /// [`SharedFeatures::for_each_row`] of a document kept by
    /// [`DocumentFrequencies::count_keeping`], from its `terms` (ids and occurrences) and
    /// the ids' [`SharedFeatures::positions`]; `scratch` is reused between documents.
    pub fn for_each_kept_row(
        &self,
        terms: impl Iterator<Item = (u32, usize)>,
        positions: &[u32],
        scratch: &mut Vec<(u32, usize)>,
        wanted: impl FnMut(usize) -> bool,
        visit: impl FnMut(usize, SparseVector),
    ) {
        scratch.clear();
        scratch.extend(terms.filter_map(|(id, occurrences)| {
            let position = positions[id as usize];
            (position != Self::ABSENT).then_some((position, occurrences))
        }));
        scratch.sort_unstable_by_key(|&(position, _)| position);
        self.rows_of_counted(scratch, wanted, visit);
    }

    /// The rows of (union position, occurrences) pairs in increasing position order.
    fn rows_of_counted(
        &self,
        counted: &[(u32, usize)],
        mut wanted: impl FnMut(usize) -> bool,
        mut visit: impl FnMut(usize, SparseVector),
    ) {
        for (index, vectorizer) in self.vectorizers.iter().enumerate() {
            if !wanted(index) {
                continue;
            }
            let features = &self.features[index];
            let own = counted.iter().filter_map(|&(position, count)| {
                let feature = features[position as usize];
                (feature != Self::ABSENT).then_some((feature, count))
            });
            visit(index, vectorizer.weigh_counted(own, counted.len()));
        }
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
    fn a_part_left_out_gives_the_vectorizer_of_the_other_parts() {
        let docs = ["troops shelled the camp", "aid reached the camp", "envoy met the minister", "troops met aid"];
        let parts = [0, 1, 2, 1];
        for settings in
            [words(1), words(2), FeatureSettings { min_df: 1, max_features: 3, ..FeatureSettings::default() }]
        {
            let parted: Vec<(&str, usize)> = docs.iter().copied().zip(parts).collect();
            let frequencies = DocumentFrequencies::count(&parted, 3, settings.clone()).unwrap();
            let whole = TfIdf::fit(&docs, settings.clone()).unwrap();
            let all = frequencies.vectorizer(None).unwrap();
            assert_eq!((all.terms(), all.idf()), (whole.terms(), whole.idf()));
            for left_out in 0..3 {
                let rest: Vec<&str> = docs.iter().zip(parts).filter(|&(_, p)| p != left_out).map(|(d, _)| *d).collect();
                let expected = TfIdf::fit(&rest, settings.clone()).unwrap();
                let derived = frequencies.vectorizer(Some(left_out)).unwrap();
                assert_eq!(derived.terms(), expected.terms(), "part {left_out}");
                assert_eq!(derived.idf(), expected.idf(), "part {left_out}");
                assert_eq!(frequencies.documents(Some(left_out)), rest.len());
            }
        }
    }

    #[test]
    fn shared_rows_equal_each_vectorizers_own_rows() {
        let docs = ["troops shelled the camp", "aid reached the camp camp", "envoy met the minister", "troops met aid"];
        let settings = FeatureSettings { min_df: 1, ..FeatureSettings::default() };
        let parted: Vec<(&str, usize)> = docs.iter().copied().zip([0, 1, 2, 1]).collect();
        let frequencies = DocumentFrequencies::count(&parted, 3, settings).unwrap();
        let vectorizers: Vec<TfIdf> =
            [None, Some(0), Some(1), Some(2)].into_iter().map(|p| frequencies.vectorizer(p).unwrap()).collect();
        let shared = SharedFeatures::new(vectorizers.iter().collect()).unwrap();
        for text in docs.iter().chain(&["camp troops unknown", ""]) {
            let mut seen = Vec::new();
            shared.for_each_row(
                text,
                |i| i != 2,
                |i, row| {
                    assert_eq!(row, vectorizers[i].transform(text), "vectorizer {i} on {text:?}");
                    seen.push(i);
                },
            );
            assert_eq!(seen, [0, 1, 3]);
        }
    }

    #[test]
    fn a_term_counts_once_per_document() {
        let tfidf = TfIdf::fit(&["camp camp camp", "camp troops"], words(1)).unwrap();
        // df(camp) = 2 of n = 2 documents: idf exactly 1.
        assert_eq!(tfidf.terms(), ["camp", "troops"]);
        assert!((tfidf.idf()[0] - 1.0).abs() < 1e-6);
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
