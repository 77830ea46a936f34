//! A tiny hand-written command-line parser: `<command> [--flag ...] [-- passthrough...]`.

use anyhow::{bail, Result};

/// The parsed command line.
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// The command name (first positional argument), if any.
    pub(crate) command: Option<String>,
    /// Boolean `--flags` given before `--`, without the dashes.
    pub(crate) flags: Vec<String>,
    /// Everything after `--`, passed on verbatim (e.g. to `cargo test`).
    pub(crate) passthrough: Vec<String>,
}

impl Args {
    /// Whether `--name` was given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// Fails unless every flag given is in `known` (each command calls this first).
    pub(crate) fn expect_flags(&self, known: &[&str]) -> Result<()> {
        for flag in &self.flags {
            if !known.contains(&flag.as_str()) {
                bail!(
                    "unknown option `--{flag}` for `{}` (see `cargo xtask help`)",
                    self.command.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            parsed.passthrough.extend(args.by_ref());
        } else if let Some(flag) = arg.strip_prefix("--") {
            parsed.flags.push(flag.to_owned());
        } else if arg == "-h" {
            parsed.command = Some("help".to_owned());
        } else if parsed.command.is_none() {
            parsed.command = Some(arg);
        } else {
            bail!("unexpected argument `{arg}` (extra arguments go after `--`)");
        }
    }
    if parsed.flag("help") {
        parsed.command = Some("help".to_owned());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args> {
        parse(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn command_flags_and_passthrough() {
        let a = p("test --force -- -p strata-ops --nocapture").unwrap();
        assert_eq!(a.command.as_deref(), Some("test"));
        assert!(a.flag("force"));
        assert_eq!(a.passthrough, ["-p", "strata-ops", "--nocapture"]);
    }

    #[test]
    fn rejects_stray_positional() {
        assert!(p("test extra").is_err());
    }

    #[test]
    fn help_flag_wins() {
        assert_eq!(p("ci --help").unwrap().command.as_deref(), Some("help"));
    }
}
