//! What a scan sends: filter and projection expressions, their placeholders, consistent reads.
//!
//! Pure logic, no I/O. DynamoDB checks an expression's grammar itself (and `enqueue` asks it
//! to, with a one-row probe scan, before sending anything); what is checked here is what can
//! be checked without a table and what DynamoDB would otherwise report only as a failing
//! task: empty or oversized expressions, malformed placeholder names, placeholders used but
//! not defined, and placeholders defined but not used (DynamoDB rejects those too).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::codec::{self, Item};

/// DynamoDB's limit on the length of any one expression.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Placeholder name scanfleet adds for key attributes a projection leaves out.
const KEY_PLACEHOLDER: &str = "#scanfleet_key";

/// The projection expression and attribute names a scan sends.
pub type ScanProjection = (Option<String>, Option<HashMap<String, String>>);

/// The optional parts of a Scan request a task may set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanOptions {
    pub filter_expression: Option<String>,
    pub projection_expression: Option<String>,
    /// `#name` → attribute name.
    pub expression_attribute_names: Option<BTreeMap<String, String>>,
    /// `:value` → attribute value.
    pub expression_attribute_values: Option<Item>,
    pub consistent_read: bool,
}

/// The wire form of [`ScanOptions`] (as in a task message or on the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawScanOptions {
    pub filter_expression: Option<String>,
    pub projection_expression: Option<String>,
    pub expression_attribute_names: Option<BTreeMap<String, String>>,
    /// DynamoDB attribute-value JSON: `{":p": {"S": "PREFIX-"}}`.
    pub expression_attribute_values: Option<serde_json::Value>,
    pub consistent_read: Option<bool>,
}

/// Placeholders (`#name` or `:value`) used in an expression, in order of first use.
fn placeholders(expr: &str, sigil: char) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != sigil {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if d.is_ascii_alphanumeric() || d == '_' {
                end = j + d.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        found.insert(expr[i..end].to_owned());
    }
    found
}

fn valid_placeholder(name: &str, sigil: char) -> bool {
    let mut chars = name.chars();
    chars.next() == Some(sigil)
        && name.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_expression(field: &str, expr: &Option<String>) -> Result<(), String> {
    match expr {
        Some(e) if e.trim().is_empty() => Err(format!("{field} must not be empty")),
        Some(e) if e.len() > MAX_EXPRESSION_BYTES => Err(format!(
            "{field} is {} bytes, more than DynamoDB's {MAX_EXPRESSION_BYTES}",
            e.len()
        )),
        _ => Ok(()),
    }
}

impl RawScanOptions {
    /// Validates the options; the error names the field and the problem.
    pub fn validate(self) -> Result<ScanOptions, String> {
        check_expression("filter_expression", &self.filter_expression)?;
        check_expression("projection_expression", &self.projection_expression)?;
        let filter = self.filter_expression.as_deref().unwrap_or("");
        let projection = self.projection_expression.as_deref().unwrap_or("");

        let names = self.expression_attribute_names.unwrap_or_default();
        for (placeholder, name) in &names {
            if !valid_placeholder(placeholder, '#') {
                return Err(format!(
                    "expression_attribute_names: {placeholder:?} must be # followed by letters, digits or _"
                ));
            }
            if name.is_empty() {
                return Err(format!(
                    "expression_attribute_names: {placeholder} names an empty attribute"
                ));
            }
        }
        let mut used_names = placeholders(filter, '#');
        used_names.extend(placeholders(projection, '#'));
        for used in &used_names {
            if !names.contains_key(used) {
                return Err(format!(
                    "{used} is used in an expression but not defined in expression_attribute_names"
                ));
            }
        }
        if let Some(unused) = names.keys().find(|n| !used_names.contains(*n)) {
            return Err(format!(
                "expression_attribute_names defines {unused}, which no expression uses (DynamoDB rejects that)"
            ));
        }

        let values = match self.expression_attribute_values {
            None => Item::new(),
            Some(v) => {
                let obj = v.as_object().ok_or_else(|| {
                    format!(
                        "expression_attribute_values must be an object like {{\":p\":{{\"S\":\"x\"}}}}, got {v}"
                    )
                })?;
                let mut values = HashMap::with_capacity(obj.len());
                for (placeholder, value) in obj {
                    if !valid_placeholder(placeholder, ':') {
                        return Err(format!(
                            "expression_attribute_values: {placeholder:?} must be : followed by letters, digits or _"
                        ));
                    }
                    let value = codec::value_from_json(value)
                        .map_err(|e| format!("expression_attribute_values: {placeholder}: {e}"))?;
                    values.insert(placeholder.clone(), value);
                }
                values
            }
        };
        if let Some(p) = placeholders(projection, ':').into_iter().next() {
            return Err(format!(
                "projection_expression cannot use values ({p}); it lists attribute names"
            ));
        }
        let used_values = placeholders(filter, ':');
        for used in &used_values {
            if !values.contains_key(used) {
                return Err(format!(
                    "filter_expression uses {used}, which expression_attribute_values does not define"
                ));
            }
        }
        if let Some(unused) = values.keys().find(|v| !used_values.contains(*v)) {
            return Err(format!(
                "expression_attribute_values defines {unused}, which filter_expression does not use (DynamoDB rejects that)"
            ));
        }
        Ok(ScanOptions {
            filter_expression: self.filter_expression,
            projection_expression: self.projection_expression,
            expression_attribute_names: (!names.is_empty()).then_some(names),
            expression_attribute_values: (!values.is_empty()).then_some(values),
            consistent_read: self.consistent_read.unwrap_or(false),
        })
    }
}

impl ScanOptions {
    /// The wire form; the inverse of [`RawScanOptions::validate`].
    pub fn to_raw(&self) -> RawScanOptions {
        RawScanOptions {
            filter_expression: self.filter_expression.clone(),
            projection_expression: self.projection_expression.clone(),
            expression_attribute_names: self.expression_attribute_names.clone(),
            expression_attribute_values: self
                .expression_attribute_values
                .as_ref()
                .map(|v| codec::item_to_json(v).expect("validated values serialize")),
            consistent_read: self.consistent_read.then_some(true),
        }
    }

    /// Whether any expression is set (something DynamoDB has to parse).
    pub fn has_expressions(&self) -> bool {
        self.filter_expression.is_some() || self.projection_expression.is_some()
    }

    /// The projection and names to send, with the table's key attributes added to a
    /// projection that leaves them out: every row needs its key for `row_id` (and FIFO
    /// group ids), so projected rows always carry their primary key. The worker's scans and
    /// `enqueue`'s probe both send this. Refused when the projection with the added keys is
    /// longer than DynamoDB's [`MAX_EXPRESSION_BYTES`] (it would refuse every page).
    pub fn scan_projection(&self, key_names: &[String]) -> Result<ScanProjection, String> {
        let (projection, names) = self.projection_with_keys(key_names);
        match &projection {
            Some(p) if p.len() > MAX_EXPRESSION_BYTES => Err(format!(
                "projection_expression is {} bytes with the key attributes scanfleet adds to it ({}), more than DynamoDB's {MAX_EXPRESSION_BYTES}; shorten it by {} bytes or list the key attributes in it",
                p.len(),
                key_names.join(", "),
                p.len() - MAX_EXPRESSION_BYTES
            )),
            _ => Ok((projection, names)),
        }
    }

    fn projection_with_keys(&self, key_names: &[String]) -> ScanProjection {
        let mut names: HashMap<String, String> = self
            .expression_attribute_names
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let Some(projection) = &self.projection_expression else {
            return (None, (!names.is_empty()).then_some(names));
        };
        let projected: BTreeSet<String> = projection
            .split(',')
            .map(str::trim)
            .map(|path| names.get(path).cloned().unwrap_or_else(|| path.to_owned()))
            .collect();
        let mut projection = projection.clone();
        for (i, key) in key_names.iter().enumerate() {
            if projected.contains(key) {
                continue;
            }
            let mut placeholder = format!("{KEY_PLACEHOLDER}{i}");
            while names.contains_key(&placeholder) {
                placeholder.push('_');
            }
            projection.push_str(", ");
            projection.push_str(&placeholder);
            names.insert(placeholder, key.clone());
        }
        (Some(projection), (!names.is_empty()).then_some(names))
    }

    /// Values for the Scan request.
    pub fn scan_values(&self) -> Option<HashMap<String, AttributeValue>> {
        self.expression_attribute_values.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(filter: Option<&str>, projection: Option<&str>) -> RawScanOptions {
        RawScanOptions {
            filter_expression: filter.map(str::to_owned),
            projection_expression: projection.map(str::to_owned),
            ..RawScanOptions::default()
        }
    }

    fn names(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_original_begins_with_filter_is_accepted_and_round_trips() {
        let mut r = raw(
            Some("begins_with(#sk, :prefix)"),
            Some("#sk, #n, createdAt"),
        );
        r.expression_attribute_names = names(&[("#sk", "SK"), ("#n", "name")]);
        r.expression_attribute_values = Some(json!({":prefix": {"S": "PREFIX-1"}}));
        r.consistent_read = Some(true);
        let o = r.clone().validate().unwrap();
        assert!(o.consistent_read);
        assert_eq!(
            o.expression_attribute_values.as_ref().unwrap()[":prefix"],
            AttributeValue::S("PREFIX-1".into())
        );
        assert_eq!(o.to_raw(), r);
        assert_eq!(o.to_raw().validate().unwrap(), o);
    }

    #[test]
    fn no_options_is_the_default() {
        let o = RawScanOptions::default().validate().unwrap();
        assert_eq!(o, ScanOptions::default());
        assert_eq!(o.to_raw(), RawScanOptions::default());
        assert!(!o.has_expressions());
    }

    #[test]
    fn every_rule_names_the_problem() {
        let with_values = |filter: &str, values: serde_json::Value| RawScanOptions {
            filter_expression: Some(filter.into()),
            expression_attribute_values: Some(values),
            ..RawScanOptions::default()
        };
        let cases: Vec<(RawScanOptions, &str)> = vec![
            (raw(Some(""), None), "filter_expression must not be empty"),
            (
                raw(None, Some("  ")),
                "projection_expression must not be empty",
            ),
            (raw(Some(&"a".repeat(4097)), None), "4096"),
            (raw(Some("#a = b"), None), "#a is used"),
            (
                RawScanOptions {
                    expression_attribute_names: names(&[("#a", "A")]),
                    ..RawScanOptions::default()
                },
                "defines #a, which no expression uses",
            ),
            (
                RawScanOptions {
                    filter_expression: Some("x = y".into()),
                    expression_attribute_names: names(&[("a", "A")]),
                    ..RawScanOptions::default()
                },
                "must be # followed",
            ),
            (
                RawScanOptions {
                    filter_expression: Some("#a = y".into()),
                    expression_attribute_names: names(&[("#a", "")]),
                    ..RawScanOptions::default()
                },
                "empty attribute",
            ),
            (with_values("a = :v", json!({})), ":v, which"),
            (
                with_values("a = :v", json!({":v": {"S": "x"}, ":w": {"S": "y"}})),
                "defines :w",
            ),
            (
                with_values("a = :v", json!({":v": "x"})),
                ":v: must be an object",
            ),
            (with_values("a = :v", json!([1])), "must be an object like"),
            (
                with_values("a = :v", json!({"v": {"S": "x"}})),
                "must be : followed",
            ),
            (raw(None, Some("a, :v")), "cannot use values"),
        ];
        for (options, needle) in cases {
            let e = options.clone().validate().unwrap_err();
            assert!(e.contains(needle), "{options:?}: {e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_projection_always_carries_the_key() {
        let keys = ["PK".to_owned(), "SK".to_owned()];
        let mut r = raw(None, Some("#n, SK"));
        r.expression_attribute_names = names(&[("#n", "name")]);
        let o = r.validate().unwrap();
        let (projection, names) = o.scan_projection(&keys).unwrap();
        assert_eq!(projection.as_deref(), Some("#n, SK, #scanfleet_key0"));
        let names = names.unwrap();
        assert_eq!(names["#scanfleet_key0"], "PK");
        assert_eq!(names["#n"], "name");
        // Keys already projected (directly or through a placeholder) are not added twice.
        let mut r = raw(None, Some("#p, SK"));
        r.expression_attribute_names = names_of(&[("#p", "PK")]);
        let (projection, _) = r.validate().unwrap().scan_projection(&keys).unwrap();
        assert_eq!(projection.as_deref(), Some("#p, SK"));
        // No projection: nothing added, names passed through.
        let (projection, names) = ScanOptions::default().scan_projection(&keys).unwrap();
        assert_eq!((projection, names), (None, None));
    }

    #[test]
    fn a_projection_the_added_keys_push_over_4_kb_is_refused() {
        let keys = ["PK".to_owned(), "SK".to_owned()];
        // Valid as written (4096 bytes), too long once ", #scanfleet_key0, #scanfleet_key1"
        // is appended.
        let long = format!("a{}", ", a".repeat((MAX_EXPRESSION_BYTES - 1) / 3));
        let long = format!("{long}{}", "b".repeat(MAX_EXPRESSION_BYTES - long.len()));
        assert_eq!(long.len(), MAX_EXPRESSION_BYTES);
        let o = raw(None, Some(&long)).validate().unwrap();
        let e = o.scan_projection(&keys).unwrap_err();
        assert!(
            e.contains("projection_expression is 4130 bytes")
                && e.contains("(PK, SK)")
                && e.contains("DynamoDB's 4096"),
            "{e}"
        );
        // The keys it lists are not added: it goes as it is.
        let with_keys = format!("PK, SK, {}", &long[8..]);
        let o = raw(None, Some(&with_keys)).validate().unwrap();
        let (projection, _) = o.scan_projection(&keys).unwrap();
        assert_eq!(projection.unwrap().len(), MAX_EXPRESSION_BYTES);
    }

    fn names_of(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        names(pairs)
    }

    #[test]
    fn placeholders_are_found_whole() {
        let p = placeholders("begins_with(#sk_1, :p) AND #a.b[0] = :q2", '#');
        assert_eq!(p, BTreeSet::from(["#sk_1".to_owned(), "#a".to_owned()]));
        let p = placeholders("begins_with(#sk_1, :p) AND #a.b[0] = :q2", ':');
        assert_eq!(p, BTreeSet::from([":p".to_owned(), ":q2".to_owned()]));
    }
}
