//! The committed model, the model file on disk, and the `topics` command line.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::repo_path;
use topics::corpus::Corpus;
use topics::corpus_check::{CheckSettings, check};
use topics::model_file::{self, FORMAT_VERSION};
use topics::train::{TrainSettings, train};

fn topics(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_topics")).args(args).env("TOPICS_LOG", "info").output().expect("run topics")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails when models/topics.model no longer matches models/corpus or the training code:
/// retrain it with the command in the README.
#[test]
fn committed_model_is_not_stale() {
    let committed = model_file::load(&repo_path("models/topics.model")).expect("committed model loads");
    let corpus = Corpus::read(&[repo_path("models/corpus")]).unwrap();
    let hint = "models/topics.model is stale: retrain it with the command in README.md";
    assert_eq!(committed.meta().corpus_digest, corpus.digest, "{hint}");

    // Refit the committed recipe without its cross-validation, which only fills the report.
    let meta = committed.meta();
    let settings = TrainSettings { folds: 0, ..meta.settings.clone() };
    let retrained = train(&corpus, &settings, meta.trained_at, Some(meta.version.clone())).unwrap();
    assert_eq!(retrained.labels(), committed.labels(), "{hint}");
    assert_eq!(retrained.vectorizer().terms(), committed.vectorizer().terms(), "{hint}");
    assert_eq!(retrained.vectorizer().idf(), committed.vectorizer().idf(), "{hint}");
    // Weights are compared with a tolerance: another CPU may round the solver's sums differently.
    let (old, new) = (committed.layer(), retrained.layer());
    let largest_change = old
        .weights
        .iter()
        .chain(&old.intercept)
        .zip(new.weights.iter().chain(&new.intercept))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(largest_change < 1e-2, "{hint} (weights moved by {largest_change})");
}

/// A small corpus in `dir`: the first `per_file` documents of every committed corpus file.
fn sample_corpus(dir: &Path, per_file: usize) -> std::path::PathBuf {
    let mut lines = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("models/corpus")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        lines.extend(std::fs::read_to_string(file).unwrap().lines().take(per_file).map(String::from));
    }
    let path = dir.join("sample.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn training_from_the_command_line_is_deterministic_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = sample_corpus(dir.path(), 12);
    let mut files = Vec::new();
    for name in ["a.model", "b.model"] {
        let out = dir.path().join(name);
        let output = topics(&[
            "train",
            "--corpus",
            corpus.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--trained-at",
            "2026-01-02T03:04:05Z",
            "--alpha",
            "0.1,1",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let report = text(&output.stdout);
        for needle in [
            "model selection",
            "logistic_regression(alpha=0.1)",
            "multinomial_nb(alpha=1)",
            "<- kept",
            "5-fold cross-validation",
            "macro-F1",
            "precision",
            "confusion matrix",
            "language",
        ] {
            assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
        }
        files.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(files[0], files[1], "the same corpus must give the same file byte for byte");
    let model = model_file::decode(&files[0]).unwrap();
    assert!(model.meta().version.starts_with("20260102-"), "{}", model.meta().version);
    assert_eq!(model.meta().selection.len(), 4);
}

#[test]
fn the_committed_corpus_passes_its_check_and_has_the_promised_size() {
    let corpus = Corpus::read(&[repo_path("models/corpus")]).unwrap();
    let report = check(&corpus.documents, &CheckSettings::default());
    assert_eq!(report.errors().count(), 0, "{report}");

    let single = |lang: &str, label: &str| {
        corpus.documents.iter().filter(|d| d.lang == lang && d.labels.len() == 1 && d.labels[0] == label).count()
    };
    for topic in ["diplomacy", "security", "humanitarian"] {
        assert!(single("ar", topic) >= 200, "{topic}: {} Arabic documents", single("ar", topic));
        assert!(single("en", topic) >= 100, "{topic}: {} English documents", single("en", topic));
    }
    assert!(single("ar", "none") + single("en", "none") >= 100);
    assert!(corpus.documents.iter().filter(|d| d.labels.len() > 1).count() >= 60);

    let output = topics(&["corpus", "check", repo_path("models/corpus").to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("0 error(s)"));
}

#[test]
fn evaluate_reports_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_corpus(dir.path(), 3);
    let model = repo_path("models/topics.model");
    let args = ["evaluate", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()];
    let output = topics(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = text(&output.stdout);
    for needle in ["single-label documents", "topic macro-F1", "mixed documents", "out of scope", "confusion matrix"] {
        assert!(report.contains(needle), "{report}");
    }

    let output = topics(&[&args[..], &["--json"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let evaluation = &json["evaluation"];
    assert!(evaluation["single_label"]["accuracy"].as_f64().is_some(), "{json}");
    assert!(evaluation["out_of_scope"]["recall"].as_f64().is_some(), "{json}");
    assert!(evaluation["mixed"]["documents"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["model_version"], model_file::load(&model).unwrap().meta().version.as_str());
}

#[test]
fn train_refuses_a_broken_corpus_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("bad.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\": \"a\", \"lang\": \"en\", \"text\": \"t\", \"labels\": [\"security\"]}\n{\"id\": \"a\"}\n",
    )
    .unwrap();
    let out = dir.path().join("m.model");
    let output = topics(&["train", "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("bad.jsonl:2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists());
}

fn write_variant(dir: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(repo_path("models/topics.model")).unwrap();
    damage(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn bad_model_files_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (dir.path().join("missing.model").to_str().unwrap().to_string(), "cannot read model file"),
        (write_variant(dir.path(), "truncated.model", |b| b.truncate(b.len() / 2)), "truncated"),
        (
            write_variant(dir.path(), "corrupted.model", |b| {
                let i = b.len() - 100;
                b[i] ^= 1
            }),
            "checksum mismatch",
        ),
        (
            write_variant(dir.path(), "future.model", |b| {
                b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
            }),
            "not supported",
        ),
        (write_variant(dir.path(), "other.model", |b| *b = b"{\"weights\": []}".to_vec()), "not a topics model file"),
        (write_variant(dir.path(), "empty.model", Vec::clear), "not a topics model file"),
    ];
    for (path, expected) in cases {
        for command in [&["serve", "--addr", "127.0.0.1:0", "--model"][..], &["classify", "some text", "--model"][..]] {
            let mut args = command.to_vec();
            args.push(&path);
            let output = topics(&args);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains(expected) && stderr.contains(&path), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn classify_prints_json_from_argument_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let article = dir.path().join("seed.txt");
    std::fs::write(&article, common::seed_article()).unwrap();
    let model = repo_path("models/topics.model");
    let model = model.to_str().unwrap();

    let from_file = topics(&["classify", "--model", model, "--file", article.to_str().unwrap()]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    assert_eq!(answer["label"], "security");
    assert_eq!(answer["scores"].as_array().unwrap().len(), 4);
    assert_eq!(answer["language"], "ar");

    let from_argument =
        topics(&["classify", "--model", model, "Aid convoys reached the displaced families in the camp."]);
    let answer: serde_json::Value = serde_json::from_slice(&from_argument.stdout).unwrap();
    assert_eq!(answer["label"], "humanitarian");

    let mut child = Command::new(env!("CARGO_BIN_EXE_topics"))
        .args(["classify", "--model", model, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all("استقبل الرئيس سفير فرنسا وبحثا العلاقات الثنائية".as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["label"], "diplomacy");

    let blank = topics(&["classify", "--model", model, "   "]);
    assert_eq!(blank.status.code(), Some(1));
    assert!(text(&blank.stderr).contains("empty"));
}
