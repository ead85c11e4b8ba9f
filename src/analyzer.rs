//! Turns normalized words into the terms TF-IDF counts: stemmed word n-grams without
//! stop words, and character n-grams inside each word.
//!
//! Arabic glues clitics to words (و، ف، ب، ل، ال and pronoun suffixes), so one
//! lemma appears in dozens of surface forms. Light stemming folds the commonest
//! affixes; character n-grams inside words catch what stemming misses, and give
//! unseen inflections a partial match.

use std::ops::Range;

use rust_stemmers::{Algorithm, Stemmer as Snowball};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::text;

/// Character n-gram terms start with this mark, which no word term can contain
/// (words are runs of letters and digits), so the two families never collide.
pub const CHAR_MARK: char = '~';
/// Word boundaries inside character n-grams, as in `<word>`.
const WORD_START: char = '<';
const WORD_END: char = '>';

/// How words are reduced before they become word n-grams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stemming {
    /// Words as normalized.
    None,
    /// Our light stemmer for Arabic (common clitics and suffixes) and Snowball English.
    Light,
    /// Snowball for both Arabic and English.
    Snowball,
}

/// Which terms a text yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzerSettings {
    /// Longest word n-gram (1 = single words).
    pub max_ngram: u8,
    /// Character n-gram lengths inside words, counting the boundary marks; `(0, 0)` for none.
    pub char_ngrams: (u8, u8),
    pub stemming: Stemming,
    /// Drop Arabic and English stop words from word n-grams.
    pub stop_words: bool,
}

impl Default for AnalyzerSettings {
    fn default() -> Self {
        Self { max_ngram: 2, char_ngrams: (2, 5), stemming: Stemming::Light, stop_words: true }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnalyzerError {
    #[error("max_ngram must be 1 to 3, not {0}")]
    BadWordNgram(u8),
    #[error("character n-grams must be (0, 0) or lengths 1 to 8 with min <= max, not {0:?}")]
    BadCharNgram((u8, u8)),
}

/// A configured analyzer. Building one normalizes the stop-word lists, so build it once.
pub struct Analyzer {
    settings: AnalyzerSettings,
    stop_words: FxHashSet<String>,
    arabic_snowball: Snowball,
    english_snowball: Snowball,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Analyzer {
    pub fn new(settings: AnalyzerSettings) -> Result<Self, AnalyzerError> {
        if !(1..=3).contains(&settings.max_ngram) {
            return Err(AnalyzerError::BadWordNgram(settings.max_ngram));
        }
        let (min, max) = settings.char_ngrams;
        if (min, max) != (0, 0) && !(1 <= min && min <= max && max <= 8) {
            return Err(AnalyzerError::BadCharNgram(settings.char_ngrams));
        }
        let stop_words = if settings.stop_words { normalized_stop_words() } else { FxHashSet::default() };
        Ok(Self {
            settings,
            stop_words,
            arabic_snowball: Snowball::create(Algorithm::Arabic),
            english_snowball: Snowball::create(Algorithm::English),
        })
    }

    pub fn settings(&self) -> &AnalyzerSettings {
        &self.settings
    }

    /// Calls `visit` with every term of `text` and the byte range of the surface text it
    /// came from. Buffers are reused; nothing is allocated per term.
    pub fn for_each_term(&self, text: &str, mut visit: impl FnMut(&str, Range<usize>)) {
        let mut term = String::with_capacity(64);
        self.walk(text, |found, span| match found {
            Found::Word(word_term) => visit(word_term, span),
            Found::Marked(marked) => {
                for gram in self.grams(marked) {
                    term.clear();
                    term.push(CHAR_MARK);
                    term.extend(gram);
                    visit(&term, span.clone());
                }
            }
        });
    }

    /// Like [`Analyzer::for_each_term`], but gives each term's [`term_hash`] instead of the
    /// term: serving looks features up by hash, and never builds the character n-gram strings.
    pub fn for_each_term_hash(&self, text: &str, mut visit: impl FnMut(u64, Range<usize>)) {
        self.for_each_hashed(text, |hashed, span| match hashed {
            Hashed::Term(hash) => visit(hash, span),
            Hashed::Word(marked) => self.char_gram_hashes(marked, |hash| visit(hash, span.clone())),
        });
    }

    /// The word n-gram terms of `text` as [`term_hash`]es, and each word between its
    /// boundary marks, whose character n-grams [`Analyzer::char_gram_hashes`] gives: a
    /// caller that has seen the word before can reuse what it found then.
    pub fn for_each_hashed(&self, text: &str, mut visit: impl FnMut(Hashed<'_>, Range<usize>)) {
        self.walk(text, |found, span| match found {
            Found::Word(word_term) => visit(Hashed::Term(term_hash(word_term)), span),
            Found::Marked(marked) => visit(Hashed::Word(marked), span),
        });
    }

    /// The one walk over a text's terms: each word n-gram, and each word between its
    /// boundary marks, from which the caller makes the character n-grams.
    pub(crate) fn walk(&self, text: &str, mut visit: impl FnMut(Found<'_>, Range<usize>)) {
        let max_ngram = usize::from(self.settings.max_ngram);
        // The previous kept words (stems) and their spans, oldest first.
        let mut window: Vec<(String, Range<usize>)> = Vec::with_capacity(max_ngram);
        let mut term = String::with_capacity(64);
        let mut stem = String::with_capacity(32);
        let mut chars: Vec<char> = Vec::with_capacity(32);

        text::for_each_token(text, |token, span| {
            if self.settings.char_ngrams != (0, 0) {
                Self::mark_word(token, &mut chars);
                visit(Found::Marked(&chars), span.clone());
            }
            if self.stop_words.contains(token) {
                return;
            }
            self.stem_into(token, &mut stem);
            visit(Found::Word(&stem), span.clone());
            for n in 2..=max_ngram {
                if window.len() + 1 < n {
                    break;
                }
                term.clear();
                let first = &window[window.len() + 1 - n..];
                for (previous, _) in first {
                    term.push_str(previous);
                    term.push(' ');
                }
                term.push_str(&stem);
                visit(Found::Word(&term), first[0].1.start..span.end);
            }
            if max_ngram > 1 {
                if window.len() == max_ngram - 1 {
                    let mut oldest = window.remove(0);
                    oldest.0.clear();
                    oldest.0.push_str(&stem);
                    oldest.1 = span;
                    window.push(oldest);
                } else {
                    window.push((stem.clone(), span));
                }
            }
        });
    }

    /// `word` between its boundary marks, as characters, in `chars`.
    fn mark_word(word: &str, chars: &mut Vec<char>) {
        chars.clear();
        chars.push(WORD_START);
        chars.extend(word.chars());
        chars.push(WORD_END);
    }

    /// The character n-grams of a marked word, shortest first.
    pub(crate) fn grams<'a>(&self, marked: &'a [char]) -> impl Iterator<Item = &'a [char]> {
        let (min, max) = (usize::from(self.settings.char_ngrams.0), usize::from(self.settings.char_ngrams.1));
        (min..=max.min(marked.len()))
            .flat_map(move |n| marked.windows(n))
            // A lone boundary mark says nothing about the word.
            .filter(|gram| !(gram.len() == 1 && (gram[0] == WORD_START || gram[0] == WORD_END)))
    }

    /// The [`term_hash`]es of a marked word's character n-grams: the same n-grams as
    /// [`Analyzer::grams`], in another order, since all the grams starting at one
    /// character share the hash of their common prefix.
    pub fn char_gram_hashes(&self, marked: &[char], mut visit: impl FnMut(u64)) {
        let (min, max) = (usize::from(self.settings.char_ngrams.0), usize::from(self.settings.char_ngrams.1));
        for start in 0..marked.len() {
            let mut hash = Fnv::new().char(CHAR_MARK);
            for (length, &c) in marked[start..].iter().take(max).enumerate().map(|(i, c)| (i + 1, c)) {
                hash = hash.char(c);
                if length >= min && !(length == 1 && (c == WORD_START || c == WORD_END)) {
                    visit(hash.finish());
                }
            }
        }
    }

    fn stem_into(&self, word: &str, out: &mut String) {
        out.clear();
        let arabic = word.chars().next().is_some_and(is_arabic_letter);
        match (self.settings.stemming, arabic) {
            (Stemming::None, _) => out.push_str(word),
            (Stemming::Light, true) => out.push_str(light_arabic_stem(word)),
            (Stemming::Snowball, true) => out.push_str(&self.arabic_snowball.stem(word)),
            (_, false) => out.push_str(&self.english_snowball.stem(word)),
        }
    }
}

/// What [`Analyzer::for_each_hashed`] hands out.
pub enum Hashed<'a> {
    /// The [`term_hash`] of a word n-gram term.
    Term(u64),
    /// A word's characters between its boundary marks.
    Word(&'a [char]),
}

/// What [`Analyzer::walk`] finds in a text.
pub(crate) enum Found<'a> {
    /// A word n-gram term: a stem, or stems joined by spaces.
    Word(&'a str),
    /// A word's characters between its boundary marks.
    Marked(&'a [char]),
}

/// FNV-1a (64-bit) of a term's UTF-8 bytes: how serving finds a term in the vocabulary.
/// Two vocabulary terms with one hash are caught when the vocabulary is built; a text's
/// unknown term hitting a vocabulary term's hash has a chance of about 1 in 10^14 per
/// lookup, far below anything a classifier's error rate could show.
pub fn term_hash(term: &str) -> u64 {
    Fnv::new().bytes(term.as_bytes()).finish()
}

#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        Self(bytes.iter().fold(self.0, |h, &b| (h ^ u64::from(b)).wrapping_mul(Self::PRIME)))
    }

    fn char(self, c: char) -> Self {
        self.bytes(c.encode_utf8(&mut [0; 4]).as_bytes())
    }

    fn finish(self) -> u64 {
        self.0
    }
}

fn is_arabic_letter(c: char) -> bool {
    ('\u{0620}'..='\u{064A}').contains(&c) || ('\u{066E}'..='\u{06D3}').contains(&c)
}

/// The stop words of both languages, folded by the same normalizer as the text so
/// that "إلى" in the list matches "الى" or "إلي" in an article.
fn normalized_stop_words() -> FxHashSet<String> {
    let mut words = FxHashSet::default();
    for list in [stop_words::get("ar"), stop_words::get("en")] {
        for word in list {
            text::for_each_token(word, |token, _| {
                words.insert(token.to_string());
            });
        }
    }
    words
}

/// Prefixes, longest first: conjunction + article, prepositions + article, the article.
const ARABIC_PREFIXES: [&str; 6] = ["وال", "بال", "كال", "فال", "لل", "ال"];
/// Suffixes, each stripped at most once, in this order: dual/plural/feminine endings
/// and attached pronouns. Taa marbuta is already folded to ه by the normalizer.
const ARABIC_SUFFIXES: [&str; 8] = ["ها", "ان", "ات", "ون", "ين", "يه", "ه", "ي"];

/// A light stemmer after Larkey's Light10: one article-bearing prefix, then suffixes,
/// never leaving fewer than two letters. Unlike Light10 it keeps a bare leading و:
/// in news Arabic it is as often the first root letter (وزير، وكالة، وفد) as the
/// conjunction, and stripping it splits وزير from الوزير.
pub fn light_arabic_stem(word: &str) -> &str {
    let letters = |s: &str| s.chars().count();
    let mut stem = word;
    for prefix in ARABIC_PREFIXES {
        if let Some(rest) = stem.strip_prefix(prefix)
            && letters(rest) >= 2
        {
            stem = rest;
            break;
        }
    }
    for suffix in ARABIC_SUFFIXES {
        if let Some(rest) = stem.strip_suffix(suffix)
            && letters(rest) >= 2
        {
            stem = rest;
        }
    }
    stem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_terms_are_the_terms_hashed() {
        let text = "وأكد الوزير أن «التحالف الدولي» مستمر. The envoys met in Geneva, ٢٠٢٤ talks on aid.";
        for settings in [
            AnalyzerSettings::default(),
            AnalyzerSettings { max_ngram: 3, char_ngrams: (1, 6), stemming: Stemming::Snowball, stop_words: false },
        ] {
            let analyzer = Analyzer::new(settings).unwrap();
            let mut strings = Vec::new();
            analyzer.for_each_term(text, |t, span| strings.push((span.start, span.end, term_hash(t))));
            let mut hashes = Vec::new();
            analyzer.for_each_term_hash(text, |h, span| hashes.push((span.start, span.end, h)));
            // The same terms, not necessarily in the same order.
            strings.sort_unstable();
            hashes.sort_unstable();
            assert_eq!(strings, hashes);
            assert!(strings.len() > 100);
        }
    }

    fn terms(analyzer: &Analyzer, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        analyzer.for_each_term(text, |t, _| out.push(t.to_string()));
        out
    }

    fn words_only(max_ngram: u8, stemming: Stemming, stop_words: bool) -> Analyzer {
        Analyzer::new(AnalyzerSettings { max_ngram, char_ngrams: (0, 0), stemming, stop_words }).unwrap()
    }

    #[test]
    fn light_stemmer_folds_clitics_and_endings() {
        assert_eq!(light_arabic_stem("والمقاتلين"), "مقاتل");
        assert_eq!(light_arabic_stem("بالمخيمات"), "مخيم");
        assert_eq!(light_arabic_stem("الحكومه"), "حكوم");
        assert_eq!(light_arabic_stem("وزراء"), "وزراء");
        assert_eq!(light_arabic_stem("الوزير"), light_arabic_stem("وزير"));
        assert_eq!(light_arabic_stem("للنازحين"), "نازح");
        // Never below two letters.
        assert_eq!(light_arabic_stem("به"), "به");
    }

    #[test]
    fn word_ngrams_skip_stop_words_and_use_stems() {
        let analyzer = words_only(2, Stemming::Light, true);
        assert_eq!(
            terms(&analyzer, "وصلت المساعدات إلى المخيمات"),
            ["وصلت", "مساعد", "وصلت مساعد", "مخيم", "مساعد مخيم"]
        );
        let english = words_only(1, Stemming::Light, true);
        assert_eq!(terms(&english, "The refugees were fleeing the shelling"), ["refuge", "flee", "shell"]);
        let plain = words_only(1, Stemming::None, false);
        assert_eq!(terms(&plain, "The refugees"), ["the", "refugees"]);
    }

    #[test]
    fn char_ngrams_stay_inside_words_and_are_marked() {
        let analyzer = Analyzer::new(AnalyzerSettings {
            max_ngram: 1,
            char_ngrams: (3, 4),
            stemming: Stemming::None,
            stop_words: false,
        })
        .unwrap();
        let got = terms(&analyzer, "ab cd");
        assert_eq!(got, ["~<ab", "~ab>", "~<ab>", "ab", "~<cd", "~cd>", "~<cd>", "cd"]);
    }

    #[test]
    fn spans_of_bigrams_cover_both_words() {
        let analyzer = words_only(2, Stemming::None, false);
        let text = "aid convoys";
        let mut spans = Vec::new();
        analyzer.for_each_term(text, |t, span| spans.push((t.to_string(), text[span].to_string())));
        assert_eq!(spans[2], ("aid convoys".to_string(), "aid convoys".to_string()));
    }

    #[test]
    fn stop_words_are_normalized_like_text() {
        let stop = normalized_stop_words();
        assert!(stop.contains(&text::normalize("إلى")));
        assert!(stop.contains(&text::normalize("الى")));
        assert!(stop.contains(&text::normalize("علـى")));
        assert!(stop.contains("the"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = AnalyzerSettings { char_ngrams: (5, 2), ..AnalyzerSettings::default() };
        assert_eq!(Analyzer::new(bad).unwrap_err(), AnalyzerError::BadCharNgram((5, 2)));
        let bad = AnalyzerSettings { max_ngram: 0, ..AnalyzerSettings::default() };
        assert_eq!(Analyzer::new(bad).unwrap_err(), AnalyzerError::BadWordNgram(0));
    }
}
