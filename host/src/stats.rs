//! Summaries of what a run measured, by the statistics crate
//! (`vmbench-stats`): n, median, mean, min, max, p90, p99, stddev, MAD, and
//! the outliers flagged (never dropped). A summary of VMs' values names its
//! outliers by VM id, so a reader can find them.

pub use vmbench_stats::Summary;

/// The summary of values that belong to no VM; `None` when there are none.
pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let values: Vec<f64> = values.into_iter().collect();
    Summary::of(&values)
}

/// The summary of VMs' values, `(vm id, value)`: its `outliers` are the ids
/// of the VMs whose value is one.
pub fn of_vms(samples: impl IntoIterator<Item = (u32, f64)>) -> Option<Summary> {
    let (ids, values): (Vec<u32>, Vec<f64>) = samples.into_iter().unzip();
    let mut summary = Summary::of(&values)?;
    for outlier in summary.outliers.iter_mut() {
        *outlier = ids[*outlier] as usize;
    }
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_are_named_by_vm() {
        let mut samples: Vec<(u32, f64)> =
            (10..20).map(|id| (id, 100.0 + f64::from(id % 3))).collect();
        samples.push((42, 10_000.0));
        let s = of_vms(samples).unwrap();
        assert_eq!((s.n, s.outliers), (11, vec![42]));
        assert_eq!(of([]), None);
    }
}
