//! The admin API, as a demo in another process drives it.

mod support;

use datapunk_sandbox::Dataset;
use serde_json::{Value, json};
use support::{http, sandbox, small};

#[tokio::test]
async fn the_admin_api_mutates_injects_and_reads_the_truth_and_the_log() {
    let sandbox = sandbox(small()).await;
    let admin = format!("{}/_admin", sandbox.base_url());
    let client = http();

    let added: Value = client
        .post(format!("{admin}/google/contacts/add"))
        .send()
        .await
        .expect("add")
        .json()
        .await
        .expect("JSON");
    let id = added["id"].as_str().expect("an id").to_owned();
    assert!(sandbox.truth(Dataset::GoogleContacts).iter().any(|r| r.id == id));

    let answer = client
        .post(format!("{admin}/google/contacts/delete"))
        .json(&json!({ "id": id }))
        .send()
        .await
        .expect("delete");
    assert_eq!(answer.status(), 204);
    assert!(!sandbox.truth(Dataset::GoogleContacts).iter().any(|r| r.id == id));
    let again = client
        .post(format!("{admin}/google/contacts/delete"))
        .json(&json!({ "id": id }))
        .send()
        .await
        .expect("delete again");
    assert_eq!(again.status(), 404, "it is gone");
    assert_eq!(sandbox.change_seq(), 2);

    let faults = json!([{ "kind": "too_many_requests", "retry_after": 2 }, { "kind": "slow", "millis": 10 }]);
    let answer =
        client.post(format!("{admin}/spotify/faults")).json(&faults).send().await.expect("faults");
    assert_eq!(answer.status(), 204);
    let played = format!(
        "{}/me/player/recently-played",
        sandbox.api_base(datapunk_sandbox::Provider::Spotify)
    );
    let token = support::access_token(
        &sandbox,
        datapunk_sandbox::Provider::Spotify,
        "user-read-recently-played",
    )
    .await;
    let status = client.get(&played).bearer_auth(&token).send().await.expect("a request").status();
    assert_eq!(status, 429);

    let truth: Value = client
        .get(format!("{admin}/spotify/recently-played/truth"))
        .send()
        .await
        .expect("truth")
        .json()
        .await
        .expect("JSON");
    assert_eq!(truth.as_array().map(Vec::len), Some(30));
    let log: Value = client
        .get(format!("{admin}/requests"))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("JSON");
    let last = log.as_array().and_then(|l| l.last()).expect("an entry");
    assert_eq!(
        (last["path"].as_str(), last["status"].as_u64()),
        (Some("/spotify/api/me/player/recently-played"), Some(429))
    );
    assert!(
        log.as_array()
            .expect("a list")
            .iter()
            .all(|r| !r["path"].as_str().unwrap_or("").starts_with("/_admin"))
    );
}
