//! Text normalization and tokenization for Arabic and English news.
//!
//! Wire copy spells the same Arabic word many ways (with or without hamza on the
//! alef, taa marbuta written as haa, diacritics, tatweel, Arabic-Indic digits), and
//! text pasted from PDFs or web pages carries presentation forms and invisible
//! bidi controls. Every variant is folded to one spelling here, so that training
//! and serving see the same terms.
//!
//! Tokens keep the byte span of their surface form in the original text, so
//! later stages can point back at what the writer wrote.

use std::ops::Range;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// What a single input character becomes after folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folded {
    /// Dropped without ending the current word (diacritics, tatweel, zero-width marks).
    Invisible,
    /// Ends the current word (spaces, punctuation, symbols).
    Separator,
    /// Part of a word, as this character.
    Letter(char),
}

/// Folds one character that needs no compatibility decomposition.
fn fold_simple(c: char) -> Folded {
    match c {
        // Arabic harakat, shadda, sukun, superscript alef, Quranic annotation marks, tatweel.
        '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{0610}'..='\u{061A}' | '\u{06D6}'..='\u{06ED}' | '\u{0640}' => {
            Folded::Invisible
        }
        c if is_format_control(c) => Folded::Invisible,
        // Alef with hamza above/below, madda, wasla and their variants: bare alef.
        'أ' | 'إ' | 'آ' | 'ٱ' | 'ٲ' | 'ٳ' | 'ٵ' => Folded::Letter('ا'),
        // Hamza on waw or yeh is written both ways in wire copy (مسؤول / مسئول).
        'ؤ' | 'ئ' => Folded::Letter('ء'),
        'ى' | 'ی' | 'ې' => Folded::Letter('ي'),
        'ة' | 'ە' | 'ۀ' | 'ہ' => Folded::Letter('ه'),
        'ک' => Folded::Letter('ك'),
        '\u{0660}'..='\u{0669}' => Folded::Letter(ascii_digit(c as u32 - 0x0660)),
        '\u{06F0}'..='\u{06F9}' => Folded::Letter(ascii_digit(c as u32 - 0x06F0)),
        // The remaining Arabic letters, without a Unicode table lookup: most of a text.
        '\u{0621}'..='\u{064A}' => Folded::Letter(c),
        c if c.is_alphanumeric() => Folded::Letter(c),
        // Combining accents that were not precomposed belong to the letter before them.
        c if is_combining_mark(c) => Folded::Invisible,
        _ => Folded::Separator,
    }
}

/// Zero-width and bidi control characters, the soft hyphen and the BOM: they change
/// how text is laid out, never what it says.
pub fn is_format_control(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{00AD}' | '\u{FEFF}')
}

/// True when `text` shows a reader nothing: only white space (any Unicode space,
/// no-break and ideographic ones included) and format controls.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || is_format_control(c))
}

fn ascii_digit(value: u32) -> char {
    char::from_digit(value, 10).unwrap_or('0')
}

/// Arabic presentation forms and full-width Latin come from PDFs and legacy encodings;
/// their compatibility decomposition is the ordinary letter.
fn needs_compatibility_decomposition(c: char) -> bool {
    matches!(c, '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFE}' | '\u{FF00}'..='\u{FFEF}')
}

/// Calls `emit` with each folded character of `c`, lowercased.
fn fold(c: char, emit: &mut impl FnMut(Folded)) {
    if c.is_ascii() {
        emit(if c.is_ascii_alphanumeric() { Folded::Letter(c.to_ascii_lowercase()) } else { Folded::Separator });
    } else if needs_compatibility_decomposition(c) {
        decompose_compatible(c, |d| fold_lowercased(d, emit));
    } else {
        fold_lowercased(c, emit);
    }
}

fn fold_lowercased(c: char, emit: &mut impl FnMut(Folded)) {
    match fold_simple(c) {
        // Arabic has no case: skip the Unicode table for it.
        Folded::Letter(l) if !('\u{0600}'..='\u{06FF}').contains(&l) && l.is_uppercase() => {
            for lower in l.to_lowercase() {
                emit(fold_simple(lower));
            }
        }
        other => emit(other),
    }
}

/// Returns the normalized form of `text`: words folded as the tokenizer sees them,
/// separated by single spaces. Meant for inspection and tests; the hot path uses
/// [`for_each_token`] and never builds this string.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for_each_token(text, |word, _| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    });
    out
}

/// Calls `visit` with every word of `text` that is worth a feature, in order: its
/// normalized form and the byte range of its surface form in `text`.
///
/// A word is a run of letters and digits. Single characters and words made only of
/// digits (dates, counts, resolution numbers) are skipped: they are noise for topic.
/// The normalized form lives in a buffer reused between calls, so the tokenizer
/// allocates nothing per word.
pub fn for_each_token(text: &str, mut visit: impl FnMut(&str, Range<usize>)) {
    let mut word = Word::default();
    for (offset, c) in text.char_indices() {
        let end = offset + c.len_utf8();
        fold(c, &mut |folded| match folded {
            Folded::Invisible => word.extend_span(end),
            Folded::Separator => word.finish(&mut visit),
            Folded::Letter(letter) => word.push(letter, offset, end),
        });
    }
    word.finish(&mut visit);
}

/// The word being built: its normalized letters and the span of its surface form.
#[derive(Default)]
struct Word {
    normalized: String,
    span: Option<Range<usize>>,
    letters: usize,
    all_digits: bool,
}

impl Word {
    fn push(&mut self, letter: char, start: usize, end: usize) {
        match &mut self.span {
            Some(span) => span.end = end,
            None => {
                self.span = Some(start..end);
                self.all_digits = true;
            }
        }
        self.normalized.push(letter);
        self.letters += 1;
        self.all_digits &= letter.is_ascii_digit();
    }

    /// Invisible characters inside a word still belong to its surface span.
    fn extend_span(&mut self, end: usize) {
        if let Some(span) = &mut self.span {
            span.end = end;
        }
    }

    fn finish(&mut self, visit: &mut impl FnMut(&str, Range<usize>)) {
        if let Some(span) = self.span.take()
            && self.letters >= 2
            && !self.all_digits
        {
            visit(&self.normalized, span);
        }
        self.normalized.clear();
        self.letters = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_token(text, |w, _| out.push(w.to_string()));
        out
    }

    #[test]
    fn arabic_spelling_variants_fold_to_one_form() {
        assert_eq!(tokens("أعلن"), tokens("اعلن"));
        assert_eq!(tokens("إرهاب"), tokens("ارهاب"));
        assert_eq!(tokens("آلاف"), tokens("الاف"));
        assert_eq!(tokens("الحكومة"), tokens("الحكومه"));
        assert_eq!(tokens("مستشفى"), tokens("مستشفي"));
        assert_eq!(tokens("مسؤول"), tokens("مسئول"));
    }

    #[test]
    fn diacritics_and_tatweel_are_removed_inside_words() {
        assert_eq!(normalize("الأَمْنُ"), "الامن");
        assert_eq!(normalize("الـــــوزير"), "الوزير");
    }

    #[test]
    fn arabic_indic_digits_are_mapped_and_digit_only_words_dropped() {
        assert_eq!(normalize("القرار ٢٢٥٤ و 2254"), "القرار");
        assert_eq!(normalize("g٢٠"), "g20");
        assert_eq!(normalize("كوفيد-۱۹"), "كوفيد");
    }

    #[test]
    fn latin_is_lowercased_and_split_on_punctuation() {
        assert_eq!(
            normalize("KUWAIT CITY, Dec. 3 (KUNA) -- Kuwait's Foreign-Minister"),
            "kuwait city dec kuna kuwait foreign minister"
        );
    }

    #[test]
    fn invisible_characters_do_not_split_words() {
        assert_eq!(normalize("دا\u{200c}عش \u{202B}الهول\u{202C} se\u{00AD}curity"), "داعش الهول security");
    }

    #[test]
    fn presentation_forms_and_full_width_letters_are_decomposed() {
        // ﻻ is the lam-alef ligature, Ｕ Ｎ are full-width Latin.
        assert_eq!(normalize("ﻻجئين ＵＮ"), "لاجءين un");
    }

    #[test]
    fn blank_means_nothing_visible() {
        for blank in ["", " \t\n", "\u{00A0}\u{3000}\u{2003}", "\u{200B}\u{200D}\u{FEFF}\u{202E}"] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for visible in ["a", " ٣ ", "😀", "\u{064E}", "."] {
            assert!(!is_blank(visible), "{visible:?}");
        }
    }

    #[test]
    fn quotes_split_words() {
        assert_eq!(normalize("«داعش» \"الهول\""), "داعش الهول");
    }

    #[test]
    fn spans_point_at_the_surface_form() {
        let text = "قال «الوزيـر» أمس";
        let mut spans = Vec::new();
        for_each_token(text, |w, span| spans.push((w.to_string(), text[span].to_string())));
        assert_eq!(
            spans,
            vec![
                ("قال".to_string(), "قال".to_string()),
                ("الوزير".to_string(), "الوزيـر".to_string()),
                ("امس".to_string(), "أمس".to_string()),
            ]
        );
    }

    #[test]
    fn nothing_to_tokenize_gives_no_tokens() {
        for text in ["", "   ", "\u{200b}\u{200d}", "123 ٤٥٦", "😀🔥", "a b c", "\u{064E}\u{0650}"] {
            assert!(tokens(text).is_empty(), "{text:?} gave {:?}", tokens(text));
        }
    }
}
