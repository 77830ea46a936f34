//! Shared helpers: paths, running processes, timing, hashing, stamps, copying.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command: the cargo that runs us (`$CARGO`), falling back to `cargo` on PATH.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Renders a command for logs and error messages.
fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails if it cannot start or exits unsuccessfully.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its trimmed stdout; stderr is passed through.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    let stdout = String::from_utf8(out.stdout)
        .with_context(|| format!("`{shown}` printed non-UTF-8 output"))?;
    Ok(stdout.trim().to_owned())
}

/// Runs `f` as a named step, printing its start and how long it took.
pub(crate) fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let start = Instant::now();
    let result = f().with_context(|| format!("step `{name}` failed"));
    let outcome = if result.is_ok() { "done" } else { "FAILED" };
    println!(
        "<== {name}: {outcome} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    result
}

/// A 64-bit FNV-1a hash, stable across Rust versions and platforms (unlike
/// `DefaultHasher`), for keying stamp files on file contents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    /// The FNV-1a offset basis.
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Mixes `bytes` into the hash; a length prefix keeps concatenations unambiguous.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Mixes in a file's path (relative, for portability) and contents.
    pub(crate) fn file(&mut self, root: &Path, path: &Path) -> Result<&mut Self> {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.write(rel.to_string_lossy().as_bytes());
        Ok(self.write(&bytes))
    }

    /// The hash as 16 hex digits.
    pub(crate) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A stamp file recording the key of the inputs a step last completed with.
#[derive(Debug)]
pub(crate) struct Stamp {
    path: PathBuf,
    key: String,
}

impl Stamp {
    /// A stamp at `path` for inputs summarised by `key`.
    pub(crate) fn new(path: PathBuf, key: String) -> Self {
        Stamp { path, key }
    }

    /// Whether the step already completed with these exact inputs.
    pub(crate) fn is_current(&self) -> bool {
        fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == self.key)
    }

    /// Records a successful run (call only after the step succeeded).
    pub(crate) fn write(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&self.path, format!("{}\n", self.key))
            .with_context(|| format!("writing stamp {}", self.path.display()))
    }

    /// Forgets a previous run (call before a step starts modifying its outputs).
    pub(crate) fn clear(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing stamp {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Removes `path` (file or directory tree) if it exists.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
    } else if path.exists() {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
    } else {
        Ok(())
    }
}

/// Recursively copies the directory `from` to `to` (which must not exist yet),
/// returning the number of files copied.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<usize> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut files = 0;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            files += copy_dir(&src, &dst)?;
        } else {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            files += 1;
        }
    }
    Ok(files)
}

/// Whether `cmd` runs and exits successfully (its output is discarded).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
