//! Run reports: a JSON result and a Markdown page under `perf-reports/`, each with the exact
//! command, the commit, the machine and the date, so every figure can be reproduced.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MachineFacts {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_total_bytes: u64,
    pub kernel: String,
}

pub fn machine_facts() -> MachineFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |model| model.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_total_bytes = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    MachineFacts {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_total_bytes,
        kernel,
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the work tree has changes.
pub fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|status| !status.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".to_owned(),
    }
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, no calendar crate needed).
pub fn utc_date() -> String {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Everything a report states besides the figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunContext {
    pub scenario: &'static str,
    pub command: String,
    pub date: String,
    pub commit: String,
    pub machine: MachineFacts,
    pub seed: u64,
}

impl RunContext {
    pub fn new(scenario: &'static str, seed: u64) -> RunContext {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        RunContext { scenario, command, date: utc_date(), commit: git_commit(), machine: machine_facts(), seed }
    }

    fn markdown_header(&self) -> String {
        format!(
            "# loadgen `{}` — {}\n\n- command: `{}`\n- commit: `{}`\n- machine: {} × {}, {:.1} GiB RAM, Linux {}\n- seed: {}\n\n",
            self.scenario,
            self.date,
            self.command,
            self.commit,
            self.machine.cores,
            self.machine.cpu_model,
            self.machine.memory_total_bytes as f64 / (1u64 << 30) as f64,
            self.machine.kernel,
            self.seed
        )
    }
}

/// Writes `<prefix>.json` (context + results) and `<prefix>.md` (context + `markdown_body`).
pub fn write(prefix: &Path, context: &RunContext, results: &impl Serialize, markdown_body: &str) -> anyhow::Result<()> {
    if let Some(parent) = prefix.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::json!({ "context": context, "results": results });
    let json_path = prefix.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let markdown_path = prefix.with_extension("md");
    std::fs::write(&markdown_path, context.markdown_header() + markdown_body)
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_and_facts_look_right() {
        let date = utc_date();
        assert_eq!(date.len(), 10);
        let year: i32 = date[..4].parse().unwrap();
        assert!(year >= 2024, "{date}");
        let facts = machine_facts();
        assert!(facts.cores >= 1 && facts.memory_total_bytes > 0);
    }

    #[test]
    fn writes_json_and_markdown() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        let prefix = dir.join("run");
        let context = RunContext::new("throughput", 42);
        write(&prefix, &context, &serde_json::json!({"points_per_s": 1.5}), "## figures\n").unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
        assert_eq!(json["results"]["points_per_s"], 1.5);
        assert_eq!(json["context"]["seed"], 42);
        let markdown = std::fs::read_to_string(dir.join("run.md")).unwrap();
        assert!(markdown.contains("## figures") && markdown.contains("commit"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
