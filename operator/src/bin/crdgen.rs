//! Prints a CRD of the operator as YAML:
//! `cargo run -p streamflow-operator --bin crdgen [pipelinerun|backfill|pipeline] > crds/<name>.yaml`
//! (no argument: the PipelineRun CRD).

use std::process::ExitCode;

fn main() -> ExitCode {
    let which = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "pipelinerun".to_owned());
    let crds = match streamflow_operator::api::all_crds() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match crds.into_iter().find(|(arg, _, _)| *arg == which) {
        Some((_, _, yaml)) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("error: unknown CRD {which:?}: expected pipelinerun, backfill or pipeline");
            ExitCode::FAILURE
        }
    }
}
