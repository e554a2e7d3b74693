//! Statistics for vmbench: did variant B boot slower than A, by how much, and
//! how sure is that? Pure functions of their inputs: no I/O, no clock, and
//! every random choice is drawn from a seeded ChaCha8 generator, so the same
//! numbers always give the same answer.
//!
//! # The methods
//!
//! - **Summary** ([`Summary::of`]): n, median, mean, min, max, p90 and p99
//!   (linear interpolation between closest ranks, numpy's default), sample
//!   standard deviation (n − 1), the raw median absolute deviation (MAD), and
//!   the values more than ten robust standard deviations from the median,
//!   flagged by hyperfine's rule `|x − median| / MAD > 14.826`.

mod summary;

pub use summary::{Summary, OUTLIER_THRESHOLD};
