//! `ConfigError` and the helpers that give every message a location.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A config problem, located as precisely as the source allows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, not a regular file, too
    /// large, writable by other users).
    #[error("{}: cannot read config file: {}", file.display(), source.reason())]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why it could not be read; names the path.
        source: crate::fs::safefile::ReadError,
    },
    /// The text is not valid TOML.
    #[error("{}: TOML syntax error: {message}", place(Some(file), *line, *column))]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },
    /// A key is missing, unknown, or has a value that is not allowed.
    #[error("{}: {key}: {message}", place(file.as_deref(), *line, *column))]
    Invalid {
        /// The config file (absent only from a bare `check_state_dir`).
        file: Option<PathBuf>,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// Dotted key path, e.g. `certificate[1].key_type`.
        key: String,
        /// What went wrong and what is allowed.
        message: String,
    },
}

/// "file:line:col", leaving out what is unknown.
fn place(file: Option<&Path>, line: Option<usize>, column: Option<usize>) -> String {
    let mut s = file.map_or_else(|| "config".to_string(), |f| f.display().to_string());
    if let Some(line) = line {
        s.push_str(&format!(":{line}"));
        if let Some(column) = column {
            s.push_str(&format!(":{column}"));
        }
    }
    s
}

impl ConfigError {
    /// The dotted key path of the problem ("" for a syntax or read error).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } => key,
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => "",
        }
    }

    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } | ConfigError::Syntax { line, .. } => *line,
            ConfigError::Read { .. } => None,
        }
    }

    /// The 1-based column of the problem, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { column, .. } | ConfigError::Syntax { column, .. } => *column,
            ConfigError::Read { .. } => None,
        }
    }

    /// A state dir problem found without knowing the config file.
    pub(crate) fn state_dir(message: String) -> Self {
        ConfigError::Invalid {
            file: None,
            line: None,
            column: None,
            key: "daemon.state_dir".to_string(),
            message,
        }
    }

    /// Attach the config file and a source span to an error that lacks them.
    pub(crate) fn locate(mut self, path: &Path, text: &str, span: Option<Range<usize>>) -> Self {
        if let ConfigError::Invalid {
            file, line, column, ..
        } = &mut self
        {
            if file.is_none() {
                *file = Some(path.to_path_buf());
            }
            if line.is_none() {
                if let Some(span) = span {
                    let (l, c) = line_col(text, span.start);
                    *line = Some(l);
                    *column = Some(c);
                }
            }
        }
        self
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The source being parsed: makes located errors.
pub(crate) struct Src<'a> {
    /// The config file, for messages.
    pub file: &'a Path,
    /// Its text, to turn byte spans into lines.
    pub text: &'a str,
}

impl Src<'_> {
    /// An `Invalid` error on `key` at `span`.
    pub fn err(
        &self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError::Invalid {
            file: Some(self.file.to_path_buf()),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Turn a serde/toml error with its serde path into a located `ConfigError`.
    pub fn serde_error(&self, err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let segments: Vec<String> = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => {
                    // Spanned<T> shows up as a private inner struct: not a user key.
                    (!key.starts_with("$__serde_spanned")).then(|| format!(".{key}"))
                }
                serde_path_to_error::Segment::Enum { variant } => Some(format!(".{variant}")),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = err.into_inner();
        let span = inner.span();
        let message = inner.message().trim_end().to_string();
        if span.is_none() && segments.is_empty() {
            return ConfigError::Syntax {
                file: self.file.to_path_buf(),
                line: None,
                column: None,
                message,
            };
        }
        let mut key = segments.concat();
        if key.starts_with('.') {
            key.remove(0);
        }
        let message = if let Some((field, allowed)) = parse_unknown_field(&message) {
            unknown_key_message(&field, &allowed)
        } else if let Some(field) = between_backticks(&message, "missing field `") {
            // serde reports the table; the user wants the missing key's path.
            key = if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            "required key is missing".to_string()
        } else {
            // serde names Rust types; users know TOML's.
            message
                .replace("expected i64", "expected an integer")
                .replace("expected a sequence", "expected an array")
                .replace("expected a map", "expected a table")
        };
        self.err(key, span, message)
    }

    /// A TOML syntax error (raised before any key is known).
    pub fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        let (line, column) = match err.span() {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError::Syntax {
            file: self.file.to_path_buf(),
            line,
            column,
            message: err.message().trim_end().to_string(),
        }
    }
}

/// The text after `prefix` up to the next backtick.
fn between_backticks(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next().map(str::to_string)
}

/// Split serde's "unknown field `x`, expected one of `a`, `b`" into (x, [a, b]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let field = between_backticks(message, "unknown field `")?;
    let rest = message.split_once(", expected ").map_or("", |(_, r)| r);
    let allowed = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field, allowed))
}

/// "unknown key `x`; did you mean `y`? allowed: ..." for `x` among `allowed`.
pub(crate) fn unknown_key_message(field: &str, allowed: &[String]) -> String {
    let mut msg = format!("unknown key `{field}`;");
    if let Some(best) = did_you_mean(field, allowed.iter().map(String::as_str)) {
        msg.push_str(&format!(" did you mean `{best}`?"));
    }
    if allowed.is_empty() {
        msg.push_str(" no keys are allowed here");
    } else {
        msg.push_str(" allowed: ");
        msg.push_str(&allowed.join(", "));
    }
    msg
}

/// The closest candidate: same up to case and `-`/`_`, else within edit distance 2.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word_norm = norm(word);
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        let dist = if norm(cand) == word_norm {
            0
        } else {
            strsim::levenshtein(word, cand)
        };
        if dist <= 2 && best.is_none_or(|(d, _)| dist < d) {
            best = Some((dist, cand));
        }
    }
    best.map(|(_, c)| c)
}
