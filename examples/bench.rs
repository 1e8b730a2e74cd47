//! `make bench`: scanfleet against the design it replaces, on the same table, on this machine.
//!
//! Loads a table of demo-shaped rows, then runs a job with K worker processes of the release
//! binary behind a latency-injecting proxy (standing in for the network distance to AWS), one
//! row per message and then packed (`output.rows_per_message` N, 64 KB messages), then the
//! Python peer (`bench/peer.py`, the old Lambda's loop) on the same data through the same
//! proxy, then a 1/2/4-worker scaling series. For each run it reports rows/s, worker CPU per
//! row (user+sys from /proc), peak RSS and the emulator's own CPU, so it shows when the
//! emulator is the bottleneck, and what the proxy counted sent to the output queue: requests,
//! billed 64 KB units and messages per million rows.
//!
//! Flags: --rows N (100000) --segments N (16) --workers K (1) --latency-ms L (10)
//!        --row-bytes B (1000) --limit-of-rows N (3000) --peer-python PATH (.venv/peer/bin/python)
//!        --rows-per-message N (10000; 1: no packed run) --no-single (no one-row-per-message
//!        run beside the packed one) --no-peer --no-scaling --scaling-latency-ms L (20)
//!        --record FILE --timeout-minutes M (30): a run that has not finished by then is an
//!        error

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scanfleet::devkit::{self, Aws, BoxError, Proxy, SqsCounts, WorkerProcess};

struct Args {
    rows: u64,
    segments: u32,
    workers: usize,
    latency_ms: u64,
    row_bytes: usize,
    limit_of_rows: u32,
    peer_python: Option<PathBuf>,
    scaling: bool,
    scaling_latency_ms: u64,
    /// How long one run may take before the bench gives up on it.
    timeout: Duration,
    record: Option<PathBuf>,
    /// `output.rows_per_message` of the packed run; 1: no packed run.
    rows_per_message: u32,
    /// Whether to run one row per message beside the packed run.
    single: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rows: 100_000,
        segments: 16,
        workers: 1,
        latency_ms: 10,
        row_bytes: 1000,
        limit_of_rows: 3000,
        peer_python: Some(PathBuf::from(".venv/peer/bin/python")),
        scaling: true,
        scaling_latency_ms: 20,
        timeout: Duration::from_secs(30 * 60),
        record: None,
        rows_per_message: 10_000,
        single: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-peer" => a.peer_python = None,
            "--no-scaling" => a.scaling = false,
            "--no-single" => a.single = false,
            _ => {
                let v = it.next().ok_or(format!("{flag} needs a value"))?;
                let num = |v: &str| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{flag}: {v:?} is not a number"))
                };
                match flag.as_str() {
                    "--rows" => a.rows = num(&v)?,
                    "--segments" => a.segments = num(&v)? as u32,
                    "--workers" => a.workers = num(&v)? as usize,
                    "--latency-ms" => a.latency_ms = num(&v)?,
                    "--row-bytes" => a.row_bytes = num(&v)? as usize,
                    "--limit-of-rows" => a.limit_of_rows = num(&v)? as u32,
                    "--scaling-latency-ms" => a.scaling_latency_ms = num(&v)?,
                    "--timeout-minutes" => a.timeout = Duration::from_secs(num(&v)? * 60),
                    "--peer-python" => a.peer_python = Some(PathBuf::from(v)),
                    "--record" => a.record = Some(PathBuf::from(v)),
                    "--rows-per-message" => {
                        a.rows_per_message = u32::try_from(num(&v)?)
                            .ok()
                            .filter(|n| (1..=10_000).contains(n))
                            .ok_or(format!("{flag}: {v} is not 1..=10000"))?;
                    }
                    _ => return Err(format!("unknown flag {flag}")),
                }
            }
        }
    }
    if !a.single && a.rows_per_message == 1 {
        return Err("--no-single leaves nothing to run with --rows-per-message 1".into());
    }
    Ok(a)
}

/// One measured run.
struct Run {
    name: String,
    latency_ms: u64,
    rows: u64,
    seconds: f64,
    /// User+system CPU seconds of the process(es) doing the work.
    cpu: f64,
    peak_rss_kib: u64,
    emulator_cpu: f64,
    /// What the proxy saw sent to the output queue.
    sent: SqsCounts,
}

impl Run {
    fn per_million_rows(&self, n: u64) -> f64 {
        n as f64 * 1e6 / self.rows as f64
    }
    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
    fn cpu_us_per_row(&self) -> f64 {
        self.cpu * 1e6 / self.rows as f64
    }
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0}% | {:.0} | {:.0} | {:.0} |",
            self.name,
            self.latency_ms,
            self.rows,
            self.seconds,
            self.rows_per_second(),
            self.cpu_us_per_row(),
            self.peak_rss_kib as f64 / 1024.0,
            self.emulator_cpu,
            100.0 * self.emulator_cpu / self.seconds,
            self.per_million_rows(self.sent.requests),
            self.per_million_rows(self.sent.billed_units),
            self.per_million_rows(self.sent.messages),
        )
    }
}

const HEADER: &str = "| run | latency ms | rows | seconds | rows/s | CPU µs/row | peak RSS MiB | emulator CPU s | emulator busy | send requests /M rows | billed 64 KB units /M rows | messages /M rows |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// User+system CPU seconds of a live process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Peak resident set size of a live process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn emulator_pid() -> Option<u32> {
    std::env::var("BENCH_EMULATOR_PID").ok()?.parse().ok()
}

fn emulator_cpu() -> f64 {
    emulator_pid().map(cpu_seconds).unwrap_or(0.0)
}

fn upstream() -> Result<std::net::SocketAddr, BoxError> {
    let url = std::env::var("AWS_ENDPOINT_URL")?;
    Ok(url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?)
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>")
        .join("scanfleet")
}

async fn run_scanfleet(
    aws: &Aws,
    a: &Args,
    table: &str,
    workers: usize,
    latency_ms: u64,
    rows_per_message: u32,
) -> Result<Run, BoxError> {
    let queues = devkit::create_queues(aws, &devkit::unique_name("bench"), 5).await?;
    let latency = Duration::from_millis(latency_ms);
    let proxy = Proxy::start_counting(upstream()?, latency, &queues.output).await?;
    let logs = std::env::temp_dir().join("scanfleet-bench");
    std::fs::create_dir_all(&logs)?;
    let url = proxy.url();
    let mut env = vec![
        ("AWS_ENDPOINT_URL", url.clone()),
        ("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "1".to_owned()),
        ("SCANFLEET__LOG__LEVEL", "warn".to_owned()),
    ];
    // One row per message is the defaults, untouched (and so a build that predates the setting
    // can be measured with this bench).
    if rows_per_message > 1 {
        env.push((
            "SCANFLEET__OUTPUT__ROWS_PER_MESSAGE",
            rows_per_message.to_string(),
        ));
    }
    let procs = (0..workers)
        .map(|_| WorkerProcess::start(&binary(), &queues, table, &env, &logs))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &procs {
        let start = Instant::now();
        while devkit::http_get(w.metrics_port, "/readyz").map(|r| r.0) != Some(200) {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("worker not ready; log {}", w.log.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let cpu0: f64 = procs.iter().map(|w| cpu_seconds(w.child.id())).sum();
    let emu0 = emulator_cpu();
    let start = Instant::now();
    let out = Command::new(binary())
        .args([
            "enqueue",
            "--table",
            table,
            "--segments",
            &a.segments.to_string(),
        ])
        .args(["--limit-of-rows", &a.limit_of_rows.to_string()])
        .env("SCANFLEET__CONTROL__QUEUE_URL", &queues.control)
        .env("AWS_ENDPOINT_URL", &url)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    // Done when every segment's last chunk completed. The clock watches the control queue on
    // the emulator, not the workers: every /metrics request costs a worker ~0.4 ms of CPU,
    // which polling it 10 times a second added to the CPU being measured. The workers are
    // asked once the queue is empty (a continuation is sent before its task is deleted, so an
    // empty queue mid-job is not expected; the metric confirms it).
    loop {
        if scanfleet::aws::sqs::queue_depth(&aws.sqs, &queues.control).await? == 0 {
            let done: f64 = procs
                .iter()
                .filter_map(|w| w.metric("scanfleet_tasks_completed_total", ""))
                .sum();
            if done >= a.segments as f64 {
                break;
            }
        }
        if start.elapsed() > a.timeout {
            return Err(format!(
                "the job did not finish within {} minutes (--timeout-minutes)",
                a.timeout.as_secs() / 60
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let emulator = emulator_cpu() - emu0;
    let rows: f64 = procs
        .iter()
        .filter_map(|w| w.metric("scanfleet_rows_published_total", ""))
        .sum();
    let cpu: f64 = procs.iter().map(|w| cpu_seconds(w.child.id())).sum::<f64>() - cpu0;
    let rss = procs
        .iter()
        .map(|w| peak_rss_kib(w.child.id()))
        .max()
        .unwrap_or(0);
    drop(procs);
    for url in [&queues.control, &queues.dlq, &queues.output] {
        let _ = aws.sqs.delete_queue().queue_url(url).send().await;
    }
    let messages = match rows_per_message {
        1 => "1 row per message".to_owned(),
        n => format!("packed (≤ {n} rows, 64 KB)"),
    };
    Ok(Run {
        name: format!(
            "scanfleet, {workers} worker{}, {messages}",
            if workers == 1 { "" } else { "s" }
        ),
        latency_ms,
        rows: rows as u64,
        seconds,
        cpu,
        peak_rss_kib: rss,
        emulator_cpu: emulator,
        sent: proxy.sqs_counts(),
    })
}

async fn run_peer(aws: &Aws, a: &Args, python: &Path, table: &str) -> Result<Run, BoxError> {
    let queue =
        devkit::create_queue(aws, &devkit::unique_name("bench-peer"), Default::default()).await?;
    let latency = Duration::from_millis(a.latency_ms);
    let proxy = Proxy::start_counting(upstream()?, latency, &queue).await?;
    let emu0 = emulator_cpu();
    let child = tokio::process::Command::new(python)
        .args([
            "bench/peer.py",
            "--table",
            table,
            "--segments",
            &a.segments.to_string(),
        ])
        .args([
            "--queue-url",
            &queue,
            "--limit-of-rows",
            &a.limit_of_rows.to_string(),
        ])
        .env("AWS_ENDPOINT_URL", proxy.url())
        .output()
        .await?;
    let emulator = emulator_cpu() - emu0;
    let _ = aws.sqs.delete_queue().queue_url(&queue).send().await;
    if !child.status.success() {
        return Err(format!(
            "the peer failed ({}): {}",
            child.status,
            String::from_utf8_lossy(&child.stderr)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&child.stdout)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Run {
        name: "peer (Python Lambda loop)".into(),
        latency_ms: a.latency_ms,
        rows: f("rows") as u64,
        seconds: f("seconds"),
        cpu: f("cpu_user") + f("cpu_sys"),
        peak_rss_kib: f("max_rss_kib") as u64,
        emulator_cpu: emulator,
        sent: proxy.sqs_counts(),
    })
}

/// The commit the benchmark ran (`-dirty` with uncommitted changes), so a recorded run can be
/// tied to the code it measured.
fn code_version() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = parse_args()?;
    let aws = Aws::from_env().await;
    let table = devkit::unique_name("bench-items");
    devkit::create_table(&aws, &table).await?;
    let t = Instant::now();
    devkit::seed(&aws, &table, a.rows, a.row_bytes).await?;
    eprintln!(
        "loaded {} rows of ~{} bytes in {:.1} s",
        a.rows,
        a.row_bytes,
        t.elapsed().as_secs_f64()
    );

    let mut report = String::new();
    let mut runs = Vec::new();
    if a.single {
        runs.push(run_scanfleet(&aws, &a, &table, a.workers, a.latency_ms, 1).await?);
        eprintln!("{}", runs[runs.len() - 1].row());
    }
    if a.rows_per_message > 1 {
        let packed = a.rows_per_message;
        runs.push(run_scanfleet(&aws, &a, &table, a.workers, a.latency_ms, packed).await?);
        eprintln!("{}", runs[runs.len() - 1].row());
    }
    report.push_str(&format!(
        "### scanfleet vs. peer, {} segments\n\n{HEADER}\n",
        a.segments
    ));
    for run in &runs {
        report.push_str(&format!("{}\n", run.row()));
    }
    if let Some(python) = &a.peer_python {
        let peer = run_peer(&aws, &a, python, &table).await?;
        eprintln!("{}", peer.row());
        report.push_str(&format!("{}\n\n", peer.row()));
        let ratios: Vec<String> = runs
            .iter()
            .map(|run| {
                format!(
                    "{}: throughput {:.1}×, CPU per row {:.1}× less",
                    run.name,
                    run.rows_per_second() / peer.rows_per_second(),
                    peer.cpu_us_per_row() / run.cpu_us_per_row()
                )
            })
            .collect();
        report.push_str(&format!(
            "Ratios (scanfleet / peer): {}.\n\n",
            ratios.join("; ")
        ));
    } else {
        report.push('\n');
    }
    if a.scaling {
        report.push_str(&format!(
            "### Scaling at {} ms latency\n\n{HEADER}\n",
            a.scaling_latency_ms
        ));
        let mut one = None;
        let mut scaling = Vec::new();
        for k in [1, 2, 4] {
            let run = run_scanfleet(&aws, &a, &table, k, a.scaling_latency_ms, 1).await?;
            eprintln!("{}", run.row());
            report.push_str(&format!("{}\n", run.row()));
            let base = *one.get_or_insert(run.rows_per_second());
            if k > 1 {
                let line = format!(
                    "{k} workers: {:.2}× one worker",
                    run.rows_per_second() / base
                );
                eprintln!("{line}");
                scaling.push(line);
            }
        }
        report.push_str(&format!("\n{}.\n", scaling.join("; ")));
    }
    let _ = aws.dynamodb.delete_table().table_name(&table).send().await;

    let command: Vec<String> = std::env::args().skip(1).collect();
    let section = format!(
        "## Run of {} UTC\n\nMachine: {}. Emulator: ministack. Code: {}. Command: `make bench ARGS=\"{}\"` ({} rows of ~{} bytes, page size {}).\n\n{report}",
        now_utc(),
        machine(),
        code_version(),
        command
            .iter()
            .filter(|c| !c.starts_with("--record") && !c.ends_with(".md"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        a.rows,
        a.row_bytes,
        a.limit_of_rows,
    );
    println!("{section}");
    if let Some(path) = &a.record {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "\n{section}")?;
        eprintln!("recorded in {}", path.display());
    }
    Ok(())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
