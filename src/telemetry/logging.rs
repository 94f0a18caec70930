//! Log output: `server.log_format = "text" | "json"`, filtered by `RUST_LOG` or `server.log`.
//!
//! Both formats print the fields of the enclosing spans, so every line written while a request
//! is served carries its `request_id` (the `request` span of [`super::http::middleware`]).

use crate::settings::{LogFormat, ServerSettings};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The subscriber for `server`, writing to `writer`.
/// Colours only in text lines written to a terminal (`ansi`).
pub fn subscriber<W>(
    server: &ServerSettings,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&server.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match server.log_format {
        LogFormat::Text => Box::new(builder.with_target(false).with_ansi(ansi).finish()),
        // The current span's fields (request_id) at top level of "span"; the list of all spans
        // adds nothing here, since requests have one span.
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Install the subscriber for the process (stderr). A second call is ignored.
pub fn init(server: &ServerSettings) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(server, std::io::stderr, ansi));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(format: LogFormat) -> String {
        let mut server = Settings::defaults().unwrap().server;
        server.log_format = format;
        server.log = "info".into();
        let buffer = Buffer::default();
        let subscriber = subscriber(&server, buffer.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "rid-7");
            span.in_scope(|| tracing::info!(client_id = "c1", "client registered"));
        });
        let out = buffer.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_are_objects_carrying_the_request_id() {
        let out = lines(LogFormat::Json);
        let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(line["span"]["request_id"], "rid-7", "{out}");
        assert_eq!(line["fields"]["message"], "client registered", "{out}");
        assert_eq!(line["fields"]["client_id"], "c1", "{out}");
    }

    #[test]
    fn text_lines_carry_the_request_id() {
        let out = lines(LogFormat::Text);
        assert!(out.contains("request{request_id=\"rid-7\"}"), "{out}");
        assert!(out.contains("client registered"), "{out}");
    }
}
