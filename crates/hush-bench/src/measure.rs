//! What a run measures: the server process's CPU and memory from /proc, latencies,
//! and the report.
use std::time::Duration;

use serde_json::json;

use crate::Common;

/// CPU time (user + system) and resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSample {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ; 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

pub fn sample(pid: u32) -> anyhow::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name; utime and stime are the 14th and 15th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    // After ')' the fields are numbered from 3 (state): utime is 14, stime 15.
    let cpu_ticks = ticks(14 - 3)? + ticks(15 - 3)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(ProcessSample {
        cpu: Duration::from_micros(cpu_ticks * 1_000_000 / TICKS_PER_SECOND),
        rss_bytes: rss_kb * 1024,
    })
}

/// The processes of `pids` together: CPU and memory summed.
pub fn sample_all(pids: &[u32]) -> anyhow::Result<ProcessSample> {
    let mut all = ProcessSample::default();
    for &pid in pids {
        let one = sample(pid)?;
        all.cpu += one.cpu;
        all.rss_bytes += one.rss_bytes;
    }
    Ok(all)
}

/// CPU time of every process named `name` (the PostgreSQL server's processes:
/// `postgres`), from /proc; `None` when there is none.
pub fn named_cpu(name: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim_end() == name
            && let Ok(s) = sample(pid)
        {
            total += s.cpu;
            found = true;
        }
    }
    found.then_some(total)
}

/// CPU time of every process but `pids`, from /proc/stat (to tell a noisy run).
pub fn others_cpu(pids: &[u32]) -> Option<Duration> {
    let total = std::fs::read_to_string("/proc/stat").ok()?;
    let line = total.lines().next()?;
    let mut parts = line.split_whitespace().skip(1);
    let user: u64 = parts.next()?.parse().ok()?;
    let nice: u64 = parts.next()?.parse().ok()?;
    let system: u64 = parts.next()?.parse().ok()?;
    let all = Duration::from_micros((user + nice + system) * 1_000_000 / TICKS_PER_SECOND);
    let own = sample_all(pids).ok()?.cpu;
    Some(all.saturating_sub(own))
}

/// Latency percentiles, in microseconds, from every delivery's latency.
pub fn percentiles(mut us: Vec<u64>) -> (u64, u64, u64) {
    if us.is_empty() {
        return (0, 0, 0);
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    (at(0.50), at(0.99), at(0.999))
}

#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub common: Option<Common>,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub elapsed: Duration,
    pub server_cpu: Duration,
    pub others_cpu: Option<Duration>,
    /// The PostgreSQL server's CPU meanwhile, when the nodes share one.
    pub database_cpu: Option<Duration>,
    /// hushd nodes, and where they keep their data.
    pub nodes: usize,
    pub database: &'static str,
    pub server_rss_bytes: u64,
    pub latency_us: (u64, u64, u64),
    /// `group`: messages sent (each delivered to every other member).
    pub messages: Option<u64>,
    /// Scenario phases measured on their own (offline: store, then drain).
    pub phases: Vec<Phase>,
    /// `idle`: server RSS per open session, and what stays after they closed.
    pub per_session_bytes: Option<u64>,
    pub kept_after_close_bytes: Option<u64>,
}

/// One phase of a run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub messages: u64,
    pub elapsed: Duration,
    pub server_cpu: Duration,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_message(&self) -> f64 {
        self.server_cpu.as_micros() as f64 / self.messages.max(1) as f64
    }
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn cpu_us_per_delivery(&self) -> f64 {
        self.server_cpu.as_micros() as f64 / (self.delivered.max(1) as f64)
    }

    pub fn json(&self) -> String {
        let c = self.common.as_ref();
        json!({
            "scenario": self.scenario,
            "clients": c.map(|c| c.clients),
            "offered_per_s": c.map(|c| c.rate),
            "payload_bytes": c.map(|c| c.payload),
            "in_flight": c.map(|c| c.in_flight),
            "delivery": c.map(|c| format!("{:?}", c.delivery).to_lowercase()),
            "ack_batch": c.map(|c| c.ack_batch),
            "sent": self.sent,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "seconds": self.elapsed.as_secs_f64(),
            "delivered_per_s": self.per_second(),
            "group_size": c.filter(|_| self.scenario == "group").map(|c| c.group_size),
            "messages": self.messages,
            "server_cpu_us_per_delivery": self.cpu_us_per_delivery(),
            "server_cpu_s": self.server_cpu.as_secs_f64(),
            "others_cpu_s": self.others_cpu.map(|d| d.as_secs_f64()),
            "nodes": self.nodes,
            "database": self.database,
            "database_cpu_s": self.database_cpu.map(|d| d.as_secs_f64()),
            "database_cpu_us_per_delivery": self.database_cpu.map(|d| d.as_micros() as f64 / self.delivered.max(1) as f64),
            "server_rss_bytes": self.server_rss_bytes,
            "latency_us": {"p50": self.latency_us.0, "p99": self.latency_us.1, "p99_9": self.latency_us.2},
            "per_session_bytes": self.per_session_bytes,
            "kept_after_close_bytes": self.kept_after_close_bytes,
            "phases": self.phases.iter().map(|p| json!({
                "phase": p.name,
                "messages": p.messages,
                "seconds": p.elapsed.as_secs_f64(),
                "per_s": p.per_second(),
                "server_cpu_us_per_message": p.cpu_us_per_message(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let mut t = if self.sent == 0 && self.delivered == 0 {
            // No messages (idle, login): only what was measured.
            format!(
                "scenario            {}\n\
                 server CPU          {:.2} s\n\
                 server RSS          {:.1} MiB",
                self.scenario,
                self.server_cpu.as_secs_f64(),
                self.server_rss_bytes as f64 / (1024.0 * 1024.0),
            )
        } else {
            self.summary()
        };
        for p in &self.phases {
            t.push_str(&format!(
                "\n{:<20}{} msgs in {:.2} s: {:.0} msgs/s, {:.1} µs server CPU each",
                p.name,
                p.messages,
                p.elapsed.as_secs_f64(),
                p.per_second(),
                p.cpu_us_per_message()
            ));
        }
        t
    }

    fn summary(&self) -> String {
        format!(
            "scenario            {} ({} node{} on {})\n\
             delivered           {} of {} sent ({} lost, {} duplicated)\n\
             throughput          {:.0} msgs/s over {:.1} s\n\
             server CPU          {:.1} µs per delivery ({:.2} s)\n\
             other processes     {}{}\n\
             server RSS          {:.1} MiB\n\
             latency             p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            self.scenario,
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.database,
            self.delivered,
            self.sent,
            self.lost,
            self.duplicated,
            self.per_second(),
            self.elapsed.as_secs_f64(),
            self.cpu_us_per_delivery(),
            self.server_cpu.as_secs_f64(),
            self.others_cpu
                .map(|d| format!("{:.2} s CPU", d.as_secs_f64()))
                .unwrap_or_else(|| "unknown".into()),
            self.database_cpu
                .map(|d| format!(
                    " (PostgreSQL {:.2} s, {:.1} µs per delivery)",
                    d.as_secs_f64(),
                    d.as_micros() as f64 / self.delivered.max(1) as f64
                ))
                .unwrap_or_default(),
            self.server_rss_bytes as f64 / (1024.0 * 1024.0),
            self.latency_us.0 as f64 / 1000.0,
            self.latency_us.1 as f64 / 1000.0,
            self.latency_us.2 as f64 / 1000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentiles(v), (501, 991, 1000));
        assert_eq!(percentiles(Vec::new()), (0, 0, 0));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
    }
}
