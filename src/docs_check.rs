//! The docs agree with the code: README's configuration table with `config/default.toml`
//! (the compiled-in defaults, which `Settings` is read from), and README's metrics catalogue
//! with [`crate::telemetry::names`] and the kind each metric is described as. A key, a
//! default or a metric changed on one side only fails here.

use std::collections::BTreeMap;

use config::{Config, File, FileFormat};

const README: &str = include_str!("../README.md");
const DEFAULTS: &str = include_str!("../config/default.toml");
const TELEMETRY: &str = include_str!("telemetry.rs");
const METRICS_USED: &str = include_str!("../deploy/metrics-used.txt");

/// The rows of the README table that follows the heading `section`: its cells, trimmed.
fn readme_table(section: &str) -> Vec<Vec<String>> {
    let start = README
        .find(&format!("\n{section}\n"))
        .unwrap_or_else(|| panic!("README has no {section:?}"));
    let body = &README[start + section.len() + 2..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The first `code span` of a cell.
fn code(cell: &str) -> Option<&str> {
    let rest = &cell[cell.find('`')? + 1..];
    Some(&rest[..rest.find('`')?])
}

/// `config/default.toml` as `section.key` → its value as the README writes it.
fn defaults() -> BTreeMap<String, String> {
    let sections: BTreeMap<String, BTreeMap<String, serde_json::Value>> = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .build()
        .and_then(Config::try_deserialize)
        .expect("config/default.toml reads as sections of keys");
    let mut out = BTreeMap::new();
    for (section, keys) in sections {
        for (key, value) in keys {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(a) if a.is_empty() => String::new(),
                other => other.to_string(),
            };
            out.insert(format!("{section}.{key}"), text);
        }
    }
    out
}

/// The keys only in `a`, and those only in `b`.
fn differences<K: Ord + Clone, V>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> (Vec<K>, Vec<K>) {
    let only = |x: &BTreeMap<K, V>, y: &BTreeMap<K, V>| {
        x.keys().filter(|k| !y.contains_key(*k)).cloned().collect()
    };
    (only(a, b), only(b, a))
}

#[test]
fn the_readme_configuration_table_is_default_toml() {
    // The settings read from the defaults alone: every field of `Settings` has a key in
    // default.toml (none is optional) and every key there is a field (unknown keys are errors).
    crate::settings::Settings::load_from(None, Vec::new())
        .expect("config/default.toml holds exactly the fields of Settings");
    let defaults = defaults();
    let rows = readme_table("## Configuration reference");
    let mut documented = BTreeMap::new();
    for row in &rows {
        let [key, env, default, ..] = &row[..] else {
            panic!("README configuration row {row:?} has fewer than 4 cells");
        };
        let key = code(key).unwrap_or_else(|| panic!("no `key` in {row:?}"));
        let expected_env = format!("SCANFLEET__{}", key.replace('.', "__").to_uppercase());
        assert_eq!(
            code(env),
            Some(expected_env.as_str()),
            "README env of {key}"
        );
        assert!(
            documented.insert(key.to_owned(), default.clone()).is_none(),
            "README lists {key} twice"
        );
    }
    let (readme_only, toml_only) = differences(&documented, &defaults);
    assert!(
        readme_only.is_empty() && toml_only.is_empty(),
        "README's configuration table lists {readme_only:?}, which config/default.toml lacks; \
         config/default.toml has {toml_only:?}, which README's table lacks"
    );
    for (key, value) in &defaults {
        let cell = &documented[key];
        if value.is_empty() {
            // Written as "— (required …)" or "empty …".
            assert!(
                cell.starts_with('—') || cell.starts_with("empty"),
                "{key}: default.toml leaves it empty, README says {cell:?}"
            );
        } else {
            assert_eq!(
                code(cell),
                Some(value.as_str()),
                "{key}: README's default {cell:?}, default.toml's {value:?}"
            );
        }
    }
}

/// `telemetry::names`: constant → metric name, from the source (so a new constant is seen).
fn metric_names() -> BTreeMap<String, String> {
    let start = TELEMETRY
        .find("pub mod names {")
        .expect("telemetry has mod names");
    let body = &TELEMETRY[start..];
    let body = &body[..body.find("\n}").expect("mod names ends")];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub const ")?;
            let (constant, rest) = l.split_once(": &str = \"")?;
            Some((constant.to_owned(), rest.strip_suffix("\";")?.to_owned()))
        })
        .collect()
}

/// The kind (`counter`, `gauge`, `histogram`) each constant is described as.
fn metric_kinds() -> BTreeMap<String, String> {
    let mut kinds = BTreeMap::new();
    for kind in ["counter", "gauge", "histogram"] {
        let call = format!("describe_{kind}!(");
        for (at, _) in TELEMETRY.match_indices(&call) {
            let args = TELEMETRY[at + call.len()..].trim_start();
            let constant: String = args
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            kinds.insert(constant, kind.to_owned());
        }
    }
    kinds
}

#[test]
fn the_readme_metrics_catalogue_is_telemetry_names() {
    let names = metric_names();
    let kinds = metric_kinds();
    assert!(names.len() >= 20, "telemetry::names read as {names:?}");
    let code: BTreeMap<&str, &str> = names
        .iter()
        .map(|(constant, name)| {
            let kind = kinds
                .get(constant)
                .unwrap_or_else(|| panic!("{constant} is never described"));
            (name.as_str(), kind.as_str())
        })
        .collect();
    let mut documented = BTreeMap::new();
    for row in readme_table("## Metrics catalogue") {
        let [metric, kind, ..] = &row[..] else {
            panic!("README metrics row {row:?} has fewer than 2 cells");
        };
        let metric = self::code(metric).unwrap_or_else(|| panic!("no `metric` in {row:?}"));
        // "gauge (only grows)" is a gauge.
        let kind = kind
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            documented.insert(metric.to_owned(), kind).is_none(),
            "README lists {metric} twice"
        );
    }
    let documented: BTreeMap<&str, &str> = documented
        .iter()
        .map(|(m, k)| (m.as_str(), k.as_str()))
        .collect();
    let (readme_only, code_only) = differences(&documented, &code);
    assert!(
        readme_only.is_empty() && code_only.is_empty(),
        "README's metrics catalogue lists {readme_only:?}, telemetry::names has {code_only:?}"
    );
    for (metric, kind) in &code {
        assert_eq!(documented[metric], *kind, "README's type of {metric}");
    }
    // What the dashboard and alerts rely on exists.
    for used in METRICS_USED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        assert!(
            code.contains_key(used),
            "deploy/metrics-used.txt: {used} is no metric"
        );
    }
}
