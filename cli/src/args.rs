//! A small argument reader. Mortar's command line follows the original
//! system's positional style (`volume create NAME replica 3 HOST:/PATH...`),
//! which derive-based parsers fit poorly, so commands read their words in
//! order and every mistake becomes a [`UsageError`] naming what was wrong.

use std::collections::VecDeque;

/// Wrong command-line usage: printed with the command's usage, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Args {
    words: VecDeque<String>,
}

impl Args {
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        Args {
            words: words.into_iter().collect(),
        }
    }

    /// The next positional word, if any.
    pub fn next(&mut self) -> Option<String> {
        self.words.pop_front()
    }

    /// Remove and return the first word that is one of `commands`, so that
    /// global options may come before or after the command.
    pub fn take_command(&mut self, commands: &[&str]) -> Option<String> {
        let i = self
            .words
            .iter()
            .position(|w| commands.contains(&w.as_str()))?;
        self.words.remove(i)
    }

    /// A required positional word.
    pub fn required(&mut self, what: &str) -> Result<String, UsageError> {
        match self.words.pop_front() {
            Some(w) if !w.starts_with("--") => Ok(w),
            Some(w) => Err(UsageError(format!("expected {what}, found option {w}"))),
            None => Err(UsageError(format!("missing {what}"))),
        }
    }

    /// Remove `--name` if present.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| w != name);
        self.words.len() != before
    }

    /// Remove `--name VALUE` or `--name=VALUE` if present.
    pub fn option(&mut self, name: &str) -> Result<Option<String>, UsageError> {
        let prefix = format!("{name}=");
        if let Some(i) = self.words.iter().position(|w| w.starts_with(&prefix)) {
            let w = self.words.remove(i).expect("index valid");
            return Ok(Some(w[prefix.len()..].to_string()));
        }
        let Some(i) = self.words.iter().position(|w| w == name) else {
            return Ok(None);
        };
        self.words.remove(i);
        match self.words.remove(i) {
            Some(v) if !v.starts_with("--") => Ok(Some(v)),
            _ => Err(UsageError(format!("{name} needs a value"))),
        }
    }

    /// `--name N` parsed as a number within `range`.
    pub fn number<T>(
        &mut self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, UsageError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.option(name)? {
            None => Ok(default),
            Some(v) => {
                let n: T = v
                    .parse()
                    .map_err(|_| UsageError(format!("{name} takes a number, not {v:?}")))?;
                if !range.contains(&n) {
                    return Err(UsageError(format!(
                        "{name} must be between {} and {}, not {n}",
                        range.start(),
                        range.end()
                    )));
                }
                Ok(n)
            }
        }
    }

    /// Fail if anything was not consumed.
    pub fn finish(self) -> Result<(), UsageError> {
        match self.words.front() {
            None => Ok(()),
            Some(w) => Err(UsageError(format!("unexpected argument {w:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from))
    }

    #[test]
    fn options_flags_and_leftovers() {
        let mut x = a("ping host:1 --count 3 --json --timeout-ms=50");
        assert_eq!(x.next().as_deref(), Some("ping"));
        assert!(x.flag("--json"));
        assert_eq!(x.number("--count", 1u32, 1..=10).unwrap(), 3);
        assert_eq!(x.number("--timeout-ms", 1u64, 1..=1000).unwrap(), 50);
        assert_eq!(x.required("ADDRESS").unwrap(), "host:1");
        x.finish().unwrap();

        assert!(a("--count").option("--count").is_err());
        assert!(a("--count x").number("--count", 1u32, 1..=9).is_err());
        assert!(a("--count 99").number("--count", 1u32, 1..=9).is_err());
        assert!(a("extra").finish().is_err());
        assert!(a("").required("NAME").is_err());
        assert!(a("--json").required("NAME").is_err());
    }
}
