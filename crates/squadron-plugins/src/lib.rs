//! squadron's post-processing plugins: pure parsers that turn the raw output
//! of a test lab (result files, logs) into tests, without a database or an
//! async runtime of their own. The plugin wiring (which project runs which
//! plugin, storing what they produce) lives elsewhere.

pub mod tradefed;
