//! The watch of a `vmbench bench` VM.
//!
//! - A Linux guest (micro, inter): after `Ready` the watch asks the agent
//!   for one benchmark at a time (`RunBench`), each with its own deadline,
//!   and records each result as it comes; after the last it sends the
//!   `Ack` that powers the guest off. A benchmark whose result does not
//!   come in time hung the guest: it is recorded as failed, the rest of the
//!   VM's list as not run (this vmbench does not start a fresh VM for
//!   them), and the VM is stopped — the run goes on.
//! - The vmexit guest says nothing until it has ended: the watch reads its
//!   console report then ([`crate::bench::vmexit_report`]); a benchmark it
//!   never reported is the one it hung or crashed in.

use std::time::Instant;

use super::Watch;
use crate::bench::catalog::{self, Suite};
use crate::bench::plan::VmBench;
use crate::bench::record::{BenchmarkRecord, Status};
use crate::bench::{self as benchmarks, vmexit_report};
use crate::results::{VmStatus, VmexitGuestInfo};

/// Where a VM's benchmarks are.
pub(super) struct BenchWatch<'a> {
    pub plan: &'a VmBench,
    /// The next order to send.
    pub next: usize,
    /// The order whose result is awaited, and on which connection.
    pub pending: Option<Pending>,
    /// The order that hung the guest.
    pub hung: Option<usize>,
    /// The vmexit guest's console, followed for its report lines.
    pub console: Option<ConsoleProgress>,
}

/// How far the watch has read a vmexit guest's console: each new report
/// line gives the guest another benchmark's time, up to the VM's timeout.
pub(super) struct ConsoleProgress {
    /// Bytes of serial.log read so far.
    offset: u64,
    /// The last bytes read, in case the prefix was cut between two reads.
    carry: Vec<u8>,
    /// The VM's timeout: never later than this.
    cap: Instant,
    /// One benchmark's time.
    per_line: std::time::Duration,
}

pub(super) struct Pending {
    pub order: usize,
    pub connection: usize,
}

impl<'a> BenchWatch<'a> {
    pub fn new(plan: &'a VmBench) -> Self {
        BenchWatch {
            plan,
            next: 0,
            pending: None,
            hung: None,
            console: None,
        }
    }

    fn is_vmexit(&self) -> bool {
        self.plan.suite == Suite::Vmexit
    }

    /// Whether this VM serves the other one of its pair.
    pub fn is_peer(&self) -> bool {
        self.plan.pair.as_ref().is_some_and(|p| p.is_peer)
    }
}

impl Watch<'_> {
    /// The deadline passed: if a benchmark was running, it hung (recorded
    /// at the conclusion); returns whether that was it.
    pub(super) fn benchmark_hung(&mut self) -> bool {
        let Some(bench) = self.bench.as_mut() else {
            return false;
        };
        match bench.pending.take() {
            Some(pending) => {
                bench.hung = Some(pending.order);
                true
            }
            None => false,
        }
    }

    /// The benchmark that hung the guest, by name.
    pub(super) fn hung_in(&self) -> Option<&'static str> {
        let bench = self.bench.as_ref()?;
        Some(bench.plan.orders.get(bench.hung?)?.benchmark.name)
    }

    /// A vmexit VM's first deadline: its boot and its first benchmark's
    /// time, then [`Self::follow_vmexit_progress`] moves it on.
    pub(super) fn start_vmexit_progress(&mut self, cap: Instant) {
        let Some(bench) = self.bench.as_mut().filter(|b| b.is_vmexit()) else {
            return;
        };
        let orders = bench.plan.orders.len() as u32;
        let Some(per_line) = bench.plan.orders.first().map(|o| o.timeout) else {
            return;
        };
        // The cap is spawn + the boot timeout + every benchmark's time.
        self.deadline = cap
            .checked_sub(per_line * orders.saturating_sub(1))
            .unwrap_or(cap);
        bench.console = Some(ConsoleProgress {
            offset: 0,
            carry: Vec::new(),
            cap,
            per_line,
        });
    }

    /// Reads what the vmexit guest's console gained (at most 1 MiB a
    /// wake); a new report line moves the deadline a benchmark's time on.
    pub(super) fn follow_vmexit_progress(&mut self) {
        use std::io::{Read, Seek};
        let log = self.spec.serial_log();
        let Some(console) = self.bench.as_mut().and_then(|b| b.console.as_mut()) else {
            return;
        };
        let Ok(mut file) = std::fs::File::open(log) else {
            return;
        };
        if file.seek(std::io::SeekFrom::Start(console.offset)).is_err() {
            return;
        }
        let mut fresh = Vec::new();
        if file.take(1 << 20).read_to_end(&mut fresh).is_err() || fresh.is_empty() {
            return;
        }
        console.offset += fresh.len() as u64;
        let prefix = vmexit_report::PREFIX.as_bytes();
        let mut text = std::mem::take(&mut console.carry);
        text.extend_from_slice(&fresh);
        let lines = text.windows(prefix.len()).filter(|w| *w == prefix).count();
        let keep = text.len().saturating_sub(prefix.len() - 1);
        console.carry = text.split_off(keep);
        if lines > 0 {
            self.deadline = (Instant::now() + console.per_line).min(console.cap);
        }
    }

    /// Whether this is a vmexit guest's VM (no agent reports).
    pub(super) fn runs_vmexit_guest(&self) -> bool {
        self.bench.as_ref().is_some_and(BenchWatch::is_vmexit)
    }

    /// A Linux bench VM's benchmarks once the VM has ended: the one that
    /// was running when it ended (or hung) failed, the ones never asked
    /// for were not run; then each measured one's exits.
    pub(super) fn conclude_benchmarks(&mut self) {
        let Some(bench) = self.bench.as_ref() else {
            return;
        };
        let ended_how = self.how_it_ended();
        let stuck = bench.hung.or(bench.pending.as_ref().map(|p| p.order));
        if let Some(order) = stuck {
            let name = bench.plan.orders[order].request_name.clone();
            let why = if bench.hung.is_some() {
                format!(
                    "no result within {:.0} s: the benchmark hung the guest, and vmbench stopped the VM",
                    bench.plan.orders[order].timeout.as_secs_f64()
                )
            } else {
                format!("the VM ended while it ran: {ended_how}")
            };
            if let Some(r) = self.record.benchmarks.iter_mut().find(|r| r.name == name) {
                if r.status == Status::NotRun {
                    r.status = if self.interrupted.is_some() {
                        Status::NotRun
                    } else {
                        Status::Failed
                    };
                    r.why = Some(why);
                }
            }
            if bench.hung.is_some() {
                self.record.warnings.push(format!(
                    "Benchmark {name} hung the guest: vmbench stopped the VM; the benchmarks after it were not run"
                ));
            }
        }
        let why_unrun = match stuck {
            Some(order) if bench.hung.is_some() => format!(
                "{} hung the guest before it, and vmbench stopped the VM",
                bench.plan.orders[order].benchmark.name
            ),
            Some(order) => format!(
                "the VM ended in {} before it: {ended_how}",
                bench.plan.orders[order].benchmark.name
            ),
            None if self.record.host_ns.ready.is_none() => {
                format!("the guest never reported ready ({ended_how})")
            }
            None => ended_how.clone(),
        };
        benchmarks::mark_unrun(&mut self.record.benchmarks, &why_unrun);
        benchmarks::exits::attribute(self.record);
    }

    /// How the VM ended, in a few words, for a benchmark's `why`.
    fn how_it_ended(&self) -> String {
        if let Some(signal) = self.interrupted {
            return format!(
                "the run was interrupted by {}",
                crate::interrupt::name(signal)
            );
        }
        if let Some(name) = self.hung_in() {
            return format!("{name} hung the guest");
        }
        if let Some(e) = &self.protocol_error {
            return format!("protocol error: {e}");
        }
        if self.timed_out {
            if let Some(console) = self.bench.as_ref().and_then(|b| b.console.as_ref()) {
                return format!(
                    "no new report line within {:.0} s",
                    console.per_line.as_secs_f64()
                );
            }
            return format!(
                "the VM's timeout of {} s passed",
                self.spec.timeout.as_secs_f64()
            );
        }
        let status = self.record.vmm_exit.clone().unwrap_or_default();
        let said = self
            .record
            .exits
            .as_ref()
            .and_then(|a| a.guest_said.clone())
            .map(|s| format!("; the kernel said \"{s}\""))
            .unwrap_or_default();
        format!("{} exited ({status}){said}", self.backend.vmm_name())
    }

    /// The vmexit guest's VM: its report, read from its console once it
    /// has ended, becomes its benchmarks and its status.
    pub(super) fn conclude_vmexit(&mut self) {
        self.update_phases();
        let known = |name: &str| catalog::of(Suite::Vmexit).any(|b| b.name == name);
        let report = vmexit_report::read(&self.spec.serial_log(), &known);
        let ended_how = self.how_it_ended();
        let Some(bench) = self.bench.as_ref() else {
            return;
        };
        let (status, error) = match report {
            Err(e) => {
                let why = format!("the vmexit guest's report was refused: {e}");
                for r in &mut self.record.benchmarks {
                    r.status = Status::Failed;
                    r.why = Some(why.clone());
                }
                (VmStatus::ProtocolError, Some(e.to_string()))
            }
            Ok(report) => {
                self.record.vmexit_guest = report.hello.as_ref().map(|h| VmexitGuestInfo {
                    version: h.version,
                    cpus: h.cpus,
                    vendor: h.vendor.clone(),
                    tsc_khz: h.tsc_khz,
                    hypervisor: h.hypervisor.clone(),
                    apic: h.apic.clone(),
                });
                let mut stuck: Option<&'static str> = None;
                let mut records = Vec::new();
                for order in &bench.plan.orders {
                    let name = order.benchmark.name;
                    let reported = report.results.iter().find(|(n, _)| n == name);
                    let record = match (reported, stuck) {
                        (Some((_, outcome)), _) => {
                            BenchmarkRecord::from_outcome(name, Suite::Vmexit, outcome.clone())
                        }
                        (None, Some(before)) => BenchmarkRecord::not_measured(
                            name,
                            Suite::Vmexit,
                            Status::NotRun,
                            format!("the guest stopped in {before} ({ended_how})"),
                        ),
                        (None, None) if report.error.is_some() => BenchmarkRecord::not_measured(
                            name,
                            Suite::Vmexit,
                            Status::Failed,
                            format!(
                                "the guest could not run the suite: {}",
                                report.error.as_deref().unwrap_or_default()
                            ),
                        ),
                        (None, None) if report.done => BenchmarkRecord::not_measured(
                            name,
                            Suite::Vmexit,
                            Status::Failed,
                            "the guest's report ended without it".into(),
                        ),
                        (None, None) => {
                            stuck = Some(name);
                            let (status, why) = if self.interrupted.is_some() {
                                (Status::NotRun, ended_how.clone())
                            } else if report.hello.is_none() {
                                (
                                    Status::NotRun,
                                    format!("the guest never said hello ({ended_how})"),
                                )
                            } else {
                                (
                                    Status::Failed,
                                    format!("the guest stopped in it or before it: {ended_how}"),
                                )
                            };
                            BenchmarkRecord::not_measured(name, Suite::Vmexit, status, why)
                        }
                    };
                    records.push(record);
                }
                self.record.benchmarks = records;
                self.vmexit_status(&report, stuck)
            }
        };
        self.record.status = status;
        self.record.error = error;
        if let Some(warning) = self.record.phases_ms.disagreement() {
            self.record.warnings.push(warning);
        }
        benchmarks::exits::attribute(self.record);
    }

    /// The vmexit VM's status: `ok` when the guest got going and ended
    /// (a benchmark it stopped in is that benchmark's failure), else why not.
    fn vmexit_status(
        &mut self,
        report: &vmexit_report::Report,
        stuck: Option<&'static str>,
    ) -> (VmStatus, Option<String>) {
        let timeout_s = self.spec.timeout.as_secs_f64();
        if let Some(why) = self.seccomp_stopped_the_vmm() {
            return (VmStatus::Failed, Some(why));
        }
        if let Some(signal) = self.interrupted {
            return (
                VmStatus::Interrupted,
                Some(format!(
                    "The run was interrupted by {} before the vmexit guest ended",
                    crate::interrupt::name(signal)
                )),
            );
        }
        if let Some(why) = &report.error {
            return (
                VmStatus::Failed,
                Some(format!("The vmexit guest could not run the suite: {why}")),
            );
        }
        if report.hello.is_none() {
            let what = if self.timed_out {
                format!("The vmexit guest did not say hello within {timeout_s} s")
            } else {
                format!(
                    "{} exited ({}) before the vmexit guest said hello",
                    self.backend.vmm_name(),
                    self.record.vmm_exit.clone().unwrap_or_default()
                )
            };
            let status = if self.timed_out {
                VmStatus::Timeout
            } else {
                VmStatus::Failed
            };
            return (
                status,
                Some(format!(
                    "{what}; serial log ends: {}",
                    super::verdict::serial_tail(self.spec)
                )),
            );
        }
        if self.timed_out {
            if let Some(name) = stuck {
                self.record.warnings.push(format!(
                    "The vmexit guest hung in {name} ({}): vmbench stopped the VM",
                    self.how_it_ended()
                ));
            }
        } else if !report.done {
            self.record.warnings.push(format!(
                "The vmexit guest ended before its report was done: {}",
                self.how_it_ended()
            ));
        }
        (VmStatus::Ok, None)
    }
}

/// How long a bench VM may take to power off after its last benchmark.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the measuring VM's watch waits for the relay's record of an
/// inter benchmark (the agent reports after closing its side; the relay
/// records once it has seen both sides close).
const RELAY_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Watch<'_> {
    /// Asks the guest on connection `index` for its next benchmark, or,
    /// after the last, acknowledges its report: it powers off.
    pub(super) fn send_next_benchmark(&mut self, index: usize, ts: u64) {
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        let Some(order) = bench.plan.orders.get(bench.next) else {
            self.record.host_ns.reported.get_or_insert(ts);
            self.deadline = Instant::now() + SHUTDOWN;
            self.acknowledge(index);
            return;
        };
        let request = vmbench_proto::HostMessage::RunBench(vmbench_proto::BenchRequest {
            name: order.request_name.clone(),
            rough: order.rough,
            max_samples: order.max_samples,
            budget_ms: order.budget_ms,
            window: order.window,
        });
        let order_index = bench.next;
        bench.next += 1;
        bench.pending = Some(Pending {
            order: order_index,
            connection: index,
        });
        self.deadline = Instant::now() + order.timeout;
        let frame = vmbench_proto::encode_frame(&request).expect("a request encodes");
        let connection = &mut self.connections[index];
        connection.session.asked_for_bench(&order.request_name);
        // A small frame into a socket the guest reads: this does not block.
        if let Err(e) = std::io::Write::write_all(&mut connection.stream, &frame) {
            self.record.warnings.push(format!(
                "Could not ask the guest for benchmark {}: {e}",
                order.request_name
            ));
        }
    }

    /// The guest's answer to the benchmark asked for: recorded, and the
    /// next one asked for.
    pub(super) fn on_bench_result(
        &mut self,
        index: usize,
        result: vmbench_proto::BenchResult,
        ts: u64,
    ) {
        let Some(bench) = self.bench.as_mut() else {
            return;
        };
        // The session lets through only the answer to what was asked.
        let Some(pending) = bench.pending.take().filter(|p| p.connection == index) else {
            self.connections[index].open = false;
            self.protocol_error.get_or_insert(format!(
                "Guest sent a result for benchmark {:?} on a connection that was not asked",
                result.name
            ));
            return;
        };
        let order = &bench.plan.orders[pending.order];
        if let Err(e) = check_result(order, &result.outcome) {
            self.connections[index].open = false;
            self.protocol_error.get_or_insert(format!(
                "Guest's result for benchmark {}: {e}",
                order.request_name
            ));
            bench.pending = Some(pending);
            return;
        }
        let is_peer = bench.is_peer();
        let suite = bench.plan.suite;
        let relay = bench
            .plan
            .pair
            .as_ref()
            .map(|p| std::sync::Arc::clone(&p.relay));
        let name = order.benchmark.name;
        let request_name = order.request_name.clone();
        let mut record = if is_peer {
            // The peer only serves: its outcome says whether it did.
            let (status, why) = match result.outcome {
                vmbench_proto::BenchOutcome::Done(_) => (Status::Ok, None),
                vmbench_proto::BenchOutcome::Unavailable { why } => {
                    (Status::Unavailable, Some(why))
                }
                vmbench_proto::BenchOutcome::Failed { why } => (Status::Failed, Some(why)),
            };
            BenchmarkRecord {
                why,
                ..BenchmarkRecord::not_measured(&request_name, suite, status, String::new())
            }
        } else {
            BenchmarkRecord::from_outcome(name, suite, result.outcome.into())
        };
        if let Some(slot) = self
            .record
            .benchmarks
            .iter()
            .position(|r| r.name == record.name)
        {
            record.peer_vm = self.record.benchmarks[slot].peer_vm;
            if !is_peer && suite == Suite::Inter {
                record.relay = relay.and_then(|r| r.record(name, RELAY_RECORD_WAIT));
            }
            self.record.benchmarks[slot] = record;
            if !is_peer {
                (self.on_progress)(self.record, super::Milestone::Benchmark(slot));
            }
        }
        self.send_next_benchmark(index, ts);
    }
}

/// What a guest may not answer: samples beyond what was asked, a window
/// other than the one asked, a unit that is no unit.
fn check_result(
    order: &crate::bench::plan::Order,
    outcome: &vmbench_proto::BenchOutcome,
) -> Result<(), String> {
    let vmbench_proto::BenchOutcome::Done(samples) = outcome else {
        return Ok(());
    };
    if samples.values.len() > order.max_samples as usize {
        return Err(format!(
            "{} samples, more than the {} asked for",
            samples.values.len(),
            order.max_samples
        ));
    }
    if order.window != 0 && samples.window != order.window {
        return Err(format!(
            "window {}, but window {} was asked for",
            samples.window, order.window
        ));
    }
    if order.window != 0 && samples.values.is_empty() {
        return Err("done, without a sample".into());
    }
    if samples.unit != "ns" && samples.unit != "cycles" {
        return Err(format!("unit {:?} is neither ns nor cycles", samples.unit));
    }
    Ok(())
}
