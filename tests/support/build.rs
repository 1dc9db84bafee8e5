//! Tells the integration tests whether nixpkgs' lib is at hand (`NIXPKGS_LIB`), so that the
//! NixOS module's evaluation test is reported as ignored, with its reason, when it is not,
//! rather than as passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nixpkgs_lib)");
    println!("cargo::rerun-if-env-changed=NIXPKGS_LIB");
    if std::env::var_os("NIXPKGS_LIB").is_some_and(|lib| !lib.is_empty()) {
        println!("cargo::rustc-cfg=nixpkgs_lib");
    }
}
