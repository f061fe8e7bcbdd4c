//! The config file parser, on any text: errors, never panics, and what it
//! accepts passes the checks the daemon runs next.
#![no_main]

use std::{collections::HashSet, path::Path};

use libfuzzer_sys::fuzz_target;
use mif::{model::config, model::policies::PolicySpec};

fuzz_target!(|data: &[u8]| {
    // `config::load` reads the file as UTF-8 and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("/etc/mif/mif.toml"), text) {
        Ok(config) => {
            let _ = config.check_marks(0x7f00_0000);
            let _ = config.check_marks(0x0000_00ff);
            let interfaces: HashSet<String> = ["wlan0", "wwan0"].map(String::from).into();
            let _ = config.check_prefer(&interfaces);
            for policy in &config.policies {
                // A policy the file accepts must also pass the control
                // socket's checks: both describe the same thing.
                let spec = PolicySpec::from_config(policy);
                if let Err(e) = spec.clone().checked() {
                    panic!("accepted by the config, refused by the socket: {spec:?}: {e}");
                }
            }
        }
        // Every error names file, line, field and value: format it.
        Err(e) => drop(e.to_string()),
    }
});
