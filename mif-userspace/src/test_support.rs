//! For tests that need root (network namespaces, cgroups, BPF): one
//! decision whether they run or skip, shared by the unit tests and the
//! integration tests of this crate, and the throwaway network namespaces
//! they run in.
use std::{
    future::Future,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use nix::sched::{setns, CloneFlags};

/// Set to `1` (as `.ci/run` does), a test that needs root fails when it
/// would otherwise skip: in CI a skipped test is a test that did not run.
pub const REQUIRE_ROOT_ENV: &str = "MIF_TESTS_REQUIRE_ROOT";

/// Whether a test that needs root can run: true as root; otherwise a note
/// on stderr and false, or a panic when [`REQUIRE_ROOT_ENV`] is `1`.
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        panic!("{what} needs root, and {REQUIRE_ROOT_ENV}=1 forbids skipping it");
    }
    eprintln!("skipping {what}: needs root");
    false
}

/// A named network namespace for a test, with loopback up, deleted on drop
/// (also when the test panics), so a failing test leaves nothing behind.
/// Names are `PREFIX-PID-N`: unique across parallel tests and processes.
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`; panics with ip's message when it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets a sysctl of this namespace (`net.*` ones are per namespace).
    pub fn sysctl(&self, setting: &str) {
        ip(&["netns", "exec", &self.name, "sysctl", "-qw", setting]);
    }

    /// A veth pair from `dev` here to `peer_dev` in `peer`, both ends up.
    pub fn veth_to(&self, dev: &str, peer: &TestNetns, peer_dev: &str) {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ]);
        self.ip(&["link", "set", dev, "up"]);
        peer.ip(&["link", "set", peer_dev, "up"]);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets it
    /// opens stay in the namespace whichever thread uses them later.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the test namespace");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("enter the test namespace");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Runs an async `body` inside the namespace on a current-thread tokio
    /// runtime of its own (rtnetlink connections spawn onto it).
    pub fn block_on<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(body())
        })
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Not ip(): a failed assert while unwinding would abort the tests.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `ip args...` and returns its output; panics with ip's message when
/// it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 from ip")
}
