//! The open-files limit and the server process, read from /proc.

/// Raises the soft open-files limit to the hard limit; returns (soft, hard) after.
pub(crate) fn raise_nofile() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        (lim.rlim_cur, lim.rlim_max)
    }
}

/// The server process, read from /proc.
pub(crate) struct Proc {
    pub(crate) pid: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcSample {
    pub(crate) cpu_ns: u64,
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) threads: usize,
}

impl Proc {
    /// CPU time of all threads in ns (schedstat: exact), falling back to utime+stime ticks.
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
        let mut total = 0u64;
        let mut any = false;
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for task in dir.flatten() {
                if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
                    && let Some(ns) = s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    total += ns;
                    any = true;
                }
            }
        }
        if any {
            return Some(total);
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(ticks * 1_000_000_000 / hz)
    }

    pub(crate) fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub(crate) fn sample(&self) -> Option<ProcSample> {
        Some(ProcSample {
            cpu_ns: self.cpu_ns()?,
            rss_kib: self.status_kib("VmRSS:")?,
            hwm_kib: self.status_kib("VmHWM:").unwrap_or(0),
            threads: std::fs::read_dir(format!("/proc/{}/task", self.pid))
                .map(|d| d.count())
                .unwrap_or(0),
        })
    }

    /// The server's own soft open-files limit.
    pub(crate) fn nofile(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}
