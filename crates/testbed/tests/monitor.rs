//! The [`Monitor`] process handle on a stand-in program (a shell that prints its wall clock,
//! then sleeps): libfaketime really offsets the child's wall clock and leaves its monotonic
//! clock alone, SIGTERM and SIGKILL stop it as asked, and a restart appends to the same log.
//! Needs libfaketime (`scripts/lib/ensure.sh`'s `ensure_faketime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testbed::{ClockOffset, Monitor, MonitorSpec, Stop};

fn log_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("testbed-monitor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A shell that prints `wall <unix seconds>` and `mono <uptime seconds>` as it sees them, then
/// sleeps (exec, so signals reach the sleeping process itself).
fn clock_printer(log: std::path::PathBuf) -> MonitorSpec {
    MonitorSpec::new(
        "/bin/sh",
        vec![
            "-c".to_string(),
            "echo wall $(date +%s.%N); echo mono $(cut -d' ' -f1 /proc/uptime); exec sleep 60"
                .to_string(),
        ],
        log,
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The value after `what ` in the latest start's log, once it is there.
async fn printed(monitor: &Monitor, what: &str) -> f64 {
    for _ in 0..100 {
        let tail = monitor.log_tail(10);
        if let Some(value) = tail
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what} ")))
            .and_then(|v| v.trim().parse().ok())
        {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no `{what}` line in {}", monitor.log_path().display());
}

#[tokio::test]
async fn two_processes_run_with_wall_clocks_ten_seconds_apart() {
    let dir = log_dir("skew");
    let ahead =
        Monitor::start(clock_printer(dir.join("ahead.log")).with_clock_offset(ClockOffset(5_000)))
            .expect("starts");
    let behind = Monitor::start(
        clock_printer(dir.join("behind.log")).with_clock_offset(ClockOffset(-5_000)),
    )
    .expect("starts");
    let (a, b) = (
        printed(&ahead, "wall").await,
        printed(&behind, "wall").await,
    );
    let real = now();
    assert!((a - real - 5.0).abs() < 2.0, "ahead: {a} vs real {real}");
    assert!((b - real + 5.0).abs() < 2.0, "behind: {b} vs real {real}");
    assert!((a - b - 10.0).abs() < 1.0, "10 s apart: {a} {b}");
    assert_eq!(ahead.clock_offset(), Some(ClockOffset(5_000)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn stop_gracefully_crash_and_start_again_on_the_same_log() {
    let dir = log_dir("stop");
    let mut monitor = Monitor::start(clock_printer(dir.join("m.log"))).expect("starts");
    printed(&monitor, "wall").await;
    assert!(monitor.is_running());
    let pid = monitor.pid().expect("a pid");
    let status = monitor.stop(Stop::Term).await.expect("stops");
    assert!(!status.success(), "sleep ends by SIGTERM: {status}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    assert!(monitor.pid().is_none());

    monitor.start_again().expect("starts again");
    assert_ne!(monitor.pid(), Some(pid));
    printed(&monitor, "wall").await;
    let status = monitor.restart(Stop::Kill).await.expect("restarts");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    printed(&monitor, "wall").await;
    assert_eq!(monitor.starts(), 3);
    let log = std::fs::read_to_string(monitor.log_path()).expect("log");
    assert_eq!(log.matches("=== testbed: starting").count(), 3, "{log}");
    // The tail is the latest start's only.
    let tail = monitor.log_tail(50);
    assert_eq!(tail.lines().filter(|l| l.starts_with("wall ")).count(), 1);
    drop(monitor);
    let _ = std::fs::remove_dir_all(&dir);
}

/// libfaketime fakes only the wall clock: a process's monotonic clock is the real one, so
/// timers and timed waits keep working (see the comment in `Monitor::spawn`).
#[tokio::test]
async fn the_monotonic_clock_stays_real_under_an_offset() {
    let dir = log_dir("mono");
    let monitor = Monitor::start(
        MonitorSpec::new(
            "/usr/bin/python3",
            vec![
                "-c".to_string(),
                "import time; print('mono', time.monotonic(), flush=True); time.sleep(60)"
                    .to_string(),
            ],
            dir.join("py.log"),
        )
        .with_clock_offset(ClockOffset(-3_000)),
    )
    .expect("starts");
    let mono = printed(&monitor, "mono").await;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("uptime")
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .expect("a number");
    assert!(
        (uptime - mono).abs() < 5.0,
        "monotonic {mono} vs uptime {uptime}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
