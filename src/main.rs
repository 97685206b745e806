use std::io::IsTerminal;

use clap::Parser;

use media_offload::cli::{Cli, Command};
use media_offload::commands::{self, Context};
use media_offload::error::{ExitCode, exit_code_for};
use media_offload::lock::LockMode;
use media_offload::manpage;
use media_offload::report;

/// Generated text to stdout; a closed pipe is the reader's choice, not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(media_offload::cli::argv());
    let bars = !cli.no_progress && std::io::stderr().is_terminal();
    report::init(cli.verbose, cli.quiet, bars);
    let lock = if cli.wait { LockMode::Wait } else { LockMode::Fail };
    let result =
        Context::new(cli.cache_db.clone(), cli.config.as_deref(), lock, cli.json).and_then(|ctx| dispatch(&cli, &ctx));
    let code = match result {
        Ok(()) => ExitCode::Success,
        Err(err) => {
            report::fatal(&err);
            exit_code_for(&err)
        }
    };
    std::process::ExitCode::from(code as u8)
}

fn dispatch(cli: &Cli, ctx: &Context) -> anyhow::Result<()> {
    let offload = match &cli.command {
        Command::UpdateDb(_) => Some("update-db"),
        Command::CheckDeleted(_) => Some("check-deleted"),
        Command::Update(_) => Some("update"),
        Command::Upload(a) if a.delete => Some("upload --delete"),
        Command::Upload(_) => Some("upload"),
        Command::Migrate(_) => Some("migrate"),
        _ => None,
    };
    if let Some(command) = offload {
        ctx.refuse_dendrite(command)?;
    }
    match &cli.command {
        Command::UpdateDb(a) => commands::update_db::run(ctx, &a.selection.into_options()),
        Command::CheckDeleted(a) => commands::check_deleted::run(ctx, &a.base_path),
        Command::Update(a) => commands::update::run(ctx, &a.base_path, &a.selection.into_options()),
        Command::Write(a) => commands::write::run(ctx, &a.out),
        Command::Upload(a) => commands::upload::run(ctx, &a.into_options()),
        Command::Migrate(a) => commands::migrate::run(ctx, &a.into_options()),
        Command::Purge(a) => commands::purge::run(ctx, &a.into_options()),
        Command::Check(a) => commands::check::run(ctx, &a.into_options()),
        Command::Copy(a) => commands::copy::run(ctx, &a.into_options()),
        Command::Demo(a) => commands::demo::run(ctx, &a.dir, a.files),
        Command::Completions { shell } => write_stdout(&manpage::completions(*shell)),
        Command::Man => write_stdout(&manpage::man_page()),
    }
}
