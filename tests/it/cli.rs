//! The man page and shell completions come from the CLI definition.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_media-offload")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_page_documents_every_subcommand() {
    let man = run(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "not roff: {}", &man[..80.min(man.len())]);
    for sub in ["update\\-db", "check\\-deleted", "update", "write", "upload"] {
        assert!(man.contains(sub), "man page lacks {sub}");
    }
}

#[test]
fn completions_cover_the_python_tools_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for flag in ["no-progress", "homeserver-config-path", "sse-customer-key", "endpoint-url"] {
            assert!(script.contains(flag), "{shell} completion lacks {flag}");
        }
    }
}
