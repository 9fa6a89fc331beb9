//! Making step results storable the same way on every backend.
//!
//! PostgreSQL cannot store the NUL character in text or JSON, and any
//! outside service can send one; SQLite can. So results are made the same
//! on both before they are written: every NUL in a string or object key
//! becomes U+FFFD (the replacement character), and sizes are measured as
//! the JSON that will be stored, against `FLOWPILOT_MAX_STEP_OUTPUT_BYTES`.

use serde_json::Value;

/// What a NUL character is stored as.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced.
pub fn text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', &NUL_REPLACEMENT.to_string())
    } else {
        text
    }
}

/// `value` with every NUL in its strings and keys replaced.
pub fn value(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(self::value).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, item)| (text(key), self::value(item)))
                .collect(),
        ),
        other => other,
    }
}

/// Whether any string or key in `value` holds a NUL character.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || has_nul(item)),
        _ => false,
    }
}

/// The length of `value` as JSON text, counted without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// An error or FAIL message cut to at most `max_bytes` (on a character
/// boundary), saying so when it was cut.
pub fn message(message: String, max_bytes: usize) -> String {
    let message = text(message);
    if message.len() <= max_bytes {
        return message;
    }
    let note = format!(" … (cut: the message was {} bytes)", message.len());
    let mut end = max_bytes.saturating_sub(note.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &message[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_largest_numbers_survive_postgresql_s_jsonb_written_out_in_full() {
        // jsonb prints numbers as exact decimals: -1.7976931348623157e308
        // comes back as 309 digits, which must read as the same number.
        let written = format!("{{\"n\": -17976931348623157{}}}", "0".repeat(292));
        let read: serde_json::Value = serde_json::from_str(&written).expect("reads back");
        assert_eq!(read["n"].as_f64(), Some(-1.797_693_134_862_315_7e308));
        let tiny = format!("{{\"n\": 0.{}1}}", "0".repeat(299));
        let read: serde_json::Value = serde_json::from_str(&tiny).expect("reads back");
        assert_eq!(read["n"].as_f64(), Some(1e-300));
    }

    #[test]
    fn nul_characters_are_replaced_in_strings_and_keys() {
        let stored = value(json!({ "a\u{0}": ["x\u{0}y", 1, { "k": "\u{0}" }] }));
        assert_eq!(
            stored,
            json!({ "a\u{FFFD}": ["x\u{FFFD}y", 1, { "k": "\u{FFFD}" }] })
        );
    }

    #[test]
    fn json_length_is_the_length_of_the_text() {
        let v = json!({ "a": [1, "two"] });
        assert_eq!(json_len(&v), serde_json::to_string(&v).unwrap().len());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let cut = message("é".repeat(1000), 100);
        assert!(cut.len() <= 100, "{}", cut.len());
        assert!(cut.ends_with("(cut: the message was 2000 bytes)"));
        assert_eq!(message("short".into(), 100), "short");
    }
}
