//! `WITH ('key' = 'value', ...)` options: validation against a declared list, typed getters
//! and Flink's duration and memory-size syntax.

use std::collections::BTreeMap;
use std::time::Duration;

/// An option error: always the user's fault, always names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown option '{key}' for {owner}; valid options: {valid}")]
    Unknown {
        owner: String,
        key: String,
        valid: String,
    },
    #[error("{owner} requires option '{key}' ({doc})")]
    Missing {
        owner: String,
        key: String,
        doc: &'static str,
    },
    #[error("invalid value '{value}' for option '{key}' of {owner}: {reason}")]
    Invalid {
        owner: String,
        key: String,
        value: String,
        reason: String,
    },
}

/// One accepted option key. `#` in a key matches one dotted segment (`fields.#.kind`), a
/// trailing `*` matches any rest (`properties.*`).
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

impl OptionSpec {
    pub const fn optional(key: &'static str, doc: &'static str) -> Self {
        Self {
            key,
            required: false,
            doc,
        }
    }
    pub const fn required(key: &'static str, doc: &'static str) -> Self {
        Self {
            key,
            required: true,
            doc,
        }
    }

    fn matches(&self, key: &str) -> bool {
        if let Some(prefix) = self.key.strip_suffix('*') {
            return key.starts_with(prefix) && key.len() > prefix.len();
        }
        let mut pat = self.key.split('.');
        let mut got = key.split('.');
        loop {
            match (pat.next(), got.next()) {
                (None, None) => return true,
                (Some("#"), Some(seg)) if !seg.is_empty() => {}
                (Some(p), Some(g)) if p == g => {}
                _ => return false,
            }
        }
    }
}

/// The options of one table, with the name of their owner for error messages.
#[derive(Debug, Clone, Default)]
pub struct Options {
    owner: String,
    map: BTreeMap<String, String>,
}

impl Options {
    pub fn new(owner: impl Into<String>, map: BTreeMap<String, String>) -> Self {
        Self {
            owner: owner.into(),
            map,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn map(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// Checks that every key is accepted by one of `specs` and every required key is present.
    pub fn validate(&self, specs: &[OptionSpec]) -> Result<(), OptionError> {
        for key in self.map.keys() {
            if !specs.iter().any(|s| s.matches(key)) {
                let mut valid: Vec<&str> = specs.iter().map(|s| s.key).collect();
                valid.sort_unstable();
                valid.dedup();
                return Err(OptionError::Unknown {
                    owner: self.owner.clone(),
                    key: key.clone(),
                    valid: valid.join(", "),
                });
            }
        }
        for spec in specs.iter().filter(|s| s.required) {
            if !self.map.contains_key(spec.key) {
                return Err(OptionError::Missing {
                    owner: self.owner.clone(),
                    key: spec.key.into(),
                    doc: spec.doc,
                });
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn require(&self, key: &str) -> Result<&str, OptionError> {
        self.get(key).ok_or_else(|| OptionError::Missing {
            owner: self.owner.clone(),
            key: key.into(),
            doc: "required",
        })
    }

    pub fn invalid(&self, key: &str, reason: impl Into<String>) -> OptionError {
        OptionError::Invalid {
            owner: self.owner.clone(),
            key: key.into(),
            value: self.get(key).unwrap_or_default().into(),
            reason: reason.into(),
        }
    }

    /// Parses `key` with `FromStr`, or returns `None` when it is absent.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, OptionError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| self.invalid(key, e.to_string())),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, OptionError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(_) => Err(self.invalid(key, "expected 'true' or 'false'")),
        }
    }

    /// Flink duration syntax: `500`, `500 ms`, `10 s`, `10s`, `5 min`, `1 h`, `1 d`.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(Some)
                .map_err(|r| self.invalid(key, r.0)),
        }
    }

    /// Flink memory-size syntax: `1024`, `64 kb`, `128mb`, `1 gb`.
    pub fn memory_size(&self, key: &str) -> Result<Option<u64>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_memory_size(v)
                .map(Some)
                .map_err(|r| self.invalid(key, r.0)),
        }
    }
}

/// A value that does not parse (a duration, a memory size): the user's to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadValue(pub String);

fn split_number_unit(text: &str) -> Result<(u64, String), BadValue> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(BadValue(
            "expected a number followed by an optional unit".into(),
        ));
    }
    let n: u64 = text[..digits]
        .parse()
        .map_err(|e| BadValue(format!("{e}")))?;
    Ok((n, text[digits..].trim().to_ascii_lowercase()))
}

pub fn parse_duration(text: &str) -> Result<Duration, BadValue> {
    let (n, unit) = split_number_unit(text)?;
    let ms = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60_000,
        "h" | "hour" | "hours" => n * 3_600_000,
        "d" | "day" | "days" => n * 86_400_000,
        other => {
            return Err(BadValue(format!(
                "unknown time unit '{other}' (use ms, s, min, h or d)"
            )))
        }
    };
    Ok(Duration::from_millis(ms))
}

pub fn parse_memory_size(text: &str) -> Result<u64, BadValue> {
    let (n, unit) = split_number_unit(text)?;
    let mult: u64 = match unit.as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        "t" | "tb" | "tebibytes" => 1 << 40,
        other => {
            return Err(BadValue(format!(
                "unknown size unit '{other}' (use b, kb, mb, gb or tb)"
            )))
        }
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(
            "connector 'x'",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let specs = [
            OptionSpec::required("path", "where"),
            OptionSpec::optional("fields.#.kind", ""),
        ];
        let err = opts(&[("path", "/a"), ("pth", "x")])
            .validate(&specs)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option 'pth' for connector 'x'; valid options: fields.#.kind, path"
        );
        assert!(opts(&[("path", "/a"), ("fields.f.kind", "random")])
            .validate(&specs)
            .is_ok());
        let err = opts(&[]).validate(&specs).unwrap_err();
        assert!(err.to_string().contains("requires option 'path'"), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10 s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("30min").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_memory_size("128MB").unwrap(), 128 << 20);
        assert_eq!(parse_memory_size("1 kb").unwrap(), 1024);
    }
}
