//! Verifying programs side by side before they are attached.
//!
//! The kernel's verifier is most of a start-up (tens of milliseconds for
//! each large hook), and it takes its global lock for unprivileged loaders
//! only: programs a privileged daemon loads from several threads are
//! verified at once, one per CPU (on 6.18, 1-policy start-ups went from
//! 405-518 to 273-315 ms on two CPUs). This is only a head start: a
//! program the kernel refuses here is left unloaded, and the loader's own
//! step for it loads it again and reports the refusal with the program's
//! name and log.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::{
    programs::{Program, ProgramError},
    Ebpf,
};

/// Verifies (loads) the programs of `ebpf` named in `wanted` that are not
/// loaded yet, on up to one thread per CPU, taking them in `wanted`'s order.
pub fn in_parallel(ebpf: &mut Ebpf, wanted: &[&str]) {
    let mut queue: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(name, program)| wanted.contains(name) && program.fd().is_err())
        .collect();
    // Popped from the end.
    queue.sort_by_key(|(name, _)| std::cmp::Reverse(wanted.iter().position(|w| w == name)));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(queue.len());
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((name, program)) = next else { break };
                let started = Instant::now();
                match load(program) {
                    Some(Ok(())) => log_verified(name, program, started.elapsed()),
                    // Loaded again, and reported, by the step that needs it.
                    Some(Err(e)) => log::debug!("{name}: not verified ahead: {e}"),
                    None => {}
                }
            });
        }
    });
}

/// Loads a program of any type mif uses; `None` for other types, which
/// are not verified ahead.
fn load(program: &mut Program) -> Option<Result<(), ProgramError>> {
    Some(match program {
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSockopt(p) => p.load(),
        Program::SockOps(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        _ => return None,
    })
}

/// With debug logging on: how long the verifier took over `program` and
/// how many instructions it walked (its measure of the program's
/// complexity, `verified_insns`, Linux 5.16).
fn log_verified(name: &str, program: &Program, took: Duration) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let walked = (program.info().ok())
        .and_then(|info| info.verified_instruction_count())
        .map_or(String::new(), |n| format!(", {n} instructions walked"));
    log::debug!(
        "{name}: verified in {:.1} ms{walked}",
        took.as_secs_f64() * 1e3
    );
}
