//! Shared by the benchmark drivers (`scripts/bench`, the `detect` and `scale` binaries): the
//! environment's knobs, the machine they ran on, and where they write their sections.

use std::path::PathBuf;

/// The workspace's root directory (where `scripts/bench` runs and BENCHMARKS.md lives).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `target/bench` of the workspace: the sections `scripts/bench` puts together (created).
pub fn out_dir() -> PathBuf {
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    out
}

/// A number from the environment, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Compiler and nats-server processes running on the machine that this benchmark did not start
/// (call it while the benchmark has no cluster running).
pub fn other_processes() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("comm")).ok())
        .filter(|comm| matches!(comm.trim(), "rustc" | "nats-server" | "cc" | "ld"))
        .count()
}

/// The load average (1, 5, 15 minutes).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The first line(s) `program args` prints, or `unknown`.
pub fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The machine section of BENCHMARKS.md (a Markdown table).
pub fn machine(
    load_before: &str,
    load_after: &str,
    others_before: usize,
    others_after: usize,
) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("unknown".to_string(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let server = testbed::nats_server_bin()
        .map(|bin| command_line(&bin.display().to_string(), &["--version"]))
        .unwrap_or_else(|_| "unknown".to_string());
    let load_note = if others_before + others_after > 0 {
        format!(
            "yes: {others_before} compiler or nats-server processes not started by the benchmark \
             were running when it started, {others_after} when it ended; the figures include \
             their interference"
        )
    } else {
        "none seen (no other compiler or nats-server process at start or end)".to_string()
    };
    format!(
        "| | |\n|---|---|\n| cores (`nproc`) | {cores} |\n| CPU | {cpu} |\n| memory | {memory} |\n\
         | nats-server | {server} |\n| date | {} |\n| load average (1/5/15 min) before | {load_before} |\n\
         | load average after | {load_after} |\n| other load | {load_note} |\n",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}
