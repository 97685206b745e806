//! What a person or a journal sees: log set-up, progress (bars on a
//! terminal, periodic plain lines otherwise) and end-of-run summaries.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a progress line is logged when there is no terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(15);

static BARS: OnceLock<MultiProgress> = OnceLock::new();
/// How many `-q` were given.
static QUIET: AtomicU8 = AtomicU8::new(0);

/// Whether progress is drawn as bars.
fn bars() -> Option<&'static MultiProgress> {
    BARS.get()
}

/// Set up logging to stderr. On a terminal: coloured levels. Under journald
/// (`JOURNAL_STREAM`): `<N>` priority prefixes, no colour, no timestamps.
/// Piped elsewhere: plain lines with UTC timestamps.
pub fn init(verbose: u8, quiet: u8, progress_bars: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    let level = match (verbose, quiet) {
        (0, 0) => log::LevelFilter::Info,
        (1, _) => log::LevelFilter::Debug,
        (v, _) if v >= 2 => log::LevelFilter::Trace,
        (_, 1) => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let tty = std::io::stderr().is_terminal();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn).filter_module("media_offload", level);
    if let Ok(spec) = std::env::var("MEDIA_OFFLOAD_LOG") {
        builder.parse_filters(&spec);
    }
    if journal {
        builder.write_style(env_logger::WriteStyle::Never).format(|buf, record| {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                _ => 7,
            };
            writeln!(buf, "<{prio}>{}", record.args())
        });
    } else if tty {
        builder.format_timestamp(None).format_target(false);
    } else {
        builder.write_style(env_logger::WriteStyle::Never).format(|buf, record| {
            writeln!(
                buf,
                "{} {:5} {}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                record.level(),
                record.args()
            )
        });
    }
    let logger = builder.build();
    let max = logger.filter();
    if progress_bars && tty {
        let multi = BARS.get_or_init(MultiProgress::new);
        let _ = log::set_boxed_logger(Box::new(Bridge { inner: logger, multi }));
    } else {
        let _ = log::set_boxed_logger(Box::new(logger));
    }
    log::set_max_level(max);
}

/// Routes log lines around the progress bars so they do not tear them.
struct Bridge {
    inner: env_logger::Logger,
    multi: &'static MultiProgress,
}

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }
    fn log(&self, record: &log::Record) {
        if self.inner.matches(record) {
            self.multi.suspend(|| self.inner.log(record));
        }
    }
    fn flush(&self) {
        self.inner.flush();
    }
}

/// What a progress display counts besides its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Items only.
    Items,
    /// Files and bytes uploaded too; in a dry run, with no transfer rate.
    Transfer { dry_run: bool },
}

/// Progress of one phase: a bar on a terminal, a log line every
/// [`LOG_INTERVAL`] otherwise. Both show the totals so far (items of the
/// whole, files, bytes) and end with the elapsed time.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    unit: &'static str,
    counting: Counting,
    /// None: counting up, the whole not known in advance.
    total: Option<u64>,
    done: u64,
    files: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(what: &'static str, unit: &'static str, total: u64, counting: Counting) -> Self {
        Self::start(what, unit, Some(total), counting)
    }

    /// Progress through a whole not known in advance (a walk of a folder).
    pub fn counting_up(what: &'static str, unit: &'static str) -> Self {
        Self::start(what, unit, None, Counting::Items)
    }

    fn start(what: &'static str, unit: &'static str, total: Option<u64>, counting: Counting) -> Self {
        let bar = bars().map(|multi| {
            let bar = multi.add(ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr()));
            let template = match total {
                Some(_) => {
                    format!("{{prefix}} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} {unit}{{msg}} (ETA {{eta}})")
                }
                None => format!("{{prefix}} {{spinner}} {{human_pos}} {unit}{{msg}}"),
            };
            bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
            bar.set_prefix(what);
            bar
        });
        match (total, &bar) {
            (Some(total), None) => log::info!("{what}: {total} {unit} to go"),
            (None, None) => log::info!("{what}: looking through the {unit}"),
            (_, Some(_)) => {}
        }
        let now = Instant::now();
        Self { bar, what, unit, counting, total, done: 0, files: 0, bytes: 0, started: now, last_line: now }
    }

    /// `n` more items done, with `files` files and `bytes` bytes moved.
    pub fn advance(&mut self, n: u64, files: u64, bytes: u64) {
        self.done += n;
        self.files += files;
        self.bytes += bytes;
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                if self.counting != Counting::Items {
                    bar.set_message(self.transfer());
                }
            }
            None if self.last_line.elapsed() >= LOG_INTERVAL => {
                self.last_line = Instant::now();
                log::info!("{}", self.line());
            }
            None => {}
        }
    }

    /// ", 812 files, 40.2M uploaded at 12.1M/s" (dry run: "to upload").
    fn transfer(&self) -> String {
        match self.counting {
            Counting::Items => String::new(),
            Counting::Transfer { dry_run: true } => {
                format!(", {}, {} to upload", count(self.files, "file", "files"), naturalsize(self.bytes))
            }
            Counting::Transfer { dry_run: false } => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                format!(
                    ", {}, {} uploaded at {}/s",
                    count(self.files, "file", "files"),
                    naturalsize(self.bytes),
                    naturalsize((self.bytes as f64 / secs) as u64)
                )
            }
        }
    }

    fn line(&self) -> String {
        let Some(total) = self.total else {
            return format!("{}: {} {}{}", self.what, self.done, self.unit, self.transfer());
        };
        let pct = if total == 0 { 100.0 } else { self.done as f64 * 100.0 / total as f64 };
        format!("{}: {}/{} {} ({pct:.0}%){}", self.what, self.done, total, self.unit, self.transfer())
    }

    pub fn finish(self) {
        let elapsed = format!("{:.1}s", self.started.elapsed().as_secs_f64());
        match &self.bar {
            Some(bar) => {
                let template = match self.total {
                    Some(_) => format!(
                        "{{prefix}} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} {}{{msg}}, done in {elapsed}",
                        self.unit
                    ),
                    None => format!("{{prefix}} {{human_pos}} {}{{msg}}, done in {elapsed}", self.unit),
                };
                bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
                bar.finish_with_message(self.transfer());
            }
            None => log::info!("{}, done in {elapsed}", self.line()),
        }
    }
}

/// `humanize.naturalsize(n, gnu=True)`, as the Python tool prints sizes.
pub fn naturalsize(bytes: u64) -> String {
    const SUFFIXES: &[char] = &['K', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y'];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut suffix = SUFFIXES[0];
    for s in SUFFIXES {
        value /= 1024.0;
        suffix = *s;
        if value < 1024.0 {
            break;
        }
    }
    format!("{value:.1}{suffix}")
}

/// The end-of-run summary of a command: lines for people, one JSON object
/// for machines, printed from one place ([`print`]).
pub trait Summary {
    fn lines(&self) -> Vec<String>;
    fn json(&self) -> serde_json::Value;
    /// Nothing was done and nothing is wrong: under `-q`, nothing is printed
    /// (a no-op daily run under cron sends no mail).
    fn is_noop(&self) -> bool;
}

/// Print a command's summary: text, or one JSON object with `--json`;
/// nothing at all for a no-op run under `-q`.
pub fn print(json: bool, s: &dyn Summary) {
    if QUIET.load(Ordering::Relaxed) > 0 && s.is_noop() {
        return;
    }
    summary(json, &s.lines(), s.json());
}

/// `1 file`, `2 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The verb of a summary line: what was done, or in a dry run what would be.
pub fn did(dry_run: bool, done: &str, would: &str) -> String {
    if dry_run { format!("Would {would}") } else { done.to_owned() }
}

/// The lines a dry run lists (each row, file, object it would touch),
/// collected from any thread and printed sorted at the end, so two dry
/// runs can be diffed. Kept in a temporary SQLite file, not in memory: a
/// first dry run over a big store lists millions of lines.
pub struct Listing {
    db: Mutex<Option<(rusqlite::Connection, tempfile::TempPath)>>,
    to_stderr: bool,
}

impl Listing {
    /// `to_stderr`: stdout is reserved for `--json`.
    pub fn new(to_stderr: bool) -> Self {
        Self { db: Mutex::new(None), to_stderr }
    }

    pub fn add(&self, line: String) {
        let mut db = self.db.lock().expect("listing poisoned");
        if db.is_none() {
            let opened = tempfile::Builder::new().prefix("media-offload-listing-").tempfile().ok().and_then(|f| {
                let path = f.into_temp_path();
                let conn = rusqlite::Connection::open(&path).ok()?;
                conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; CREATE TABLE l (line TEXT);")
                    .ok()?;
                Some((conn, path))
            });
            match opened {
                Some(o) => *db = Some(o),
                None => {
                    // No temporary file: print as it comes.
                    drop(db);
                    return self::line(self.to_stderr, &line);
                }
            }
        }
        if let Some((conn, _)) = db.as_ref()
            && conn.execute("INSERT INTO l VALUES (?1)", [&line]).is_err()
        {
            self::line(self.to_stderr, &line);
        }
    }

    /// Print every line, sorted, and forget them.
    pub fn flush(&self) {
        let Some((conn, _path)) = self.db.lock().expect("listing poisoned").take() else { return };
        let Ok(mut stmt) = conn.prepare("SELECT line FROM l ORDER BY line") else { return };
        let Ok(rows) = stmt.query_map([], |r| r.get::<_, String>(0)) else { return };
        for l in rows.flatten() {
            line(self.to_stderr, &l);
        }
    }
}

/// Print the summary: text lines, or one JSON object with `--json`.
fn summary(json: bool, text: &[String], value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{value}");
    } else {
        for line in text {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
}

/// The one line a run that could not finish leaves on stderr: `error: ...`
/// with the whole cause chain (`<3>`-prefixed under journald).
pub fn fatal(err: &anyhow::Error) {
    let prio = if std::env::var_os("JOURNAL_STREAM").is_some() { "<3>" } else { "" };
    let text = format!("{err:#}").replace('\n', " ");
    let print = || {
        let _ = writeln!(std::io::stderr().lock(), "{prio}error: {text}");
    };
    match bars() {
        Some(multi) => multi.suspend(print),
        None => print(),
    }
}

/// One line on stdout. A closed pipe (`| head`) is not an error worth a
/// panic: the reader has what it wanted.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Print one line on stdout (stderr when stdout is reserved for `--json`)
/// without tearing the progress bars.
pub fn line(to_stderr: bool, text: &str) {
    let print = || {
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            say(text);
        }
    };
    match bars() {
        Some(multi) => multi.suspend(print),
        None => print(),
    }
}

#[cfg(test)]
mod tests {
    use super::naturalsize;

    #[test]
    fn sizes_like_humanize_gnu() {
        assert_eq!(naturalsize(0), "0B");
        assert_eq!(naturalsize(1023), "1023B");
        assert_eq!(naturalsize(1024), "1.0K");
        assert_eq!(naturalsize(1536), "1.5K");
        assert_eq!(naturalsize(5 * 1024 * 1024), "5.0M");
        assert_eq!(naturalsize(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
