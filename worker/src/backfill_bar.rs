//! A progress bar per full scan (a backfill) for a person at a terminal: only when stderr is a
//! terminal and logs are text, else nothing (the scanner's `scan progress` log lines are the
//! record). Log lines are written with the bars suspended ([`AboveBars`]), so they never tear
//! a bar.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// The bars on screen; set once by [`enable`].
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Turns bars on (logging set up for a terminal); returns the log writer that keeps them whole.
pub fn enable() -> AboveBars {
    AboveBars {
        bars: BARS.get_or_init(MultiProgress::new).clone(),
    }
}

/// The bar of one full scan of a type; cleared when dropped (the log says how it ended).
pub struct BackfillBar {
    bar: Option<(MultiProgress, ProgressBar)>,
}

impl BackfillBar {
    /// A bar for the scan of `entity_type` of `total` entities (when known), `done` of them
    /// already (a resumed backfill); inert unless bars are on.
    pub fn start(entity_type: &str, total: Option<i64>, done: i64) -> BackfillBar {
        BackfillBar {
            bar: BARS.get().map(|bars| {
                let bar = bars.add(new_bar(
                    entity_type,
                    total,
                    done,
                    ProgressDrawTarget::hidden(),
                ));
                bar.enable_steady_tick(Duration::from_millis(250));
                (bars.clone(), bar)
            }),
        }
    }

    /// Entities done so far.
    pub fn set(&self, done: i64) {
        if let Some((_, bar)) = &self.bar {
            bar.set_position(done.max(0) as u64);
        }
    }
}

impl Drop for BackfillBar {
    fn drop(&mut self) {
        if let Some((bars, bar)) = self.bar.take() {
            bar.finish_and_clear();
            bars.remove(&bar);
        }
    }
}

fn new_bar(
    entity_type: &str,
    total: Option<i64>,
    done: i64,
    target: ProgressDrawTarget,
) -> ProgressBar {
    let length = total.map(|t| t.max(done).max(0) as u64);
    let bar = ProgressBar::with_draw_target(length, target);
    let template = match total {
        Some(_) => {
            "{prefix:>16} [{bar:32}] {human_pos}/{human_len} {percent:>3}% {rate:>8} eta {eta}"
        }
        None => "{prefix:>16} {spinner} {human_pos} {rate:>8} {elapsed}",
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        // Whole entities per second (indicatif's `per_sec` prints every decimal).
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        );
    bar.set_style(style);
    bar.set_prefix(entity_type.to_string());
    bar.set_position(done.max(0) as u64);
    bar
}

/// A tracing writer that prints each log line above the bars.
#[derive(Clone)]
pub struct AboveBars {
    bars: MultiProgress,
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            bars: self.bars.clone(),
            buf: Vec::new(),
        }
    }
}

/// One log event, written to stderr with the bars suspended when it is done.
pub struct LogLine {
    bars: MultiProgress,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.bars.suspend(|| {
                let _ = std::io::stderr().lock().write_all(&buf);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use indicatif::{InMemoryTerm, TermLike};

    use super::*;

    #[test]
    fn a_bar_shows_the_type_and_entities_done_of_the_total() {
        let term = InMemoryTerm::new(4, 120);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let bar = new_bar("Shot", Some(400), 100, target);
        bar.set_position(250);
        bar.tick();
        let screen = term.contents();
        assert!(screen.contains("Shot"), "{screen}");
        assert!(screen.contains("250/400"), "{screen}");
        assert!(screen.contains("62%"), "{screen}");
        bar.finish_and_clear();
        assert_eq!(term.width(), 120);
    }

    #[test]
    fn without_a_terminal_there_is_no_bar() {
        // `enable` is only called for a terminal; tests never call it.
        let bar = BackfillBar::start("Shot", Some(10), 0);
        bar.set(5);
        assert!(bar.bar.is_none());
    }
}
