//! Every command shown in docs/cli.md runs as shown: its output, errors
//! and exit status are what the binary prints. `TRYCMD=overwrite cargo test
//! -p netmachine-node --test cli_docs` rewrites the page from the binary.

#[test]
fn the_cli_reference_matches_the_binary() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
    trycmd::TestCases::new()
        .register_bin("netmachine", std::path::Path::new(env!("CARGO_BIN_EXE_netmachine")))
        .env("NETMACHINE_HOME", "/nonexistent/netmachine-home")
        .env("NO_COLOR", "1")
        .case(docs);
}
