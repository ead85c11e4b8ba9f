//! Starts the real `topics` binary on an ephemeral port, as a user would, and
//! connects the generated gRPC client to it.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use topics::proto::topic_classifier_client::TopicClassifierClient;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn seed_article() -> String {
    let seeds = repo_path("models/corpus/seed.jsonl");
    let paragraphs: Vec<String> = std::fs::read_to_string(seeds)
        .expect("seed corpus file")
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("seed line")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    paragraphs.join("\n")
}

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl TestServer {
    /// Starts `topics serve` on the committed model with `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_log(extra, "info")
    }

    /// Like [`TestServer::start`], logging with the tracing filter `log`.
    pub fn start_with_log(extra: &[&str], log_filter: &str) -> Self {
        let model = repo_path("models/topics.model");
        let mut child = Command::new(env!("CARGO_BIN_EXE_topics"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(extra)
            .env("TOPICS_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the topics binary");

        // Drain stderr for the whole life of the server, so that it never blocks on a full pipe.
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")) {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().expect("address in the start-up line"));
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });

        match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Self { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start; its log:\n{}", log.lock().expect("log lock"));
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint()).expect("endpoint").connect().await.expect("connect to the test server")
    }

    pub async fn client(&self) -> TopicClassifierClient<Channel> {
        TopicClassifierClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends `signal` (e.g. "TERM") to this server's process, and to nothing else.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the server to exit by itself; returns its status and whole log.
    pub fn wait_for_exit(mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                // Let the stderr thread reach the end of the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "server still running after {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log = self.log();
        assert!(std::thread::panicking() || !log.contains("panicked"), "the server panicked:\n{log}");
    }
}
