//! Progress for people: bars and spinners on stderr when it is a terminal, nothing otherwise
//! (logs and CI output stay clean). Log lines go through the same handle, so a line printed
//! while a bar is drawn does not tear it.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use streamflow::ingest::IngestProgress;

#[derive(Clone)]
pub struct Ui {
    bars: MultiProgress,
}

impl Ui {
    /// Draws on stderr when it is a terminal; hidden otherwise.
    pub fn for_stderr() -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            bars: MultiProgress::with_draw_target(target),
        }
    }

    /// A spinner with a message, for a stage whose size is not known ahead.
    pub fn spinner(&self, message: &str) -> Progress {
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar, ticker: None }
    }

    /// A bar over a drain's offsets, refreshed from its counters.
    pub fn offsets_bar(&self, message: &str, progress: Arc<IngestProgress>) -> Progress {
        let bar = self.bars.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed}] {wide_bar} {human_pos}/{human_len} offsets ({per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(message.to_owned());
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(150));
            loop {
                tick.tick().await;
                shown.set_length(progress.planned.load(Ordering::Relaxed));
                shown.set_position(progress.done.load(Ordering::Relaxed));
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    /// A bar counting finished items (a backfill's intervals).
    pub fn counter(&self, message: &str, total: u64) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{elapsed}] {wide_bar} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(message.to_owned());
        bar
    }
}

/// A bar or spinner of one stage; removed when finished.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn finish(self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
    }
}

/// Log lines are written with the bars suspended.
pub struct LogWriter(MultiProgress);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Ui {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.bars.clone())
    }
}
