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

/// The address in the server's start-up line, logged as text or as JSON.
fn start_up_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("serving topics.v1") {
        return None;
    }
    let word = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json["fields"]["addr"].as_str()?.to_string(),
        Err(_) => line.split_whitespace().find_map(|w| w.strip_prefix("addr="))?.to_string(),
    };
    word.parse().ok()
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
        Self::launch(&repo_path("models/topics.model"), extra, log_filter)
    }

    /// Starts `topics serve` on `model` with `extra` flags, logging with the tracing filter `log_filter`.
    pub fn launch(model: &Path, extra: &[&str], log_filter: &str) -> Self {
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
                if let Some(addr) = start_up_address(&line) {
                    let _ = addr_tx.send(addr);
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

    /// Waits until the log contains `needle`; panics with the log after `within`.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log after {within:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The address of the metrics endpoint, from its start-up log line.
    pub fn metrics_addr(&self) -> SocketAddr {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("serving Prometheus metrics")).expect("metrics start-up line");
        let word = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(json) => json["fields"]["metrics_addr"].as_str().expect("metrics_addr field").to_string(),
            Err(_) => {
                line.split_whitespace().find_map(|w| w.strip_prefix("metrics_addr=")).expect("address").to_string()
            }
        };
        word.parse().expect("metrics address")
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

/// The answer to a [`raw_grpc_call`]: the gRPC status (from headers or trailers) and the
/// response body's bytes.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: Option<String>,
    pub message: Option<String>,
    pub body: Vec<u8>,
}

/// The length-prefixed gRPC frame of `message`, uncompressed.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// One gRPC call over a bare HTTP/2 stream with hand-made headers and body, for what a
/// generated client would never send (or would enforce itself, like a deadline). With
/// `close` false the request stays open after the body, as a client stream that has more
/// to send.
pub async fn raw_grpc_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    close: bool,
) -> RawAnswer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = client.ready().await.expect("HTTP/2 ready");
    let (response, mut send) = client.send_request(request.body(()).expect("request"), false).expect("send headers");
    send.send_data(bytes::Bytes::from(body), close).expect("send body");
    let response = response.await.expect("response headers");
    let header = |map: &http::HeaderMap, name: &str| map.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let (head, mut body) = response.into_parts();
    if let Some(status) = header(&head.headers, "grpc-status") {
        return RawAnswer { status: Some(status), message: header(&head.headers, "grpc-message"), body: Vec::new() };
    }
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    RawAnswer { status: header(&trailers, "grpc-status"), message: header(&trailers, "grpc-message"), body: data }
}
