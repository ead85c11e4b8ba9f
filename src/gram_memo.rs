//! A per-thread memo of the character n-gram features of each word.
//!
//! Most of the time spent featurizing a text goes into its character n-grams: some
//! twenty per word, each hashed and looked up in the vocabulary. News repeats its
//! words, within an article and across articles, so each serving thread remembers which
//! features a word's n-grams gave and looks the word up once instead. The memo is only
//! a cache: answers are the same with or without it, and it holds no request's data
//! beyond the words themselves. It belongs to one vocabulary at a time (a reloaded
//! model starts it over) and starts over when full, which bounds its memory per thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

/// Words remembered per thread before the memo starts over.
const MAX_WORDS: usize = 50_000;
/// Feature indices remembered per thread (4 bytes each) before the memo starts over.
const MAX_FEATURES: usize = 1 << 20;

static NEXT_VOCABULARY: AtomicU64 = AtomicU64::new(1);

/// A number no other vocabulary of this process has: what tells the memo that the
/// model changed.
pub(crate) fn new_vocabulary_id() -> u64 {
    NEXT_VOCABULARY.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
struct Memo {
    vocabulary: u64,
    /// Where each marked word's features lie in `features`.
    words: FxHashMap<Box<[char]>, (u32, u32)>,
    features: Vec<u32>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::default();
}

/// Calls `visit` with each feature of the marked word `word` in the vocabulary
/// `vocabulary`. `compute` appends them to the vector it is given; it runs only when
/// this thread has not seen the word with this vocabulary since the memo last started over.
pub(crate) fn for_each_word_feature(
    vocabulary: u64,
    word: &[char],
    compute: impl FnOnce(&mut Vec<u32>),
    visit: impl FnMut(u32),
) {
    MEMO.with(|memo| {
        // `visit` could, in principle, featurize another text on this thread; that inner
        // call finds the memo busy and computes without it.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            let mut features = Vec::new();
            compute(&mut features);
            features.into_iter().for_each(visit);
            return;
        };
        if memo.vocabulary != vocabulary || memo.words.len() >= MAX_WORDS || memo.features.len() >= MAX_FEATURES {
            memo.words.clear();
            memo.features.clear();
            memo.vocabulary = vocabulary;
        }
        let (start, end) = match memo.words.get(word) {
            Some(&range) => range,
            None => {
                let start = memo.features.len();
                compute(&mut memo.features);
                let range = (start as u32, memo.features.len() as u32);
                memo.words.insert(word.into(), range);
                range
            }
        };
        memo.features[start as usize..end as usize].iter().copied().for_each(visit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(vocabulary: u64, word: &str, computed: &mut usize) -> Vec<u32> {
        let chars: Vec<char> = word.chars().collect();
        let mut out = Vec::new();
        let compute = |into: &mut Vec<u32>| {
            *computed += 1;
            into.extend(chars.iter().map(|&c| c as u32 + vocabulary as u32));
        };
        for_each_word_feature(vocabulary, &chars, compute, |f| out.push(f));
        out
    }

    #[test]
    fn a_word_is_computed_once_per_vocabulary() {
        let (first, second) = (new_vocabulary_id(), new_vocabulary_id());
        let mut computed = 0;
        let once = features(first, "<camp>", &mut computed);
        assert_eq!(features(first, "<camp>", &mut computed), once);
        assert_eq!(computed, 1);
        // Another vocabulary gives other features for the same word.
        assert_ne!(features(second, "<camp>", &mut computed), once);
        assert_eq!(computed, 2);
        assert_eq!(features(first, "<camp>", &mut computed), once);
        assert_eq!(computed, 3);
    }

    #[test]
    fn the_memo_starts_over_when_full() {
        let vocabulary = new_vocabulary_id();
        let mut computed = 0;
        for i in 0..MAX_WORDS + 10 {
            features(vocabulary, &format!("w{i}"), &mut computed);
        }
        let size = MEMO.with(|memo| memo.borrow().words.len());
        assert!(size <= 10, "{size} words kept");
        assert_eq!(features(vocabulary, "w0", &mut computed), features(vocabulary, "w0", &mut computed));
    }

    #[test]
    fn a_nested_call_computes_without_the_memo() {
        let vocabulary = new_vocabulary_id();
        let chars: Vec<char> = "<aid>".chars().collect();
        let mut inner = Vec::new();
        for_each_word_feature(
            vocabulary,
            &chars,
            |into| into.push(1),
            |_| for_each_word_feature(vocabulary, &chars, |into| into.push(2), |f| inner.push(f)),
        );
        assert_eq!(inner, [2]);
    }
}
