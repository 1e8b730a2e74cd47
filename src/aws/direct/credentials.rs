//! Whether credentials can sign at all: the credential variables checked at start-up, and the
//! provider's credentials checked before use. Never quotes a value (it may be a secret).

use aws_credential_types::Credentials;

/// The environment variables the SDK's credentials chain reads static credentials from.
pub const CREDENTIAL_VARIABLES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// What makes `value` unusable as an AWS credential, if anything, without quoting it (it may
/// be a secret). Access keys, secrets and session tokens are printable ASCII without spaces
/// (letters, digits, base64): anything else is a mistake (a mounted secret's trailing newline)
/// that would fail every request, as a header that cannot be sent or a signature that never
/// matches.
pub fn credential_flaw(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("nothing (it is empty)".into());
    }
    let (i, c) = value.char_indices().find(|(_, c)| !c.is_ascii_graphic())?;
    let what = match c {
        '\n' | '\r' => "a line break",
        ' ' => "a space",
        '\t' => "a tab",
        c if c.is_control() => "a control character",
        _ => "a non-ASCII character",
    };
    let at = if i + c.len_utf8() == value.len() {
        "at the end".to_owned()
    } else if i == 0 {
        "at the start".to_owned()
    } else {
        format!("at byte {i}")
    };
    Some(format!("{what} {at}"))
}

/// Checks the credential variables that are set, as `get` reads them (`std::env::var_os`),
/// so that a bad one stops start-up with a line naming it instead of failing every call.
/// Values are not trimmed: a secret is used as given or not at all. An empty variable is what
/// the SDK treats as unset; `AWS_SESSION_TOKEN` is trimmed by the SDK itself, so only what is
/// inside it counts.
pub fn check_credential_variables(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(), String> {
    for name in CREDENTIAL_VARIABLES {
        let Some(raw) = get(name) else { continue };
        let Some(value) = raw.to_str() else {
            return Err(format!(
                "{name} is not valid UTF-8; an AWS credential is printable ASCII without spaces"
            ));
        };
        let value = if name == "AWS_SESSION_TOKEN" {
            value.trim()
        } else {
            value
        };
        if value.is_empty() {
            continue;
        }
        if let Some(flaw) = credential_flaw(value) {
            return Err(format!(
                "{name} holds {flaw}; an AWS credential is printable ASCII without spaces (a secret file's trailing newline?). Fix the value: it is not trimmed"
            ));
        }
    }
    Ok(())
}

/// Which part of `credentials` cannot sign a request, and why.
pub(super) fn unusable_credentials(credentials: &Credentials) -> Option<String> {
    let token = credentials.session_token().map(str::trim);
    [
        ("access key id", Some(credentials.access_key_id())),
        ("secret access key", Some(credentials.secret_access_key())),
        ("session token", token),
    ]
    .into_iter()
    .find_map(|(part, value)| Some(format!("its {part} holds {}", credential_flaw(value?)?)))
}
