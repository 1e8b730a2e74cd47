//! The TCP proxy the tests and the benchmark put between workers and the emulator: latency on
//! every request, an outage on demand, and (for the benchmark's cost columns) a count of what
//! was sent to an SQS queue.

use std::collections::HashMap;
use std::time::Duration;

/// A TCP proxy between workers and the emulator, for tests and the benchmark: it can add
/// latency to every request (like the network distance to real AWS) and can cut every
/// connection and refuse new ones for a while (an outage).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<ProxyState>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    upstream: std::net::SocketAddr,
    latency: Duration,
    blocked: std::sync::atomic::AtomicBool,
    /// Cancelled (and replaced) to cut every open connection at once.
    cut: std::sync::Mutex<tokio_util::sync::CancellationToken>,
    /// A counting proxy's tally of the sends to one queue (see [`Proxy::start_counting`]).
    counting: Option<std::sync::Arc<Counting>>,
}

/// What a counting proxy saw sent to one SQS queue: `SendMessage` and `SendMessageBatch`
/// requests naming it, the messages they carried, and the 64 KB units SQS bills for them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SqsCounts {
    pub requests: u64,
    pub messages: u64,
    /// Each request's payload (its messages' bodies and attributes' names, data types and
    /// values) in 64 KB units, rounded up, at least 1: what SQS bills a request as.
    pub billed_units: u64,
}

struct Counting {
    queue_url: String,
    counts: std::sync::Mutex<SqsCounts>,
}

impl Counting {
    /// One HTTP request sent through the proxy: counted if it sends to the queue.
    fn request(&self, target: Option<&str>, body: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Attribute {
            #[serde(rename = "DataType")]
            data_type: String,
            #[serde(rename = "StringValue", default)]
            string_value: String,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "MessageBody")]
            body: String,
            #[serde(rename = "MessageAttributes", default)]
            attributes: HashMap<String, Attribute>,
        }
        /// `SendMessageBatch` has entries; `SendMessage` is one entry's fields.
        #[derive(serde::Deserialize)]
        struct Send {
            #[serde(rename = "QueueUrl")]
            queue_url: String,
            #[serde(rename = "Entries", default)]
            entries: Vec<Entry>,
            #[serde(rename = "MessageBody")]
            body: Option<String>,
            #[serde(rename = "MessageAttributes", default)]
            attributes: HashMap<String, Attribute>,
        }
        if !matches!(
            target,
            Some("AmazonSQS.SendMessageBatch" | "AmazonSQS.SendMessage")
        ) {
            return;
        }
        let Ok(send) = serde_json::from_slice::<Send>(body) else {
            return;
        };
        if send.queue_url != self.queue_url {
            return;
        }
        let mut entries = send.entries;
        if let Some(body) = send.body {
            entries.push(Entry {
                body,
                attributes: send.attributes,
            });
        }
        let payload: usize = entries
            .iter()
            .map(|e| {
                e.body.len()
                    + e.attributes
                        .iter()
                        .map(|(name, a)| name.len() + a.data_type.len() + a.string_value.len())
                        .sum::<usize>()
            })
            .sum();
        let mut c = self.counts.lock().expect("not poisoned");
        c.requests += 1;
        c.messages += entries.len() as u64;
        c.billed_units += payload.div_ceil(64 * 1024).max(1) as u64;
    }
}

/// Reads HTTP/1.1 requests out of the bytes a client sends (`Content-Length` bodies, one
/// request after another on a connection), for a counting proxy.
#[derive(Default)]
struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    fn feed(&mut self, chunk: &[u8], counting: &Counting) {
        self.buf.extend_from_slice(chunk);
        while let Some(end) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.buf[..end]);
            let (mut length, mut target) = (0usize, None);
            for line in head.split("\r\n").skip(1) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-amz-target" => target = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
            let total = end + 4 + length;
            if self.buf.len() < total {
                return;
            }
            counting.request(target.as_deref(), &self.buf[end + 4..total]);
            self.buf.drain(..total);
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, delaying data towards the
    /// upstream by `latency` (each chunk keeps its own arrival time, so a stream is delayed,
    /// not slowed down).
    pub async fn start(upstream: std::net::SocketAddr, latency: Duration) -> std::io::Result<Self> {
        Self::start_with(upstream, latency, None).await
    }

    /// A proxy like [`Proxy::start`] that also counts what is sent to the SQS queue
    /// `queue_url` through it (the benchmark's cost columns; see [`Proxy::sqs_counts`]).
    pub async fn start_counting(
        upstream: std::net::SocketAddr,
        latency: Duration,
        queue_url: &str,
    ) -> std::io::Result<Self> {
        let counting = Counting {
            queue_url: queue_url.to_owned(),
            counts: Default::default(),
        };
        Self::start_with(upstream, latency, Some(std::sync::Arc::new(counting))).await
    }

    /// What a counting proxy has seen sent to its queue so far.
    pub fn sqs_counts(&self) -> SqsCounts {
        self.state
            .counting
            .as_ref()
            .map(|c| *c.counts.lock().expect("not poisoned"))
            .unwrap_or_default()
    }

    async fn start_with(
        upstream: std::net::SocketAddr,
        latency: Duration,
        counting: Option<std::sync::Arc<Counting>>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = std::sync::Arc::new(ProxyState {
            upstream,
            latency,
            blocked: false.into(),
            cut: std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()),
            counting,
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.blocked.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let cut = st.cut.lock().expect("not poisoned").clone();
                tokio::spawn(forward(
                    client,
                    st.upstream,
                    st.latency,
                    cut,
                    st.counting.clone(),
                ));
            }
        });
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// `http://addr`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state
            .blocked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut token = self.state.cut.lock().expect("not poisoned");
        token.cancel();
        *token = tokio_util::sync::CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state
            .blocked
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut.lock().expect("not poisoned").cancel();
    }
}

async fn forward(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    latency: Duration,
    cut: tokio_util::sync::CancellationToken,
    counting: Option<std::sync::Arc<Counting>>,
) {
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = delayed_copy(client_read, server_write, latency, counting) => {}
        _ = delayed_copy(server_read, client_write, Duration::ZERO, None) => {}
        () = cut.cancelled() => {}
    }
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    counting: Option<std::sync::Arc<Counting>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut requests = RequestReader::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if let Some(counting) = &counting {
                requests.feed(&buf[..n], counting);
            }
            let _ = tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
        }
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w)
}
