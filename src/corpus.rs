//! Labeled corpora: JSONL files with one document a line,
//! `{"id": ..., "lang": "ar"|"en", "text": ..., "labels": ["security", ...]}`,
//! the dominant label first. Other fields (a source, a licence) are allowed and ignored.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Document {
    pub id: String,
    pub lang: String,
    pub text: String,
    pub labels: Vec<String>,
}

impl Document {
    /// The dominant label, the one a single-label classifier is trained and scored on.
    pub fn primary_label(&self) -> &str {
        &self.labels[0]
    }
}

/// Documents read from one or more files, with a digest of what was read.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub documents: Vec<Document>,
    /// SHA-256 (hex) over every document's fields, in reading order.
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error("no .jsonl corpus file found in {0}")]
    NoFiles(PathBuf),
    #[error("the corpus is empty")]
    Empty,
}

impl Corpus {
    /// Reads every path in order; a directory contributes its `*.jsonl` files in name order.
    pub fn read(paths: &[PathBuf]) -> Result<Self, CorpusError> {
        Self::read_checked(paths, None)
    }

    /// Like [`Corpus::read`], also refusing, with its file and line, a document that
    /// carries a label outside `allowed`: a misspelt label would otherwise train a topic
    /// of its own.
    pub fn read_with_labels(paths: &[PathBuf], allowed: &[String]) -> Result<Self, CorpusError> {
        Self::read_checked(paths, Some(allowed))
    }

    fn read_checked(paths: &[PathBuf], allowed: Option<&[String]>) -> Result<Self, CorpusError> {
        let mut documents = Vec::new();
        let mut ids = HashSet::new();
        for path in expand(paths)? {
            read_file(&path, allowed, &mut documents, &mut ids)?;
        }
        if documents.is_empty() {
            return Err(CorpusError::Empty);
        }
        let digest = digest(&documents);
        Ok(Self { documents, digest })
    }
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CorpusError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| CorpusError::Io { path: path.clone(), source })?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| CorpusError::Io { path: path.clone(), source })?;
                let file = entry.path();
                if file.extension().is_some_and(|x| x == "jsonl") && file.is_file() {
                    found.push(file);
                }
            }
            if found.is_empty() {
                return Err(CorpusError::NoFiles(path.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn read_file(
    path: &Path,
    allowed: Option<&[String]>,
    documents: &mut Vec<Document>,
    ids: &mut HashSet<String>,
) -> Result<(), CorpusError> {
    let io_error = |source| CorpusError::Io { path: path.to_owned(), source };
    let reader = BufReader::new(std::fs::File::open(path).map_err(io_error)?);
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let invalid = |message: String| CorpusError::Invalid { path: path.to_owned(), line: line_number, message };
        let line = line.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => invalid("not UTF-8 text".to_string()),
            _ => io_error(e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let document: Document = serde_json::from_str(&line).map_err(|e| invalid(e.to_string()))?;
        check(&document).map_err(invalid)?;
        if let Some(allowed) = allowed
            && let Some(label) = document.labels.iter().find(|l| !allowed.contains(l))
        {
            return Err(invalid(format!(
                "document {:?} has the unknown label {label:?}; the allowed labels are {}",
                document.id,
                allowed.join(", ")
            )));
        }
        if !ids.insert(document.id.clone()) {
            return Err(invalid(format!("duplicate id {:?}", document.id)));
        }
        documents.push(document);
    }
    Ok(())
}

fn check(document: &Document) -> Result<(), String> {
    if document.id.trim().is_empty() {
        return Err("empty id".into());
    }
    if document.lang.trim().is_empty() {
        return Err(format!("document {:?} has an empty lang", document.id));
    }
    if crate::text::is_blank(&document.text) {
        return Err(format!("document {:?} has an empty text", document.id));
    }
    if document.labels.is_empty() {
        return Err(format!("document {:?} has no labels", document.id));
    }
    for (i, label) in document.labels.iter().enumerate() {
        if label.trim().is_empty() || label != label.trim() {
            return Err(format!("document {:?} has a blank or padded label {label:?}", document.id));
        }
        if document.labels[..i].contains(label) {
            return Err(format!("document {:?} lists label {label:?} twice", document.id));
        }
    }
    Ok(())
}

/// Hashes every field with a length prefix, so that no two different corpora feed the hash the same bytes.
fn digest(documents: &[Document]) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    };
    for document in documents {
        field(&document.id);
        field(&document.lang);
        field(&document.text);
        field(&document.labels.len().to_string());
        for label in &document.labels {
            field(label);
        }
    }
    crate::hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    const TWO: &str = concat!(
        r#"{"id": "a", "lang": "en", "text": "Troops advanced.", "labels": ["security"], "source": "ours"}"#,
        "\n\n",
        r#"{"id": "b", "lang": "ar", "text": "وصلت قافلة", "labels": ["humanitarian", "security"]}"#,
        "\n",
    );

    #[test]
    fn reads_files_and_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "2.jsonl", r#"{"id": "c", "lang": "en", "text": "x", "labels": ["diplomacy"]}"#);
        write(dir.path(), "1.jsonl", TWO);
        write(dir.path(), "notes.txt", "ignored");
        let corpus = Corpus::read(&[dir.path().to_owned()]).unwrap();
        let ids: Vec<&str> = corpus.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(corpus.documents[1].primary_label(), "humanitarian");
        assert_eq!(corpus.digest.len(), 64);
    }

    #[test]
    fn digest_changes_with_any_field() {
        let dir = tempfile::tempdir().unwrap();
        let a = Corpus::read(&[write(dir.path(), "a.jsonl", TWO)]).unwrap();
        let b = Corpus::read(&[write(dir.path(), "b.jsonl", &TWO.replace("advanced", "retreated"))]).unwrap();
        let c =
            Corpus::read(&[write(dir.path(), "c.jsonl", &TWO.replace("[\"security\"]", "[\"diplomacy\"]"))]).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("not json", "expected"),
            (r#"{"id": "x", "lang": "en", "text": "  ", "labels": ["security"]}"#, "empty text"),
            (r#"{"id": "x", "lang": "en", "text": "t", "labels": []}"#, "no labels"),
            (r#"{"id": "x", "lang": "en", "text": "t", "labels": ["a", "a"]}"#, "twice"),
            (r#"{"id": "", "lang": "en", "text": "t", "labels": ["a"]}"#, "empty id"),
            (r#"{"id": "x", "text": "t", "labels": ["a"]}"#, "missing field `lang`"),
        ];
        for (i, (line, expected)) in cases.iter().enumerate() {
            let path = write(dir.path(), &format!("{i}.jsonl"), &format!("{}\n{line}\n", TWO.lines().next().unwrap()));
            let err = Corpus::read(&[path]).unwrap_err().to_string();
            assert!(err.contains(":2:") && err.contains(expected), "{line}: {err}");
        }
        let path = write(dir.path(), "dup.jsonl", &format!("{TWO}{}\n", TWO.lines().next().unwrap()));
        let err = Corpus::read(&[path]).unwrap_err().to_string();
        assert!(err.ends_with("dup.jsonl:4: duplicate id \"a\""), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(Corpus::read(&[empty.path().to_owned()]), Err(CorpusError::NoFiles(_))));
    }

    #[test]
    fn blank_texts_are_refused_whatever_spaces_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in ["", " ", "\\n\\t", "\\u00a0\\u3000", "\\u200b\\ufeff"].iter().enumerate() {
            let line = format!(r#"{{"id": "x", "lang": "en", "text": "{text}", "labels": ["security"]}}"#);
            let path = write(dir.path(), &format!("blank{i}.jsonl"), &format!("{TWO}{line}\n"));
            let err = Corpus::read(&[path]).unwrap_err().to_string();
            assert!(err.contains(&format!("blank{i}.jsonl:4: document \"x\" has an empty text")), "{text:?}: {err}");
        }
    }

    #[test]
    fn labels_outside_the_allowed_set_are_refused_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let allowed: Vec<String> = ["security", "humanitarian"].map(String::from).to_vec();
        let good = write(dir.path(), "good.jsonl", TWO);
        assert_eq!(Corpus::read_with_labels(std::slice::from_ref(&good), &allowed).unwrap().documents.len(), 2);

        let misspelt = TWO.replace("\"humanitarian\"", "\"humanitrian\"");
        let path = write(dir.path(), "misspelt.jsonl", &misspelt);
        let err = Corpus::read_with_labels(std::slice::from_ref(&path), &allowed).unwrap_err().to_string();
        assert!(err.contains("misspelt.jsonl:3: document \"b\" has the unknown label \"humanitrian\""), "{err}");
        assert!(err.contains("security, humanitarian"), "{err}");
        assert!(Corpus::read(&[path]).is_ok(), "reading without a label set takes any label");
    }
}
