//! Typed, validated configuration.
//!
//! Layers, lowest first: `config/default.toml` (compiled in), the file given with `--config`,
//! then environment variables `SCANFLEET__<SECTION>__<KEY>` (`scan.allowed_tables` takes a
//! comma-separated list). Unknown keys are errors, so a typo cannot silently fall back to a
//! default. Every error names the key it is about.

use std::net::SocketAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

pub use crate::codec::OutputFormat;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The largest `worker.checkpoint_seconds`: SQS caps a message's visibility at 12 hours from its
/// receive, and a chunk must end well before that.
pub const MAX_CHECKPOINT_SECONDS: u64 = 6 * 3600;

/// Every bounded setting's range, named once: the checks below and their messages use these,
/// and a test holds `config/default.toml`'s comments to them.
pub mod limits {
    use std::ops::RangeInclusive;

    /// SQS's long-poll limit.
    pub const WAIT_TIME_SECONDS: RangeInclusive<u32> = 0..=20;
    /// Up to SQS's 12 hours. Below 5 s the heartbeat (every third of the timeout) would run
    /// more often than a round trip to SQS can be relied upon to take.
    pub const VISIBILITY_TIMEOUT_SECONDS: RangeInclusive<u32> = 5..=43_200;
    pub const MAX_IN_FLIGHT_BATCHES: RangeInclusive<u32> = 1..=1024;
    /// A batch must hold at least one maximum-size message of the smallest queue setting, and
    /// SQS takes at most 1 MiB per request.
    pub const MAX_BATCH_BYTES: RangeInclusive<u32> = 1024..=1_048_576;
    pub const CONCURRENCY: RangeInclusive<u32> = 1..=256;
    /// `output.rows_per_message`: 1 is one message per row, more packs.
    pub const ROWS_PER_MESSAGE: RangeInclusive<u32> = 1..=10_000;
    /// `output.max_message_bytes`: SQS's range for a queue's `MaximumMessageSize`.
    pub const MESSAGE_BYTES: RangeInclusive<u32> = 1024..=1_048_576;
    pub const CHECKPOINT_SECONDS: RangeInclusive<u64> = 1..=super::MAX_CHECKPOINT_SECONDS;

    /// `key`'s value checked against `range`; `note` follows the range in the message.
    pub(super) fn check<T: PartialOrd + std::fmt::Display>(
        key: &'static str,
        value: T,
        range: &RangeInclusive<T>,
        note: &str,
    ) -> Result<(), super::SettingsError> {
        if range.contains(&value) {
            return Ok(());
        }
        Err(super::invalid(
            key,
            format!(
                "must be {}..={}{note}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// One clear start-up error, naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key} {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub control: ControlSettings,
    pub output: OutputSettings,
    pub scan: ScanSettings,
    pub worker: WorkerSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub ledger: LedgerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// DynamoDB table of the job ledger; empty: no ledger.
    pub table: String,
}

impl LedgerSettings {
    pub fn table(&self) -> Option<&str> {
        (!self.table.is_empty()).then_some(self.table.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// URL of the SQS queue carrying segment tasks.
    pub queue_url: String,
    /// Long-poll wait of each ReceiveMessage call (SQS allows 0..=20).
    pub wait_time_seconds: u32,
    /// Visibility timeout of a received task; extended by the heartbeat while the task runs.
    pub visibility_timeout_seconds: u32,
}

/// What makes one of the worker's two hot calls: `Scan` (`scan.client`) or `SendMessageBatch`
/// (`output.client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// scanfleet's own client (SigV4-signed JSON over a pooled connection, see
    /// `crate::aws::direct`): a fraction of the SDK's CPU per row.
    Direct,
    /// The AWS SDK's own request pipeline, like every other call: the fallback should the
    /// direct client not suit an endpoint.
    Sdk,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// URL of the SQS queue receiving one message per row.
    pub queue_url: String,
    pub format: OutputFormat,
    /// What sends the row batches: `direct` or `sdk`.
    pub client: ClientKind,
    /// SendMessageBatch calls in flight per worker process, shared by all its tasks.
    pub max_in_flight_batches: u32,
    /// Upper bound on the summed message sizes of one SendMessageBatch call.
    pub max_batch_bytes: u32,
    /// Queue for rows too large for the output queue; empty: such rows fail their task.
    pub oversize_queue_url: String,
    /// Rows per output message: 1 (one message per row), or 2..=10000 (packed output, see
    /// `crate::pipeline::pack`).
    pub rows_per_message: u32,
    /// Packed output: the most one message may hold as SQS counts it (body and attributes);
    /// never more than the output queue's `MaximumMessageSize`.
    pub max_message_bytes: u32,
}

impl OutputSettings {
    /// Whether rows are packed, many to a message (`output.rows_per_message` > 1).
    pub fn packed(&self) -> bool {
        self.rows_per_message > 1
    }

    /// Checks `output.max_message_bytes` against the output queue's `MaximumMessageSize` (read
    /// at start-up): a packed message may never be larger than the queue accepts.
    pub fn check_message_bytes(&self, queue_max: usize) -> Result<(), SettingsError> {
        if self.packed() && self.max_message_bytes as usize > queue_max {
            return Err(invalid(
                "output.max_message_bytes",
                format!(
                    "is {}, more than the output queue's MaximumMessageSize ({queue_max}); lower it to at most {queue_max}",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Table for tasks that name none.
    pub default_table: String,
    /// Tables a task may name; empty means only `default_table`.
    #[serde(deserialize_with = "table_list")]
    pub allowed_tables: Vec<String>,
    /// Read capacity units per second this worker process may consume, shared by all its
    /// tasks; 0 means unlimited. A job's own budget (in its tasks) applies as well.
    pub read_units_per_second: f64,
    /// What reads the pages: `direct` or `sdk`.
    pub client: ClientKind,
}

/// `scan.allowed_tables`: a list in a file, comma-separated text in the environment (empty
/// text: no tables). Environment values are read as text, never as numbers or booleans, so a
/// table named `001` or `1e5` stays itself.
fn table_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tables {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Tables::deserialize(d)? {
        Tables::List(tables) => tables,
        Tables::Text(text) if text.trim().is_empty() => Vec::new(),
        // An empty name between commas is kept, for the validation to name.
        Tables::Text(text) => text.split(',').map(|t| t.trim().to_owned()).collect(),
    })
}

impl ScanSettings {
    /// Whether a task may scan `table`. The default table is always allowed.
    pub fn allows(&self, table: &str) -> bool {
        table == self.default_table || self.allowed_tables.iter().any(|t| t == table)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Tasks processed concurrently by one process.
    pub concurrency: u32,
    /// How long in-flight tasks may run on after SIGTERM/SIGINT before they are handed back.
    pub drain_timeout_seconds: u32,
    /// Rows after which a chunk ends with a checkpoint (continuation task).
    pub checkpoint_rows: u64,
    /// Seconds after which a chunk ends with a checkpoint, whichever comes first.
    pub checkpoint_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Listen address of the /metrics, /healthz and /readyz endpoints.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: crate::telemetry::LogFormat,
    /// A `tracing` EnvFilter directive; `RUST_LOG` overrides it.
    pub level: String,
}

impl LogSettings {
    /// Starts logging as these settings ask.
    pub fn init(&self) {
        crate::telemetry::init_logging(&self.level, self.format);
    }
}

impl Settings {
    /// Loads the layers from the given environment (`vars`, so tests need not touch the
    /// process environment) without validating them for a particular command.
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("names no readable file: {}", path.display()),
                ));
            }
            builder = builder.add_source(File::from(path).required(true));
        }
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SCANFLEET__"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("SCANFLEET")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let settings: Self = builder.build()?.try_deserialize()?;
        // Every command logs, so a filter that does not parse stops every command.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a log filter ({e}); e.g. \"info\" or \"scanfleet=debug,info\"",
                    settings.log.level
                ),
            ));
        }
        Ok(settings)
    }

    /// Loads from the real process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Checks everything the worker needs.
    pub fn validate_for_worker(&self) -> Result<(), SettingsError> {
        self.validate_for_enqueue()?;
        let c = &self.control;
        limits::check(
            "control.wait_time_seconds",
            c.wait_time_seconds,
            &limits::WAIT_TIME_SECONDS,
            " (SQS limit)",
        )?;
        limits::check(
            "control.visibility_timeout_seconds",
            c.visibility_timeout_seconds,
            &limits::VISIBILITY_TIMEOUT_SECONDS,
            "",
        )?;
        require_url("output.queue_url", &self.output.queue_url)?;
        limits::check(
            "output.max_in_flight_batches",
            self.output.max_in_flight_batches,
            &limits::MAX_IN_FLIGHT_BATCHES,
            "",
        )?;
        limits::check(
            "output.max_batch_bytes",
            self.output.max_batch_bytes,
            &limits::MAX_BATCH_BYTES,
            "",
        )?;
        if self.scan.default_table.is_empty() {
            return Err(invalid(
                "scan.default_table",
                "is required (env SCANFLEET__SCAN__DEFAULT_TABLE)",
            ));
        }
        if let Some(t) = self
            .scan
            .allowed_tables
            .iter()
            .find(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "scan.allowed_tables",
                format!("contains an empty table name ({t:?})"),
            ));
        }
        if let Err(e) = crate::budget::check_rate(self.scan.read_units_per_second) {
            return Err(invalid("scan.read_units_per_second", e));
        }
        limits::check(
            "worker.concurrency",
            self.worker.concurrency,
            &limits::CONCURRENCY,
            "",
        )?;
        if self.worker.drain_timeout_seconds == 0 {
            return Err(invalid(
                "worker.drain_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.worker.checkpoint_rows == 0 {
            return Err(invalid("worker.checkpoint_rows", "must be at least 1"));
        }
        limits::check(
            "worker.checkpoint_seconds",
            self.worker.checkpoint_seconds,
            &limits::CHECKPOINT_SECONDS,
            "",
        )?;
        if !self.output.oversize_queue_url.is_empty() {
            require_url("output.oversize_queue_url", &self.output.oversize_queue_url)?;
        }
        let o = &self.output;
        limits::check(
            "output.rows_per_message",
            o.rows_per_message,
            &limits::ROWS_PER_MESSAGE,
            " (1: one message per row)",
        )?;
        limits::check(
            "output.max_message_bytes",
            o.max_message_bytes,
            &limits::MESSAGE_BYTES,
            "",
        )?;
        // A packed message has no single partition key to group or deduplicate by.
        if o.packed() && o.queue_url.ends_with(".fifo") {
            return Err(invalid(
                "output.rows_per_message",
                format!(
                    "is {} (packed output), which a FIFO output.queue_url cannot take; use a standard output queue or output.rows_per_message = 1",
                    o.rows_per_message
                ),
            ));
        }
        Ok(())
    }

    /// Checks what `enqueue` needs: only the control queue.
    pub fn validate_for_enqueue(&self) -> Result<(), SettingsError> {
        require_url("control.queue_url", &self.control.queue_url)?;
        // Tasks need no order, and a FIFO queue would want a group id on every task and
        // continuation, and hold a group's other tasks back while one is in flight.
        if self.control.queue_url.ends_with(".fifo") {
            return Err(invalid(
                "control.queue_url",
                "names a FIFO queue; the control queue must be a standard queue (the output queue may be FIFO)",
            ));
        }
        Ok(())
    }
}

fn require_url(key: &'static str, value: &str) -> Result<(), SettingsError> {
    if value.is_empty() {
        let env = format!("SCANFLEET__{}", key.replace('.', "__").to_uppercase());
        return Err(invalid(key, format!("is required (env {env})")));
    }
    if !(value.starts_with("https://") || value.starts_with("http://")) {
        return Err(invalid(
            key,
            format!("must be an SQS queue URL (http:// or https://), got {value:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn complete() -> Vec<(String, String)> {
        vars(&[
            (
                "SCANFLEET__CONTROL__QUEUE_URL",
                "http://localhost/1/control",
            ),
            ("SCANFLEET__OUTPUT__QUEUE_URL", "http://localhost/1/output"),
            ("SCANFLEET__SCAN__DEFAULT_TABLE", "items"),
        ])
    }

    fn error_for(extra: &[(&str, &str)]) -> String {
        let mut v = complete();
        v.extend(vars(extra));
        let s = Settings::load_from(None, v);
        match s.and_then(|s| s.validate_for_worker()) {
            Ok(()) => panic!("expected an error for {extra:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_env_layering() {
        let mut v = complete();
        v.extend(vars(&[
            ("SCANFLEET__SCAN__ALLOWED_TABLES", "a,b"),
            ("SCANFLEET__WORKER__CONCURRENCY", "8"),
            ("SCANFLEET__OUTPUT__FORMAT", "dynamodb"),
            ("SCANFLEET__SCAN__READ_UNITS_PER_SECOND", "2.5"),
            ("OTHER_VAR", "ignored"),
        ]));
        let s = Settings::load_from(None, v).unwrap();
        s.validate_for_worker().unwrap();
        assert_eq!(s.control.wait_time_seconds, 20);
        assert_eq!(s.control.visibility_timeout_seconds, 60);
        assert_eq!(s.worker.concurrency, 8);
        assert_eq!(s.scan.read_units_per_second, 2.5);
        let defaults = Settings::load_from(None, complete()).unwrap();
        assert_eq!(defaults.scan.read_units_per_second, 0.0);
        assert_eq!(s.output.format, OutputFormat::Dynamodb);
        assert_eq!(s.scan.allowed_tables, vec!["a", "b"]);
        assert_eq!(s.metrics.listen.to_string(), "0.0.0.0:9090");
        assert!(s.scan.allows("items") && s.scan.allows("b") && !s.scan.allows("c"));
    }

    #[test]
    fn environment_values_are_text_until_their_key_types_them() {
        let tables = |value: &str| {
            let mut v = complete();
            v.extend(vars(&[
                ("SCANFLEET__SCAN__ALLOWED_TABLES", value),
                ("SCANFLEET__SCAN__DEFAULT_TABLE", "007"),
            ]));
            let s = Settings::load_from(None, v).unwrap();
            s.validate_for_worker().unwrap();
            assert_eq!(s.scan.default_table, "007");
            s.scan.allowed_tables
        };
        assert_eq!(tables("123"), vec!["123"]);
        assert_eq!(tables("nan, 1e5,true"), vec!["nan", "1e5", "true"]);
        assert_eq!(tables(""), Vec::<String>::new());
        assert!(
            error_for(&[("SCANFLEET__SCAN__ALLOWED_TABLES", "a,,b")])
                .contains("scan.allowed_tables")
        );
    }

    #[test]
    fn a_fifo_control_queue_is_refused_by_name() {
        let e = error_for(&[(
            "SCANFLEET__CONTROL__QUEUE_URL",
            "http://localhost/1/control.fifo",
        )]);
        assert!(e.contains("control.queue_url") && e.contains("FIFO"), "{e}");
        let mut v = complete();
        v.extend(vars(&[(
            "SCANFLEET__OUTPUT__QUEUE_URL",
            "http://localhost/1/output.fifo",
        )]));
        Settings::load_from(None, v)
            .unwrap()
            .validate_for_worker()
            .unwrap();
    }

    #[test]
    fn a_log_level_that_is_no_filter_stops_start_up() {
        let mut v = complete();
        v.extend(vars(&[("SCANFLEET__LOG__LEVEL", "scanfleet=loud")]));
        let e = Settings::load_from(None, v).unwrap_err().to_string();
        assert!(
            e.contains("log.level") && e.contains("scanfleet=loud"),
            "{e}"
        );
        let mut v = complete();
        v.extend(vars(&[("SCANFLEET__LOG__LEVEL", "scanfleet=debug,warn")]));
        assert_eq!(
            Settings::load_from(None, v).unwrap().log.level,
            "scanfleet=debug,warn"
        );
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        let dir = std::env::temp_dir().join(format!("scanfleet-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[worker]\nconcurrency = 2\ndrain_timeout_seconds = 7\n",
        )
        .unwrap();
        let mut v = complete();
        v.extend(vars(&[("SCANFLEET__WORKER__CONCURRENCY", "3")]));
        let s = Settings::load_from(Some(&path), v).unwrap();
        assert_eq!(s.worker.concurrency, 3);
        assert_eq!(s.worker.drain_timeout_seconds, 7);
    }

    #[test]
    fn missing_required_keys_are_named() {
        let s = Settings::load_from(None, vec![]).unwrap();
        let e = s.validate_for_worker().unwrap_err().to_string();
        assert!(
            e.contains("control.queue_url") && e.contains("SCANFLEET__CONTROL__QUEUE_URL"),
            "{e}"
        );
        let s = Settings::load_from(
            None,
            vars(&[("SCANFLEET__CONTROL__QUEUE_URL", "http://x/q")]),
        )
        .unwrap();
        s.validate_for_enqueue().unwrap();
        assert!(
            s.validate_for_worker()
                .unwrap_err()
                .to_string()
                .contains("output.queue_url")
        );
    }

    #[test]
    fn invalid_values_are_named() {
        for (var, value, key) in [
            (
                "SCANFLEET__CONTROL__WAIT_TIME_SECONDS",
                "21",
                "control.wait_time_seconds",
            ),
            (
                "SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS",
                "1",
                "control.visibility_timeout_seconds",
            ),
            ("SCANFLEET__WORKER__CONCURRENCY", "0", "worker.concurrency"),
            (
                "SCANFLEET__WORKER__CONCURRENCY",
                "lots",
                "worker.concurrency",
            ),
            ("SCANFLEET__OUTPUT__FORMAT", "xml", "output.format"),
            (
                "SCANFLEET__OUTPUT__MAX_BATCH_BYTES",
                "2000000",
                "output.max_batch_bytes",
            ),
            (
                "SCANFLEET__OUTPUT__QUEUE_URL",
                "not-a-url",
                "output.queue_url",
            ),
            ("SCANFLEET__METRICS__LISTEN", "nowhere", "metrics.listen"),
            (
                "SCANFLEET__SCAN__READ_UNITS_PER_SECOND",
                "-1",
                "scan.read_units_per_second",
            ),
            (
                "SCANFLEET__SCAN__READ_UNITS_PER_SECOND",
                "1e-20",
                "scan.read_units_per_second",
            ),
            (
                "SCANFLEET__WORKER__DRAIN_TIMEOUT_SECONDS",
                "0",
                "worker.drain_timeout_seconds",
            ),
            (
                "SCANFLEET__WORKER__CHECKPOINT_ROWS",
                "0",
                "worker.checkpoint_rows",
            ),
            (
                "SCANFLEET__WORKER__CHECKPOINT_SECONDS",
                "86400",
                "worker.checkpoint_seconds",
            ),
            (
                "SCANFLEET__OUTPUT__OVERSIZE_QUEUE_URL",
                "queue",
                "output.oversize_queue_url",
            ),
            (
                "SCANFLEET__OUTPUT__ROWS_PER_MESSAGE",
                "0",
                "output.rows_per_message",
            ),
            (
                "SCANFLEET__OUTPUT__ROWS_PER_MESSAGE",
                "10001",
                "output.rows_per_message",
            ),
            (
                "SCANFLEET__OUTPUT__MAX_MESSAGE_BYTES",
                "1023",
                "output.max_message_bytes",
            ),
            (
                "SCANFLEET__OUTPUT__MAX_MESSAGE_BYTES",
                "1048577",
                "output.max_message_bytes",
            ),
        ] {
            let e = error_for(&[(var, value)]);
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn packed_output_is_bounded_and_refused_on_a_fifo_queue_naming_both_keys() {
        let load = |extra: &[(&str, &str)]| {
            let mut v = complete();
            v.extend(vars(extra));
            Settings::load_from(None, v).unwrap()
        };
        let defaults = load(&[]);
        defaults.validate_for_worker().unwrap();
        assert_eq!(defaults.output.rows_per_message, 1);
        assert_eq!(defaults.output.max_message_bytes, 65_536);
        assert!(!defaults.output.packed());
        // Unpacked, the setting does not apply: today's messages whatever the queue's size.
        defaults.output.check_message_bytes(1024).unwrap();
        let packed = load(&[
            ("SCANFLEET__OUTPUT__ROWS_PER_MESSAGE", "10000"),
            ("SCANFLEET__OUTPUT__MAX_MESSAGE_BYTES", "1048576"),
        ]);
        packed.validate_for_worker().unwrap();
        assert!(packed.output.packed());
        packed.output.check_message_bytes(1_048_576).unwrap();
        let e = packed
            .output
            .check_message_bytes(262_144)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output.max_message_bytes")
                && e.contains("1048576")
                && e.contains("MaximumMessageSize (262144)"),
            "{e}"
        );
        let e = error_for(&[
            ("SCANFLEET__OUTPUT__ROWS_PER_MESSAGE", "2"),
            (
                "SCANFLEET__OUTPUT__QUEUE_URL",
                "http://localhost/1/out.fifo",
            ),
        ]);
        assert!(
            e.contains("output.rows_per_message")
                && e.contains("FIFO output.queue_url")
                && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = error_for(&[("SCANFLEET__WORKER__CONCURENCY", "3")]);
        assert!(e.contains("concurency"), "{e}");
    }
}
