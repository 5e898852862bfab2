//! Progress bars for long runs (hidden when not asked for or not on a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `length` steps (milliseconds of a timed run, or probes), with a message.
pub fn bar(visible: bool, length: u64, unit: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(length);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{msg}} ({unit})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
