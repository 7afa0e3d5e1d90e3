//! A test-only hook that aborts the process right after an email was sent
//! and before it is recorded as sent: the window in which a crash makes the
//! next attempt send it again. Compiled only with the `crash-hooks`
//! feature; `SQUADRON_CRASH_AFTER_SEND` is the probability of aborting and
//! `SQUADRON_CRASH_LOG` the file each abort is logged to first.

/// Called right after a send succeeded.
#[cfg(feature = "crash-hooks")]
pub(crate) fn after_send(message_id: &str) {
    use std::io::Write;
    let probability: f64 = std::env::var("SQUADRON_CRASH_AFTER_SEND").ok().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let mut byte = [0u8; 4];
    getrandom::fill(&mut byte).expect("random bytes");
    if f64::from(u32::from_le_bytes(byte)) / f64::from(u32::MAX) >= probability {
        return;
    }
    if let Ok(path) = std::env::var("SQUADRON_CRASH_LOG") {
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the crash log opens");
        writeln!(log, "{message_id}").expect("the crash log is written");
        log.sync_all().expect("the crash log is synced");
    }
    std::process::abort();
}

/// Called right after a send succeeded (no hook in this build).
#[cfg(not(feature = "crash-hooks"))]
pub(crate) fn after_send(_message_id: &str) {}
