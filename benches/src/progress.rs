//! Progress of long runs (indicatif), on a terminal only.
//!
//! A bar is drawn on stderr when stdout and stderr are both terminals and
//! the run was not asked for `--json`; otherwise it is hidden and costs
//! nothing visible, so piped output and CI logs stay clean. Callers step
//! it between samples, never inside a timed region: a redraw is a syscall.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar over a known number of steps.
#[derive(Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar of `total` steps, shown only when `show` is true and both
    /// stdout and stderr are terminals.
    pub fn new(total: u64, show: bool) -> Self {
        let visible = show && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        // OK to expect: the template is a constant checked by the tests.
        let style = ProgressStyle::with_template(TEMPLATE).expect("valid progress template");
        bar.set_style(style.progress_chars("=> "));
        Self(bar)
    }

    /// Whether the bar is drawn at all.
    #[cfg(test)]
    pub fn is_hidden(&self) -> bool {
        self.0.is_hidden()
    }

    /// Sets the text before the bar (what is being measured now).
    pub fn set_message(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }

    /// Advances the bar by `n` steps.
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

const TEMPLATE: &str = "{msg:24} [{bar:30}] {pos}/{len} ({eta} left)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_not_asked_or_not_a_terminal() {
        let p = Progress::new(10, false);
        assert!(p.is_hidden());
        p.set_message("order 3");
        p.inc(3);
        p.finish();
        if !std::io::stdout().is_terminal() {
            assert!(Progress::new(10, true).is_hidden());
        }
    }
}
