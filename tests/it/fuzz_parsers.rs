//! Fuzzing the parsers of what users and databases hand the tool: no input
//! makes them panic, a refusal is an `Err` that names where the value came
//! from, and no media path they accept leaves the media store.

use std::path::{Component, Path};
use std::time::Duration;

use media_offload::config::{from_database_yaml, from_homeserver_yaml};
use media_offload::duration::parse_duration;
use media_offload::media_store::{MediaKind, MediaPaths};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value};

fn config() -> Config {
    Config { cases: 2000, failure_persistence: None, ..Config::default() }
}

// ------------------------------------------------------------- duration ---

fn duration_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[-+ 0-9]{0,25}[shdmyx ]?",
        "[0-9]{1,22}[shdmy]",
        (any::<u64>(), prop::sample::select(vec!["s", "h", "d", "m", "y", "ä", "", "d "]))
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_duration_never_panics_and_accepts_only_a_number_and_a_unit(text in duration_like()) {
        match parse_duration(&text) {
            Ok(d) => {
                let (number, unit) = text.split_at(text.len() - 1);
                prop_assert!(!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
                let secs = match unit {
                    "s" => 1u64,
                    "h" => 3600,
                    "d" => 86_400,
                    "m" => 30 * 86_400,
                    "y" => 365 * 86_400,
                    _ => return Err(TestCaseError::fail(format!("accepted unit {unit:?} in {text:?}"))),
                };
                let n: u64 = number.parse().unwrap();
                prop_assert_eq!(d, Duration::from_secs(n * secs));
            }
            Err(e) => prop_assert!(e.contains("duration"), "{text:?}: {e}"),
        }
    }
}

// ----------------------------------------------------------------- YAML ---

/// Key names the loaders look at, and a few they must refuse.
const KEYS: &[&str] = &[
    "database",
    "name",
    "args",
    "sqlite",
    "postgres",
    "sqlite3",
    "psycopg2",
    "psycopg",
    "host",
    "hostaddr",
    "port",
    "dsn",
    "sslmode",
    "password",
    "user",
    "username",
    "dbname",
    "passfile",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "application_name",
    "options",
    "service",
    "sslpassword",
    "sslcompression",
    "cp_min",
    "cp_max",
    "allow_unsafe_locale",
    "media_store_path",
    "",
    "ä",
];

/// Values the loaders treat specially, and some that are almost right.
const WORDS: &[&str] = &[
    "sqlite3",
    "psycopg2",
    "psycopg",
    "postgres",
    "localhost",
    "127.0.0.1",
    "::1",
    "5432",
    "65536",
    "-1",
    "5432,5433",
    "disable",
    "prefer",
    "require",
    "verify-full",
    "verify-ca",
    "any",
    "read-write",
    "standby",
    "host=/run/postgresql port=5432 dbname=synapse",
    "host='a b' password='it\\'s'",
    "user='unterminated",
    "=x",
    "postgres://u:p@h/db",
    "key",
    "  ",
    "0",
    "1",
    "homeserver.db",
    "/var/lib/synapse/homeserver.db",
];

fn yaml_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
        1 => any::<i64>().prop_map(|n| Value::Number(n.into())),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

fn yaml_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned())),
        prop::sample::select(KEYS).prop_map(|w| Value::String(w.to_owned())),
        "\\PC{0,30}".prop_map(Value::String),
        "[a-z_]{1,8}=('[^']{0,6}'?|[^ ]{0,6})( [a-z_]{1,8}=[^ ]{0,6}){0,3}".prop_map(Value::String),
    ]
}

fn mapping(entries: Vec<(Value, Value)>) -> Value {
    Value::Mapping(entries.into_iter().collect::<Mapping>())
}

fn yaml_value() -> impl Strategy<Value = Value> {
    yaml_scalar().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((yaml_key(), inner.clone()), 0..8).prop_map(mapping),
            (prop::sample::select(vec!["!!str", "!x", "!!binary"]), inner)
                .prop_map(|(t, v)| Value::Tagged(Box::new(TaggedValue { tag: Tag::new(t), value: v }))),
        ]
    })
}

/// Documents shaped like the real files, with anything in the holes.
fn config_doc() -> impl Strategy<Value = Value> {
    let s = |k: &str| Value::String(k.to_owned());
    prop_oneof![
        yaml_value(),
        (yaml_scalar(), yaml_value()).prop_map(move |(name, args)| {
            mapping(vec![(s("database"), mapping(vec![(s("name"), name), (s("args"), args)]))])
        }),
        (
            prop::sample::select(vec!["sqlite3", "psycopg2", "psycopg"]),
            prop::collection::vec((yaml_key(), yaml_scalar()), 0..8)
        )
            .prop_map(move |(name, args)| {
                mapping(vec![(s("database"), mapping(vec![(s("name"), s(name)), (s("args"), mapping(args))]))])
            }),
        (prop::sample::select(vec!["sqlite", "postgres"]), yaml_value())
            .prop_map(move |(k, v)| mapping(vec![(s(k), v)])),
        prop::collection::vec((yaml_key(), yaml_scalar()), 0..10).prop_map(mapping),
    ]
}

/// YAML texts: the serialized shapes above, mangled, and plain noise.
fn yaml_text() -> impl Strategy<Value = String> {
    let mangled = (config_doc(), prop::collection::vec((any::<prop::sample::Index>(), "\\PC{0,3}"), 0..4)).prop_map(
        |(doc, edits)| {
            let mut text = serde_yaml_ng::to_string(&doc).unwrap_or_default();
            for (at, insert) in edits {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                let end = (i + 1..=text.len()).find(|j| text.is_char_boundary(*j)).unwrap_or(i);
                text.replace_range(i..end, &insert);
            }
            text
        },
    );
    let line = (
        0usize..6,
        prop::sample::select(KEYS),
        prop::sample::select(vec![
            "",
            " ",
            " 1",
            " x",
            " []",
            " {}",
            " &a",
            " *a",
            " !!str",
            " ~",
            " |",
            " >",
            " [a, {b: c}]",
            " '''",
            " \"\\u00e4\"",
        ]),
    )
        .prop_map(|(indent, key, rest)| format!("{}{key}:{rest}", " ".repeat(indent)));
    prop_oneof![
        mangled,
        prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n")),
        "\\PC{0,120}",
        "[-:{}\\[\\],&*!|>'\"#% \n a-z0-9]{0,120}",
    ]
}

const ORIGIN: &str = "fuzzed.yaml";

/// Both loaders on one document: no panic, and a refusal names the file.
fn check_loaders(doc: &Value) -> Result<(), TestCaseError> {
    for (what, result) in
        [("homeserver", from_homeserver_yaml(doc, ORIGIN)), ("database", from_database_yaml(doc, ORIGIN))]
    {
        if let Err(e) = result {
            let text = format!("{e:#}");
            prop_assert!(text.contains(ORIGIN), "{what} loader error does not name the file: {text}\n{doc:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_loaders_never_panic_on_structured_values(doc in config_doc()) {
        check_loaders(&doc)?;
    }

    #[test]
    fn config_loaders_never_panic_on_yaml_texts(text in yaml_text()) {
        if let Ok(doc) = serde_yaml_ng::from_str::<Value>(&text) {
            check_loaders(&doc)?;
        }
    }
}

// ---------------------------------------------------------- media paths ---

fn path_piece() -> impl Strategy<Value = String> {
    let bits = prop::sample::select(vec![
        "..",
        ".",
        "/",
        "\\",
        "\0",
        "a",
        "Z",
        "0",
        "ä",
        "😀",
        "%2e",
        "~",
        " ",
        "-",
        "_",
        "local_content",
        ":",
    ]);
    prop_oneof!["\\PC{0,12}", ".{0,12}", prop::collection::vec(bits, 0..8).prop_map(|v| v.concat()),]
}

/// A relative path with only normal components: it cannot leave the store.
fn stays_inside(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && !rel.contains('\\')
        && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(rel).components().all(|c| matches!(c, Component::Normal(_)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn media_paths_never_panic_and_stay_inside_the_store(
        origin in path_piece(),
        media_id in path_piece(),
        filesystem_id in path_piece(),
        remote in any::<bool>(),
    ) {
        let kind = if remote { MediaKind::Remote } else { MediaKind::Local };
        if let Ok(p) = MediaPaths::new(&origin, &media_id, &filesystem_id, kind) {
            for rel in [&p.original, &p.thumbnail_dir] {
                prop_assert!(stays_inside(rel), "{rel:?} from {origin:?} {media_id:?} {filesystem_id:?}");
            }
            let (content, thumbs) = if remote {
                (format!("remote_content/{origin}/"), format!("remote_thumbnail/{origin}/"))
            } else {
                ("local_content/".to_owned(), "local_thumbnails/".to_owned())
            };
            prop_assert!(p.original.starts_with(&content), "{:?}", p.original);
            prop_assert!(p.thumbnail_dir.starts_with(&thumbs), "{:?}", p.thumbnail_dir);
            // the file name is what is left of the filesystem id after the two folders
            let rest: String = filesystem_id.chars().skip(4).collect();
            prop_assert!(p.original.ends_with(&format!("/{rest}")), "{:?}", p.original);
        }
    }
}
