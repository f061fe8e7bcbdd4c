//! The control socket, as the daemon's connection task decodes it: one JSON
//! request per line from any local user (the socket is 0666), then the
//! checks a policy change goes through before it touches anything. Also
//! the CLI's decoding of the answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mif::{
    host::cgroup::normalize_cgroup,
    host::cgroup_pattern::{is_pattern, CgroupPattern},
    control::protocol::{Request, Response},
    model::policies::PolicySet,
};

fuzz_target!(|data: &[u8]| {
    // The server reads lines with a UTF-8 line reader: invalid UTF-8 ends
    // the connection before any decoding.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        match Request::decode(line) {
            Ok(request) => {
                let _ = request.is_change();
                // What the CLI sends decodes to the same request.
                let sent = serde_json::to_string(&request).expect("requests serialise");
                assert_eq!(Request::decode(&sent).as_ref(), Ok(&request), "{sent}");
                match request {
                    Request::PolicySet(spec) => {
                        if let Ok(spec) = spec.checked() {
                            if is_pattern(&spec.cgroup) {
                                CgroupPattern::parse(&spec.cgroup).expect("checked patterns parse");
                            }
                            let mut set = PolicySet::default();
                            set.set(spec.clone()).expect("no config owns anything");
                            assert_eq!(set.cli(), [spec]);
                        }
                    }
                    Request::PolicyDel { cgroup } => {
                        let _ = PolicySet::default().del(&normalize_cgroup(&cgroup));
                    }
                    _ => {}
                }
            }
            // The error goes back to the client as an answer.
            Err(e) => drop(serde_json::to_string(&Response::Error(e))),
        }
        let _ = Response::decode(line);
    }
});
