//! Signatures and IAM, checked: every command and the worker (with the `direct` and the `sdk`
//! clients) on temporary role credentials from `sts:AssumeRole` (a session token, as IRSA
//! gives), under the project's own least-privilege policy (`deploy/iam-policy.json`), against
//! moto in auth mode, which recomputes each request's SigV4 signature and evaluates the
//! caller's IAM policies. And the controls that must fail: a wrong secret, a wrong session
//! token, a policy without `sqs:SendMessage` on the output queue.
//!
//! `make test` runs them (scripts/test.sh) against `scripts/emulator.sh start moto-auth`, as
//! the admin user that script creates (its key in `.run/moto-auth.admin`); by hand:
//!
//! ```text
//! url=$(scripts/emulator.sh start moto-auth); read -r key secret < .run/moto-auth.admin
//! env AWS_ENDPOINT_URL=$url AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=$key \
//!   AWS_SECRET_ACCESS_KEY=$secret NO_PROXY=127.0.0.1 SCANFLEET_TEST_EMULATOR=moto \
//!   cargo test --test auth
//! ```
//!
//! The test process's own credentials (the admin's) set up and inspect queues, tables and IAM;
//! every `scanfleet` process it starts gets role credentials in its environment instead.
//! Without moto in auth mode these tests fail (each checks that a bad signature is refused).

mod common;

use std::process::Output;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use common::{BINARY, Fixture, plain_key, wait_for};
use http_body_util::BodyExt;
use scanfleet::devkit::{self, WorkerProcess};
use serde_json::{Value, json};

const REGION: &str = "us-east-1";
/// The tests' roles are named `<this>-<8 hex>`.
const ROLE_PREFIX: &str = "scanfleet-role";

/// An access key: a user's (no token) or a role session's (with its session token).
#[derive(Clone)]
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

impl Keys {
    /// The environment a `scanfleet` process gets to sign with these keys (and only these:
    /// without a token, an inherited `AWS_SESSION_TOKEN` is removed, see [`run`]).
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", self.id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ];
        if let Some(token) = &self.token {
            env.push(("AWS_SESSION_TOKEN", token.clone()));
        }
        env
    }
}

/// The admin's keys: the test process's own (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
fn admin() -> Credentials {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    Credentials::new(
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "admin",
    )
}

/// Form encoding of a query-API parameter value (RFC 3986 unreserved characters kept).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text between `<tag>` and `</tag>` in an XML answer.
fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect("closed") + start;
    xml[start..end].to_owned()
}

/// One call of IAM's query API as the admin, signed with `aws-sigv4` (the project's own
/// signing dependency); returns the XML answer, panicking on any other status than 200.
///
/// Why not `aws-sdk-iam`: it would be a new, large crate to download and compile (IAM has
/// about 170 operations) for five calls of a test; STS, which `aws-config` already builds,
/// is used through its SDK (see [`assume_role`]).
async fn iam(action: &str, params: &[(&str, &str)]) -> String {
    let url = format!("{}/", common::endpoint().trim_end_matches('/'));
    let mut body = format!("Action={action}&Version=2010-05-08");
    for (k, v) in params {
        body.push_str(&format!("&{k}={}", form_encode(v)));
    }
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut request = http::Request::post(&url)
        .header("host", &host)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body.clone())
        .unwrap();
    let identity = Identity::from(admin());
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("iam")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    let request = aws_smithy_runtime_api::http::Request::try_from(request.map(SdkBody::from))
        .expect("a valid request");
    let connector = scanfleet::aws::transport::Transport::new().calls();
    let response = connector.call(request).await.expect("IAM answers");
    let status = response.status().as_u16();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(status, 200, "IAM {action}: {text}");
    text
}

/// A new IAM user with an access key: its ARN and its keys.
async fn user() -> (String, Keys) {
    let name = devkit::unique_name("worker-user");
    let arn = xml_field(&iam("CreateUser", &[("UserName", &name)]).await, "Arn");
    // It may assume the tests' roles. (On AWS a same-account trust policy naming the user
    // would be enough; moto also wants the user's own policy to allow it, as across accounts.)
    let account = arn.split(':').nth(4).expect("account id");
    let may_assume = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": format!("arn:aws:iam::{account}:role/{ROLE_PREFIX}-*")
        }]
    });
    iam(
        "PutUserPolicy",
        &[
            ("UserName", &name),
            ("PolicyName", "assume-the-test-roles"),
            ("PolicyDocument", &may_assume.to_string()),
        ],
    )
    .await;
    let key = iam("CreateAccessKey", &[("UserName", &name)]).await;
    let keys = Keys {
        id: xml_field(&key, "AccessKeyId"),
        secret: xml_field(&key, "SecretAccessKey"),
        token: None,
    };
    (arn, keys)
}

/// A new role that `user_arn` may assume, with `policy` as its one inline policy; its ARN.
/// (moto matches the trust policy's principal by the user's ARN, not by an account's root.)
async fn role(user_arn: &str, policy: &Value) -> String {
    let name = devkit::unique_name(ROLE_PREFIX);
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": user_arn},
            "Action": "sts:AssumeRole"
        }]
    });
    let created = iam(
        "CreateRole",
        &[
            ("RoleName", &name),
            ("AssumeRolePolicyDocument", &trust.to_string()),
        ],
    )
    .await;
    iam(
        "PutRolePolicy",
        &[
            ("RoleName", &name),
            ("PolicyName", "scanfleet"),
            ("PolicyDocument", &policy.to_string()),
        ],
    )
    .await;
    xml_field(&created, "Arn")
}

/// An STS client signing with `keys`.
async fn sts(keys: &Keys) -> aws_sdk_sts::Client {
    let sdk = scanfleet::aws::config().await;
    let config = aws_sdk_sts::config::Builder::from(&sdk)
        .credentials_provider(Credentials::new(
            &keys.id,
            &keys.secret,
            keys.token.clone(),
            None,
            "test",
        ))
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

/// Temporary credentials for `role_arn`, from `sts:AssumeRole` called with `user`'s keys.
async fn assume_role(user: &Keys, role_arn: &str) -> Keys {
    let out = sts(user)
        .await
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("scanfleet-test")
        .send()
        .await
        .expect("AssumeRole");
    let c = out.credentials.expect("AssumeRole returned credentials");
    assert!(c.access_key_id.starts_with("ASIA"), "{}", c.access_key_id);
    Keys {
        id: c.access_key_id,
        secret: c.secret_access_key,
        token: Some(c.session_token),
    }
}

/// The names filling `deploy/iam-policy.json`'s placeholders.
struct Names {
    account: String,
    table: String,
    ledger: String,
    control: String,
    output: String,
}

/// `deploy/iam-policy.json` with its placeholders filled in, exactly as an operator would.
fn worker_policy(names: &Names) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/iam-policy.json");
    let text = std::fs::read_to_string(path).expect("deploy/iam-policy.json");
    let placeholders = [
        ("REGION", REGION),
        ("ACCOUNT_ID", &names.account),
        ("DEFAULT_TABLE", &names.table),
        // No other table is scanned here: a name no table has.
        ("ALLOWED_TABLE", "no-such-table"),
        ("CONTROL_QUEUE", &names.control),
        ("OUTPUT_QUEUE", &names.output),
        ("OVERSIZE_QUEUE", "no-such-queue"),
        ("LEDGER_TABLE", &names.ledger),
    ];
    let filled = placeholders
        .iter()
        .fold(text, |t, (from, to)| t.replace(from, to));
    for (from, _) in placeholders {
        assert!(!filled.contains(from), "{from} left in the policy");
    }
    serde_json::from_str(&filled).expect("the policy is JSON")
}

/// The permissions the README lists for the operator's commands (`enqueue`, `--wait`,
/// `status`, `reconcile`, `ledger create`), scoped as on AWS.
fn operator_policy(names: &Names) -> Value {
    let table = |t: &str| format!("arn:aws:dynamodb:{REGION}:{}:table/{t}", names.account);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EnqueueAndReconcile",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                "Resource": format!("arn:aws:sqs:{REGION}:{}:{}", names.account, names.control)
            },
            {
                "Sid": "TheJobLedger",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:PutItem",
                    "dynamodb:GetItem", "dynamodb:Query"
                ],
                "Resource": table(&names.ledger)
            },
            {
                "Sid": "ProbeExpressionsAndPlan",
                "Effect": "Allow",
                "Action": ["dynamodb:DescribeTable", "dynamodb:Scan"],
                "Resource": table(&names.table)
            }
        ]
    })
}

/// `policy` as moto can evaluate it, bridging its two known departures from AWS (here, in
/// the test, never in the product or in `deploy/`):
/// - moto authorises `SendMessageBatch`, `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`
///   under those names, where AWS authorises each under its single-message action: each
///   single-message action granted gets its batch name beside it, on the same resources;
/// - moto evaluates every DynamoDB call against resource `*`, so a table-scoped statement
///   never matches there: DynamoDB statements get `*` (their actions unchanged).
fn for_moto(mut policy: Value) -> Value {
    for statement in policy["Statement"].as_array_mut().expect("statements") {
        let actions: Vec<String> = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
            other => panic!("Action {other}"),
        };
        let mut bridged = actions.clone();
        for single in [
            "sqs:SendMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
        ] {
            if actions.iter().any(|a| a == single) {
                bridged.push(format!("{single}Batch"));
            }
        }
        statement["Action"] = json!(bridged);
        if actions.iter().any(|a| a.starts_with("dynamodb:")) {
            assert!(
                actions.iter().all(|a| a.starts_with("dynamodb:")),
                "a statement mixing services: {statement}"
            );
            statement["Resource"] = json!("*");
        }
    }
    policy
}

/// A fixture (table of `rows` rows, queues), a ledger table's name, an IAM user and the
/// account id; checks first that moto is in auth mode.
struct Auth {
    f: Fixture,
    ledger: String,
    user_arn: String,
    user: Keys,
    account: String,
}

impl Auth {
    async fn new(rows: u64, max_receive_count: u32) -> Self {
        let f = Fixture::new(rows, max_receive_count).await;
        // Not in auth mode, every test here would pass for nothing: a bad signature must fail.
        let mut wrong = admin_keys();
        wrong.secret.push('x');
        let refused = sts(&wrong)
            .await
            .get_caller_identity()
            .send()
            .await
            .unwrap_err();
        // moto answers an auth failure in EC2's XML error shape, which no SDK parser of these
        // services reads (the code is `None`): the code is looked for in the raw answer.
        assert!(
            format!("{refused:?}").contains("<Code>SignatureDoesNotMatch</Code>"),
            "moto is not checking signatures (start it with `scripts/emulator.sh start moto-auth`): {refused:?}"
        );
        let ledger = format!("{}-ledger", f.table);
        let (user_arn, user) = user().await;
        // "arn:aws:iam::123456789012:user/NAME"
        let account = user_arn.split(':').nth(4).expect("account id").to_owned();
        Auth {
            f,
            ledger,
            user_arn,
            user,
            account,
        }
    }

    fn names(&self) -> Names {
        // A queue's name is its URL's last segment.
        let name = |url: &str| url.rsplit('/').next().unwrap().to_owned();
        Names {
            account: self.account.clone(),
            table: self.f.table.clone(),
            ledger: self.ledger.clone(),
            control: name(&self.f.queues.control),
            output: name(&self.f.queues.output),
        }
    }

    /// Role credentials under `policy` (bridged for moto).
    async fn role_keys(&self, policy: Value) -> Keys {
        let arn = role(&self.user_arn, &for_moto(policy)).await;
        assume_role(&self.user, &arn).await
    }

    /// A worker on the fixture signing with `keys`, plus `settings`.
    fn worker(&self, keys: &Keys, settings: &[(&str, &str)]) -> WorkerProcess {
        let env = keys.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if keys.token.is_none() {
            all.push(("AWS_SESSION_TOKEN", ""));
        }
        all.push(("SCANFLEET__LEDGER__TABLE", &self.ledger));
        all.extend_from_slice(settings);
        self.f.worker(&all)
    }

    async fn cleanup(self) {
        let _ = self
            .f
            .aws
            .dynamodb
            .delete_table()
            .table_name(&self.ledger)
            .send()
            .await;
        self.f.cleanup().await;
    }
}

fn admin_keys() -> Keys {
    let c = admin();
    Keys {
        id: c.access_key_id().to_owned(),
        secret: c.secret_access_key().to_owned(),
        token: None,
    }
}

fn ledger_env(table: &str) -> (&'static str, String) {
    ("SCANFLEET__LEDGER__TABLE", table.to_owned())
}

/// Runs `scanfleet ARGS` to its end with the fixture's control queue, signing with `keys`.
fn run(f: &Fixture, args: &[&str], keys: &Keys, env: &[(&str, String)]) -> Output {
    let mut cmd = std::process::Command::new(BINARY);
    cmd.args(args)
        .env("SCANFLEET__CONTROL__QUEUE_URL", &f.queues.control)
        .env_remove("AWS_SESSION_TOKEN");
    for (k, v) in keys.env().iter().chain(env) {
        cmd.env(k, v);
    }
    cmd.output().expect("run scanfleet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What moto answers a request it refuses with: its codes, and the status as scanfleet's
/// error messages name it (a message id can hold "403").
const REFUSALS: [&str; 4] = [
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "HTTP 403",
];

/// `text` (a process's log) shows no refusal and no warning or error at all: a refusal the
/// SDK could not read (moto's XML answer, see `Auth::new`) has no code in its text, but any
/// failed call is logged as a warning or an error.
fn assert_no_refusal(what: &str, text: &str) {
    for refusal in REFUSALS {
        assert!(!text.contains(refusal), "{what} was refused: {text}");
    }
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(complaints.is_empty(), "{what} complained: {complaints:#?}");
}

/// The worker's error counters, all of which must stay 0 when every request is accepted.
const ERROR_METRICS: [&str; 8] = [
    "scanfleet_receive_errors_total",
    "scanfleet_heartbeat_errors_total",
    "scanfleet_ack_errors_total",
    "scanfleet_ledger_errors_total",
    "scanfleet_tasks_failed_total",
    "scanfleet_tasks_rejected_total",
    "scanfleet_publish_retries_total",
    "scanfleet_scan_retries_total",
];

/// The whole job on role credentials: `ledger create`, a worker (with `client` for both its
/// hot calls), `enqueue --wait`, `status`, `reconcile`; every request accepted.
async fn a_whole_job_runs_on_role_credentials(client: &str) {
    let rows = 90;
    let a = Auth::new(rows, 5).await;
    let names = a.names();
    let worker_keys = a.role_keys(worker_policy(&names)).await;
    let operator = a.role_keys(operator_policy(&names)).await;
    let ledger = [ledger_env(&a.ledger)];

    let out = run(&a.f, &["ledger", "create"], &operator, &ledger);
    assert!(out.status.success(), "ledger create: {}", stderr(&out));
    assert!(stdout(&out).contains("created ledger table"), "{out:?}");
    assert_no_refusal("ledger create", &stderr(&out));

    // Chunks of 20 rows: continuations go out on the control queue too.
    let w = a.worker(
        &worker_keys,
        &[
            ("SCANFLEET__SCAN__CLIENT", client),
            ("SCANFLEET__OUTPUT__CLIENT", client),
            ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "20"),
        ],
    );
    let job = format!("auth-{client}");
    let out = run(
        &a.f,
        &[
            "enqueue",
            "--table",
            &a.f.table,
            "--segments",
            "3",
            "--limit-of-rows",
            "10",
            "--job-id",
            &job,
            "--wait",
            "--progress-every",
            "1",
        ],
        &operator,
        &ledger,
    );
    assert!(
        out.status.success(),
        "enqueue --wait: {}\nworker: {}",
        stderr(&out),
        w.log_text()
    );
    assert_eq!(stdout(&out), job);
    assert_no_refusal("enqueue --wait", &stderr(&out));

    let received = a.f.drain_output(rows as usize).await;
    let keys: std::collections::HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(keys, a.f.expected_keys(), "rows were lost");

    let out = run(&a.f, &["status", &job, "--json"], &operator, &ledger);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_published"], rows, "{status}");
    assert!(status["chunks"].as_u64().unwrap() > 3, "{status}");

    let out = run(&a.f, &["reconcile", &job], &operator, &ledger);
    assert!(out.status.success(), "reconcile: {}", stderr(&out));
    assert!(
        stdout(&out).ends_with("\nnothing to reconcile: every segment is done"),
        "{}",
        stdout(&out)
    );
    assert_no_refusal("reconcile", &stderr(&out));

    let metrics = w.metrics().expect("the worker's /metrics");
    assert_eq!(
        devkit::metric_sum(&metrics, "scanfleet_rows_published_total", ""),
        rows as f64
    );
    // Present once the worker read the control queue's counts (`GetQueueAttributes`).
    assert!(
        metrics.contains("scanfleet_control_queue_messages "),
        "{metrics}"
    );
    for metric in ERROR_METRICS {
        assert_eq!(
            devkit::metric_sum(&metrics, metric, ""),
            0.0,
            "{metric}: {}",
            w.log_text()
        );
    }
    assert_no_refusal("the worker", &w.log_text());
    drop(w);
    a.f.wait_for_depth(&a.f.queues.control, 0).await;
    assert_eq!(a.f.depth(&a.f.queues.dlq).await, 0);
    a.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_job_runs_on_role_credentials_with_the_direct_clients() {
    a_whole_job_runs_on_role_credentials("direct").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_job_runs_on_role_credentials_with_the_sdk_clients() {
    a_whole_job_runs_on_role_credentials("sdk").await;
}

/// A wrong secret, or a wrong session token, on role credentials: `enqueue` fails naming
/// moto's refusal and sends nothing; a worker receives nothing (the task stays on the control
/// queue) and counts its failed receives; the direct client's `Scan` is refused with the code.
/// With the keys right, the same calls are accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_or_session_token_is_refused() {
    let a = Auth::new(10, 5).await;
    let names = a.names();
    let operator = a.role_keys(operator_policy(&names)).await;
    let worker_keys = a.role_keys(worker_policy(&names)).await;
    let wrong_secret = |k: &Keys| Keys {
        secret: format!("{}x", k.secret),
        ..k.clone()
    };
    let wrong_token = |k: &Keys| Keys {
        token: Some(format!("{}x", k.token.as_deref().unwrap())),
        ..k.clone()
    };
    a.f.send_task(r#"{"segment":0,"total_segments":1}"#).await;
    for (what, code, operator, worker) in [
        (
            "a wrong secret",
            "SignatureDoesNotMatch",
            wrong_secret(&operator),
            wrong_secret(&worker_keys),
        ),
        (
            "a wrong session token",
            "InvalidClientTokenId",
            wrong_token(&operator),
            wrong_token(&worker_keys),
        ),
    ] {
        let out = run(
            &a.f,
            &["enqueue", "--table", &a.f.table, "--segments", "2"],
            &operator,
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(
            stderr(&out).contains(&format!("HTTP 403: {code}")),
            "{what}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{what}: a job id was printed");

        let e = direct_scan(&a.f.table, &worker).await.unwrap_err();
        assert!(
            e.message.starts_with(&format!("{code} (HTTP 403)")),
            "{what}: {}",
            e.message
        );

        let w = a.worker(&worker, &[]);
        wait_for(
            &format!("the worker to fail to receive twice ({what})"),
            Duration::from_secs(60),
            || {
                w.metric("scanfleet_receive_errors_total", "")
                    .unwrap_or(0.0)
                    >= 2.0
            },
        )
        .await;
        assert_eq!(
            w.metric("scanfleet_tasks_received_total", ""),
            Some(0.0),
            "{what}"
        );
        // The SDK cannot read moto's XML refusal (see `Auth::new`): the line says the receive
        // failed, without the code.
        assert!(
            w.log_text().contains("receiving tasks failed"),
            "{what}: {}",
            w.log_text()
        );
        drop(w);
        // Only the test's own task is there: enqueue sent nothing, the worker took nothing.
        assert_eq!(a.f.depth(&a.f.queues.control).await, 1, "{what}");
        assert_eq!(a.f.depth(&a.f.queues.output).await, 0, "{what}");
    }
    // The same keys, right: accepted, so the refusals above were the wrong parts' doing.
    direct_scan(&a.f.table, &worker_keys)
        .await
        .expect("the direct Scan with the right keys");
    let out = run(
        &a.f,
        &["enqueue", "--table", &a.f.table, "--segments", "2"],
        &operator,
        &[],
    );
    assert!(out.status.success(), "enqueue: {}", stderr(&out));
    assert_eq!(a.f.depth(&a.f.queues.control).await, 3);
    a.cleanup().await;
}

/// One `Scan` of `table` (a row) through scanfleet's direct client, signing with `keys`.
async fn direct_scan(table: &str, keys: &Keys) -> Result<(), scanfleet::aws::retry::CallError> {
    use aws_credential_types::provider::SharedCredentialsProvider;
    let sdk = scanfleet::aws::config()
        .await
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            &keys.id,
            &keys.secret,
            keys.token.clone(),
            None,
            "test",
        )))
        .build();
    let endpoint = aws_smithy_types::endpoint::Endpoint::builder()
        .url(common::endpoint())
        .build();
    let client = scanfleet::aws::direct::JsonClient::new(
        &sdk,
        scanfleet::aws::transport::Transport::new().calls(),
        scanfleet::telemetry::Service::Dynamodb,
        REGION.into(),
        Ok(endpoint),
    )
    .expect("a direct client");
    let body = json!({"TableName": table, "Limit": 1}).to_string();
    client
        .call("DynamoDB_20120810.Scan", body.into_bytes())
        .await
        .map(drop)
}

/// The role may not send to the output queue: the rows are scanned but refused, the task is
/// released and received again, nothing is acknowledged (the task stays on the control queue,
/// nothing reaches the output queue or the DLQ, the ledger counts no chunk), and the failure is
/// logged with AWS's error code.
async fn without_send_message_on_the_output_queue_nothing_is_acknowledged(client: &str) {
    let a = Auth::new(10, 50).await;
    let names = a.names();
    let mut policy = worker_policy(&names);
    let output_arn = format!("arn:aws:sqs:{REGION}:{}:{}", names.account, names.output);
    let publish = policy["Statement"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["Sid"] == "PublishRowsAndOversizeRecords")
        .expect("the statement that grants sending rows");
    let resources = publish["Resource"].as_array_mut().unwrap();
    let before = resources.len();
    resources.retain(|r| r != &json!(output_arn));
    assert_eq!(resources.len(), before - 1, "{policy}");
    let worker_keys = a.role_keys(policy).await;
    let operator = a.role_keys(operator_policy(&names)).await;
    let ledger = [ledger_env(&a.ledger)];
    let out = run(&a.f, &["ledger", "create"], &operator, &ledger);
    assert!(out.status.success(), "ledger create: {}", stderr(&out));
    let job = format!("denied-{client}");
    let out = run(
        &a.f,
        &[
            "enqueue",
            "--table",
            &a.f.table,
            "--segments",
            "1",
            "--job-id",
            &job,
        ],
        &operator,
        &ledger,
    );
    assert!(out.status.success(), "enqueue: {}", stderr(&out));

    let w = a.worker(
        &worker_keys,
        &[
            ("SCANFLEET__SCAN__CLIENT", client),
            ("SCANFLEET__OUTPUT__CLIENT", client),
        ],
    );
    // Failed, released, received again and failed again.
    wait_for("the task to fail twice", Duration::from_secs(60), || {
        w.metric("scanfleet_tasks_failed_total", "").unwrap_or(0.0) >= 2.0
    })
    .await;
    let log = w.log_text();
    let failure = log
        .lines()
        .find(|l| l.contains("task failed; released for a retry"))
        .expect("a failure logged");
    // moto names the action it authorised the call under (`for_moto`).
    assert!(
        failure.contains("AccessDenied")
            && failure.contains("is not authorized to perform: sqs:SendMessageBatch"),
        "{failure}"
    );
    for metric in [
        "scanfleet_tasks_completed_total",
        "scanfleet_checkpoints_total",
        "scanfleet_rows_published_total",
    ] {
        assert_eq!(w.metric(metric, ""), Some(0.0), "{metric}: {log}");
    }
    assert!(w.metric("scanfleet_rows_scanned_total", "").unwrap() > 0.0);
    drop(w);
    assert_eq!(a.f.depth(&a.f.queues.control).await, 1, "the task is gone");
    assert_eq!(a.f.depth(&a.f.queues.output).await, 0);
    assert_eq!(a.f.depth(&a.f.queues.dlq).await, 0);
    let out = run(&a.f, &["status", &job, "--json"], &operator, &ledger);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert_eq!(status["chunks"], 0, "{status}");
    assert_eq!(status["rows_published"], 0, "{status}");
    assert_eq!(status["segments_done"], 0, "{status}");
    a.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_send_message_on_the_output_queue_the_direct_client_acknowledges_nothing() {
    without_send_message_on_the_output_queue_nothing_is_acknowledged("direct").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_send_message_on_the_output_queue_the_sdk_client_acknowledges_nothing() {
    without_send_message_on_the_output_queue_nothing_is_acknowledged("sdk").await;
}
