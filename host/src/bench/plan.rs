//! What a `vmbench bench` run measures: the suites and benchmarks chosen
//! on the command line, and each VM's part of it — which guest it boots,
//! which benchmarks it is asked for in which order, and for the inter
//! suite which VM is its peer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::catalog::{self, Benchmark, Suite};
use super::relay::Relay;

/// The per-benchmark time budget unless `--budget-s` says otherwise: the
/// agent's default (`vmbench_proto::bench::DEFAULT_BUDGET_MS`), and the
/// vmexit guest's (`vmexit-guest/src/config.rs`).
pub const DEFAULT_BUDGET_MS: u32 = 10_000;
pub const DEFAULT_VMEXIT_BUDGET_MS: u32 = 2_000;
/// `--budget-s`'s range.
pub const MIN_BUDGET_MS: u32 = 100;
pub const MAX_BUDGET_MS: u32 = 600_000;
/// Samples a benchmark takes at most (`vmbench_sampling::Config::nanoseconds`).
pub const MAX_SAMPLES: u32 = 1000;
/// How long past its budget a benchmark may go before it counts as hung:
/// calibration, a last sample, its result's way to the host. The agent
/// kills a benchmark's runner process `HANG_GRACE_MS` (60 s) past its
/// budget and reports that benchmark failed, so the host waits 30 s
/// longer: only a guest that hangs as a whole reaches this. The
/// vmexit guest has a watchdog of its own and says nothing until a
/// benchmark ends, so a line that does not come within this is a hang.
pub const AGENT_GRACE: Duration =
    Duration::from_millis(vmbench_proto::bench::HANG_GRACE_MS as u64 + 30_000);
pub const VMEXIT_GRACE: Duration = Duration::from_secs(30);
/// The vmexit guest's vCPUs: `ipi_cross` needs two.
pub const VMEXIT_VCPUS: u32 = 2;

/// The suites and benchmarks of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In the order they run ([`Suite::ALL`]'s).
    pub suites: Vec<Suite>,
    /// The chosen benchmarks, in `--list` order.
    pub benchmarks: Vec<Benchmark>,
    /// `--rough`: stop sampling once any one peak is known.
    pub rough: bool,
    /// Per benchmark, calibration and sampling together (`--budget-s`);
    /// none: each guest's own default.
    pub budget_ms: Option<u32>,
    /// The vmexit guest to boot (default: the one the set-up step built).
    pub vmexit_guest: Option<PathBuf>,
    /// Test-only: the agent is told to hang in this benchmark.
    pub hang_in: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("--bench {0}: no such benchmark; `vmbench bench --list` lists them")]
    Unknown(String),
    #[error("--bench {name}: it is in the {its} suite, not in --suite {asked}")]
    OtherSuite {
        name: String,
        its: &'static str,
        asked: &'static str,
    },
    #[error("--bench names no benchmark")]
    Empty,
}

impl Plan {
    /// The benchmarks of `suite` (all suites when `None`), narrowed to
    /// `names` when some are given.
    pub fn choose(suite: Option<Suite>, names: &[String]) -> Result<Plan, Error> {
        let benchmarks: Vec<Benchmark> = if names.is_empty() {
            catalog::all()
                .filter(|b| suite.is_none_or(|s| b.suite == s))
                .collect()
        } else {
            let mut chosen = Vec::new();
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let b = catalog::find(name).ok_or_else(|| Error::Unknown(name.to_string()))?;
                if let Some(asked) = suite.filter(|s| *s != b.suite) {
                    return Err(Error::OtherSuite {
                        name: name.to_string(),
                        its: b.suite.name(),
                        asked: asked.name(),
                    });
                }
                chosen.push(b);
            }
            if chosen.is_empty() {
                return Err(Error::Empty);
            }
            // In list order, each once.
            catalog::all()
                .filter(|b| chosen.iter().any(|c| c.name == b.name))
                .collect()
        };
        let suites = Suite::ALL
            .into_iter()
            .filter(|s| benchmarks.iter().any(|b| b.suite == *s))
            .collect();
        Ok(Plan {
            suites,
            benchmarks,
            rough: false,
            budget_ms: None,
            vmexit_guest: None,
            hang_in: None,
        })
    }

    /// The chosen benchmarks of `suite`, in order.
    pub fn of(&self, suite: Suite) -> Vec<Benchmark> {
        self.benchmarks
            .iter()
            .copied()
            .filter(|b| b.suite == suite)
            .collect()
    }

    /// Whether any chosen suite boots Linux with the agent.
    pub fn needs_linux(&self) -> bool {
        self.suites.iter().any(|s| s.runs_linux())
    }

    /// VMs one suite's batch boots per backend for `vms` (`--vms`): the
    /// inter suite boots pairs.
    pub fn vms_per_batch(suite: Suite, vms: u32) -> u32 {
        match suite {
            Suite::Inter => vms.saturating_mul(2),
            _ => vms,
        }
    }

    /// One benchmark's budget in `suite`.
    pub fn budget_ms(&self, suite: Suite) -> u32 {
        self.budget_ms.unwrap_or(match suite {
            Suite::Vmexit => DEFAULT_VMEXIT_BUDGET_MS,
            Suite::Micro | Suite::Inter => DEFAULT_BUDGET_MS,
        })
    }

    /// How long one benchmark of `suite` may take before it counts as hung.
    pub fn benchmark_timeout(&self, suite: Suite) -> Duration {
        let grace = match suite {
            Suite::Vmexit => VMEXIT_GRACE,
            Suite::Micro | Suite::Inter => AGENT_GRACE,
        };
        Duration::from_millis(u64::from(self.budget_ms(suite))) + grace
    }

    /// The orders of a VM of `suite`: its benchmarks, windows numbered
    /// from 1 in order. `peer`: the inter suite's peer side.
    pub fn orders(&self, suite: Suite, peer: bool) -> Vec<Order> {
        self.of(suite)
            .into_iter()
            .enumerate()
            .map(|(i, b)| Order {
                benchmark: b,
                request_name: if peer {
                    format!("{}{PEER_SUFFIX}", b.name)
                } else {
                    b.name.to_string()
                },
                window: if peer { 0 } else { i as u16 + 1 },
                rough: self.rough,
                max_samples: MAX_SAMPLES,
                budget_ms: self.budget_ms(suite),
                timeout: self.benchmark_timeout(suite),
            })
            .collect()
    }

    /// Kernel command-line words for the vmexit guest: which benchmarks,
    /// how long (the guest ignores what it does not take).
    pub fn vmexit_cmdline(&self) -> String {
        let names: Vec<&str> = self.of(Suite::Vmexit).iter().map(|b| b.name).collect();
        let mut words = vec![
            format!("vmexit.bench={}", names.join(",")),
            format!("vmexit.budget_ms={}", self.budget_ms(Suite::Vmexit)),
            format!("vmexit.max_samples={MAX_SAMPLES}"),
        ];
        if self.rough {
            words.push("vmexit.rough=1".into());
        }
        words.join(" ")
    }

    /// Kernel command-line words for a Linux guest that runs benchmarks.
    pub fn agent_cmdline(&self) -> String {
        let mut line = "vmbench.bench=1".to_string();
        if let Some(name) = &self.hang_in {
            line.push_str(&format!(" vmbench.bench_hang={name}"));
        }
        line
    }
}

/// What the peer side of an inter benchmark is asked for: the name and this.
pub const PEER_SUFFIX: &str = ":peer";

/// One benchmark a VM is asked for.
#[derive(Debug, Clone)]
pub struct Order {
    pub benchmark: Benchmark,
    /// The name the guest is asked for (`inter_vsock_rtt:peer` on the peer).
    pub request_name: String,
    /// The exit-attribution window the agent marks (0: none).
    pub window: u16,
    pub rough: bool,
    pub max_samples: u32,
    pub budget_ms: u32,
    /// Past this, the benchmark hung.
    pub timeout: Duration,
}

/// A VM's part of the run.
#[derive(Debug, Clone)]
pub struct VmBench {
    pub suite: Suite,
    /// What the agent is asked for, in order (the vmexit guest is asked
    /// through its command line; these are what its report should hold).
    pub orders: Vec<Order>,
    /// The inter suite: the other VM of the pair, and whether this one
    /// is the peer (it serves, the other measures).
    pub pair: Option<Pair>,
    /// The port of the host's benchmark endpoints (`vmbench.port + 1`).
    pub endpoint_port: u32,
}

/// The inter suite's pairing.
#[derive(Debug, Clone)]
pub struct Pair {
    pub other_vm: u32,
    pub is_peer: bool,
    /// The host's relay the two VMs share.
    pub relay: Arc<Relay>,
}
