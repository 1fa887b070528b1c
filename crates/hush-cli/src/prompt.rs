//! Questions asked on a terminal: passwords (never echoed), usernames, server trust.
//! Nothing here prompts when standard input is not a terminal.
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use hush_client::hush_proto::fingerprint::Fingerprint;
use rand::seq::SliceRandom;
use zeroize::Zeroizing;

pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The password from `HUSH_PASSWORD`, one line of stdin (`--password-stdin`), or a
/// prompt; `confirm` asks twice.
pub fn password(from_stdin: bool, confirm: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let pw = secret("HUSH_PASSWORD", "Password", from_stdin, confirm)?;
    Ok(Zeroizing::new(pw.as_bytes().to_vec()))
}

/// `var`'s value, else one line of stdin when `from_stdin`; `None` when neither.
fn given(var: &str, from_stdin: bool, kind: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Ok(p) = std::env::var(var) {
        return Ok(Some(Zeroizing::new(p)));
    }
    if !from_stdin {
        return Ok(None);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {kind} from standard input"))?;
    Ok(Some(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    )))
}

/// One no-echo answer to `prompt`.
fn ask(prompt: &str, kind: &str) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(
        rpassword::prompt_password(prompt).with_context(|| format!("reading the {kind}"))?,
    ))
}

/// A secret from the environment variable `var`, one line of stdin, or a no-echo
/// prompt (`what: `); `confirm` asks twice.
pub fn secret(
    var: &str,
    what: &str,
    from_stdin: bool,
    confirm: bool,
) -> anyhow::Result<Zeroizing<String>> {
    let pw = if let Some(p) = given(var, from_stdin, "password")? {
        p
    } else if interactive() {
        let first = ask(&format!("{what}: "), "password")?;
        if confirm && *first != *ask(&format!("{what} again: "), "password")? {
            bail!("the passwords do not match");
        }
        first
    } else {
        bail!("no password given: set {var}, pass --password-stdin, or run on a terminal");
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

/// A home's passphrase from `HUSH_PASSPHRASE`, one line of stdin
/// (`--passphrase-stdin`), or a no-echo prompt (`confirm` asks twice); `None` when
/// none of them can give one, or the prompt was answered with nothing and `optional`.
pub fn passphrase(
    from_stdin: bool,
    what: &str,
    confirm: bool,
    optional: bool,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    let p = if let Some(p) = given("HUSH_PASSPHRASE", from_stdin, "passphrase")? {
        p
    } else if interactive() {
        let first = ask(&format!("{what}: "), "passphrase")?;
        if first.is_empty() && optional {
            return Ok(None);
        }
        if confirm && *first != *ask("The same passphrase again: ", "passphrase")? {
            bail!("the passphrases differ; nothing was changed");
        }
        first
    } else {
        return Ok(None);
    };
    if p.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Some(p))
}

const ADJECTIVES: &[&str] = &[
    "quiet", "brave", "calm", "eager", "gentle", "jolly", "lucky", "mellow", "nimble", "proud",
    "rapid", "silent", "sunny", "witty", "amber", "cosmic", "frosty", "misty", "rusty", "velvet",
];
const ANIMALS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "marten", "owl", "panda", "puffin", "raven",
    "seal", "tapir", "walrus", "wombat", "yak", "gecko", "ibis", "koala", "moose", "newt",
];

/// A random, readable username such as `quiet-otter-42`.
pub fn suggestion() -> String {
    let mut rng = rand::thread_rng();
    let adj = ADJECTIVES.choose(&mut rng).copied().unwrap_or("quiet");
    let animal = ANIMALS.choose(&mut rng).copied().unwrap_or("otter");
    let n: u8 = rand::Rng::gen_range(&mut rng, 10..100);
    format!("{adj}-{animal}-{n}")
}

/// One line typed after `question` (on stderr), trimmed.
pub fn line(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim().to_owned())
}

pub fn username() -> anyhow::Result<String> {
    let suggested = suggestion();
    let typed = line(&format!("Username [{suggested}]: "))?;
    Ok(if typed.is_empty() { suggested } else { typed })
}

pub fn confirm_server(server: &str, fp: Fingerprint) -> anyhow::Result<bool> {
    eprintln!("The server at {server} is not known to this home.");
    eprintln!("Its key fingerprint is {fp}");
    eprintln!("Compare it with what the operator sees in `hushd fingerprint`.");
    eprint!("Trust this server? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggestions_are_valid_usernames() {
        for _ in 0..50 {
            let s = super::suggestion();
            assert!(
                hush_client::hush_proto::ids::Username::parse(&s).is_ok(),
                "{s}"
            );
        }
    }
}
