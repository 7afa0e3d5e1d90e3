//! Android CTS/VTS results produced by TradeFederation, as SQUAD's
//! `tradefed` plugin (squad-linaro-plugins) reads them: find
//! `test_result.xml` in the results archive ([`archive`]), with the files
//! kept beside it ([`companions`]), then stream its tests out in resumable
//! batches ([`results`]).

pub mod archive;
pub mod companions;
pub mod decorate;
mod plugin;
pub mod results;

pub use plugin::{tradefed_definitions, Tradefed, BATCH_TESTS, EXTRACT_AGGREGATED};
