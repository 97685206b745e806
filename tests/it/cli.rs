//! The man page and shell completions come from the CLI definition: these
//! tests read them as a user gets them (`media-offload man`, bash's own
//! completion machinery) and check them against that definition.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use media_offload::cli::{Cli, STORAGE_CLASSES};

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_media-offload")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// How a word looks in roff source (clap_mangen and roff escape every hyphen).
fn roff(word: &str) -> String {
    word.replace('-', "\\-")
}

fn man_page() -> String {
    run(&["man"])
}

/// `(subcommand, long option)` for every visible option of every subcommand.
fn every_long_option() -> Vec<(String, String)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut all = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                all.push((sub.get_name().to_owned(), format!("--{long}")));
            }
        }
    }
    all
}

#[test]
fn man_page_has_every_subcommand_and_option() {
    let man = man_page();
    assert!(man.contains("\n.TH media-offload 1 "), "not a section 1 page: {}", &man[..200.min(man.len())]);
    let mut cmd = Cli::command();
    cmd.build();
    let sections: Vec<&str> = man.lines().filter_map(|l| l.strip_prefix(".SS ")).collect();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        assert!(sections.contains(&roff(sub.get_name()).as_str()), "no section for {}: {sections:?}", sub.get_name());
    }
    for (sub, long) in every_long_option() {
        assert!(man.contains(&format!("\\fB{}\\fR", roff(&long))), "man page lacks {sub} {long}");
    }
}

#[test]
fn man_page_has_the_sections_of_a_man_page() {
    let man = man_page();
    let headings: Vec<&str> = man.lines().filter_map(|l| l.strip_prefix(".SH ")).collect();
    for want in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "\"EXIT STATUS\"", "ENVIRONMENT"] {
        assert!(headings.contains(&want), "no .SH {want}: {headings:?}");
    }
    for want in ["FILES", "EXAMPLES", "\"SEE ALSO\""] {
        assert!(headings.contains(&want), "no .SH {want}: {headings:?}");
    }
    // whatis/apropos read "NAME \- SUMMARY" from the NAME section.
    let name = man.lines().skip_while(|l| *l != ".SH NAME").nth(1).unwrap();
    assert!(name.starts_with("media\\-offload \\- "), "{name}");
    for code in ["0", "1", "2", "3", "4", "75"] {
        assert!(man.contains(&format!(".TP\n\\fB{code}\\fR\n")), "EXIT STATUS lacks {code}");
    }
    for file in ["cache.db", "<cache.db>.lock", "database.yaml", "/etc/media\\-offload/config.yaml"] {
        assert!(man.contains(file), "FILES lacks {file}");
    }
}

/// Every environment variable the code reads by a fixed name is documented,
/// with the ones the issue names.
#[test]
fn man_page_documents_every_environment_variable() {
    let man = man_page().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "");
    let mut names: Vec<String> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"]
        .into_iter()
        .chain(["AWS_DEFAULT_REGION", "AWS_PROFILE", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM", "MEDIA_OFFLOAD_<KEY>"])
        .map(String::from)
        .collect();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        names.extend(variables_in(&text).filter(|n| !n.contains("TEST")));
    }
    names.sort();
    names.dedup();
    let missing: Vec<_> = names.iter().filter(|n| !man.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "the man page's ENVIRONMENT lacks {missing:?}");
}

/// `"MEDIA_OFFLOAD_NAME"` string literals.
fn variables_in(text: &str) -> impl Iterator<Item = String> + '_ {
    text.match_indices("\"MEDIA_OFFLOAD_").filter_map(|(i, _)| {
        let rest = &text[i + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))?;
        (rest[end..].starts_with('"') && end > "MEDIA_OFFLOAD_".len()).then(|| rest[..end].to_owned())
    })
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A man page that points at other pages points only at pages that exist:
/// this one. (clap_mangen's own SUBCOMMANDS section names one page per
/// subcommand, which no package installs.)
#[test]
fn man_page_refers_to_no_other_page() {
    let man = man_page().replace("\\-", "-");
    let refs: Vec<&str> = man
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| {
            let Some(open) = w.find('(') else { return false };
            open > 0 && w[open..].len() >= 3 && w[open + 1..].starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    assert!(refs.iter().all(|r| r.starts_with("media-offload(1)")), "references to other pages: {refs:?}");
}

/// What build.rs writes for the Debian package is what the binary prints.
#[test]
fn build_time_files_match_the_binary() {
    let share = Path::new(env!("CARGO_BIN_EXE_media-offload")).parent().unwrap().join("share");
    let gz = share.join("man/man1/media-offload.1.gz");
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(out.status.success(), "{}: {}", gz.display(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), man_page(), "{} differs from `man`", gz.display());
    for (shell, path) in [
        ("bash", "bash-completion/completions/media-offload"),
        ("zsh", "zsh/vendor-completions/_media-offload"),
        ("fish", "fish/vendor_completions.d/media-offload.fish"),
    ] {
        let file = std::fs::read_to_string(share.join(path)).unwrap();
        assert_eq!(file, run(&["completions", shell]), "{path} differs from `completions {shell}`");
    }
}

#[test]
fn completions_cover_every_option() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for (sub, long) in every_long_option() {
            let bare = long.trim_start_matches('-');
            assert!(script.contains(bare), "{shell} completion lacks {sub} {long}");
        }
    }
}

/// Completes the last of `words` the way bash does on TAB: the script is
/// sourced, the function `complete -p media-offload` names is called with
/// COMP_WORDS/COMP_CWORD set, and COMPREPLY is returned.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let driver = r#"
        set -u
        source "$1"; shift
        spec=$(complete -p media-offload) || { echo "no completion registered for media-offload" >&2; exit 1; }
        func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
        COMP_WORDS=("$@")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="${COMP_WORDS[*]}"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        "$func" media-offload "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(driver)
        .arg("bash")
        .arg(script)
        .args(words)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{words:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

fn bash_script() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media-offload.bash");
    std::fs::write(&path, run(&["completions", "bash"])).unwrap();
    (dir, path)
}

#[test]
fn bash_completes_options_past_the_subcommand() {
    let (_dir, script) = bash_script();
    assert_eq!(bash_complete(&script, &["media-offload", "purge", "--re"]), ["--remote-older-than", "--region"]);
    assert_eq!(bash_complete(&script, &["media-offload", "purge", "--rem"]), ["--remote-older-than"]);
    assert_eq!(bash_complete(&script, &["media-offload", "--no-progress", "purge", "--dry"]), ["--dry-run"]);
    assert_eq!(bash_complete(&script, &["media-offload", "check-deleted", "--he"]), ["--help"]);
    assert_eq!(bash_complete(&script, &["media-offload", "update-db", "--homes"]), ["--homeserver-config-path"]);
    let upload = bash_complete(&script, &["media-offload", "upload", "--"]);
    for flag in ["--delete", "--dry-run", "--storage-class", "--sse-customer-key-file", "--no-progress"] {
        assert!(upload.iter().any(|f| f == flag), "upload --<TAB> lacks {flag}: {upload:?}");
    }
    let mut subs = bash_complete(&script, &["media-offload", "up"]);
    subs.sort();
    assert_eq!(subs, ["update", "update-db", "upload"]);
}

#[test]
fn bash_completes_storage_classes() {
    let (_dir, script) = bash_script();
    // purge and check do not take --storage-class (they write no objects).
    for sub in ["upload", "migrate"] {
        let classes = bash_complete(&script, &["media-offload", sub, "--storage-class", ""]);
        assert_eq!(classes, STORAGE_CLASSES, "{sub} --storage-class <TAB>");
    }
    assert_eq!(bash_complete(&script, &["media-offload", "upload", "--storage-class", "STANDARD_"]), ["STANDARD_IA"]);
    assert_eq!(bash_complete(&script, &["media-offload", "completions", "f"]), ["fish"]);
}

/// README states the Rust version Cargo.toml requires.
#[test]
fn readme_states_the_rust_version() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let version = env!("CARGO_PKG_RUST_VERSION");
    assert!(!version.is_empty(), "no rust-version in Cargo.toml");
    assert!(readme.contains(&format!("Rust {version} or newer")), "README does not say \"Rust {version} or newer\"");
}
