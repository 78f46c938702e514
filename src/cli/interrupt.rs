//! Ctrl-C: the first one asks the running stage to stop after the item in flight (its
//! work is saved and a rerun resumes it), a second one quits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The stop flag a Ctrl-C sets.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the process's Ctrl-C handler; later calls (the stages of `rlaif pipeline`)
    /// get the same flag.
    pub fn install() -> anyhow::Result<Self> {
        static INSTALLED: std::sync::Mutex<Option<Interrupt>> = std::sync::Mutex::new(None);
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = installed.as_ref() {
            return Ok(i.clone());
        }
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: quitting now");
                std::process::exit(i32::from(super::EXIT_INTERRUPTED));
            }
            eprintln!(
                "\ninterrupted: stopping after the item in flight (Ctrl-C again to quit now)"
            );
        })
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
        *installed = Some(Self(Arc::clone(&flag)));
        Ok(Self(flag))
    }

    /// Whether Ctrl-C was pressed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself (an `AtomicBool` is an observer that only answers `should_stop`).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }
}
