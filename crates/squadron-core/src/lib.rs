//! Domain types and pure logic of squadron, with no I/O of its own: how
//! SQUAD names suites and tests, how submitted tests, metrics and metadata
//! are parsed, how results are counted into status rows, and how known
//! issues turn failures into expected failures.

pub mod access;
pub mod callbacks;
pub mod known_issues;
pub mod names;
pub mod results;
pub mod settings;
pub mod submission;
pub mod summary;
