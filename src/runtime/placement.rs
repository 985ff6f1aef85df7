//! Where the serving threads run (`server.pin_workers`, off by default).
//!
//! Off by default because binding costs more than it buys wherever authgate shares its CPUs: on
//! the 2-core bench machine, pinned workers served 11-29 % fewer new connections per second than
//! unbound ones, plain and TLS, and 14-24 % less keep-alive throughput once the load generator and
//! the backend ran on a CPU of their own (a pinned worker cannot leave the CPU they load); what
//! binding buys is the keep-alive tail below (bench/results/2026-12-05-tls-pinning*.md).
//!
//! When on, workers are bound only when there is exactly one per CPU this process may run on (its
//! affinity mask, which `taskset`, a cpuset or `docker --cpuset-cpus` set): the thread-per-core
//! layout of nginx's `worker_cpu_affinity auto` or HAProxy's `cpu-map`. With fewer workers than
//! CPUs (a CPU quota, or `server.workers` set lower) binding would only take choices away from
//! the scheduler, so they stay unbound.
//!
//! Why bind at all: the workers are equal and each is busy in short bursts, so the kernel's load
//! balancer sees nothing to fix when both land on one CPU while the load generator and the
//! backend share the other; that CPU then runs one worker while the other waits out a whole
//! scheduler tick (4 ms here), and every request on the waiting worker's connections waits with
//! it. `perf sched` under wrk -c32 on 2 cores: unbound, a worker's longest wait 8 ms and p99
//! 4.24-4.25 ms in every run; bound, p99 0.89-0.93 ms (bench/results/2026-11-24-pinning.md).
//!
//! Threads that a bound worker starts (its runtime's blocking pool, which resolves upstream host
//! names) would inherit its single CPU; they get the process's whole mask back as they start.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The plan for the worker threads, made once at start-up.
pub(crate) struct Placement {
    /// The process's affinity mask when workers are bound, for the threads they start.
    mask: Option<CpuSet>,
    /// Worker `i` runs on `cpus[i]`; empty when the workers are not bound.
    cpus: Vec<usize>,
}

impl Placement {
    /// Decides whether `workers` threads are bound, and to which CPUs; logs the decision.
    pub(crate) fn plan(pin_workers: bool, workers: usize) -> Placement {
        let unbound = Placement {
            mask: None,
            cpus: Vec::new(),
        };
        if !pin_workers {
            tracing::info!(
                workers,
                "worker threads not bound to CPUs: pin_workers = false"
            );
            return unbound;
        }
        let mask = match sched_getaffinity(Pid::from_raw(0)) {
            Ok(mask) => mask,
            Err(err) => {
                tracing::warn!(%err, "cannot read the CPU affinity mask; worker threads not bound");
                return unbound;
            }
        };
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| mask.is_set(cpu).unwrap_or(false))
            .collect();
        if cpus.len() != workers {
            tracing::info!(
                workers,
                cpus = cpus.len(),
                "worker threads not bound to CPUs: binding needs one worker per allowed CPU"
            );
            return unbound;
        }
        tracing::info!(?cpus, "worker threads bound one per CPU");
        Placement {
            mask: Some(mask),
            cpus,
        }
    }

    /// The CPU worker `index` is bound to, if any.
    pub(crate) fn cpu_for(&self, index: usize) -> Option<usize> {
        self.cpus.get(index).copied()
    }

    /// Binds the calling thread to `cpu`; on failure it stays unbound, with a warning.
    pub(crate) fn bind_current_thread(index: usize, cpu: usize) {
        let mut only = CpuSet::new();
        let bound = only
            .set(cpu)
            .and_then(|()| sched_setaffinity(Pid::from_raw(0), &only));
        if let Err(err) = bound {
            tracing::warn!(worker = index, cpu, %err, "cannot bind the worker thread to its CPU; it runs unbound");
        }
    }

    /// For a bound worker's runtime (`on_thread_start`): gives each thread it starts the whole
    /// process mask back instead of the worker's one CPU.
    pub(crate) fn unbind_started_threads(&self) -> Option<impl Fn() + Send + Sync + 'static> {
        let mask = self.mask?;
        Some(move || {
            let _ = sched_setaffinity(Pid::from_raw(0), &mask);
        })
    }
}
