//! The processes a benchmark measures: started from the release binaries beside this one, with
//! their environment, logging to a file, waited on until ready, and read for their peak RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::StatusCode;
use tokio::process::{Child, Command};

use crate::load;

pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

/// The command name and the CPU time used so far (user and system, in seconds) of a
/// `/proc/<pid>/stat` line.
fn cpu_in_stat(stat: &str) -> Option<(&str, f64)> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in ticks of USER_HZ (100 on Linux).
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks as f64 / 100.0))
}

/// CPU time used so far, in seconds, by every running process whose command name starts with
/// `prefix` (`postgres` for the server's backends, `beam.smp` for RabbitMQ). A process that
/// exits between two readings takes its time with it, so read around a window in which the
/// processes measured stay up.
pub fn cpu_seconds_of_command(prefix: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| {
            cpu_in_stat(&stat)
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(_, seconds)| seconds)
        })
        .sum()
}

/// The machine's CPU time so far, in ticks, from the `cpu` line of `/proc/stat`: all of it, and
/// the part the hypervisor stole (a virtual CPU ready to run while the host ran something else).
/// On a shared virtual machine the stolen share moves from one measuring window to the next,
/// and every rate of that window with it, so the tables show it beside the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineCpu {
    total: u64,
    stolen: u64,
}

impl MachineCpu {
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Reads the first line: `cpu user nice system idle iowait irq softirq steal guest
    /// guest_nice`; guest time is already counted in user and nice.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let counted = ticks.get(..8)?;
        Some(MachineCpu {
            total: counted.iter().sum(),
            stolen: counted[7],
        })
    }

    /// The share of the machine's CPU time stolen from `earlier` (read with [`Self::now`]) to
    /// now, if both could be read.
    pub fn stolen_since(earlier: Option<MachineCpu>) -> Option<f64> {
        Self::now()
            .zip(earlier)
            .and_then(|(now, earlier)| now.stolen_share_since(&earlier))
    }

    /// The share of the machine's CPU time since `earlier` that was stolen.
    pub fn stolen_share_since(&self, earlier: &MachineCpu) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        Some(self.stolen.saturating_sub(earlier.stolen) as f64 / total as f64)
    }
}

/// A measuring window around a load on one service: its CPU time and the machine's, read when
/// the window opens and when it closes.
pub struct Window {
    service_cpu: Option<f64>,
    machine: Option<MachineCpu>,
}

impl Window {
    pub fn open(service: &Service) -> Self {
        Window {
            service_cpu: service.cpu_seconds(),
            machine: MachineCpu::now(),
        }
    }

    /// The service's CPU seconds in the window and the share of the machine's CPU time stolen.
    pub fn close(self, service: &Service) -> (Option<f64>, Option<f64>) {
        let cpu = service
            .cpu_seconds()
            .zip(self.service_cpu)
            .map(|(after, before)| after - before);
        (cpu, MachineCpu::stolen_since(self.machine))
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A release binary of this workspace, beside the running `bench`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let own = std::env::current_exe()?;
    let path = own.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build with `cargo build --release --bins` first",
        path.display()
    );
    Ok(path)
}

impl Service {
    /// Starts `program args` with `env`, its output appended to `logs/<name>.log`, and waits
    /// until `GET ready_path` on `addr` answers 200.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        addr: SocketAddr,
        ready_path: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut service = Service {
            name: name.to_string(),
            addr,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(StatusCode::OK) = load::get(addr, ready_path).await {
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                anyhow::bail!("{name} exited with {status} before it was ready; see its log");
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The most resident memory the process has held since it started (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// CPU time the process has used so far, user and system, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()?)).ok()?;
        cpu_in_stat(&stat).map(|(_, seconds)| seconds)
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the process with SIGTERM (a graceful stop), or kills it after 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not stop within 10 s; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stolen_share_is_read_from_the_cpu_line() {
        let before = MachineCpu::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n").unwrap();
        let after = MachineCpu::parse("cpu  160 0 70 880 10 0 5 75 0 0\n").unwrap();
        assert_eq!(before.total, 1000);
        assert_eq!(after.stolen_share_since(&before), Some(40.0 / 200.0));
        assert_eq!(before.stolen_share_since(&before), None, "no time passed");
        assert_eq!(MachineCpu::parse("intr 1 2"), None);
    }

    #[test]
    fn a_stat_line_gives_its_command_and_cpu_even_with_spaces_and_parentheses_in_the_name() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0";
        let (name, seconds) = cpu_in_stat(stat).unwrap();
        assert_eq!(name, "tokio (rt) w");
        assert!((seconds - 3.0).abs() < 1e-9);
    }
}
