//! Language detection for the response's `language` field.
//!
//! Arabic is told by its script alone, which is exact and costs one pass over the
//! characters. Text in other scripts goes to whatlang's trigram detector; its
//! ISO 639-3 answer is given as the two-letter ISO 639-1 code where one exists.

use whatlang::{Lang, Script};

/// Returned when the text has too few letters to tell.
pub const UNDETERMINED: &str = "und";

/// Detects the language of `text`: "ar", "en", another ISO 639 code, or [`UNDETERMINED`].
pub fn detect(text: &str) -> String {
    let (mut arabic, mut latin, mut other) = (0usize, 0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        match c {
            '\u{0600}'..='\u{06FF}'
            | '\u{0750}'..='\u{077F}'
            | '\u{08A0}'..='\u{08FF}'
            | '\u{FB50}'..='\u{FDFF}'
            | '\u{FE70}'..='\u{FEFF}' => arabic += 1,
            c if c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c) => latin += 1,
            _ => other += 1,
        }
    }
    if arabic == 0 && latin == 0 && other == 0 {
        return UNDETERMINED.to_string();
    }
    if arabic >= latin && arabic >= other {
        return "ar".to_string();
    }
    match whatlang::detect(text) {
        Some(info) if info.is_reliable() || info.script() != Script::Latin => iso639_1(info.lang()),
        // Short Latin text fools trigram statistics; English is this service's other language.
        _ if latin >= other => "en".to_string(),
        _ => UNDETERMINED.to_string(),
    }
}

/// ISO 639-1 for the languages whatlang knows that have one, ISO 639-3 otherwise.
fn iso639_1(lang: Lang) -> String {
    let code = match lang {
        Lang::Eng => "en",
        Lang::Ara => "ar",
        Lang::Fra => "fr",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Deu => "de",
        Lang::Ita => "it",
        Lang::Nld => "nl",
        Lang::Tur => "tr",
        Lang::Rus => "ru",
        Lang::Ukr => "uk",
        Lang::Pes => "fa",
        Lang::Urd => "ur",
        Lang::Heb => "he",
        Lang::Hin => "hi",
        Lang::Ben => "bn",
        Lang::Cmn => "zh",
        Lang::Jpn => "ja",
        Lang::Kor => "ko",
        Lang::Ind => "id",
        Lang::Vie => "vi",
        Lang::Tha => "th",
        Lang::Pol => "pl",
        Lang::Ces => "cs",
        Lang::Swe => "sv",
        Lang::Dan => "da",
        Lang::Nob => "nb",
        Lang::Fin => "fi",
        Lang::Hun => "hu",
        Lang::Ron => "ro",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Slv => "sl",
        Lang::Slk => "sk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Cat => "ca",
        Lang::Amh => "am",
        Lang::Aze => "az",
        Lang::Kat => "ka",
        Lang::Hye => "hy",
        Lang::Tam => "ta",
        Lang::Tel => "te",
        Lang::Mar => "mr",
        Lang::Guj => "gu",
        Lang::Pan => "pa",
        Lang::Mal => "ml",
        Lang::Kan => "kn",
        Lang::Ori => "or",
        Lang::Sin => "si",
        Lang::Nep => "ne",
        Lang::Khm => "km",
        Lang::Mya => "my",
        Lang::Bel => "be",
        Lang::Mkd => "mk",
        Lang::Afr => "af",
        Lang::Epo => "eo",
        Lang::Lat => "la",
        Lang::Yid => "yi",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Aka => "ak",
        Lang::Tuk => "tk",
        Lang::Uzb => "uz",
        Lang::Jav => "jv",
        Lang::Tgl => "tl",
        Lang::Cym => "cy",
    };
    code.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arabic_and_english_news() {
        assert_eq!(detect("أعلنت وزارة الخارجية اليوم عن زيارة مرتقبة للوزير"), "ar");
        assert_eq!(detect("The foreign minister will visit Amman next week for talks on trade."), "en");
        // Arabic copy quoting an English name is still Arabic.
        assert_eq!(detect("قال Antony Blinken إن الاجتماع ناقش الأوضاع في سورية والعراق"), "ar");
    }

    #[test]
    fn other_languages_get_their_code() {
        assert_eq!(
            detect(
                "Le ministre des affaires étrangères a rencontré son homologue algérien à Paris pour parler de coopération."
            ),
            "fr"
        );
        assert_eq!(detect("Министр иностранных дел провел переговоры со своим коллегой в Москве."), "ru");
    }

    #[test]
    fn short_or_letterless_text() {
        assert_eq!(detect("Troops"), "en");
        assert_eq!(detect("12345 !!! 😀"), UNDETERMINED);
        assert_eq!(detect(""), UNDETERMINED);
    }
}
