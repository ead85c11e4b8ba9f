//! Fuzzes the normalizer and tokenizer (`text`) and the analyzer that turns tokens into
//! terms, on arbitrary (lossily decoded) text under several analyzer settings.
//!
//! Beyond "no panic", it checks what later stages rely on: every span is a non-empty
//! range of the text on character boundaries, spans come in text order, tokens are real
//! words, and the hashed walk serving uses yields exactly the terms training counts.

#![no_main]

use std::ops::Range;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use topics::analyzer::{Analyzer, AnalyzerSettings, Stemming, term_hash};
use topics::text;

/// Built once: an analyzer normalizes its stop-word lists when it is made.
static ANALYZERS: LazyLock<Vec<Analyzer>> = LazyLock::new(|| {
    let settings = [
        (2, (2, 5), Stemming::Light, true),
        (1, (0, 0), Stemming::None, false),
        (3, (1, 8), Stemming::Snowball, true),
        (3, (3, 3), Stemming::Light, false),
        (1, (1, 1), Stemming::Snowball, false),
    ];
    settings
        .into_iter()
        .map(|(max_ngram, char_ngrams, stemming, stop_words)| {
            Analyzer::new(AnalyzerSettings { max_ngram, char_ngrams, stemming, stop_words })
                .unwrap_or_else(|e| panic!("fuzz settings are valid: {e}"))
        })
        .collect()
});

fn check_span(text: &str, span: &Range<usize>) {
    assert!(span.start < span.end && span.end <= text.len(), "span {span:?} outside a text of {} bytes", text.len());
    assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end), "span {span:?} splits a character");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    let mut previous_end = 0;
    let mut tokens = Vec::new();
    text::for_each_token(text, |token, span| {
        check_span(text, &span);
        assert!(span.start >= previous_end, "token spans overlap or go backwards");
        previous_end = span.end;
        assert!(token.chars().count() >= 2, "single-character token {token:?}");
        assert!(!token.chars().all(|c| c.is_ascii_digit()), "digit-only token {token:?}");
        assert!(!token.chars().any(|c| c.is_whitespace() || text::is_format_control(c)), "token {token:?}");
        tokens.push(token.to_owned());
    });
    assert_eq!(text::normalize(text), tokens.join(" "));
    if text::is_blank(text) {
        assert!(tokens.is_empty(), "a blank text gave tokens {tokens:?}");
    }

    let analyzer = &ANALYZERS[usize::from(data.first().copied().unwrap_or(0)) % ANALYZERS.len()];
    let mut terms = Vec::new();
    analyzer.for_each_term(text, |term, span| {
        check_span(text, &span);
        assert!(!term.is_empty());
        terms.push((term_hash(term), span));
    });
    let mut hashes = Vec::new();
    analyzer.for_each_term_hash(text, |hash, span| hashes.push((hash, span)));
    let key = |(hash, span): &(u64, Range<usize>)| (*hash, span.start, span.end);
    terms.sort_unstable_by_key(key);
    hashes.sort_unstable_by_key(key);
    assert_eq!(terms, hashes, "hashed terms differ from the terms training counts");
});
