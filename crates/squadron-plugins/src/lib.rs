//! squadron's post-processing plugins: pure parsers that read a test run's
//! raw output (kernel boot logs, kernel build logs, ...) and report the
//! tests SQUAD's plugins would create from it. Nothing here touches the
//! database or a task queue; the plugin wiring lives elsewhere.

pub mod linux_log;
