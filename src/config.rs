//! `--config FILE`: a TOML file whose keys are the long flag names (`poll-interval = "2s"`,
//! `server = ["nats://a:4222"]`). Nothing here lists the flags: each key is looked up in the
//! command-line definition itself, so every flag, including ones added later, can be set in the
//! file. A key's value is used only when neither the flag nor its environment variable was given
//! (flag > env > file > default); it is handed to clap as if typed, so it is validated the same way.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Id of the `--config` argument.
const CONFIG_ID: &str = "config";

/// Returns `args` (the whole command line, program name first, as `command` defines it) with the values of the config
/// file appended as flags, for those flags that neither the command line nor the environment set.
/// Without `--config` (or `NATS_INSIGHTS_CONFIG`) the arguments come back unchanged; a command
/// line clap cannot parse also comes back unchanged so that clap reports it. The error is one
/// line naming the file and, where it applies, the key.
pub fn apply(mut command: Command, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    command.build();
    let Ok(matches) = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args.iter())
    else {
        return Ok(args);
    };
    // The subcommand that runs and its matches: the file fills its flags (and the global ones).
    let (mut target, mut target_matches) = (&command, &matches);
    while let Some((name, sub)) = target_matches.subcommand() {
        match target.find_subcommand(name) {
            Some(cmd) => {
                target = cmd;
                target_matches = sub;
            }
            None => break,
        }
    }
    let path = target_matches
        .try_get_one::<std::path::PathBuf>(CONFIG_ID)
        .ok()
        .flatten()
        .or_else(|| matches.try_get_one(CONFIG_ID).ok().flatten())
        .cloned();
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let extra = flags_from_toml(&text, &path, &command, target, target_matches)?;
    let mut args = args;
    args.extend(extra.into_iter().map(OsString::from));
    Ok(args)
}

/// The flags a config file adds for `target` (already built), given what `matches` holds.
fn flags_from_toml(
    text: &str,
    path: &Path,
    root: &Command,
    target: &Command,
    matches: &ArgMatches,
) -> Result<Vec<String>, String> {
    let file = path.display();
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => format!("{file}, line {line}: {message}"),
            None => format!("{file}: {message}"),
        }
    })?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        if key == CONFIG_ID || key == "help" || key == "version" {
            return Err(format!("{file}: `{key}` cannot be set in a config file"));
        }
        let Some(arg) = find_long(target, key) else {
            if anywhere(root, key) {
                continue; // a flag of another command (the same file serves `run` and `status`)
            }
            return Err(format!(
                "{file}: unknown key `{key}` (keys are long flag names, e.g. `poll-interval`)"
            ));
        };
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let given = to_flags(arg, key, value).map_err(|e| format!("{file}: `{key}`: {e}"))?;
        validate(arg, &given).map_err(|e| format!("{file}: `{key}`: {e}"))?;
        flags.extend(given);
    }
    Ok(flags)
}

/// The argument of `command` with this long name.
fn find_long<'a>(command: &'a Command, long: &str) -> Option<&'a Arg> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long) && !a.is_positional())
}

/// Whether any command in the tree has a flag with this long name.
fn anywhere(command: &Command, long: &str) -> bool {
    find_long(command, long).is_some() || command.get_subcommands().any(|s| anywhere(s, long))
}

/// The command-line words a TOML value stands for.
fn to_flags(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let flag = format!("--{key}");
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(set) => {
                let wanted = matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(if *set == wanted { vec![flag] } else { vec![] })
            }
            other => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        },
        ArgAction::Set | ArgAction::Append => {
            let many = matches!(arg.get_action(), ArgAction::Append);
            match value {
                toml::Value::Array(items) if many => items
                    .iter()
                    .map(|item| scalar(item).map(|v| format!("{flag}={v}")))
                    .collect(),
                toml::Value::Array(_) => Err("expected one value, found an array".to_string()),
                other => Ok(vec![format!("{flag}={}", scalar(other)?)]),
            }
        }
        _ => Err("this flag cannot be set in a config file".to_string()),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, found {}",
            other.type_str()
        )),
    }
}

/// Runs the flag's own parser on the words, so a bad value is reported against the file.
fn validate(arg: &Arg, words: &[String]) -> Result<(), String> {
    let single = arg.clone().required(false).global(false);
    let result = Command::new("config")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(single)
        .try_get_matches_from(words);
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command as Sub};
    use clap::CommandFactory;
    use clap::Parser;
    use std::time::Duration;

    /// Taken by every test here: one of them sets environment variables, which are per process.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn env_lock() -> std::sync::MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nats-insights-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn run_args(words: &[&str]) -> Result<crate::cli::RunArgs, String> {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        let args = apply(Cli::command(), args)?;
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Sub::Run(run) => Ok(*run),
            other => Err(format!("not run: {other:?}")),
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let _env = env_lock();
        let path = write(
            "precedence.toml",
            r#"
server = ["nats://a:4222", "nats://b:4222"]
poll-interval = "2s"
flap-max = 4
bucket-replicas = 5
heartbeat-interval = "7s"
log = "debug"
json = true   # a flag of `status`, ignored by `run`
"#,
        );
        let p = path.to_str().expect("utf-8 path");
        // Without a config file nothing changes.
        let plain: Vec<OsString> = ["nats-insights", "checks", "--json"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(apply(Cli::command(), plain.clone()), Ok(plain));
        // Only this test sets these variables.
        std::env::set_var("INSIGHTS_FLAP_MAX", "6");
        let args = run_args(&[
            "nats-insights",
            "run",
            "--config",
            p,
            "--bucket-replicas",
            "1",
        ]);
        std::env::remove_var("INSIGHTS_FLAP_MAX");
        let args = args.expect("parses");
        assert_eq!(args.connect.servers, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            args.poll_interval,
            Duration::from_secs(2),
            "file over default"
        );
        assert_eq!(args.flap_max, 6, "env over file");
        assert_eq!(args.state.bucket_replicas, 1, "flag over file");
        assert_eq!(args.offline_after, Duration::from_secs(3), "default");

        // The same through the environment variable naming the file, and a global flag.
        std::env::set_var("NATS_INSIGHTS_CONFIG", p);
        let cli = apply(
            Cli::command(),
            ["nats-insights", "run"].map(OsString::from).to_vec(),
        )
        .map(|a| Cli::try_parse_from(a).map_err(|e| e.to_string()));
        std::env::remove_var("NATS_INSIGHTS_CONFIG");
        let cli = cli.expect("file").expect("parses");
        assert_eq!(cli.log, "debug");
        let Sub::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.heartbeat_interval, Duration::from_secs(7));
    }

    #[test]
    fn errors_are_one_line_naming_the_file_and_key() {
        let _env = env_lock();
        let cases = [
            (
                "unknown.toml",
                "pol-interval = \"1s\"\n",
                "unknown key `pol-interval`",
            ),
            (
                "badvalue.toml",
                "poll-interval = \"fast\"\n",
                "`poll-interval`: invalid value 'fast'",
            ),
            (
                "badtype.toml",
                "flap-max = \"many\"\n",
                "`flap-max`: invalid value 'many'",
            ),
            (
                "table.toml",
                "[server]\nx = 1\n",
                "`server`: expected a string, number or boolean, found table",
            ),
            (
                "array.toml",
                "poll-interval = [\"1s\", \"2s\"]\n",
                "`poll-interval`: expected one value, found an array",
            ),
            (
                "syntax.toml",
                "# fine\npoll-interval = \n",
                "syntax.toml, line 2:",
            ),
            (
                "config.toml",
                "config = \"other.toml\"\n",
                "`config` cannot be set",
            ),
        ];
        for (name, text, expected) in cases {
            let path = write(name, text);
            let p = path.to_str().expect("utf-8 path");
            let error = run_args(&["nats-insights", "run", "--config", p]).expect_err(name);
            assert!(error.contains(expected), "{name}: {error}");
            assert!(error.contains(name), "{name} names the file: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
        let missing = run_args(&["nats-insights", "run", "--config", "/nonexistent/x.toml"]);
        assert!(missing.is_err_and(|e| e.contains("/nonexistent/x.toml")));
    }

    #[test]
    fn the_shipped_example_parses_and_sets_every_key_it_names() {
        let _env = env_lock();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nats-insights.toml");
        let text = std::fs::read_to_string(path).expect("deploy/nats-insights.toml");
        let table: toml::Table = toml::from_str(&text).expect("TOML");
        let args = run_args(&["nats-insights", "run", "--config", path]).expect("parses");
        assert!(args.metrics.metrics_listen.is_some(), "{table:?}");
        assert!(
            args.state.connect_args().is_some(),
            "the example uses a state bucket"
        );
        args.engine_config().expect("a valid configuration");
    }
}
