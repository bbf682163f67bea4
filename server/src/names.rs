//! Document names: validated once, then carried as [`DocName`].

use std::fmt;

pub const MAX_NAME_CHARS: usize = 200;

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
