//! The one escaping helper for log lines that carry request data (issue #12 item 5).
//!
//! A value a client chose (a token's header, a path, a host, an error text quoting them) that
//! reaches a log line verbatim can end that line and forge the next one: a JWT whose `alg` held
//! `"\nINFO client registered client_id=..."` did exactly that. Wrap every such value in
//! [`escaped`] (`tracing::info!(reason = %escaped(&why), ...)`): control characters (CR, LF,
//! ESC, ...), invisible formatting characters and line/paragraph separators are written as
//! escapes (`\n`, `\u{202e}`), and `\` as `\\`, so an escaped value can never span lines or be
//! mistaken for one that was not escaped.

use std::fmt::{self, Display, Write};

/// A value whose `Display` output is escaped for a log line.
pub struct Escaped<T>(T);

/// Escape `value` for a log line.
pub fn escaped<T: Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

impl<T: Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Display::fmt(self, f)
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                '\\' => self.0.write_str("\\\\")?,
                c if c.is_control()
                    || crate::metadata::unicode::invisible_char(c.encode_utf8(&mut [0; 4]))
                        .is_some() =>
                {
                    write!(self.0, "\\u{{{:x}}}", c as u32)?
                }
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_invisible_characters_cannot_reach_the_log() {
        let forged = "RS256\n2026-01-01T00:00:00Z  INFO client registered client_id=x\r\u{1b}[31m\u{2028}\u{202e}";
        let out = escaped(forged).to_string();
        assert_eq!(
            out,
            "RS256\\n2026-01-01T00:00:00Z  INFO client registered client_id=x\\r\\u{1b}[31m\\u{2028}\\u{202e}"
        );
        assert!(!out.chars().any(char::is_control));
        assert_eq!(
            escaped("a\\nb").to_string(),
            "a\\\\nb",
            "a literal backslash-n stays distinct"
        );
        assert_eq!(escaped("Приложение café").to_string(), "Приложение café");
        assert_eq!(escaped(42).to_string(), "42");
    }
}
