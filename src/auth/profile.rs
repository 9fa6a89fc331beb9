//! A parsed display name.

use crate::error::AppError;

/// The longest display name, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// A person's display name: trimmed, non-empty, at most 100 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses user input; `field` names the input field in the error.
    pub fn parse(raw: &str, field: &str) -> Result<Self, AppError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(AppError::bad_input(field, "display name must not be empty"));
        }
        if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(AppError::bad_input(
                field,
                format!("display name must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(AppError::bad_input(
                field,
                "display name must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as stored.
    pub fn into_inner(self) -> String {
        self.0
    }
}
