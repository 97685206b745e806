//! The man page and the shell completions, both rendered from the clap
//! definition in `cli`, so that neither can fall behind the flags.
//!
//! `media-offload man` and `media-offload completions SHELL` print them, and
//! `build.rs` writes them at build time for the Debian package (it compiles
//! this file and `cli.rs` on their own, so this module uses nothing of the
//! crate but `cli`).
//!
//! The page is one `media-offload(1)` with every subcommand and its options
//! (clap_mangen alone would render only the top level and point at one page
//! per subcommand, which nobody installs), plus the sections a man page
//! needs and clap does not know about: EXIT STATUS, ENVIRONMENT, FILES and
//! EXAMPLES.

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::Shell;
use roff::{Inline, Roff, bold, italic, roman};

use crate::cli::Cli;

/// The installed command's name.
pub const BIN_NAME: &str = "media-offload";

/// The one-line summary of the NAME section (`whatis`, `apropos`).
const SUMMARY: &str = "offload a Matrix homeserver's media store to S3-compatible object storage";

/// The page's EXIT STATUS (`error::ExitCode`; a unit test keeps them in step).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Done."),
    (
        1,
        "Could not run: bad configuration, unreachable database, unreadable cache.db, ...; or stopped \
         at once: credentials refused, store unreachable, a database that is not the live one (one \
         error: line says what).",
    ),
    (2, "Bad command line (e.g. an invalid duration)."),
    (
        3,
        "Finished, but some files failed, conflicted (the stored object and the local file differ) \
         or some rows were refused (their local files were kept), or check --fix could not remove \
         something.",
    ),
    (4, "check found inconsistencies (after --fix: lost media remain)."),
    (
        75,
        "Another run holds the lock <cache.db>.lock or the media store; nothing was done (--wait \
         waits instead). The shipped units count it as success.",
    ),
];

/// Environment variables that are not a flag's `env` (those are listed from the CLI itself).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "MEDIA_OFFLOAD_<KEY>",
        "For migrate, purge and check: the setting KEY of the config file, between the flag and the \
         config file in precedence: MEDIA_OFFLOAD_HOMESERVER_CONFIG_PATH, MEDIA_OFFLOAD_MEDIA_STORE_PATH, \
         MEDIA_OFFLOAD_BUCKET, MEDIA_OFFLOAD_ENDPOINT_URL, MEDIA_OFFLOAD_REGION_NAME, MEDIA_OFFLOAD_PREFIX, \
         MEDIA_OFFLOAD_STORAGE_CLASS, MEDIA_OFFLOAD_SSE_CUSTOMER_ALGO, MEDIA_OFFLOAD_CONCURRENCY, \
         MEDIA_OFFLOAD_DURATION, MEDIA_OFFLOAD_SETTLE_TIME.",
    ),
    ("MEDIA_OFFLOAD_SSE_CUSTOMER_KEY", "The SSE-C key, kept out of the process list (instead of --sse-customer-key)."),
    (
        "MEDIA_OFFLOAD_LOG",
        "Log filter in env_logger's syntax, e.g. media_offload=trace or aws_smithy_runtime=debug; \
         it refines -v and -q.",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "S3 credentials. They take precedence over systemd credentials and homeserver.yaml; without any, \
         the AWS SDK's default chain applies (profiles, instance metadata), as with boto3.",
    ),
    ("AWS_REGION, AWS_DEFAULT_REGION", "The S3 region when none is configured (default us-east-1)."),
    (
        "AWS_PROFILE, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE",
        "Which profile of ~/.aws/config and ~/.aws/credentials the default chain reads.",
    ),
    ("ST_AUTH, ST_USER, ST_KEY", "Swift TempAuth (v1) login, as python-swiftclient takes it, with --swift."),
    (
        "OS_CLOUD, OS_CLIENT_CONFIG_FILE, OS_CLIENT_SECURE_FILE",
        "The cloud of clouds.yaml (and secure.yaml) to log in to Swift with, and where those files are \
         (default: ./, ~/.config/openstack/, /etc/openstack/).",
    ),
    (
        "OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, OS_APPLICATION_CREDENTIAL_ID, ...",
        "An openrc file's Keystone v3 login for Swift (OS_AUTH_TYPE v1password for TempAuth), with \
         OS_REGION_NAME and OS_INTERFACE choosing the object-store endpoint.",
    ),
    ("MEDIA_OFFLOAD_SWIFT_KEY", "The TempAuth key of the config file's swift_user (or the credential swift_key)."),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd for LoadCredential=: secrets are read from the files access_key_id, \
         secret_access_key, session_token and sse_customer_key in it, when the environment has none. \
         The shipped units also pass the config file this way (--config %d/config.yaml).",
    ),
    (
        "MEDIA_OFFLOAD_CRASH_AT, MEDIA_OFFLOAD_PAUSE_AT, MEDIA_OFFLOAD_PAUSE_DIR",
        "For the test suite only: kill the run (as kill -9 would) or pause it at a named point, to prove \
         that a run killed at any moment is completed by the next. Never set them otherwise.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr goes to the journal: log lines then carry syslog priority prefixes \
         (<3> error, <4> warning, <6> info) and no timestamps, and no progress bars are drawn.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "./cache.db",
        "The state shared with s3_media_upload: which media are offloaded. Elsewhere with --cache-db, \
         MEDIA_OFFLOAD_CACHE_DB or cache_db in the config file; the units use /var/lib/media-offload/cache.db.",
    ),
    (
        "<cache.db>.lock",
        "The lock every command that writes cache.db takes; it holds the pid and start time of the run \
         that took it last (safe to leave in place). The media store's folder is locked too (flock), so \
         runs with different state files cannot work on one store at once.",
    ),
    (
        "./database.yaml",
        "If it exists in the working directory, the homeserver database settings, as s3_media_upload reads \
         them (psycopg2 keyword arguments, or a sqlite: or postgres: section); otherwise the database \
         section of homeserver.yaml.",
    ),
    (
        "homeserver.yaml",
        "Synapse's config (--homeserver-config-path; default ./homeserver.yaml): media_store_path, the \
         database, media_retention and the S3 storage provider's settings.",
    ),
    (
        "dendrite.yaml",
        "A Dendrite homeserver's config (purge and check --dendrite-config, dendrite_config in the config \
         file): media_api.base_path, the media, account and sync databases, global.server_name. Its relative \
         paths start in Dendrite's working directory (--dendrite-working-dir). The offload commands refuse \
         Dendrite, which cannot read media from an object store.",
    ),
    (
        "/etc/media-offload/config.yaml",
        "The config file of the shipped units (root-only, passed as a systemd credential). Unknown keys and \
         secrets are refused. An annotated example is /usr/share/doc/media-offload/examples/config.yaml.example.",
    ),
    (
        "/etc/media-offload/environment",
        "Optional EnvironmentFile= of the units: AWS_ACCESS_KEY_ID=, AWS_SECRET_ACCESS_KEY=, ... (root, 0600).",
    ),
    (
        "/etc/credstore/media-offload.NAME",
        "Optional secrets the units load with LoadCredential= (NAME: access_key_id, secret_access_key, \
         session_token, sse_customer_key).",
    ),
    (
        "/lib/systemd/system/media-offload.service, media-offload.timer",
        "The daily migrate run (05:00). Installed disabled: enable the timer after a dry run.",
    ),
    (
        "/lib/systemd/system/media-offload-purge.service, media-offload-purge.timer",
        "The daily purge run (03:00). Installed disabled; needs a retention policy.",
    ),
    (
        "/usr/share/doc/media-offload/",
        "README.md, and docs/operations.md (running it, retention, reading check, deploying) and \
         docs/design.md (how it keeps data safe).",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    ("Try it on a generated homeserver, no server needed:", "media-offload demo --dir /tmp/media-offload-demo"),
    (
        "What the daily job would do, changing nothing (settings from homeserver.yaml):",
        "media-offload --config /etc/media-offload/config.yaml migrate --dry-run",
    ),
    ("The daily job:", "media-offload --config /etc/media-offload/config.yaml migrate"),
    (
        "The s3_media_upload steps, in the directory of cache.db:",
        "media-offload update-db 1m\n\
         media-offload check-deleted /var/lib/matrix-synapse/media\n\
         media-offload upload /var/lib/matrix-synapse/media my-bucket --delete --endpoint-url https://s3.example.net",
    ),
    (
        "Retention: list what would go, then purge remote media after 30 days and local media after 2 years:",
        "media-offload purge --remote-older-than 30d --dry-run\n\
         media-offload purge --remote-older-than 30d --local-older-than 2y",
    ),
    ("A consistency report as JSON:", "media-offload --json check"),
    ("Arm the shipped timer once a dry run looks right:", "systemctl enable --now media-offload.timer"),
];

/// The clap command as the page and the completions see it.
fn command() -> Command {
    let mut cmd = Cli::command().bin_name(BIN_NAME);
    cmd.build();
    cmd
}

/// The complete man page (roff).
pub fn man_page() -> Vec<u8> {
    let cmd = command();
    let man = clap_mangen::Man::new(cmd.clone()).section("1").manual("User Commands");
    let mut page = Vec::new();
    // clap_mangen writes the title, with its version; the top-level options
    // (clap_mangen keeps their help headings). Every piece it renders starts
    // with the same two-line preamble, kept only once.
    man.render_title(&mut page).expect("writing to memory");
    let preamble = Roff::new().render();

    let mut head = Roff::new();
    // No hyphenation: flag names and storage classes must stay whole.
    head.control("nh", []);
    head.control("SH", ["NAME"]).text([roman(format!("{BIN_NAME} - {SUMMARY}"))]);
    head.control("SH", ["SYNOPSIS"]);
    head.text([bold(BIN_NAME), roman(" ["), italic("OPTIONS"), roman("] "), italic("COMMAND"), roman(" ...")]);
    for sub in subcommands(&cmd) {
        head.control("br", []);
        head.text(synopsis(sub));
    }
    head.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut head, &cmd.get_long_about().or(cmd.get_about()).map(|s| s.to_string()).unwrap_or_default());
    head.control("PP", []);
    head.text([roman(
        "Options of the top level (global options) may also be given after the subcommand. \
         Settings come from flags, MEDIA_OFFLOAD_* variables, the --config file and homeserver.yaml, \
         in that order; secrets never from the command line (see ENVIRONMENT).",
    )]);
    append(&mut page, &head.render(), &preamble);

    let mut options = Vec::new();
    man.render_options_section(&mut options).expect("writing to memory");
    append(&mut page, &String::from_utf8_lossy(&options), &preamble);

    let mut body = Roff::new();
    body.control("SH", ["COMMANDS"]);
    for sub in subcommands(&cmd) {
        // Control lines are not escaped: a minus, so that it can be copied.
        body.control("SS", [sub.get_name().replace('-', "\\-").as_str()]);
        body.text(synopsis(sub));
        body.control("PP", []);
        paragraphs(&mut body, &sub.get_long_about().or(sub.get_about()).map(|s| s.to_string()).unwrap_or_default());
        for arg in sub.get_arguments().filter(|a| shown_in_subcommand(a)) {
            option_item(&mut body, arg);
        }
    }

    body.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        body.control("TP", []).text([bold(code.to_string())]).text([roman(*meaning)]);
    }

    // Lists of long names and paths follow: left-aligned, not justified
    // (justifying them leaves lines groff "cannot adjust").
    body.control("ad", ["l"]);
    body.control("SH", ["ENVIRONMENT"]);
    for arg in all_arguments(&cmd).filter(|a| !a.is_hide_env_set()) {
        if let Some(env) = arg.get_env() {
            let flag = arg.get_long().map(|l| format!("--{l}")).unwrap_or_default();
            body.control("TP", [])
                .text([bold(env.to_string_lossy())])
                .text([roman(format!("The value of {flag} when it is not given."))]);
        }
    }
    for (name, meaning) in ENVIRONMENT {
        body.control("TP", []).text([bold(*name)]).text([roman(*meaning)]);
    }

    body.control("SH", ["FILES"]);
    for (name, meaning) in FILES {
        body.control("TP", []).text([italic(*name)]).text([roman(*meaning)]);
    }

    body.control("SH", ["EXAMPLES"]);
    for (what, commands) in EXAMPLES {
        body.control("PP", []).text([roman(*what)]);
        body.control("PP", []).control("RS", ["4"]).control("nf", []);
        for line in commands.lines() {
            body.text([bold(line)]);
        }
        body.control("fi", []).control("RE", []);
    }

    body.control("SH", ["SEE ALSO"]);
    body.text([roman(
        "/usr/share/doc/media-offload/README.md and docs/operations.md there; \
         the same files are in the source repository. s3_media_upload is the tool from \
         synapse-s3-storage-provider that this one replaces.",
    )]);

    body.control("SH", ["VERSION"]).text([roman(format!("{BIN_NAME} {}", cmd.get_version().unwrap_or_default()))]);
    append(&mut page, &body.render(), &preamble);
    page
}

/// A shell's completion script.
///
/// Bash: clap_complete's script for a name with a hyphen completes nothing
/// past the subcommand (its case labels escape the hyphen differently from
/// the state it computes: clap-rs/clap#6421). The script is generated for
/// `media_offload`, where both agree, and only the name the `complete`
/// builtin registers is changed back. The state names are internal to the
/// function, so nothing else depends on the spelling.
pub fn completions(shell: Shell) -> Vec<u8> {
    // Unbuilt: `generate` names the command and its subcommands itself.
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    if shell != Shell::Bash {
        clap_complete::generate(shell, &mut cmd, BIN_NAME, &mut script);
        return script;
    }
    const STAND_IN: &str = "media_offload";
    clap_complete::generate(shell, &mut cmd, STAND_IN, &mut script);
    let text = String::from_utf8(script).expect("clap_complete writes UTF-8");
    let mut out = String::with_capacity(text.len());
    let mut registered = 0;
    for line in text.lines() {
        match line.trim_start().starts_with("complete -F ").then(|| line.strip_suffix(STAND_IN)).flatten() {
            Some(rest) => {
                out.push_str(rest);
                out.push_str(BIN_NAME);
                registered += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(registered > 0, "clap_complete's bash script changed: no `complete -F ... {STAND_IN}` line");
    out.into_bytes()
}

fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn all_arguments(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().chain(subcommands(cmd).flat_map(|s| s.get_arguments().filter(|a| !a.is_global_set())))
}

/// A subcommand's own arguments: not the global ones (OPTIONS has them), not --help.
fn shown_in_subcommand(arg: &Arg) -> bool {
    !arg.is_hide_set() && !arg.is_global_set() && !matches!(arg.get_action(), ArgAction::Help | ArgAction::HelpLong)
}

/// `media-offload upload [OPTIONS] BASE_PATH BUCKET`
fn synopsis(sub: &Command) -> Vec<Inline> {
    let mut line = vec![bold(BIN_NAME), roman(" "), bold(sub.get_name())];
    if sub.get_arguments().any(|a| shown_in_subcommand(a) && !a.is_positional()) {
        line.extend([roman(" ["), italic("OPTIONS"), roman("]")]);
    }
    for pos in sub.get_positionals().filter(|a| !a.is_hide_set()) {
        let name = value_names(pos);
        if pos.is_required_set() {
            line.extend([roman(" "), italic(name)]);
        } else {
            line.extend([roman(" ["), italic(name), roman("]")]);
        }
    }
    line
}

fn value_names(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" "),
        None => arg.get_id().as_str().to_uppercase(),
    }
}

/// One `.TP` item: the flag or argument, its help, default, possible values and variable.
fn option_item(roff: &mut Roff, arg: &Arg) {
    let takes_values = arg.get_num_args().is_some_and(|n| n.takes_values());
    let mut header = Vec::new();
    if arg.is_positional() {
        header.push(italic(value_names(arg)));
    } else {
        if let Some(short) = arg.get_short() {
            header.extend([bold(format!("-{short}")), roman(", ")]);
        }
        if let Some(long) = arg.get_long() {
            header.push(bold(format!("--{long}")));
        }
        if takes_values {
            let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
            let value = format!("<{}>", value_names(arg));
            if optional {
                header.extend([roman(" ["), italic(value), roman("]")]);
            } else {
                header.extend([roman(" "), italic(value)]);
            }
        }
    }
    roff.control("TP", []).text(header);
    let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
    let mut notes = Vec::new();
    if takes_values && !arg.is_hide_default_value_set() && !arg.get_default_values().is_empty() {
        let defaults: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy()).collect();
        if defaults.iter().any(|d| !d.is_empty()) {
            notes.push(format!("[default: {}]", defaults.join(", ")));
        }
    }
    let possible: Vec<_> =
        arg.get_possible_values().iter().filter(|p| !p.is_hide_set()).map(|p| p.get_name().to_owned()).collect();
    if takes_values && !arg.is_hide_possible_values_set() && !possible.is_empty() {
        notes.push(format!("[possible values: {}]", possible.join(", ")));
    }
    if let Some(env) = arg.get_env().filter(|_| !arg.is_hide_env_set()) {
        notes.push(format!("[env: {}]", env.to_string_lossy()));
    }
    let text = if notes.is_empty() { help } else { format!("{help} {}", notes.join(" ")) };
    paragraphs(roff, text.trim());
}

/// Text with blank lines between paragraphs, as clap keeps doc comments.
fn paragraphs(roff: &mut Roff, text: &str) {
    for (i, para) in text.split("\n\n").filter(|p| !p.trim().is_empty()).enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(para.split_whitespace().collect::<Vec<_>>().join(" "))]);
    }
}

fn append(page: &mut Vec<u8>, rendered: &str, preamble: &str) {
    page.extend_from_slice(rendered.strip_prefix(preamble).unwrap_or(rendered).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    #[test]
    fn exit_status_lists_every_exit_code() {
        // Exhaustive: a new exit code does not compile until it is placed here.
        let code = |c: ExitCode| match c {
            ExitCode::Success | ExitCode::Fatal | ExitCode::Usage | ExitCode::Partial | ExitCode::Found => c as u8,
            ExitCode::Locked => c as u8,
        };
        let all =
            [ExitCode::Success, ExitCode::Fatal, ExitCode::Usage, ExitCode::Partial, ExitCode::Found, ExitCode::Locked];
        let listed: Vec<u8> = EXIT_STATUS.iter().map(|(c, _)| *c).collect();
        assert_eq!(listed, all.map(code).to_vec());
    }

    #[test]
    fn every_subcommand_has_its_own_section() {
        let page = String::from_utf8(man_page()).unwrap();
        for sub in subcommands(&command()) {
            let heading = format!(".SS {}\n", sub.get_name().replace('-', "\\-"));
            assert!(page.contains(&heading), "no {heading:?}");
        }
    }
}
