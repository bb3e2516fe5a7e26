//! Telling a running broker to reload: SIGHUP to the process named by `runtime.pid_file`, as
//! `tidegate reload` does.

use tidegate_config::Config;

/// What became of the reload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP was sent to this process.
    Signalled(u32),
    /// `runtime.pid_file` is not set.
    NoPidFile,
    /// The pid file is missing, malformed, stale, or names a process that is not a broker.
    NotRunning(String),
}

/// Sends SIGHUP to the broker whose pid `config.runtime.pid_file` holds, if it runs.
pub fn signal_reload(config: &Config) -> Reload {
    let Some(pid_file) = &config.runtime.pid_file else {
        return Reload::NoPidFile;
    };
    let pid = match std::fs::read_to_string(pid_file) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) if pid > 1 => pid,
            _ => return Reload::NotRunning(format!("{pid_file} does not hold a process id")),
        },
        Err(e) => return Reload::NotRunning(format!("reading {pid_file}: {e}")),
    };
    // A stale pid file may name a process that has nothing to do with us: it must not get a
    // SIGHUP (which ends most programs).
    let proc_dir = std::path::Path::new("/proc");
    if proc_dir.is_dir() {
        match std::fs::read(proc_dir.join(pid.to_string()).join("cmdline")) {
            Err(_) => return Reload::NotRunning(format!("no broker is running as process {pid}")),
            Ok(cmdline) if !String::from_utf8_lossy(&cmdline).contains("tidegate") => {
                return Reload::NotRunning(format!(
                    "process {pid} (from {pid_file}) is not a tidegate broker: stale pid file?"
                ))
            }
            Ok(_) => {}
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Reload::Signalled(pid),
        Ok(_) => Reload::NotRunning(format!("no broker is running as process {pid}")),
        Err(e) => Reload::NotRunning(format!("running kill: {e}")),
    }
}

/// Signals the broker after its file changed; says what happened, for the operator.
pub fn after_change(config: &Config) -> String {
    let later = if config.runtime.watch_config {
        "the broker will pick the change up on its next start or reload \
         (at once, if it runs and watches the file: runtime.watch_config)"
    } else {
        "the broker will pick the change up on its next start or reload"
    };
    match signal_reload(config) {
        Reload::Signalled(pid) => format!("reload signalled to the broker (process {pid})"),
        Reload::NoPidFile => format!("runtime.pid_file is not set: {later}"),
        Reload::NotRunning(why) => format!("{why}: {later}"),
    }
}
