//! `scanfleet`: the command line and the process. Parses the command, loads the settings,
//! starts the runtime and hands over to the command's room in `scanfleet::cli`; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scanfleet::cli;
use scanfleet::settings::Settings;

/// DynamoDB parallel scans as a horizontally scaled SQS job.
#[derive(Parser)]
#[command(name = "scanfleet", version)]
struct Cli {
    /// Configuration file layered over config/default.toml (env SCANFLEET__* overrides both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the worker daemon: take segment tasks from the control queue until SIGTERM/SIGINT.
    Worker,
    /// Put one task per segment on the control queue and print the job id.
    Enqueue(cli::enqueue::Args),
    /// Print a job's progress from the ledger: segments, rows, read units, skew, failures.
    Status(cli::status::Args),
    /// Re-enqueue the job's segments that are neither done nor in flight, from the ledger's
    /// position; optionally first move the job's tasks back from the dead-letter queue.
    Reconcile(cli::reconcile::Args),
    /// Suggest --segments for a table (DescribeTable), with the reasoning.
    Plan(cli::plan::Args),
    /// Manage the job ledger table.
    Ledger {
        #[command(subcommand)]
        command: cli::ledger::Command,
    },
}

/// Tokio's current-thread runtime unless `TOKIO_WORKER_THREADS` asks for worker threads. A worker
/// spends most of its time waiting on round trips, and one thread serves tens of thousands of
/// rows a second. A second thread added cross-thread wakeups (14% more CPU per row in the
/// benchmark). A multi-thread runtime with one worker thread measured the same CPU and memory as
/// this one, within the benchmark's scatter; this one has a single thread to reason about. More
/// throughput comes from more worker processes.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        // The multi-thread runtime reads the thread count from the variable itself.
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Every command signs AWS calls: a credential variable that cannot sign (a secret file's
    // trailing newline) stops here, named, rather than failing each call later.
    if let Err(e) =
        scanfleet::aws::direct::check_credential_variables(|name| std::env::var_os(name))
    {
        eprintln!("scanfleet: configuration: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = runtime().expect("the tokio runtime starts");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Worker => cli::worker::run(settings).await,
            Command::Enqueue(args) => cli::enqueue::run(settings, args).await,
            Command::Status(args) => cli::status::run(settings, args).await,
            Command::Reconcile(args) => cli::reconcile::run(settings, args).await,
            Command::Plan(args) => cli::plan::run(settings, args).await,
            Command::Ledger { command } => cli::ledger::run(settings, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("scanfleet: {}", scanfleet::error_chain(e));
    ExitCode::FAILURE
}

/// mimalloc asks the kernel for transparent huge pages on its arenas, and every 2 MiB huge page
/// it touches is resident in full: that alone put a worker at 73 MiB instead of 50 MiB in the
/// benchmark, for no measurable CPU gain. `PR_SET_THP_DISABLE` turns them off for this process
/// (whatever the host's THP setting), and applies to later faults in existing mappings too.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// mimalloc: the SDK allocates heavily per request (JSON, headers, signing); glibc's malloc
// spent about a quarter of the worker's CPU in the benchmark profile (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
