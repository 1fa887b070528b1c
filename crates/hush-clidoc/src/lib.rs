//! What both binaries derive from their clap definitions, so documentation never
//! drifts from the flags: roff man pages (`hush man`, `hushd man`), shell completions
//! (`hush completions bash|zsh|fish`), and the check that every flag, argument and
//! subcommand has help text.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The man page of `cmd` (section 1), with its subcommands listed; `EXIT STATUS`
/// when `exit_status` is given.
pub fn man(cmd: &clap::Command, exit_status: Option<&str>, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.clone();
    cmd.build();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        // Each subcommand with its own options under its name: one page says it all.
        writeln!(out, ".SH COMMANDS")?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            sub_section(sub, cmd.get_name(), out)?;
        }
    }
    if let Some(text) = exit_status {
        writeln!(out, ".SH \"EXIT STATUS\"")?;
        writeln!(out, "{}", escape(text))?;
    }
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        page.render_version_section(out)?;
    }
    Ok(())
}

fn sub_section(cmd: &clap::Command, parent: &str, out: &mut dyn Write) -> io::Result<()> {
    let name = format!("{parent} {}", cmd.get_name());
    writeln!(out, ".SS \"{}\"", escape(&name))?;
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        writeln!(out, "{}", escape(&about.to_string()))?;
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_global_set() {
            continue;
        }
        let value = match arg.get_value_names().and_then(|n| n.first()) {
            Some(n) if arg.get_action().takes_values() => format!(" <{}>", escape(n)),
            None if arg.get_action().takes_values() => {
                format!(" <{}>", escape(&id.to_uppercase()))
            }
            _ => String::new(),
        };
        let head = match (arg.get_long(), arg.get_short()) {
            (Some(l), _) => format!("\\-\\-{}{value}", escape(l)),
            (None, Some(s)) => format!("\\-{s}{value}"),
            (None, None) => {
                let names = arg.get_value_names().unwrap_or_default();
                match names.first() {
                    Some(n) => format!("<{}>", escape(n)),
                    None => format!("<{}>", escape(&id.to_uppercase())),
                }
            }
        };
        writeln!(out, ".TP\n{head}")?;
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            writeln!(out, "{}", escape(&help.to_string()))?;
        }
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            sub_section(sub, &name, out)?;
        }
    }
    Ok(())
}

/// roff-safe text: a leading `.` or `'` would be read as a request, `\` as an escape.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `NAME.1` for the command into `dir` (created if missing); returns the path.
pub fn man_to_dir(
    cmd: &clap::Command,
    exit_status: Option<&str>,
    dir: &Path,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let mut file = std::fs::File::create(&path)?;
    man(cmd, exit_status, &mut file)?;
    file.flush()?;
    Ok(path)
}

/// `NAME man [--out-dir DIR]`: the page on stdout, or written into `dir` (saying where).
pub fn man_command(
    cmd: &clap::Command,
    exit_status: Option<&str>,
    dir: Option<&Path>,
) -> io::Result<()> {
    match dir {
        Some(dir) => {
            let path = man_to_dir(cmd, exit_status, dir)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        None => man(cmd, exit_status, &mut io::stdout()),
    }
}

/// Panics, naming them, if any argument or subcommand of `cmd` lacks help text (for
/// each binary's unit test).
pub fn assert_help(cmd: &clap::Command) {
    let missing = missing_help(cmd);
    assert!(
        missing.is_empty(),
        "without help text:\n{}",
        missing.join("\n")
    );
}

/// The completion script for `shell`, written to `out`. Made in memory first: clap's
/// generator panics on a failed write, and a reader that stops early (`| head -1`)
/// must get an error to end quietly on, not a panic.
pub fn completions(cmd: &clap::Command, shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.clone();
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// One line on stdout, for the binaries' `println!`: a reader that went away
/// (`hush history bob | head`) ends the process quietly with success instead of the
/// standard macro's panic; any other failure to write ends it with one error line.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing output: {e}");
        std::process::exit(1);
    }
}

/// Whether `error` (anywhere in its chain) is a write to a reader that went away
/// (`hush history bob | head`): the command then ends quietly, with success.
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Every argument and subcommand of `cmd` without help text, as `path arg`.
pub fn missing_help(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(cmd, cmd.get_name(), &mut missing);
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn sample() -> Command {
        Command::new("demo")
            .about("A demo.")
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .action(ArgAction::SetTrue)
                    .help("Say more."),
            )
            .subcommand(
                Command::new("send")
                    .about("Send a thing.")
                    .arg(Arg::new("target").help(".dotted help -- with dashes")),
            )
            .subcommand(Command::new("bare").arg(Arg::new("x")))
    }

    #[test]
    fn a_man_page_holds_every_subcommand_and_is_roff_safe() {
        let mut out = Vec::new();
        man(&sample(), Some("0 ok, 1 error."), &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.contains(".TH demo 1"), "{page}");
        assert!(page.contains(".SS \"demo send\""), "{page}");
        assert!(page.contains("Send a thing."), "{page}");
        assert!(
            page.contains("\\&.dotted help \\-\\- with dashes"),
            "{page}"
        );
        assert!(
            page.contains(".SH \"EXIT STATUS\"\n0 ok, 1 error."),
            "{page}"
        );
        assert!(page.contains("\\-\\-verbose"), "{page}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(&sample(), shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("send"), "{shell}: {script}");
        }
    }

    #[test]
    fn missing_help_is_found() {
        assert_eq!(
            missing_help(&sample()),
            ["demo bare (no about)", "demo bare x"]
        );
    }
}
