//! Writes registrar's CustomResourceDefinitions to `crds/` (or the directory given
//! as the first argument). `--stdout` prints them as one multi-document stream.

use std::{fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let manifests = match registrar::api::crd_manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("--stdout") {
        let docs: Vec<_> = manifests.iter().map(|m| m.yaml.as_str()).collect();
        print!("{}", docs.join("---\n"));
        return ExitCode::SUCCESS;
    }
    let dir = PathBuf::from(arg.unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/crds").into()));
    if let Err(e) = fs::create_dir_all(&dir) {
        eprintln!("crdgen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for m in manifests {
        let path = dir.join(&m.file_name);
        if let Err(e) = fs::write(&path, &m.yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
