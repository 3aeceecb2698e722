//! nats-insights as a real OS process: the product binary started with given arguments
//! (usually `run ...`), optionally under libfaketime with its own wall-clock offset, its stdout
//! and stderr appended to a log file, stopped gracefully (SIGTERM) or crashed (SIGKILL), and
//! started again with the same arguments and offset.
//!
//! The binary is found by [`product_bin`]; a live test of the product passes
//! `env!("CARGO_BIN_EXE_nats-insights")` instead. Every process is SIGKILLed and reaped when its
//! [`Monitor`] is dropped.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{io_err, log_tail, send_signal, Stop, TestbedError, START_MARKER};

/// Environment variable naming the nats-insights binary ([`product_bin`]).
pub const PRODUCT_BIN_ENV: &str = "NATS_INSIGHTS_BIN";
/// Environment variable naming libfaketime.so.1 ([`faketime_lib`]); `scripts/lib/ensure.sh`'s
/// `ensure_faketime` exports it.
pub const FAKETIME_LIB_ENV: &str = "FAKETIME_LIB";

/// How long a SIGTERMed monitor gets to exit before it is SIGKILLed.
const TERM_TIMEOUT: Duration = Duration::from_secs(10);

/// The nats-insights binary: `$NATS_INSIGHTS_BIN` if set, else `nats-insights` in the
/// directory of the running executable (a binary in `target/<profile>/`) or in its parent (a
/// test in `target/<profile>/deps/`). Cargo builds it there with `cargo build -p nats-insights`;
/// the scripts do so before they run the tools.
pub fn product_bin() -> Result<PathBuf, TestbedError> {
    if let Some(bin) = std::env::var_os(PRODUCT_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(TestbedError::NoProductBinary(format!(
                "${PRODUCT_BIN_ENV} is {}, which is not a file",
                bin.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| io_err("finding the running executable", e))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join("nats-insights"), dir.join("../nats-insights")];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            TestbedError::NoProductBinary(format!(
                "no nats-insights next to {} (build it with `cargo build -p nats-insights`, \
                 with --release for a release build, or point ${PRODUCT_BIN_ENV} at it)",
                exe.display()
            ))
        })
}

/// libfaketime.so.1: `$FAKETIME_LIB` if set, else where Debian's `faketime` package and a
/// source install put it.
pub fn faketime_lib() -> Result<PathBuf, TestbedError> {
    if let Some(lib) = std::env::var_os(FAKETIME_LIB_ENV).filter(|l| !l.is_empty()) {
        let lib = PathBuf::from(lib);
        return if lib.is_file() {
            Ok(lib)
        } else {
            Err(TestbedError::NoFaketime(format!(
                "${FAKETIME_LIB_ENV} is {}, which is not a file",
                lib.display()
            )))
        };
    }
    let mut dirs = vec![
        PathBuf::from("/usr/lib/faketime"),
        PathBuf::from("/usr/local/lib/faketime"),
    ];
    // Multiarch directories: /usr/lib/x86_64-linux-gnu/faketime and the like.
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketime.so.1"))
        .find(|l| l.is_file())
        .ok_or_else(|| {
            TestbedError::NoFaketime(
                "libfaketime.so.1 not found (apt-get install faketime, or point \
                 $FAKETIME_LIB at it)"
                    .to_owned(),
            )
        })
}

/// A constant offset of a process's wall clock from the real one, in milliseconds (positive:
/// ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ClockOffset(pub i64);

impl ClockOffset {
    /// The offset in libfaketime's `FAKETIME` syntax: `+1.250s`, `-0.500s`.
    pub fn faketime(self) -> String {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let ms = self.0.unsigned_abs();
        format!("{sign}{}.{:03}s", ms / 1000, ms % 1000)
    }
}

impl fmt::Display for ClockOffset {
    /// `+1.250 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.faketime();
        write!(f, "{} s", &text[..text.len() - 1])
    }
}

/// What a [`Monitor`] runs.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    /// The nats-insights binary (see [`product_bin`]).
    pub bin: PathBuf,
    /// Its arguments, e.g. `["run", "--server", ...]`.
    pub args: Vec<String>,
    /// Environment variables set for it. Every inherited variable whose name starts with
    /// `NATS_` or `INSIGHTS_` is removed first, so the developer's own `NATS_URL`, `NATS_CONTEXT`
    /// or `NATS_INSIGHTS_CONFIG` cannot change what the process does.
    pub env: Vec<(String, String)>,
    /// Run it under libfaketime with its wall clock this far from the real one.
    pub clock_offset: Option<ClockOffset>,
    /// File its stdout and stderr are appended to (each start writes a marker line first).
    pub log: PathBuf,
}

impl MonitorSpec {
    /// `bin args...`, logging to `log`, no offset, no extra environment.
    pub fn new(bin: impl Into<PathBuf>, args: Vec<String>, log: impl Into<PathBuf>) -> Self {
        MonitorSpec {
            bin: bin.into(),
            args,
            env: Vec::new(),
            clock_offset: None,
            log: log.into(),
        }
    }

    /// The same, with its wall clock `offset` from the real one.
    pub fn with_clock_offset(mut self, offset: ClockOffset) -> Self {
        self.clock_offset = Some(offset);
        self
    }
}

/// A nats-insights process. See the module documentation.
#[derive(Debug)]
pub struct Monitor {
    spec: MonitorSpec,
    faketime: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Monitor {
    /// Starts `spec` (it does not wait for the service to come up: ask it, e.g. `$SRV.PING`).
    pub fn start(spec: MonitorSpec) -> Result<Monitor, TestbedError> {
        let faketime = match spec.clock_offset {
            Some(_) => Some(faketime_lib()?),
            None => None,
        };
        let mut monitor = Monitor {
            spec,
            faketime,
            child: None,
            starts: 0,
        };
        monitor.spawn()?;
        Ok(monitor)
    }

    fn spawn(&mut self) -> Result<(), TestbedError> {
        let log_path = &self.spec.log;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| io_err(format!("opening {}", log_path.display()), e))?;
        self.starts += 1;
        let _ = writeln!(
            log,
            "{START_MARKER} {} (start {}, wall clock {}) ===",
            self.spec.bin.display(),
            self.starts,
            self.spec
                .clock_offset
                .map_or("real".to_owned(), |o| format!("{o} off")),
        );
        let stderr: File = log
            .try_clone()
            .map_err(|e| io_err("duplicating the log file handle", e))?;
        let mut command = Command::new(&self.spec.bin);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("NATS_") || text.starts_with("INSIGHTS_") {
                command.env_remove(&name);
            }
        }
        if let (Some(offset), Some(lib)) = (self.spec.clock_offset, &self.faketime) {
            let preload = match std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
                Some(other) => format!("{}:{}", lib.display(), other.to_string_lossy()),
                None => lib.display().to_string(),
            };
            command
                .env("LD_PRELOAD", preload)
                .env("FAKETIME", offset.faketime())
                // Why: libfaketime 0.9.10 fakes CLOCK_MONOTONIC too, and with a relative
                // offset it does not shift the monotonic clock by the offset but replaces it
                // with the faked wall clock (measured: `time.monotonic()` jumps from the uptime
                // to about 1.8e9 s). Differences stay right, so tokio's timers (relative waits
                // in epoll) would be fine, but Rust's std parks with an absolute
                // CLOCK_MONOTONIC deadline in FUTEX_WAIT_BITSET, which the kernel compares with
                // the real clock: every timed condvar wait or park would then wait for decades.
                // Only the wall clock is meant to differ between instances, so leave the
                // monotonic clock alone.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| io_err(format!("starting {}", self.spec.bin.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// What it runs.
    pub fn spec(&self) -> &MonitorSpec {
        &self.spec
    }

    /// Its log file (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The last `lines` lines its latest start wrote to the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }

    /// Its wall-clock offset, if it runs under libfaketime.
    pub fn clock_offset(&self) -> Option<ClockOffset> {
        self.spec.clock_offset
    }

    /// How many times a process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Process id of the current process, if one was started and not stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the current process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The exit status, if the current process exited without being stopped (a real crash or
    /// a refused start). The process stays recorded: [`Monitor::start_again`] replaces it.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    /// Stops the current process: [`Stop::Term`] (SIGTERM, then wait; SIGKILL after 10 s) or
    /// [`Stop::Kill`] (SIGKILL, a crash). Returns how it exited (also when it had already
    /// exited by itself).
    pub async fn stop(&mut self, how: Stop) -> Result<ExitStatus, TestbedError> {
        let Some(child) = self.child.as_mut() else {
            return Err(TestbedError::Invalid(
                "the monitor is not running".to_owned(),
            ));
        };
        let pid = child.id();
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Ok(status);
        }
        match how {
            Stop::Kill => {
                let _ = child.kill();
            }
            Stop::Term => {
                send_signal(pid, "TERM")?;
                if let Ok(status) = self.reap(TERM_TIMEOUT).await {
                    return Ok(status);
                }
                tracing::warn!(pid, "nats-insights did not exit after SIGTERM, killing");
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                }
            }
            Stop::LameDuck => {
                return Err(TestbedError::Invalid(
                    "a monitor has no lame duck mode: stop it with Term or Kill".to_owned(),
                ))
            }
        }
        self.reap(Duration::from_secs(10)).await
    }

    /// Starts a new process with the same arguments, environment and clock offset, after
    /// [`Monitor::stop`] or once the previous one exited by itself.
    pub fn start_again(&mut self) -> Result<(), TestbedError> {
        if self.is_running() {
            return Err(TestbedError::Invalid(
                "the monitor is still running".to_owned(),
            ));
        }
        self.spawn()
    }

    /// [`Monitor::stop`], then [`Monitor::start_again`]. Returns how the old process exited.
    pub async fn restart(&mut self, how: Stop) -> Result<ExitStatus, TestbedError> {
        let status = self.stop(how).await?;
        self.start_again()?;
        Ok(status)
    }

    /// Waits up to `timeout` for the current process to exit and reaps it.
    async fn reap(&mut self, timeout: Duration) -> Result<ExitStatus, TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(TestbedError::Invalid(
                    "the monitor is not running".to_owned(),
                ));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(io_err("waiting for nats-insights", e)),
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout {
                    what: "nats-insights to exit".to_owned(),
                    after: timeout,
                    logs: self.spec.log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_as_libfaketime_reads_them() {
        assert_eq!(ClockOffset(1250).faketime(), "+1.250s");
        assert_eq!(ClockOffset(-500).faketime(), "-0.500s");
        assert_eq!(ClockOffset(0).faketime(), "+0.000s");
        assert_eq!(ClockOffset(-10_000).faketime(), "-10.000s");
        assert_eq!(ClockOffset(4005).to_string(), "+4.005 s");
    }
}
