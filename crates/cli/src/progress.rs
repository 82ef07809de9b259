//! How `ail` shows a library run: messages on stderr, a spinner while images decode, a progress bar
//! over the steps, and Ctrl-C / SIGTERM as a request to stop after the current step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ail_core::pretrain::{LogRow, Observer};
use indicatif::{ProgressBar, ProgressStyle};

/// The terminal observer of `ail`.
#[derive(Default)]
pub struct Progress {
    spinner: Option<ProgressBar>,
    bar: Option<ProgressBar>,
    stop: Option<Arc<AtomicBool>>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also stops the run at the first SIGINT / SIGTERM (after a checkpoint); a second one exits
    /// at once with 130.
    pub fn with_stop_signals(mut self) -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the conditional exit checks the flag before the second handler sets it.
            let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
            let _ = signal_hook::flag::register(signal, flag.clone());
        }
        self.stop = Some(flag);
        self
    }

    fn clear_spinner(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }

    /// Removes the bar (before the run's results are printed).
    pub fn finish(&mut self) {
        self.clear_spinner();
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn message(&mut self, text: &str) {
        self.clear_spinner();
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn decoding(&mut self, images: usize) {
        let spinner = self.spinner.get_or_insert_with(|| {
            ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} decoding {pos} images [{elapsed}]").expect("valid template"))
        });
        spinner.set_position(images as u64);
    }

    fn started(&mut self, start_step: u64, steps: u64) {
        self.clear_spinner();
        let bar = ProgressBar::new(steps)
            .with_style(ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed}, eta {eta}]").expect("valid template"));
        bar.set_position(start_step);
        self.bar = Some(bar);
    }

    fn stepped(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn logged(&mut self, row: &LogRow) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {:.4} lr {:.2e} {:.0} img/s", row.loss, row.lr, row.images_per_second));
        }
    }

    fn should_stop(&mut self) -> bool {
        let stop = self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
        if stop {
            self.finish();
        }
        stop
    }
}
