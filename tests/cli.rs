//! The binary's start-up contract, without AWS: bad configuration stops it with one clear line.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_scanfleet");

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BINARY);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scanfleet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run`] for a command that would run on (a worker that started): killed after a minute, and
/// then reported as a failure of the test rather than hanging it.
fn run_bounded(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BINARY);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("run scanfleet");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("wait for scanfleet");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill with a pid of our own child and a signal number touches no memory.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("scanfleet {args:?} was still running after 60 s (it started)");
        }
    }
}

#[test]
fn worker_without_configuration_names_the_missing_key() {
    let (ok, err) = run(&["worker"], &[]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("control.queue_url") && err.contains("SCANFLEET__CONTROL__QUEUE_URL"),
        "{err}"
    );
}

#[test]
fn invalid_values_are_named_at_start_up() {
    let base = [
        ("SCANFLEET__CONTROL__QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SCANFLEET__OUTPUT__QUEUE_URL", "http://127.0.0.1:1/o"),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "items"),
    ];
    for (key, value, named) in [
        (
            "SCANFLEET__WORKER__CONCURRENCY",
            "zero",
            "worker.concurrency",
        ),
        (
            "SCANFLEET__CONTROL__WAIT_TIME_SECONDS",
            "60",
            "control.wait_time_seconds",
        ),
        ("SCANFLEET__OUTPUT__FORMAT", "csv", "output.format"),
    ] {
        let mut env = base.to_vec();
        env.push((key, value));
        let (ok, err) = run(&["worker"], &env);
        assert!(!ok, "{key}={value} accepted");
        assert!(err.contains(named), "{key}={value}: {err}");
    }
    let (ok, err) = run(&["worker", "--config", "/nonexistent.toml"], &base);
    assert!(!ok && err.contains("--config"), "{err}");
}

#[test]
fn enqueue_refuses_an_invalid_job_before_touching_aws() {
    let env = [("SCANFLEET__CONTROL__QUEUE_URL", "http://127.0.0.1:1/q")];
    let (ok, err) = run(&["enqueue", "--table", "items", "--segments", "0"], &env);
    assert!(!ok);
    assert!(err.contains("total_segments"), "{err}");
}

#[test]
fn enqueue_refuses_a_read_budget_that_is_not_a_number() {
    // JSON has no NaN or infinity: sent, they would arrive as null, a job with no budget.
    let env = [("SCANFLEET__CONTROL__QUEUE_URL", "http://127.0.0.1:1/q")];
    for bad in ["NaN", "inf", "-inf", "infinity"] {
        let budget = format!("--read-units-per-second={bad}");
        let (ok, err) = run(
            &["enqueue", "--table", "items", "--segments", "2", &budget],
            &env,
        );
        assert!(!ok, "--read-units-per-second {bad} accepted");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--read-units-per-second"), "{bad}: {err}");
    }
}

#[test]
fn a_credential_variable_with_a_trailing_newline_stops_start_up_naming_it() {
    let env = [
        ("SCANFLEET__CONTROL__QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SCANFLEET__OUTPUT__QUEUE_URL", "http://127.0.0.1:1/o"),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "items"),
        ("SCANFLEET__METRICS__LISTEN", "127.0.0.1:0"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n",
        ),
    ];
    let (ok, err) = run_bounded(&["worker"], &env);
    assert!(!ok, "started: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("line break at the end"),
        "{err}"
    );
    assert!(!err.contains("wJalr"), "the secret is printed: {err}");
}

#[test]
fn plan_refuses_zero_workers() {
    // It used to print "0 workers" and compute with 1; `enqueue --progress-every 0` likewise
    // became 1.
    for args in [
        &["plan", "--table", "items", "--workers", "0"][..],
        &[
            "enqueue",
            "--table",
            "items",
            "--segments",
            "1",
            "--wait",
            "--progress-every",
            "0",
        ][..],
    ] {
        refused_with_zero(args);
    }
}

fn refused_with_zero(args: &[&str]) {
    let out = Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Should it get as far as AWS, it fails at once here, without the network.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .output()
        .expect("run scanfleet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    let flag = args[args.len() - 2];
    assert!(
        err.contains(flag) && err.contains("'0'") && err.contains("1.."),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_usage_error_is_clap_s_message_with_status_2_any_other_error_one_line_with_1() {
    // As the README says: clap's several lines and exit status 2 for the command line...
    for args in [
        &["enqueue", "--table", "items"][..],
        &["no-such-command"],
        &["status"],
        &["plan", "--table", "items", "--workers", "x"],
        &[],
    ] {
        let out = Command::new(BINARY)
            .args(args)
            .env_clear()
            .output()
            .expect("run scanfleet");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") || args.is_empty(),
            "{args:?}: {err}"
        );
        assert!(err.contains("--help"), "{args:?}: {err}");
        assert!(err.lines().count() > 1, "{args:?}: {err}");
    }
    // ...and one `scanfleet:` line with exit status 1 for an error past it.
    let out = Command::new(BINARY)
        .args(["enqueue", "--table", "items", "--segments", "2"])
        .env_clear()
        .output()
        .expect("run scanfleet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("scanfleet: "), "{err}");
}
