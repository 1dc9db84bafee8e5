//! Spotify.
use super::{Answer, Data, Dataset, Play, Population, Record, Request};
use crate::Account;
use std::collections::VecDeque;
pub(super) fn initial_plays(_p: &Population) -> VecDeque<Play> {
    VecDeque::new()
}
pub(super) fn played_at(_ms: i64) -> String {
    String::new()
}
pub(super) fn ordinal_of(_data: &Data, _d: Dataset, _id: &str) -> Option<u64> {
    None
}
pub(super) fn id_of(_data: &Data, _d: Dataset, _o: u64, _a: &Account) -> String {
    String::new()
}
pub(super) fn truth(_data: &Data, _d: Dataset, _a: &Account, _b: &str) -> Vec<Record> {
    Vec::new()
}
pub(super) fn recently_played(_data: &mut Data, _request: &Request) -> Answer {
    Ok((serde_json::Value::Null, Vec::new()))
}
pub(super) fn saved_tracks(_data: &mut Data, _request: &Request) -> Answer {
    Ok((serde_json::Value::Null, Vec::new()))
}
pub(super) fn playlists(_data: &mut Data, _request: &Request) -> Answer {
    Ok((serde_json::Value::Null, Vec::new()))
}
