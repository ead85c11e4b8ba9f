//! Splits an article into the stretches that are classified on their own: its
//! paragraphs, or groups of sentences when it has no paragraph breaks.
//!
//! Real news mixes topics paragraph by paragraph (a security story with a diplomatic
//! reaction and a line on the displaced), so the paragraph is the natural unit; wire
//! copy pasted as one line still gets a breakdown from its sentences.

use std::ops::Range;

/// Most segments one text is split into. Longer texts group neighbouring paragraphs,
/// so that an answer stays small however many lines a client sends.
pub const MAX_SEGMENTS: usize = 256;

/// A one-paragraph text is cut into groups of sentences of at least this many bytes
/// (about two wire-copy sentences), so that each group has enough words to classify.
const MIN_SENTENCE_GROUP_BYTES: usize = 240;

/// The byte ranges of the segments of `text`, in order, trimmed of white space and never
/// blank. A blank text has none.
pub fn split(text: &str) -> Vec<Range<usize>> {
    let mut paragraphs: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices().chain(std::iter::once((text.len(), '\n'))) {
        if is_paragraph_break(c) {
            if let Some(range) = trim(text, start..at) {
                paragraphs.push(range);
            }
            start = at + c.len_utf8();
        }
    }
    let segments = match paragraphs.as_slice() {
        [only] => sentence_groups(text, only.clone()),
        _ => paragraphs,
    };
    cap(segments)
}

fn is_paragraph_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2029}' | '\u{0085}')
}

/// `range` without its leading and trailing white space, or `None` when nothing is left.
fn trim(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let inner = &text[range.clone()];
    if crate::text::is_blank(inner) {
        return None;
    }
    // Only white space is trimmed: an invisible character at either end belongs to the
    // word it touches, whose span includes it, and a segment must hold its words' spans.
    let trimmed = inner.trim_matches(char::is_whitespace);
    let start = range.start + (trimmed.as_ptr() as usize - inner.as_ptr() as usize);
    Some(start..start + trimmed.len())
}

/// Groups the sentences of one paragraph into segments of at least
/// [`MIN_SENTENCE_GROUP_BYTES`]; a short tail joins the group before it.
fn sentence_groups(text: &str, paragraph: Range<usize>) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut start = paragraph.start;
    let body = &text[paragraph.clone()];
    let mut chars = body.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let ends_sentence = matches!(c, '.' | '!' | '?' | '؟' | '…' | '。')
            && chars.peek().is_some_and(|&(_, next)| next.is_whitespace());
        let end = paragraph.start + at + c.len_utf8();
        if ends_sentence && end - start >= MIN_SENTENCE_GROUP_BYTES {
            groups.extend(trim(text, start..end));
            start = end;
        }
    }
    match trim(text, start..paragraph.end) {
        Some(tail) if tail.len() >= MIN_SENTENCE_GROUP_BYTES / 2 || groups.is_empty() => groups.push(tail),
        Some(tail) => {
            if let Some(last) = groups.last_mut() {
                last.end = tail.end;
            }
        }
        None => {}
    }
    groups
}

/// Merges neighbouring segments so that there are at most [`MAX_SEGMENTS`].
fn cap(segments: Vec<Range<usize>>) -> Vec<Range<usize>> {
    if segments.len() <= MAX_SEGMENTS {
        return segments;
    }
    let per_group = segments.len().div_ceil(MAX_SEGMENTS);
    segments.chunks(per_group).map(|group| group[0].start..group[group.len() - 1].end).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn paragraphs_are_trimmed_and_blank_lines_skipped() {
        let text = "  First paragraph.\n\n\u{00A0}\nSecond one here. \r\nالفقرة الثالثة\u{200B}\n";
        // The invisible character stays: it is part of the last word's span.
        assert_eq!(pieces(text), ["First paragraph.", "Second one here.", "الفقرة الثالثة\u{200B}"]);
        assert!(split(" \n\u{200B}\n").is_empty());
        assert_eq!(pieces("one line, no break"), ["one line, no break"]);
    }

    #[test]
    fn one_paragraph_is_grouped_by_sentences() {
        let sentence = "The minister said the talks would resume next week in the capital. ";
        let text = sentence.repeat(8);
        let groups = split(&text);
        assert!(groups.len() >= 2, "{groups:?}");
        for pair in groups.windows(2) {
            assert!(pair[0].end <= pair[1].start);
        }
        for group in &groups {
            assert!(group.len() >= MIN_SENTENCE_GROUP_BYTES / 2, "{group:?}");
            assert!(text[group.clone()].ends_with('.'));
        }
        // Every sentence is in exactly one group.
        let covered: usize = groups.iter().map(|g| text[g.clone()].matches("minister").count()).sum();
        assert_eq!(covered, 8);
    }

    #[test]
    fn arabic_question_marks_end_sentences() {
        let sentence = "هل تعود المفاوضات بين الطرفين إلى طاولة الحوار في العاصمة خلال الأسبوع المقبل؟ ";
        let groups = split(&sentence.repeat(6));
        assert!(groups.len() >= 2);
    }

    #[test]
    fn many_lines_are_capped() {
        let text = "a line\n".repeat(MAX_SEGMENTS * 3 + 1);
        let segments = split(&text);
        assert!(segments.len() <= MAX_SEGMENTS);
        assert_eq!(segments[0].start, 0);
        assert_eq!(segments.last().map(|r| r.end), Some(text.trim_end().len()));
    }
}
