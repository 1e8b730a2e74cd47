//! deploy/aws/scanfleet.yaml on a running emulator: the stack is created with only `TableName`
//! given, and a whole job with a ledger runs on exactly its outputs (real `scanfleet`
//! processes; see tests/emulator.rs for how `make test` runs them). Without an endpoint this
//! test fails: it never passes by skipping.
//!
//! The first test's stack keeps the template's default queue and ledger names
//! (`scanfleet-control`, …), so it is the only one here that may: two stacks with the defaults
//! cannot live in one account. The second names everything itself.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use common::{BINARY, Fixture, plain_key, scaled, wait_for};
use scanfleet::devkit::{self, Aws, Queues};

const TEMPLATE: &str = include_str!("../deploy/aws/scanfleet.yaml");

/// Every output the template declares, and the optional one left out without its parameter.
const OUTPUTS: [&str; 7] = [
    "ControlQueueUrl",
    "OutputQueueUrl",
    "DeadLetterQueueUrl",
    "LedgerTable",
    "WorkerRoleArn",
    "OperatorPolicyArn",
    "DefaultTable",
];

/// Polls the stack every 200 ms until it leaves `*_IN_PROGRESS`; its last description.
async fn settle(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> aws_sdk_cloudformation::types::Stack {
    let start = Instant::now();
    loop {
        let out = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .expect("DescribeStacks");
        let s = out
            .stacks
            .unwrap_or_default()
            .into_iter()
            .next()
            .expect("the stack");
        let status = s
            .stack_status()
            .expect("a stack status")
            .as_str()
            .to_owned();
        if !status.ends_with("_IN_PROGRESS") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "stack {stack} still {status} after 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stack's events, newest first, one line each (for a failure message).
async fn events(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> String {
    let out = cfn.describe_stack_events().stack_name(stack).send().await;
    out.map(|o| {
        o.stack_events
            .unwrap_or_default()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.logical_resource_id().unwrap_or_default(),
                    e.resource_status().map(|s| s.as_str()).unwrap_or_default(),
                    e.resource_status_reason().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_else(|e| format!("(no events: {e})"))
}

/// Deletes the stack when dropped, so a failed assertion does not leave its fixed-name queues
/// and table behind for the next run on the same emulator.
struct DeleteOnDrop {
    cfn: aws_sdk_cloudformation::Client,
    stack: String,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let (cfn, stack) = (self.cfn.clone(), self.stack.clone());
        // Drop runs inside the test's runtime, which cannot block on a future: a runtime of
        // its own on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let _ = cfn.delete_stack().stack_name(&stack).send().await;
            });
        })
        .join();
    }
}

/// Creates the stack with `parameters`, waits for CREATE_COMPLETE (the events in the message
/// otherwise), and returns its outputs and the guard that deletes it.
async fn create_stack(
    stack: &str,
    parameters: &[(&str, &str)],
) -> (HashMap<String, String>, DeleteOnDrop) {
    let cfn = aws_sdk_cloudformation::Client::new(&scanfleet::aws::config().await);
    let mut create = cfn
        .create_stack()
        .stack_name(stack)
        .template_body(TEMPLATE)
        .capabilities(Capability::CapabilityNamedIam);
    for (k, v) in parameters {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(*v)
                .build(),
        );
    }
    create.send().await.expect("CreateStack");
    let guard = DeleteOnDrop {
        cfn: cfn.clone(),
        stack: stack.to_owned(),
    };
    let created = settle(&cfn, stack).await;
    assert_eq!(
        created.stack_status(),
        Some(&StackStatus::CreateComplete),
        "stack {stack}: {:?} {:?}\n{}",
        created.stack_status(),
        created.stack_status_reason(),
        events(&cfn, stack).await
    );
    let outputs = created
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect();
    (outputs, guard)
}

async fn queue_attribute(aws: &Aws, url: &str, name: QueueAttributeName) -> String {
    scanfleet::aws::sqs::queue_attribute(&aws.sqs, url, name.clone())
        .await
        .expect("GetQueueAttributes")
        .unwrap_or_else(|| panic!("queue {url} has no {name:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_a_ledger_runs_on_the_stacks_outputs() {
    common::endpoint();
    let rows = scaled(600, 200);
    let aws = Aws::from_env().await;
    let table = devkit::unique_name("stack");
    devkit::create_table(&aws, &table)
        .await
        .expect("create table");
    let keys = devkit::seed(&aws, &table, rows, 200)
        .await
        .expect("seed table");

    // The stack, with only TableName given.
    let stack = table.clone();
    let (outputs, guard) = create_stack(&stack, &[("TableName", &table)]).await;
    for key in OUTPUTS {
        assert!(
            outputs.get(key).is_some_and(|v| !v.is_empty()),
            "output {key} missing: {outputs:?}"
        );
    }
    assert!(
        !outputs.contains_key("OversizeQueueUrl"),
        "an oversize queue without CreateOversizeQueue: {outputs:?}"
    );
    assert_eq!(outputs["DefaultTable"], table);
    assert!(outputs["WorkerRoleArn"].contains(":role/"), "{outputs:?}");
    assert!(
        outputs["OperatorPolicyArn"].contains(":policy/"),
        "{outputs:?}"
    );
    let queues = Queues {
        control: outputs["ControlQueueUrl"].clone(),
        dlq: outputs["DeadLetterQueueUrl"].clone(),
        output: outputs["OutputQueueUrl"].clone(),
    };
    let ledger = outputs["LedgerTable"].clone();

    // The control queue dead-letters to the stack's DLQ, after the default 5 receives.
    let redrive: serde_json::Value = serde_json::from_str(
        &queue_attribute(&aws, &queues.control, QueueAttributeName::RedrivePolicy).await,
    )
    .expect("RedrivePolicy is JSON");
    let dlq_arn = queue_attribute(&aws, &queues.dlq, QueueAttributeName::QueueArn).await;
    assert_eq!(
        redrive["deadLetterTargetArn"],
        dlq_arn.as_str(),
        "{redrive}"
    );
    // A string in ministack's answer, a number in moto's.
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5",
        "{redrive}"
    );

    // The ledger table has the key schema `scanfleet ledger create` makes, and that command
    // takes the stack's table as its own.
    let described = aws
        .dynamodb
        .describe_table()
        .table_name(&ledger)
        .send()
        .await
        .expect("DescribeTable of the ledger");
    let key_schema: Vec<(String, String)> = described
        .table()
        .map(|t| t.key_schema())
        .unwrap_or_default()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        key_schema,
        [
            ("job_id".to_owned(), "HASH".to_owned()),
            ("item".to_owned(), "RANGE".to_owned())
        ]
    );
    let logs = std::env::temp_dir().join("scanfleet-it").join(&table);
    std::fs::create_dir_all(&logs).unwrap();
    let f = Fixture {
        aws,
        table,
        queues,
        keys,
        logs,
    };
    let env = |cmd: &mut std::process::Command| {
        cmd.env("SCANFLEET__CONTROL__QUEUE_URL", &f.queues.control)
            .env("SCANFLEET__LEDGER__TABLE", &ledger);
    };
    let mut create = std::process::Command::new(BINARY);
    create.args(["ledger", "create"]);
    env(&mut create);
    let out = create.output().expect("ledger create");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("already exists"),
        "ledger create on the stack's table: {:?}",
        out
    );

    // A whole job on those outputs: workers as the overlay configures them, enqueue --wait.
    let settings = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "50"),
    ];
    let workers = [f.worker(&settings), f.worker(&settings)];
    let mut enqueue = std::process::Command::new(BINARY);
    enqueue.args([
        "enqueue",
        "--table",
        &f.table,
        "--segments",
        "4",
        "--limit-of-rows",
        "25",
        "--job-id",
        "stack-job",
        "--wait",
        "--progress-every",
        "1",
    ]);
    env(&mut enqueue);
    let mut child = enqueue
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("enqueue --wait");
    let received = f.drain_output(rows as usize).await;
    let mut exited = None;
    wait_for("enqueue --wait to end", Duration::from_secs(120), || {
        exited = child.try_wait().expect("try_wait");
        exited.is_some()
    })
    .await;
    let mut progress = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut progress).unwrap();
    assert!(
        exited.unwrap().success(),
        "enqueue --wait failed: {progress}"
    );
    let published: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(published, f.expected_keys(), "not every row was published");
    let mut status = std::process::Command::new(BINARY);
    status.args(["status", "stack-job", "--json"]);
    env(&mut status);
    let out = status.output().expect("status");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["rows_published"], rows, "the ledger's count differs: {s}");
    for w in &workers {
        assert!(
            !w.log_text().contains("no redrive policy"),
            "a worker found no redrive policy on the stack's control queue"
        );
    }

    f.wait_for_depth(&f.queues.control, 0).await;
    assert_eq!(f.depth(&f.queues.dlq).await, 0, "tasks were dead-lettered");
    drop(workers);
    let cfn = guard.cfn.clone();
    drop(guard);
    let _ = f
        .aws
        .dynamodb
        .delete_table()
        .table_name(&f.table)
        .send()
        .await;
    // Deleted: DescribeStacks names it no more (moto, ministack) or says DELETE_COMPLETE (AWS).
    let start = Instant::now();
    loop {
        match cfn.describe_stacks().stack_name(&stack).send().await {
            Err(_) => break,
            Ok(out) => {
                let status = out
                    .stacks()
                    .first()
                    .and_then(|s| s.stack_status())
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                if status == "DELETE_COMPLETE" {
                    break;
                }
                assert!(
                    !status.ends_with("_FAILED") && start.elapsed() < Duration::from_secs(120),
                    "stack {stack} not deleted: {status}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_optional_resources_and_settings_follow_their_parameters() {
    common::endpoint();
    let aws = Aws::from_env().await;
    // Names of its own, so this stack and the other test's (the defaults) live side by side.
    let name = devkit::unique_name("opts");
    let [control, dlq, output, oversize, ledger] =
        ["control", "dlq", "rows", "oversize", "ledger"].map(|n| format!("{name}-{n}"));
    let (outputs, _guard) = create_stack(
        &name,
        &[
            ("TableName", "orders"),
            ("AllowedTable1", "customers"),
            ("AllowedTable2", "refunds"),
            ("LedgerTableName", &ledger),
            ("ControlQueueName", &control),
            ("DeadLetterQueueName", &dlq),
            ("OutputQueueName", &output),
            ("CreateOversizeQueue", "true"),
            ("OversizeQueueName", &oversize),
            ("MaxReceiveCount", "7"),
            ("ControlQueueVisibilityTimeout", "120"),
            (
                "EksOidcProvider",
                "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE",
            ),
            ("EksPodIdentity", "true"),
            (
                "TrustedPrincipalArn",
                "arn:aws:iam::123456789012:role/keda-operator",
            ),
        ],
    )
    .await;
    assert_eq!(
        outputs.get("AllowedTables").map(String::as_str),
        Some("customers,refunds")
    );
    assert_eq!(outputs.get("LedgerTable"), Some(&ledger));
    let url = |key: &str| {
        outputs
            .get(key)
            .unwrap_or_else(|| panic!("output {key} missing: {outputs:?}"))
            .clone()
    };
    for (key, queue) in [
        ("ControlQueueUrl", &control),
        ("DeadLetterQueueUrl", &dlq),
        ("OutputQueueUrl", &output),
        ("OversizeQueueUrl", &oversize),
    ] {
        let arn = queue_attribute(&aws, &url(key), QueueAttributeName::QueueArn).await;
        assert!(arn.ends_with(&format!(":{queue}")), "{key}: {arn}");
    }
    let control_url = url("ControlQueueUrl");
    let redrive: serde_json::Value = serde_json::from_str(
        &queue_attribute(&aws, &control_url, QueueAttributeName::RedrivePolicy).await,
    )
    .expect("RedrivePolicy is JSON");
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "7",
        "{redrive}"
    );
    assert_eq!(
        queue_attribute(&aws, &control_url, QueueAttributeName::VisibilityTimeout).await,
        "120"
    );
}
