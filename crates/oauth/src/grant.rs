//! Which datasets a grant covers.
//!
//! A person may grant fewer scopes than asked: Google's consent screen lets them untick boxes,
//! and the token response's `scope` then lists only what was granted (RFC 6749 §5.1). A
//! dataset is covered only when every scope it needs was granted; the others are reported as
//! not granted, so the CLI can say so and sync can leave them alone. A response without
//! `scope` means the request was granted as asked (RFC 6749 §5.1).

use crate::provider::Dataset;

/// A chosen dataset and whether the grant covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// The dataset's name.
    pub dataset: &'static str,
    /// True when every scope it needs was granted.
    pub granted: bool,
}

/// The coverage of each of `datasets` by `granted`, the space-separated scopes of a token
/// response (`None` when the response did not list them).
pub fn coverage(datasets: &[&'static Dataset], granted: Option<&str>) -> Vec<Coverage> {
    datasets
        .iter()
        .map(|dataset| Coverage {
            dataset: dataset.name,
            granted: match granted {
                None => true,
                Some(granted) => dataset
                    .scopes
                    .iter()
                    .all(|scope| granted.split_ascii_whitespace().any(|g| g == *scope)),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

    fn datasets(provider: Provider, names: &[&str]) -> Vec<&'static Dataset> {
        names.iter().map(|name| provider.dataset(name).expect("a dataset")).collect()
    }

    #[test]
    fn a_narrowed_grant_leaves_out_the_datasets_it_misses() {
        let chosen = datasets(Provider::Google, &["calendar", "contacts"]);
        let granted = "https://www.googleapis.com/auth/contacts.readonly openid";

        let coverage = coverage(&chosen, Some(granted));

        assert_eq!(
            coverage,
            [
                Coverage { dataset: "calendar", granted: false },
                Coverage { dataset: "contacts", granted: true },
            ]
        );
    }

    #[test]
    fn a_dataset_needs_all_of_its_scopes_and_no_scope_list_means_as_asked() {
        let chosen = datasets(Provider::Spotify, &["playlists"]);
        assert!(!coverage(&chosen, Some("playlist-read-private"))[0].granted);
        let both = "playlist-read-collaborative  playlist-read-private";
        assert!(coverage(&chosen, Some(both))[0].granted);
        assert!(coverage(&chosen, None)[0].granted);
        // A scope that merely contains the needed one is not it.
        assert!(
            !coverage(&chosen, Some("xplaylist-read-private playlist-read-collaborative"))[0]
                .granted
        );
    }
}
