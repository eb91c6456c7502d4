//! Severity for journald. A service's stderr reaches the journal as plain
//! lines, all filed at the unit's default priority (info), so
//! `journalctl -p warning -u rekey` would show none of rekey's warnings.
//! When stderr is the journal's stream (`$JOURNAL_STREAM` names its device
//! and inode), each line starts with the `<N>` syslog prefix journald reads
//! and strips (`SyslogLevelPrefix=`, on by default): 3 error, 4 warning, 6
//! info, 7 debug and trace. Anywhere else the lines are unchanged.

use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether `journal_stream` (`DEVICE:INODE`, from `$JOURNAL_STREAM`) is the
/// file `fd` refers to.
pub fn is_journal(journal_stream: Option<&str>, fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|s| s.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(file) = fd.try_clone_to_owned().map(std::fs::File::from) else {
        return false;
    };
    file.metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Whether this process's stderr goes to the journal.
pub fn stderr_is_journal() -> bool {
    is_journal(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        std::os::fd::AsFd::as_fd(&std::io::stderr()),
    )
}

/// The syslog priority journald files a line of `level` under.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that starts each line with `<N>` when `on`.
pub struct LevelPrefix<F> {
    inner: F,
    on: bool,
}

impl<F> LevelPrefix<F> {
    /// Wrap `inner`; `on` is usually [`stderr_is_journal`].
    pub fn new(inner: F, on: bool) -> Self {
        LevelPrefix { inner, on }
    }
}

impl<S, N, F> FormatEvent<S, N> for LevelPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.on {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn only_the_named_stream_is_the_journal() {
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        let me = format!("{}:{}", m.dev(), m.ino());
        assert!(is_journal(Some(&me), f.as_fd()));
        assert!(is_journal(Some(&format!("{me}\n")), f.as_fd()));
        let other = format!("{}:{}", m.dev(), m.ino() + 1);
        assert!(!is_journal(Some(&other), f.as_fd()));
        for bad in ["", "x", "1", "a:b", ":"] {
            assert!(!is_journal(Some(bad), f.as_fd()), "{bad:?}");
        }
        assert!(!is_journal(None, f.as_fd()));
    }

    #[test]
    fn lines_carry_the_syslog_priority_only_when_on() {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .map_event_format(|f| LevelPrefix::new(f, true))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
