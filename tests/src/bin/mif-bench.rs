//! What steering costs, side by side, in one run; see
//! `mif_tests::bench` and docs/benchmarks.md.
//!
//! ```text
//! mif-bench [--smoke] [--docs DIR]     the benchmark (root)
//! mif-bench worker|watch|server ...    its parts inside the lab
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match mif_tests::bench::main_with_args(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mif-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
