//! Synthetic corpora for timing the trainer at sizes the bundled corpus cannot reach.
//!
//! Each label gets its own vocabulary of invented words, and every label shares a
//! larger vocabulary of filler and English function words; a document mixes them, drawn with Zipf-like
//! frequencies so that the number of distinct terms (and n-grams) grows with the corpus
//! the way it does in real text. The output is in the corpus JSONL format and depends
//! only on the settings: the same seed always writes the same bytes. The documents are
//! meant for timing: what a model learns from them says nothing about real news.

use std::collections::HashSet;
use std::io::{self, Write};

use serde::Serialize;

use crate::train::SplitMix64;

/// The labels of the bundled corpus, so that a synthetic corpus passes `topics corpus check`.
pub const LABELS: [&str; 4] = ["diplomacy", "humanitarian", "none", "security"];
/// Invented words belonging to each label.
const TOPIC_WORDS: usize = 1_500;
/// Invented words every label uses.
const FILLER_WORDS: usize = 6_000;
/// Share of a document's words drawn from its label's vocabulary.
const TOPIC_SHARE: f64 = 0.25;
/// Share of a document's words that are English function words: they make the text read
/// as English to the language check, and exercise stop-word removal as real copy does.
const FUNCTION_SHARE: f64 = 0.45;
const FUNCTION_WORDS: [&str; 30] = [
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "on", "with", "as", "was", "by", "said", "at", "from",
    "it", "has", "were", "which", "have", "be", "this", "after", "over", "their", "an", "its", "had",
];
/// Words per sentence, for text that tokenizes like prose.
const SENTENCE_WORDS: usize = 12;
const SYLLABLES: [&str; 48] = [
    "ka", "lo", "mi", "ra", "tu", "ve", "sa", "no", "di", "pe", "zu", "ha", "bo", "gi", "fe", "ju", "ko", "la", "mu",
    "ni", "ro", "si", "ta", "vu", "wa", "xe", "yo", "ze", "bri", "dra", "fla", "gro", "kle", "pri", "sto", "tri",
    "vol", "man", "ter", "sin", "dor", "kel", "mar", "nus", "pol", "rin", "sul", "tav",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSettings {
    pub documents: usize,
    /// Mean words per document; each document has between 80% and 120% of it.
    pub words: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("a synthetic document needs at least one word")]
    NoWords,
    #[error("cannot write the synthetic corpus: {0}")]
    Write(#[from] io::Error),
}

/// One corpus line; field names are the corpus schema's.
#[derive(Serialize)]
struct Line<'a> {
    id: String,
    lang: &'static str,
    labels: [&'a str; 1],
    text: &'a str,
}

/// Words drawn with probability proportional to 1 / (rank + 1), as word frequencies roughly are.
struct Zipf {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(words: Vec<String>) -> Self {
        let mut total = 0.0;
        let cumulative = (0..words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn draw(&self, rng: &mut SplitMix64) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.unit() * total;
        let rank = self.cumulative.partition_point(|&c| c <= target).min(self.words.len() - 1);
        &self.words[rank]
    }
}

/// `count` invented words not in `taken`, of two to four syllables.
fn invent(count: usize, rng: &mut SplitMix64, taken: &mut HashSet<String>) -> Vec<String> {
    let mut words = Vec::with_capacity(count);
    while words.len() < count {
        let syllables = 2 + rng.below(3);
        let word: String = (0..syllables).map(|_| SYLLABLES[rng.below(SYLLABLES.len())]).collect();
        if taken.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Writes `settings.documents` documents, labels in turn, to `out` as corpus JSONL.
pub fn write_corpus(settings: SynthSettings, out: &mut impl Write) -> Result<(), SynthError> {
    if settings.words == 0 {
        return Err(SynthError::NoWords);
    }
    let mut rng = SplitMix64(settings.seed);
    let mut taken: HashSet<String> = FUNCTION_WORDS.iter().map(|w| w.to_string()).collect();
    let topics: Vec<Zipf> = LABELS.iter().map(|_| Zipf::new(invent(TOPIC_WORDS, &mut rng, &mut taken))).collect();
    let filler = Zipf::new(invent(FILLER_WORDS, &mut rng, &mut taken));
    let function_words = Zipf::new(FUNCTION_WORDS.map(String::from).to_vec());

    let mut text = String::new();
    for i in 0..settings.documents {
        let label = i % LABELS.len();
        let spread = settings.words * 2 / 5;
        let length = (settings.words - settings.words / 5 + rng.below(spread + 1)).max(1);
        text.clear();
        for position in 0..length {
            let draw = rng.unit();
            let vocabulary = if draw < FUNCTION_SHARE {
                &function_words
            } else if draw < FUNCTION_SHARE + TOPIC_SHARE {
                &topics[label]
            } else {
                &filler
            };
            let word = vocabulary.draw(&mut rng);
            if position % SENTENCE_WORDS == 0 {
                if position > 0 {
                    text.push_str(". ");
                }
                let mut chars = word.chars();
                text.extend(chars.next().map(|c| c.to_ascii_uppercase()));
                text.push_str(chars.as_str());
            } else {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push('.');
        let line =
            Line { id: format!("synth-{}-{i:07}", settings.seed), lang: "en", labels: [LABELS[label]], text: &text };
        serde_json::to_writer(&mut *out, &line).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Corpus;

    fn generate(documents: usize, seed: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_corpus(SynthSettings { documents, words: 100, seed }, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_same_seed_writes_the_same_bytes() {
        assert_eq!(generate(40, 7), generate(40, 7));
        assert_ne!(generate(40, 7), generate(40, 8));
        // A longer corpus starts with the shorter one: documents do not depend on the total.
        assert!(generate(41, 7).starts_with(&generate(40, 7)));
    }

    #[test]
    fn output_loads_as_a_corpus_with_every_label_and_about_the_asked_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synth.jsonl");
        std::fs::write(&path, generate(200, 3)).unwrap();
        let corpus = Corpus::read(&[path]).unwrap();
        assert_eq!(corpus.documents.len(), 200);
        for label in LABELS {
            assert_eq!(corpus.documents.iter().filter(|d| d.primary_label() == label).count(), 50, "{label}");
        }
        for document in &corpus.documents {
            let words = document.text.split_whitespace().count();
            assert!((80..=120).contains(&words), "{} has {words} words", document.id);
            assert_eq!(document.lang, "en");
        }
        let report = crate::corpus_check::check(&corpus.documents, &Default::default());
        assert_eq!(report.errors().count(), 0, "{report}");
    }

    #[test]
    fn zero_words_is_refused() {
        let settings = SynthSettings { documents: 1, words: 0, seed: 1 };
        assert!(matches!(write_corpus(settings, &mut Vec::new()), Err(SynthError::NoWords)));
    }
}
