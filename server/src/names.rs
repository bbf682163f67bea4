//! Document names: validated once, then carried as [`DocName`].

use std::fmt;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

pub const MAX_NAME_CHARS: usize = 200;

/// One segment of a name: allowed characters, but not `.` or `..`. A
/// segment starting with `.` needs a second character other than `.`, or
/// two dots and at least one more character.
macro_rules! segment_pattern {
    () => {
        r"(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)"
    };
}

/// [`DocName::parse`]'s grammar but the length, as a regular expression that
/// reads the same in ECMA 262 (JSON Schema), Python and the `regex` crate: no
/// look-around, so fuzzers can generate from it. The OpenAPI document states
/// the length apart (`minLength`, `maxLength`).
pub const NAME_PATTERN: &str = concat!("^", segment_pattern!(), "(?:/", segment_pattern!(), ")*$");

/// A name that passed [`DocName::parse`]: 1 to 200 characters of
/// `A-Z a-z 0-9 . _ ~ -` and `/`, no empty segment, no `.` or `..` segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("document name is empty")]
    Empty,
    #[error("document name is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("document name contains {0:?}; allowed are A-Z a-z 0-9 . _ ~ - and /")]
    BadChar(char),
    #[error("document name has an empty segment")]
    EmptySegment,
    #[error("document name has a '.' or '..' segment")]
    DotSegment,
}

impl DocName {
    /// Validates an already percent-decoded name.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-' | '/')))
        {
            return Err(NameError::BadChar(bad));
        }
        // Only ASCII remains, so bytes are characters.
        if name.len() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        for segment in name.split('/') {
            match segment {
                "" => return Err(NameError::EmptySegment),
                "." | ".." => return Err(NameError::DotSegment),
                _ => {}
            }
        }
        Ok(DocName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The schema of a name in the OpenAPI document: exactly what
/// [`DocName::parse`] accepts.
impl utoipa::PartialSchema for DocName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_CHARS))
            .pattern(Some(NAME_PATTERN))
            .into()
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "notes/2026/plan",
            "A-b_c.d~e",
            "x.y",
            "...",
            &"n".repeat(200),
        ] {
            assert_eq!(
                DocName::parse(name).map(|n| n.0),
                Ok(name.to_owned()),
                "{name}"
            );
        }
    }

    /// Every string of up to five characters from an alphabet that has
    /// every kind of character the grammar treats apart.
    fn short_strings() -> Vec<String> {
        let alphabet = ['a', '.', '/', '~', ' ', 'é'];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_openapi_pattern_accepts_exactly_the_valid_names() {
        let pattern = regex::Regex::new(NAME_PATTERN).expect("NAME_PATTERN compiles");
        let long = [
            "n".repeat(200),
            "n".repeat(201),
            format!("{}/x", "n".repeat(198)),
        ];
        let listed = [
            "notes/2026/plan",
            "A-b_c.d~e",
            "...",
            "..a",
            ".a/b",
            "a/..",
            "a/./b",
            "a\n",
        ];
        let names = short_strings()
            .into_iter()
            .chain(long)
            .chain(listed.iter().map(|s| s.to_string()));
        for name in names {
            let by_schema = pattern.is_match(&name) && name.chars().count() <= MAX_NAME_CHARS;
            assert_eq!(by_schema, DocName::parse(&name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn invalid_names() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&"n".repeat(201), NameError::TooLong),
            ("a b", NameError::BadChar(' ')),
            ("é", NameError::BadChar('é')),
            ("a\0b", NameError::BadChar('\0')),
            ("a?b", NameError::BadChar('?')),
            ("/a", NameError::EmptySegment),
            ("a/", NameError::EmptySegment),
            ("a//b", NameError::EmptySegment),
            (".", NameError::DotSegment),
            ("a/../b", NameError::DotSegment),
            ("./a", NameError::DotSegment),
        ];
        for (name, expected) in cases {
            assert_eq!(DocName::parse(name).as_ref(), Err(expected), "{name:?}");
        }
    }
}
