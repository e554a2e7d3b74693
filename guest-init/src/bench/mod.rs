//! The micro suite: benchmarks the agent runs in the guest on the host's
//! orders (`vmbench.bench=1`), or on a command line outside any VM
//! (`vmbench-init --bench NAME`, for testing).
//!
//! - Every benchmark is a [`Workload`]: it runs its operation `n` times and
//!   says how many nanoseconds of CLOCK_MONOTONIC_RAW (read through the vDSO)
//!   that took; what a sample needs besides the operation (a fork, a fresh
//!   buffer) happens outside the timed part. `vmbench-sampling` calibrates
//!   and samples it ([`timing`]), and marks the window the VMM charges exits
//!   to.
//! - Each benchmark runs in a process of its own, forked for it
//!   ([`runner`]): a panic, a crash (a signal), or a hang past its budget
//!   plus a grace is that benchmark's `Failed`, never the agent's end. The
//!   agent (PID 1) keeps reaping whatever its children leave behind.
//! - Benchmarks that need the VM's devices (a port or MMIO register the VMM
//!   answers, the hypercall, the scratch disk, vsock to the host) say
//!   `Unavailable` outside a VM.

mod block;
pub mod cli;
mod exits;
mod hypercall;
mod kernel_entry;
mod memory;
mod process;
mod runner;
mod timing;
mod vsock;

use vmbench_proto::{BenchOutcome, BenchResult, HostMessage};

use crate::console;
use crate::report::Conversation;
use crate::settings::Settings;

pub use process::EXEC_MARKER_ARG;
pub use runner::run;

/// Where a benchmark runs.
#[derive(Debug, Clone)]
pub struct Env {
    /// In a vmbench guest, on the host's orders: the VMM's devices are
    /// there, and the window marks reach the VMM.
    pub in_vm: bool,
    /// The kernel command line's settings (the vsock port, the root disk).
    pub settings: Settings,
}

/// A benchmark set up and ready to time.
pub trait Workload {
    /// Runs the operation `iterations` times and returns the nanoseconds
    /// that took; with 0 iterations, the timed part alone (its fixed
    /// cost, the overhead).
    fn run(&mut self, iterations: u64) -> Result<u64, String>;

    /// The most operations one run may hold (a buffer's pages, say).
    fn max_iterations(&self) -> u64 {
        1 << 32
    }

    /// The benchmark's own figures for the result's `extra`.
    fn extra(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// Why a benchmark cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// Not in this guest: a device it lacks, an instruction that traps.
    Unavailable(String),
    /// Something that should work did not.
    Failed(String),
}

impl SetupError {
    fn outcome(self) -> BenchOutcome {
        match self {
            SetupError::Unavailable(why) => BenchOutcome::Unavailable { why },
            SetupError::Failed(why) => BenchOutcome::Failed { why },
        }
    }
}

type Setup = fn(&Env) -> Result<Box<dyn Workload>, SetupError>;

/// The set-up function of the benchmark `name`; every name of
/// `vmbench_proto::MICRO_BENCHES` has one.
fn setup_of(name: &str) -> Option<Setup> {
    let setup: Setup = match name {
        "context_switch" => process::context_switch,
        "cow_fault" => memory::cow_fault,
        "exec" => process::exec,
        "fork" => process::fork,
        "syscall" => kernel_entry::syscall,
        "vdso_call" => kernel_entry::vdso_call,
        "mem_linear" => memory::mem_linear,
        "mem_random" => memory::mem_random,
        "port_io_user" => exits::port_io_user,
        "port_io_kernel" => exits::port_io_kernel,
        "mmio_user" => exits::mmio_user,
        "pte_update" => memory::pte_update,
        "blk_read_bw" => block::read_bw,
        "blk_read_lat" => block::read_lat,
        "hypercall" => hypercall::hypercall,
        "cpuid_user" => exits::cpuid_user,
        "vsock_rtt" => vsock::rtt,
        "vsock_bw" => vsock::bw,
        _ => return None,
    };
    Some(setup)
}

/// `Unavailable` outside a vmbench guest, for a benchmark that needs what
/// only the VM has.
fn require_vm(env: &Env, what: &str) -> Result<(), SetupError> {
    if env.in_vm {
        Ok(())
    } else {
        Err(SetupError::Unavailable(format!(
            "needs a vmbench guest ({what}); this is not one"
        )))
    }
}

/// Bench mode: after the report, run what the host asks for until its `Ack`.
pub fn serve(conversation: &mut Conversation, settings: &Settings) {
    let env = Env {
        in_vm: true,
        settings: settings.clone(),
    };
    console::line(&[("event", "bench_mode")]);
    loop {
        match conversation.next_order() {
            Ok(HostMessage::Ack) => {
                conversation.reported();
                return;
            }
            Ok(HostMessage::RunBench(request)) => {
                console::line(&[("event", "bench_start"), ("name", &request.name)]);
                let outcome = run(&request, &env);
                let (status, why) = match &outcome {
                    BenchOutcome::Done(samples) => ("done", samples.stop.clone()),
                    BenchOutcome::Unavailable { why } => ("unavailable", why.clone()),
                    BenchOutcome::Failed { why } => ("failed", why.clone()),
                };
                console::line(&[
                    ("event", "bench_end"),
                    ("name", &request.name),
                    ("status", status),
                    ("detail", &why),
                ]);
                let result = BenchResult {
                    name: request.name,
                    outcome,
                };
                if !conversation.bench(result) {
                    return;
                }
            }
            Err(e) => {
                console::line(&[("error", "host_gone"), ("detail", &e)]);
                return;
            }
        }
    }
}

/// Tests that fork hold this: a runner's watch reaps any child, and a
/// benchmark waits for its own, so two at once would take each other's.
#[cfg(test)]
pub fn test_fork_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_benchmark_has_a_setup() {
        for bench in vmbench_proto::MICRO_BENCHES {
            assert!(setup_of(bench.name).is_some(), "{}", bench.name);
        }
        assert!(setup_of("inter_vsock_rtt").is_none());
    }

    #[test]
    fn vm_only_benchmarks_say_so_outside_a_vm() {
        let env = Env {
            in_vm: false,
            settings: Settings::default(),
        };
        for name in [
            "port_io_user",
            "port_io_kernel",
            "mmio_user",
            "blk_read_bw",
            "blk_read_lat",
            "hypercall",
            "vsock_rtt",
            "vsock_bw",
        ] {
            match setup_of(name).unwrap()(&env) {
                Err(SetupError::Unavailable(why)) => {
                    assert!(why.contains("vmbench guest"), "{name}: {why}")
                }
                Err(other) => panic!("{name}: {other:?}"),
                Ok(_) => panic!("{name} set up outside a VM"),
            }
        }
    }
}
