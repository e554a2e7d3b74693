//! Turning records into numbers people read: statistics and tables.

pub mod stats;
pub mod table;
