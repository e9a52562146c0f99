//! The optional configuration file (`--config FILE` or `STREAMFLOW_CONFIG`): YAML whose keys
//! are the long names of the flags. Its values become the flags' defaults, so the precedence is
//! flags > environment variables > file > built-in defaults, with clap doing the rest.
//!
//! ```yaml
//! bootstrap: 127.0.0.1:9094   # top level: every command that has the flag
//! landing: data/landing
//! gold: data/gold
//! backfill:                   # a section per command: that command only, wins over the top
//!   parallel: 2
//! ```

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Flags the file cannot set: they are about the command line itself.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// The file named by `--config FILE` / `--config=FILE` on the command line, else by
/// `STREAMFLOW_CONFIG`. Read before clap parses, since the file changes clap's defaults.
pub fn config_path(args: &[OsString], env: Option<OsString>) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    env.filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// Reads the file and makes its values the defaults of `command`'s flags.
pub fn apply_file(command: clap::Command, path: &Path) -> anyhow::Result<clap::Command> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the configuration file {} (from --config or STREAMFLOW_CONFIG)",
            path.display()
        )
    })?;
    apply_yaml(command, &text, &path.display().to_string())
}

fn apply_yaml(mut command: clap::Command, text: &str, file: &str) -> anyhow::Result<clap::Command> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .with_context(|| format!("the configuration file {file} is not valid YAML"))?;
    let map = match doc {
        serde_yaml_ng::Value::Null => return Ok(command),
        serde_yaml_ng::Value::Mapping(map) => map,
        _ => {
            anyhow::bail!("the configuration file {file} must be a mapping of flag names to values")
        }
    };
    let subcommands: BTreeSet<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    // Top-level keys first, then sections, so a section's value wins.
    let mut sections = Vec::new();
    for (key, value) in map {
        let key = key_name(&key, file)?;
        if subcommands.contains(&key) {
            let serde_yaml_ng::Value::Mapping(section) = value else {
                anyhow::bail!("`{key}` in {file} must be a mapping of {key}'s flags to values");
            };
            sections.push((key, section));
            continue;
        }
        let values = values_of(&key, &value, file)?;
        let mut used = false;
        if has_flag(&command, &key) {
            command = set_default(command, &key, &values);
            used = true;
        }
        for name in &subcommands {
            let has = command
                .find_subcommand(name)
                .is_some_and(|s| has_flag(s, &key));
            if has {
                command = command.mut_subcommand(name, |s| set_default(s, &key, &values));
                used = true;
            }
        }
        if !used {
            anyhow::bail!(
                "unknown setting `{key}` in {file}: use the long name of a flag (see `streamflow <command> --help`), or a section named after a command ({})",
                subcommands.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    for (name, section) in sections {
        for (key, value) in section {
            let key = key_name(&key, file)?;
            let values = values_of(&key, &value, file)?;
            let has = command
                .find_subcommand(&name)
                .is_some_and(|s| has_flag(s, &key));
            if !has {
                anyhow::bail!(
                    "unknown setting `{key}` in the `{name}` section of {file}: see `streamflow {name} --help` for its flags"
                );
            }
            command = command.mut_subcommand(&name, |s| set_default(s, &key, &values));
        }
    }
    Ok(command)
}

/// Keys may be written as the flag (`max-duration`) or as YAML likes them (`max_duration`).
fn key_name(key: &serde_yaml_ng::Value, file: &str) -> anyhow::Result<String> {
    match key {
        serde_yaml_ng::Value::String(s) => Ok(s.replace('_', "-")),
        other => anyhow::bail!("key {other:?} in {file} is not a flag name"),
    }
}

fn values_of(key: &str, value: &serde_yaml_ng::Value, file: &str) -> anyhow::Result<Vec<String>> {
    use serde_yaml_ng::Value;
    let scalar = |v: &Value| -> anyhow::Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => anyhow::bail!(
                "`{key}` in {file} must be a string, a number, a boolean or a list of them"
            ),
        }
    };
    match value {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        v => Ok(vec![scalar(v)?]),
    }
}

fn has_flag(command: &clap::Command, key: &str) -> bool {
    !NOT_IN_FILE.contains(&key)
        && command
            .get_arguments()
            .any(|a| a.get_long() == Some(key) && !a.is_hide_set())
}

fn set_default(command: clap::Command, key: &str, values: &[String]) -> clap::Command {
    let Some(id) = command
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .map(|a| a.get_id().clone())
    else {
        return command;
    };
    // clap keeps defaults as 'static strings; a configuration file is read once per process.
    let values: Vec<&'static str> = values
        .iter()
        .map(|v| &*Box::leak(v.clone().into_boxed_str()))
        .collect();
    command.mut_arg(id, |a| a.default_values(values).required(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(
            long,
            global = true,
            env = "SF_CONFIG_TEST_BOOTSTRAP",
            default_value = "a:1"
        )]
        bootstrap: String,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Run {
            #[arg(long, env = "SF_CONFIG_TEST_GOLD", default_value = "data/gold")]
            gold: String,
            #[arg(long, default_value_t = 1)]
            parallel: u32,
            #[arg(long)]
            dry_run: bool,
        },
    }

    fn parse(yaml: &str, args: &[&str]) -> anyhow::Result<Cli> {
        let command = apply_yaml(Cli::command(), yaml, "test.yaml")?;
        let matches = command.try_get_matches_from(args)?;
        Ok(Cli::from_arg_matches(&matches)?)
    }

    #[test]
    fn the_file_sets_defaults_and_flags_win() {
        let yaml = "bootstrap: b:2\ngold: from-file\nrun:\n  parallel: 3\n  dry_run: true\n";
        let cli = parse(yaml, &["sf", "run"]).unwrap();
        let Sub::Run {
            gold,
            parallel,
            dry_run,
        } = cli.command;
        assert_eq!(
            (cli.bootstrap.as_str(), gold.as_str(), parallel, dry_run),
            ("b:2", "from-file", 3, true)
        );
        let cli = parse(yaml, &["sf", "--bootstrap", "c:3", "run", "--gold", "flag"]).unwrap();
        let Sub::Run { gold, .. } = cli.command;
        assert_eq!((cli.bootstrap.as_str(), gold.as_str()), ("c:3", "flag"));
    }

    #[test]
    fn unknown_keys_are_refused_with_what_to_use() {
        let err = parse("golden: x\n", &["sf", "run"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting `golden`"), "{err}");
        let err = parse("run:\n  bootstrapp: x\n", &["sf", "run"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`run` section"), "{err}");
    }

    #[test]
    fn the_path_comes_from_the_flag_then_the_environment() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let env = Some(OsString::from("env.yaml"));
        assert_eq!(
            config_path(&args(&["sf", "run", "--config", "a.yaml"]), env.clone()),
            Some(PathBuf::from("a.yaml"))
        );
        assert_eq!(
            config_path(&args(&["sf", "--config=b.yaml", "run"]), env.clone()),
            Some(PathBuf::from("b.yaml"))
        );
        assert_eq!(
            config_path(&args(&["sf", "run"]), env),
            Some(PathBuf::from("env.yaml"))
        );
        assert_eq!(config_path(&args(&["sf", "run"]), None), None);
    }
}
