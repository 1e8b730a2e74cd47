//! Shared fixtures of the integration tests: a demo-shaped table and queues per test (random
//! names), worker processes, and waiting on conditions instead of sleeping.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use scanfleet::devkit::{self, Aws, Proxy, Queues, Received, WorkerProcess};

pub const BINARY: &str = env!("CARGO_BIN_EXE_scanfleet");

pub struct Fixture {
    pub aws: Aws,
    pub table: String,
    pub queues: Queues,
    pub keys: Vec<(String, String)>,
    pub logs: PathBuf,
}

/// Row counts: moto's SQS slows down as a queue grows, so it gets hundreds, ministack more.
pub fn scaled(ministack: u64, moto: u64) -> u64 {
    if is_moto() { moto } else { ministack }
}

pub fn is_moto() -> bool {
    std::env::var("SCANFLEET_TEST_EMULATOR").as_deref() == Ok("moto")
}

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: the integration tests need a running emulator; run `make test`",
    )
}

impl Fixture {
    pub async fn new(rows: u64, max_receive_count: u32) -> Self {
        endpoint();
        let aws = Aws::from_env().await;
        let table = devkit::unique_name("it");
        devkit::create_table(&aws, &table)
            .await
            .expect("create table");
        let queues = devkit::create_queues(&aws, &table, max_receive_count)
            .await
            .expect("create queues");
        let keys = devkit::seed(&aws, &table, rows, 200)
            .await
            .expect("seed table");
        let logs = std::env::temp_dir().join("scanfleet-it").join(&table);
        std::fs::create_dir_all(&logs).unwrap();
        Fixture {
            aws,
            table,
            queues,
            keys,
            logs,
        }
    }

    /// A worker with a 1 s long poll (tests end quickly) plus `extra` settings.
    pub fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        self.worker_on(&self.queues, extra)
    }

    /// A worker like [`Fixture::worker`] on other queues (for the fixture's table).
    pub fn worker_on(&self, queues: &Queues, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut env: Vec<(&str, String)> =
            vec![("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "1".into())];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        WorkerProcess::start(Path::new(BINARY), queues, &self.table, &env, &self.logs)
            .expect("start worker")
    }

    /// A worker that reaches AWS through `proxy`.
    pub fn worker_via(&self, proxy: &Proxy, extra: &[(&str, &str)]) -> WorkerProcess {
        let url = proxy.url();
        let mut env = vec![("AWS_ENDPOINT_URL", url.as_str())];
        env.extend_from_slice(extra);
        self.worker(&env)
    }

    /// A proxy in front of the emulator, adding `latency` to every request.
    pub async fn proxy(&self, latency: Duration) -> Proxy {
        let url = endpoint();
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        let upstream = host.parse().expect("AWS_ENDPOINT_URL is http://ip:port");
        Proxy::start(upstream, latency).await.expect("start proxy")
    }

    /// Sends `body` to the control queue; returns its message id.
    pub async fn send_task(&self, body: &str) -> String {
        self.aws
            .sqs
            .send_message()
            .queue_url(&self.queues.control)
            .message_body(body)
            .send()
            .await
            .expect("send task")
            .message_id
            .expect("SendMessage returned no message id")
    }

    /// Drains the output until `expected` distinct messages arrived and 2 s passed quietly.
    pub async fn drain_output(&self, expected: usize) -> Vec<Received> {
        self.drain_keys(&[], expected).await
    }

    /// Drains the output until the keys of `earlier` and of what arrives cover `expected`
    /// distinct keys, then 2 s pass quietly.
    pub async fn drain_keys(&self, earlier: &[Received], expected: usize) -> Vec<Received> {
        devkit::drain_until(
            &self.aws,
            &self.queues.output,
            Duration::from_secs(300),
            Duration::from_secs(2),
            |got| {
                let keys: HashSet<_> = earlier.iter().chain(got).map(plain_key).collect();
                keys.len() >= expected
            },
        )
        .await
        .expect("drain output")
    }

    /// Drains any queue until `count` distinct messages arrived and 1 s passed quietly.
    pub async fn drain(&self, url: &str, count: usize) -> Vec<Received> {
        devkit::drain_until(
            &self.aws,
            url,
            Duration::from_secs(180),
            Duration::from_secs(1),
            |got| got.len() >= count,
        )
        .await
        .expect("drain queue")
    }

    /// Sets one attribute of a queue.
    pub async fn set_queue_attribute(&self, url: &str, name: QueueAttributeName, value: &str) {
        self.aws
            .sqs
            .set_queue_attributes()
            .queue_url(url)
            .attributes(name, value)
            .send()
            .await
            .expect("SetQueueAttributes");
    }

    pub async fn depth(&self, url: &str) -> u64 {
        scanfleet::aws::sqs::queue_depth(&self.aws.sqs, url)
            .await
            .expect("queue depth")
    }

    /// Waits until `url` holds exactly `depth` messages (visible + in flight).
    pub async fn wait_for_depth(&self, url: &str, depth: u64) {
        let start = Instant::now();
        loop {
            let d = self.depth(url).await;
            if d == depth {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "queue {url} stayed at {d} messages, expected {depth}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes one extra item into the fixture's table.
    pub async fn put_item(
        &self,
        item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) {
        self.aws
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }

    /// Asserts the job left nothing behind (no task pending, none dead-lettered), then cleans up.
    pub async fn finish_clean(self) {
        self.wait_for_depth(&self.queues.control, 0).await;
        assert_eq!(
            self.depth(&self.queues.dlq).await,
            0,
            "tasks were dead-lettered"
        );
        self.cleanup().await;
    }

    pub async fn cleanup(self) {
        devkit::cleanup(&self.aws, &self.table, &self.queues).await;
    }

    pub fn expected_keys(&self) -> HashSet<(String, String)> {
        self.keys.iter().cloned().collect()
    }
}

/// `(PK, SK)` of a `plain` output message.
pub fn plain_key(m: &Received) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&m.body).unwrap_or_else(|e| panic!("body {:?}: {e}", m.body));
    (
        v["PK"].as_str().expect("PK").to_owned(),
        v["SK"].as_str().expect("SK").to_owned(),
    )
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a child to exit; `None` if it is still running after `timeout`.
pub async fn wait_exit(
    w: &mut WorkerProcess,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = w.child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sum of a metric over several workers.
pub fn total(workers: &[&WorkerProcess], metric: &str) -> f64 {
    workers
        .iter()
        .map(|w| {
            w.metric(metric, "")
                .unwrap_or_else(|| panic!("worker {} has no /metrics", w.metrics_port))
        })
        .sum()
}

/// An HTTP proxy, pproxy (PyPI), installed by `scripts/emulator.sh install pproxy` (`make test`
/// does), that relays every request to the emulator whatever host it names, so a worker can be
/// given an endpoint host only the proxy can reach. It logs one line per connection,
/// `http <client> -> tunnel <emulator> -> <host named>`. Stopped when dropped.
pub struct HttpProxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl HttpProxy {
    pub async fn start(log_dir: &Path) -> Self {
        let emulator = endpoint();
        let emulator = emulator.trim_start_matches("http://").trim_end_matches('/');
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/pproxy/bin/pproxy");
        assert!(
            binary.exists(),
            "{} is missing: run `scripts/emulator.sh install pproxy` (`make test` does)",
            binary.display()
        );
        let port = devkit::free_port();
        let log = log_dir.join(format!("pproxy-{port}.log"));
        let file = std::fs::File::create(&log).expect("proxy log");
        let child = std::process::Command::new(binary)
            .args(["-l", &format!("http://127.0.0.1:{port}")])
            .args(["-r", &format!("tunnel://{emulator}"), "-v"])
            .stdout(file.try_clone().expect("proxy log"))
            .stderr(file)
            .spawn()
            .expect("start pproxy");
        let proxy = HttpProxy { child, port, log };
        wait_for(
            "pproxy to accept connections",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )
        .await;
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The hosts the connections relayed so far asked for, one per connection.
    pub fn destinations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit_once(" -> ").map(|(_, to)| to.trim().to_owned()))
            .collect()
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
