//! Secrets stay out of panic messages: a panic that formats a token record or a data key, and a
//! failed `expect` on reading a damaged token record, print no token and no key.
//!
//! The panic hook is global to the process, so this file holds a single test.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use datapunk_vault::key::{DataKey, KeyPurpose};
use datapunk_vault::secret::{REDACTED, SecretString, TokenRecord};
use time::macros::datetime;

const ACCESS: &str = "ya29.ACCESS-TOKEN-a1b2c3d4e5f6";
const REFRESH: &str = "1//REFRESH-TOKEN-f6e5d4c3b2a1";

/// Runs `f`, which must panic, and returns what the panic hook was given to print and the
/// panic's payload.
fn panic_output(f: impl FnOnce()) -> String {
    let printed = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&printed);
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        sink.lock().expect("the hook's buffer").push_str(&info.to_string());
    }));

    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("the closure panics");
    panic::set_hook(previous);

    let payload = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    let printed = printed.lock().expect("the hook's buffer").clone();
    format!("{printed}\n{payload}")
}

#[test]
fn panics_that_format_secrets_print_no_token_and_no_key() {
    let record = TokenRecord {
        access_token: SecretString::new(ACCESS.to_owned()),
        refresh_token: Some(SecretString::new(REFRESH.to_owned())),
        expires_at: datetime!(2030-01-01 00:00 UTC),
        scopes: vec!["user-read-recently-played".to_owned()],
    };
    let key = DataKey::generate(KeyPurpose::integration("spotify")).expect("a data key");
    let key_hex = hex::encode(key.expose_secret());
    let passphrase = key.export_passphrase();
    let damaged = format!(r#"{{"version":1,"access_token":"{ACCESS}","refresh_token":{REFRESH}}}"#);

    let outputs = [
        panic_output(|| panic!("sync failed for {record:?} with {key:?}")),
        panic_output(|| panic!("sync failed for {record:#?} with {key} and {passphrase}")),
        panic_output(|| {
            TokenRecord::from_json(damaged.as_bytes()).expect("read the token record");
        }),
    ];

    for output in &outputs {
        assert!(!output.contains("ACCESS-TOKEN"), "{output}");
        assert!(!output.contains("REFRESH-TOKEN"), "{output}");
        assert!(!output.to_lowercase().contains(&key_hex), "{output}");
    }
    assert!(outputs[0].contains(REDACTED) && outputs[1].contains(REDACTED), "{outputs:?}");
    assert!(outputs[0].contains("sync failed"), "the hook saw the message: {}", outputs[0]);
    assert!(outputs[2].contains("Malformed"), "{}", outputs[2]);
}
