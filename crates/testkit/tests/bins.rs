//! Locating the workspace binaries.

use datapunk_testkit::bin;

#[test]
#[should_panic(expected = "cargo build --workspace --bins")]
fn a_missing_binary_fails_with_how_to_build_it() {
    bin("datapunk-no-such-binary");
}
