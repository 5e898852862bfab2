//! CPU time and peak memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`, so
//! the server's CPU per point comes out of the same run even when loadgen shares the machine; its
//! open file descriptors, to see connections come and go; and its runnable threads, to see
//! whether it is still at work.

use serde::Serialize;

/// Clock ticks per second in `/proc/<pid>/stat`: Linux fixes USER_HZ at 100 for userspace.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessSample {
    /// User plus system CPU time since the process started.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
    /// Current resident set size (VmRSS).
    pub rss_bytes: u64,
}

/// Reads the process's counters; `None` when the process or `/proc` is not there.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    };
    Some(ProcessSample {
        cpu_seconds: (utime + stime) / USER_HZ,
        peak_rss_bytes: kib("VmHWM:")?,
        rss_bytes: kib("VmRSS:")?,
    })
}

/// Open file descriptors of the process (sockets included), from `/proc/<pid>/fd`; `None` when
/// the process or `/proc` is not there. A server's connection count moves with it.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of the process that are running or waiting for a CPU (state `R` in
/// `/proc/<pid>/task/<tid>/stat`), not counting the calling thread; `None` when the process is
/// not there. A server still working on a request has one, even when the machine starves it.
pub fn runnable_threads(pid: u32) -> Option<usize> {
    // "<pid>/task/<tid>": the caller's own thread, skipped when it belongs to the process.
    let own_thread = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name().and_then(|tid| tid.to_str()).map(str::to_owned));
    let mut runnable = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if own_thread.as_deref() == task.file_name().to_str() {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // The state is the first field after the command name's closing parenthesis.
        let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
        if state == Some("R") {
            runnable += 1;
        }
    }
    Some(runnable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable_and_cpu_grows() {
        let before = sample(std::process::id()).expect("/proc is mounted on Linux");
        assert!(before.peak_rss_bytes >= before.rss_bytes && before.rss_bytes > 0);
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(150) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let after = sample(std::process::id()).unwrap();
        assert!(after.cpu_seconds > before.cpu_seconds, "{before:?} {after:?} {spin}");
        assert!(sample(u32::MAX).is_none());
        // stdin, stdout and stderr at least (other tests open and close files meanwhile).
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        assert!(open_fds(u32::MAX).is_none());
        // This thread is running, but it is the caller: not counted (other test threads may be).
        assert!(runnable_threads(std::process::id()).is_some());
        assert!(runnable_threads(u32::MAX).is_none());
    }
}
