// Validates custom resources against the CRD schemas KEDA and Prometheus Operator publish, as
// generated into the npm packages @kubernetes-models/keda and
// @kubernetes-models/prometheus-operator (pinned in package.json / package-lock.json).
// scripts/check-deploy.sh installs this folder into .venv/node and runs:
//
//   node validate.mjs check FILE...      every document of each FILE (YAML, the custom
//                                        resources of a rendered overlay) must validate;
//                                        a kind with no published schema fails
//   node validate.mjs self-test FILE     spoils FILE's resources one way at a time, each of
//                                        which must be refused: proves the validator refuses
//                                        at all (exits non-zero if any spoilt one passes)
//
// Strict, like `kubectl apply`'s server-side field validation: a field the schema does not
// declare fails. The generated schemas leave unknown fields open (the API server prunes or
// refuses them; the schema itself does not say), so each field is probed: given a value of a
// type no declared field accepts, a declared field is refused at its own path, an undeclared
// one is not.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

// The model class of a document's apiVersion and kind, or an error saying why there is none.
async function modelOf(doc) {
  const [group, version] = String(doc?.apiVersion ?? "").split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !version) return { error: `no published schema for apiVersion ${doc?.apiVersion}` };
  let mod;
  try {
    mod = await import(`${pkg}/${group}/${version}/${doc.kind}`);
  } catch {
    return { error: `${pkg} has no ${group}/${version} ${doc.kind}` };
  }
  const Model = mod[doc.kind];
  if (typeof Model !== "function" || Model.kind !== doc.kind || Model.apiVersion !== doc.apiVersion) {
    return { error: `${pkg} has no ${group}/${version} ${doc.kind}` };
  }
  return { Model };
}

// The schema's errors for doc, as [{path, message}] (path "/spec/minReplicaCount"); [] if valid.
function schemaErrors(Model, doc) {
  try {
    new Model(structuredClone(doc)).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e?.errors)) throw e;
    return e.errors.map((x) => ({ path: x.instancePath, message: x.message ?? x.keyword }));
  }
}

const pointer = (path) => path.map((p) => `/${String(p).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
const dotted = (path) => path.map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("").replace(/^\./, "");
// A JSON pointer ("/spec/triggers/0") back to a path (["spec", "triggers", 0]).
const unpointer = (ptr) =>
  ptr.split("/").slice(1).map((p) => (/^\d+$/.test(p) ? Number(p) : p.replaceAll("~1", "/").replaceAll("~0", "~")));

function setAt(doc, path, value) {
  const copy = structuredClone(doc);
  let o = copy;
  for (const p of path.slice(0, -1)) o = o[p];
  o[path.at(-1)] = value;
  return copy;
}

// The fields of doc the schema does not declare, as paths. A probe value of the wrong type:
// a number where an object or array stands, an object where a scalar does.
function unknownFields(Model, doc) {
  const unknown = [];
  const walk = (value, path) => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, i]));
    else if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) {
        const at = [...path, k];
        const probe = v && typeof v === "object" ? 0 : {};
        const here = pointer(at);
        const refused = schemaErrors(Model, setAt(doc, at, probe)).some((e) => e.path === here || e.path.startsWith(`${here}/`));
        if (refused) walk(v, at);
        else unknown.push(at);
      }
    }
  };
  walk(doc, []);
  return unknown;
}

async function problems(doc) {
  const { Model, error } = await modelOf(doc);
  if (error) return [error];
  return [
    ...schemaErrors(Model, doc).map((e) => `${dotted(unpointer(e.path)) || "(document)"}: ${e.message}`),
    ...unknownFields(Model, doc).map((p) => `${dotted(p)}: unknown field (the ${doc.kind} CRD declares no such field)`),
  ];
}

const nameOf = (doc) => `${doc?.kind}/${doc?.metadata?.name}`;

function load(file) {
  const docs = [];
  for (const d of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    const js = d.toJS();
    if (js) docs.push(js);
  }
  return docs;
}

async function check(files) {
  let failed = 0;
  for (const file of files) {
    const docs = load(file);
    if (!docs.length) {
      console.log(`${file}: no custom resources`);
      failed++;
    }
    for (const doc of docs) {
      const found = await problems(doc);
      if (found.length) {
        failed++;
        console.log(`${file}: ${nameOf(doc)}: INVALID`);
        for (const p of found) console.log(`  - ${p}`);
      } else {
        console.log(`${file}: ${nameOf(doc)} (${doc.apiVersion}): valid`);
      }
    }
  }
  return failed ? 1 : 0;
}

// Each spoiling must be refused; `at` is where the refusal must point.
const SPOILINGS = [
  { kind: "ScaledObject", what: 'minReplicaCount: "zero"', at: "spec.minReplicaCount", spoil: (d) => (d.spec.minReplicaCount = "zero") },
  { kind: "ScaledObject", what: "a trigger metadata value that is no string", at: "spec.triggers[0].metadata.queueLength", spoil: (d) => (d.spec.triggers[0].metadata.queueLength = 4) },
  { kind: "ScaledObject", what: "a misspelt field (minReplicaCounts)", at: "spec.minReplicaCounts", spoil: (d) => (d.spec.minReplicaCounts = 1) },
  { kind: "TriggerAuthentication", what: "identityOwner: nobody", at: "spec.podIdentity.identityOwner", spoil: (d) => { delete d.spec.podIdentity.roleArn; d.spec.podIdentity.identityOwner = "nobody"; } },
  { kind: "ServiceMonitor", what: 'interval: "30 s"', at: "spec.endpoints[0].interval", spoil: (d) => (d.spec.endpoints[0].interval = "30 s") },
  { kind: "PrometheusRule", what: "a rule without expr", at: "spec.groups[0].rules[0]", spoil: (d) => delete d.spec.groups[0].rules[0].expr },
];

async function selfTest(file) {
  const docs = load(file);
  let failed = 0;
  for (const s of SPOILINGS) {
    const doc = docs.find((d) => d.kind === s.kind);
    if (!doc) {
      console.log(`no ${s.kind} in ${file} to spoil`);
      failed++;
      continue;
    }
    if ((await problems(doc)).length) {
      console.log(`${nameOf(doc)} is invalid already (see the check above); the self-test spoils valid ones only`);
      failed++;
      continue;
    }
    const bad = structuredClone(doc);
    s.spoil(bad);
    const found = await problems(bad);
    if (found.some((p) => p.startsWith(`${s.at}:`) || p.startsWith(`${s.at}.`))) {
      console.log(`refused as it must be: ${nameOf(doc)} with ${s.what}: ${found.join("; ")}`);
    } else {
      failed++;
      console.log(`NOT REFUSED: ${nameOf(doc)} with ${s.what} (${found.length ? found.join("; ") : "passed validation"})`);
    }
  }
  return failed ? 1 : 0;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "check" && args.length) process.exitCode = await check(args);
else if (mode === "self-test" && args.length === 1) process.exitCode = await selfTest(args[0]);
else {
  console.error("usage: node validate.mjs check FILE... | self-test FILE");
  process.exitCode = 2;
}
