//! Microsoft Graph v1.0 delta queries.
use super::{Answer, Data, Record, Request};
use crate::Account;
pub(super) fn event_ordinal_of(_data: &Data, _id: &str) -> Option<u64> {
    None
}
pub(super) fn contact_ordinal_of(_id: &str) -> Option<u64> {
    None
}
pub(super) fn event_id(_data: &Data, _ordinal: u64) -> String {
    String::new()
}
pub(super) fn contact_id(_ordinal: u64) -> String {
    String::new()
}
pub(super) fn event_truth(_data: &Data, _account: &Account) -> Vec<Record> {
    Vec::new()
}
pub(super) fn contact_truth(_data: &Data) -> Vec<Record> {
    Vec::new()
}
pub(super) fn calendar_view(_data: &mut Data, _request: &Request) -> Answer {
    Ok((serde_json::Value::Null, Vec::new()))
}
pub(super) fn contacts(_data: &mut Data, _request: &Request) -> Answer {
    Ok((serde_json::Value::Null, Vec::new()))
}
