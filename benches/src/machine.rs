//! What the report says about where it ran: the CPU (model, instruction-set flags of
//! interest, logical cores), the kernel, the Strata commit and the tract version, and the
//! process's peak resident set size (`VmHWM`) for the memory probes.

use std::path::Path;
use std::process::Command;

/// The `/proc/cpuinfo` flags that matter to the kernels.
pub const FLAGS_OF_INTEREST: &[&str] = &[
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
];

/// The machine's description.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name (or the architecture when unknown).
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub logical_cpus: usize,
    /// Each flag of [`FLAGS_OF_INTEREST`] with whether the CPU has it.
    pub flags: Vec<(&'static str, bool)>,
    /// The kernel release, when known.
    pub kernel: Option<String>,
}

impl Machine {
    /// Reads `/proc/cpuinfo` and friends.
    pub fn detect() -> Machine {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let has: Vec<&str> = flags.split_whitespace().collect();
        Machine {
            cpu: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            flags: FLAGS_OF_INTEREST
                .iter()
                .map(|f| (*f, has.contains(f)))
                .collect(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
        }
    }

    /// The flags line: `avx2 fma avx512f ... (no avx512_bf16)`.
    pub fn flags_line(&self) -> String {
        let names = |want: bool| -> Vec<&str> {
            self.flags
                .iter()
                .filter(|(_, has)| *has == want)
                .map(|(f, _)| *f)
                .collect()
        };
        let mut line = names(true).join(" ");
        let no = names(false);
        if !no.is_empty() {
            line.push_str(&format!(" (absent: {})", no.join(" ")));
        }
        line
    }
}

/// The load average (1, 5 and 15 minutes) from `/proc/loadavg`.
pub fn load_average() -> Option<String> {
    let l = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The peak resident set size of this process in kB (`VmHWM`), where `/proc` has it.
pub fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `git describe`-like commit of the workspace: short hash, `-dirty` when modified.
pub fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// The version of `package` in the workspace's `Cargo.lock`.
pub fn locked_version(root: &Path, package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let header = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    lines.find(|l| l.trim() == header)?;
    let version = lines.next()?.trim().strip_prefix("version = ")?;
    Some(version.trim_matches('"').to_string())
}

/// `rustc --version`, when rustc runs.
pub fn rustc_version() -> Option<String> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lock_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(locked_version(root, "tract-onnx").is_some());
        assert!(locked_version(root, "no-such-package").is_none());
    }
}
