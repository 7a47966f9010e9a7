//! Writes registrar's generated manifests: the CustomResourceDefinitions to
//! `crds/` and to the Helm chart (`charts/registrar/files/crds/`), and copies the
//! admission policies of `deploy/` into the chart (`charts/registrar/files/admission/`).
//! `--stdout` prints the CRDs as one multi-document stream instead.

use std::{fs, path::Path, process::ExitCode};

use registrar::api::{ADMISSION_POLICY_DIRS, CRD_DIRS, crd_manifests};

fn main() -> ExitCode {
    let manifests = match crd_manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().nth(1).as_deref() == Some("--stdout") {
        let docs: Vec<_> = manifests.iter().map(|m| m.yaml.as_str()).collect();
        print!("{}", docs.join("---\n"));
        return ExitCode::SUCCESS;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = (|| -> std::io::Result<()> {
        for dir in CRD_DIRS {
            let dir = root.join(dir);
            fs::create_dir_all(&dir)?;
            for m in &manifests {
                fs::write(dir.join(&m.file_name), &m.yaml)?;
                println!("wrote {}", dir.join(&m.file_name).display());
            }
        }
        let (source, copy) = (root.join(ADMISSION_POLICY_DIRS.0), root.join(ADMISSION_POLICY_DIRS.1));
        fs::create_dir_all(&copy)?;
        for entry in fs::read_dir(&copy)? {
            fs::remove_file(entry?.path())?;
        }
        for entry in fs::read_dir(&source)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let target = copy.join(path.file_name().unwrap_or_default());
                fs::copy(&path, &target)?;
                println!("copied {} to {}", path.display(), target.display());
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
