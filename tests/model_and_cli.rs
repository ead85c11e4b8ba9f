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
    // The first run writes its report next to the model, the second where it is told.
    let reports = [dir.path().join("a.report"), dir.path().join("elsewhere")];
    for (name, report_dir) in ["a.model", "b.model"].into_iter().zip(&reports) {
        let out = dir.path().join(name);
        let mut args = vec![
            "train",
            "--corpus",
            corpus.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--trained-at",
            "2026-01-02T03:04:05Z",
            "--alpha",
            "0.1,1",
        ];
        if name == "b.model" {
            args.extend(["--report", report_dir.to_str().unwrap()]);
        }
        let output = topics(&args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let markdown = std::fs::read_to_string(report_dir.join("report.md")).expect("report.md");
        for needle in [
            "## Model selection",
            "| logistic_regression(alpha=0.1) |",
            "| label | precision | recall | F1 | support |",
            "| language | documents | accuracy | macro-F1 |",
            "| true \\ predicted | diplomacy | humanitarian | none | security |",
            "| **security** |",
            "(confusion.svg)",
        ] {
            assert!(markdown.contains(needle), "report.md lacks {needle:?}:\n{markdown}");
        }
        let svg = std::fs::read_to_string(report_dir.join("confusion.svg")).expect("confusion.svg");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        for label in ["diplomacy", "humanitarian", "none", "security"] {
            assert!(svg.contains(label), "confusion.svg lacks {label}");
        }
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
    let good = "{\"id\": \"a\", \"lang\": \"en\", \"text\": \"t\", \"labels\": [\"security\"]}\n";
    let line = |id: &str, text: &str, label: &str| {
        format!("{{\"id\": \"{id}\", \"lang\": \"en\", \"text\": \"{text}\", \"labels\": [\"{label}\"]}}\n")
    };
    let cases = [
        ("schema.jsonl", "{\"id\": \"b\"}\n".to_string(), ":2: missing field"),
        (
            "label.jsonl",
            line("b", "Talks resumed.", "diplomacy ") + &line("c", "x", "sport"),
            ":2: document \"b\" has a blank or padded label",
        ),
        (
            "unknown.jsonl",
            line("b", "Talks resumed.", "diplomacy") + &line("c", "Goal!", "sports"),
            ":3: document \"c\" has the unknown label \"sports\"",
        ),
        ("blank.jsonl", line("b", " \\u00a0\\u3000\\t ", "none"), ":2: document \"b\" has an empty text"),
        (
            "duplicate.jsonl",
            "\n".to_string() + &line("b", "Aid arrived.", "humanitarian") + &line("a", "Again.", "none"),
            ":4: duplicate id \"a\"",
        ),
    ];
    for (name, rest, expected) in cases {
        let corpus = dir.path().join(name);
        std::fs::write(&corpus, format!("{good}{rest}")).unwrap();
        let out = dir.path().join("m.model");
        let output = topics(&["train", "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{name}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("{name}{expected}")), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists());
    }
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

/// JSONL rows from the committed corpus with, in the middle, one row of each kind that
/// cannot be classified; returns the file and its lines.
fn bulk_input(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let corpus = sample_corpus(dir, 2);
    let mut lines: Vec<String> = std::fs::read_to_string(corpus).unwrap().lines().map(String::from).collect();
    let middle = lines.len() / 2;
    lines.insert(middle, r#"{"id": "broken", "text": "#.to_string());
    lines.insert(middle + 1, r#"{"id": "blank", "text": "   "}"#.to_string());
    lines.insert(middle + 2, r#"{"text": "Aid trucks reached the camp.", "extra": [1, 2]}"#.to_string());
    let path = dir.join("bulk.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines)
}

#[test]
fn classify_streams_jsonl_and_keeps_going_past_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (input, lines) = bulk_input(dir.path());
    let model = repo_path("models/topics.model");
    let out = dir.path().join("out.jsonl");
    let args = ["classify", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    let output = topics(&[&args[..], &["--output", out.to_str().unwrap()]].concat());
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} documents classified, 2 error row(s)", lines.len() - 2)), "{stderr}");
    assert!(stderr.contains("labels: diplomacy"), "{stderr}");
    // No progress bar when standard error is not a terminal.
    assert!(!stderr.contains('\r'), "{stderr:?}");

    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), lines.len());
    for (i, (row, line)) in rows.iter().zip(&lines).enumerate() {
        let id = serde_json::from_str::<serde_json::Value>(line).map(|v| v["id"].clone()).unwrap_or_default();
        match row.get("error") {
            Some(error) => {
                assert_eq!(row["line"], i + 1, "{row}");
                assert!(error.is_string(), "{row}");
            }
            None => {
                assert_eq!(row["id"], id, "row {i} out of order: {row}");
                assert!(row["label"].is_string() && row["labels"].is_array() && row["scores"].is_array(), "{row}");
                assert!(row["language"].is_string() && row["model_version"].is_string(), "{row}");
            }
        }
    }
    let middle = (lines.len() - 3) / 2;
    assert_eq!(rows[middle]["id"], serde_json::Value::Null);
    assert!(rows[middle]["error"].as_str().unwrap().contains("not JSON"), "{}", rows[middle]);
    assert_eq!(rows[middle + 1]["id"], "blank");
    assert_eq!(rows[middle + 2]["label"], "humanitarian");

    // Standard output by default; --strict turns error rows into a failing exit status.
    let to_stdout = topics(&args);
    assert!(to_stdout.status.success());
    assert_eq!(text(&to_stdout.stdout), std::fs::read_to_string(&out).unwrap());
    let strict = topics(&[&args[..], &["--strict"]].concat());
    assert_eq!(strict.status.code(), Some(1));
    assert!(text(&strict.stderr).contains("2 row(s) could not be classified"), "{}", text(&strict.stderr));
    assert_eq!(text(&strict.stdout).lines().count(), lines.len());

    let missing = topics(&["classify", "--model", model.to_str().unwrap(), "--input", "no/such/file.jsonl"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read no/such/file.jsonl"), "{}", text(&missing.stderr));
}

#[test]
fn evaluate_writes_a_report_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_corpus(dir.path(), 3);
    let model = repo_path("models/topics.model");
    let report = dir.path().join("eval");
    let output = topics(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("# Evaluation report") && markdown.contains("| true \\ predicted |"), "{markdown}");
    assert!(std::fs::read_to_string(report.join("confusion.svg")).unwrap().starts_with("<svg"));
}
