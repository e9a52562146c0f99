//! Prints the PipelineRun CRD as YAML: `cargo run -p streamflow-operator --bin crdgen > crds/pipelinerun.yaml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match streamflow_operator::crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
