//! ONNX node conformance: runs every node test case of the pinned `onnx` package (written to
//! `testdata/node` by `xtask/python/node_cases.py`) through the facade, each on a worker
//! thread with a time limit. Integer, bool and string outputs must match exactly, floats by
//! ONNX's rule |a-e| <= 1e-7 + 1e-3*|e|.
//!
//! Outcomes are compared with `tests/conformance_status.txt` (`pass <case>` or
//! `fail <case>  <reason>` per line): a case listed as `pass` that fails now is a
//! regression and fails the test; cases that pass now but are listed as `fail` are
//! reported. With `STRATA_CONFORMANCE_BLESS=1` the status file is rewritten instead.
//! Every run regenerates `docs/conformance.md`.
//!
//! Environment: `STRATA_CONFORMANCE_DIR` (the cases; default `$STRATA_TESTDATA/node`, else
//! `testdata/node`), `STRATA_CONFORMANCE_TIMEOUT_S` (per-case limit, default 10 s),
//! `STRATA_REQUIRE_TESTDATA=1` (fail rather than skip when the cases are missing).
//! Run it with `cargo xtask conformance [--bless]`.

mod common;

use common::{cases_in, guarded, run_case, run_with_timeout, Case};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata::{Model, OpRegistry};

/// Threads per session: the cases are tiny; one thread keeps the run predictable.
const THREADS: usize = 1;

/// Default per-case time limit.
const DEFAULT_TIMEOUT_S: f64 = 10.0;

/// Longest failure reason kept in the status file and the report.
const MAX_REASON: usize = 240;

/// The status file, relative to this crate.
const STATUS_FILE: &str = "tests/conformance_status.txt";

/// Why each failing case fails (`<case or prefix>  <explanation>` lines), relative to this
/// crate.
const EXPLANATIONS_FILE: &str = "tests/conformance_known_failures.txt";

/// The generated report, relative to this crate.
const REPORT_FILE: &str = "../../docs/conformance.md";

/// The outcome of one case.
#[derive(Debug)]
struct Outcome {
    /// The case name, as onnx names it (`test_abs`).
    name: String,
    /// The op type under test (domain-qualified outside the default domain).
    op: String,
    /// `Err(reason)` when the case failed.
    result: Result<(), String>,
}

/// The folder of node cases, or `None` (with a note) when it is missing; a missing folder
/// fails when `STRATA_REQUIRE_TESTDATA=1`.
fn cases_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("STRATA_TESTDATA").map(|d| PathBuf::from(d).join("node")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/node"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("STRATA_REQUIRE_TESTDATA").as_deref() == Ok("1") {
        panic!(
            "node test cases missing at {}: run `cargo xtask conformance`",
            dir.display()
        );
    }
    eprintln!(
        "note: node test cases missing at {}; run `cargo xtask conformance` (skipping)",
        dir.display()
    );
    None
}

/// The per-case time limit: `STRATA_CONFORMANCE_TIMEOUT_S` or [`DEFAULT_TIMEOUT_S`].
fn time_limit() -> Duration {
    let secs = std::env::var("STRATA_CONFORMANCE_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(DEFAULT_TIMEOUT_S);
    Duration::from_secs_f64(secs)
}

/// One line, at most [`MAX_REASON`] characters.
fn one_line(reason: &str) -> String {
    let flat = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_REASON {
        return flat;
    }
    let mut cut: String = flat.chars().take(MAX_REASON - 3).collect();
    cut.push_str("...");
    cut
}

/// The op type a case model tests: its first node that is not a `Constant` (or its first
/// node), domain-qualified outside the default domain. `None` when the model has no nodes.
fn model_op(path: &Path) -> Result<Option<String>, String> {
    let model = Model::load(path).map_err(|e| e.to_string())?;
    let nodes = &model.graph().nodes;
    Ok(nodes
        .iter()
        .find(|n| n.op_type != "Constant")
        .or(nodes.first())
        .map(|n| {
            if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}.{}", n.domain, n.op_type)
            }
        }))
}

/// Lower case without underscores or domain, for matching op types against case names.
fn squash(s: &str) -> String {
    s.rsplit('.')
        .next()
        .unwrap_or(s)
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Names the op type of every case. `_expanded` cases (a function op's body) count for
/// the op of the case they expand; a case whose model has no node or does not load gets
/// the longest known op type that starts its name.
fn resolve_ops(found: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    let mut known: BTreeSet<String> = found.values().flatten().cloned().collect();
    known.extend(
        OpRegistry::with_cpu_kernels()
            .iter()
            .filter(|(domain, _, _)| domain.is_empty())
            .map(|(_, op, _)| op.to_string()),
    );
    known.insert("Constant".into());
    let from_name = |name: &str| -> String {
        let squashed = squash(name.strip_prefix("test_").unwrap_or(name));
        known
            .iter()
            .filter(|op| squashed.starts_with(&squash(op)))
            .max_by_key(|op| squash(op).len())
            .cloned()
            .unwrap_or_else(|| "(unknown)".into())
    };
    found
        .iter()
        .map(|(name, op)| {
            let base = name
                .find("_expanded")
                .map(|i| &name[..i])
                .and_then(|base| found.get(base))
                .cloned()
                .flatten();
            let op = base
                .or_else(|| op.clone())
                .unwrap_or_else(|| from_name(name));
            (name.clone(), op)
        })
        .collect()
}

/// Runs every case; prints a progress line now and then.
fn run_all(cases: Vec<Case>, limit: Duration) -> Vec<Outcome> {
    let total = cases.len();
    let start = Instant::now();
    let mut found = BTreeMap::new();
    let mut results = Vec::new();
    for (i, mut case) in cases.into_iter().enumerate() {
        case.name = case
            .name
            .strip_prefix("node/")
            .unwrap_or(&case.name)
            .to_string();
        let name = case.name.clone();
        found.insert(
            name.clone(),
            guarded(|| model_op(&case.model)).unwrap_or(None),
        );
        let result = run_with_timeout(limit, move || run_case(&case, THREADS));
        results.push((name, result.map_err(|e| one_line(&e))));
        if (i + 1) % 250 == 0 || i + 1 == total {
            println!(
                "conformance: {}/{total} cases run in {:.1}s",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let ops = resolve_ops(&found);
    results
        .into_iter()
        .map(|(name, result)| Outcome {
            op: ops[&name].clone(),
            name,
            result,
        })
        .collect()
}

/// The status file as case -> passed.
fn read_status(path: &Path) -> BTreeMap<String, bool> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let passed = match words.next()? {
                "pass" => true,
                "fail" => false,
                _ => return None,
            };
            Some((words.next()?.to_string(), passed))
        })
        .collect()
}

/// The status file's text for `outcomes`.
fn status_text(outcomes: &[Outcome]) -> String {
    let mut text = String::from(
        "# ONNX node conformance status: one line per case of the pinned onnx package,\n\
         # `pass <case>` or `fail <case>  <reason>`. Written by `cargo xtask conformance --bless`;\n\
         # tests/conformance.rs fails when a `pass` case fails. Do not edit by hand.\n",
    );
    for o in outcomes {
        match &o.result {
            Ok(()) => writeln!(text, "pass {}", o.name),
            Err(reason) => writeln!(text, "fail {}  {}", o.name, reason),
        }
        .expect("writing to a String");
    }
    text
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `passed / total` as a percentage with one decimal.
fn rate(passed: usize, total: usize) -> String {
    if total == 0 {
        return "-".into();
    }
    format!("{:.1}%", 100.0 * passed as f64 / total as f64)
}

/// The opset ranges of one registered op: `1-12, 13+`.
fn ranges(impls: &[strata_ops::RegisteredOp]) -> String {
    impls
        .iter()
        .map(|r| {
            if r.until == i64::MAX {
                format!("{}+", r.since)
            } else if r.until == r.since {
                r.since.to_string()
            } else {
                format!("{}-{}", r.since, r.until)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Markdown report: totals, pass rate per op type, failing cases, CPU kernels.
/// The explanations file as (prefix, explanation) pairs.
fn read_explanations(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once("  "))
        .map(|(prefix, why)| (prefix.trim().to_string(), why.trim().to_string()))
        .collect()
}

/// The explanation of a failing case: the line with the longest prefix of its name.
fn explanation<'a>(explanations: &'a [(String, String)], case: &str) -> Option<&'a str> {
    explanations
        .iter()
        .filter(|(prefix, _)| case.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, why)| why.as_str())
}

fn report(outcomes: &[Outcome], explanations: &[(String, String)]) -> String {
    let total = outcomes.len();
    let passed = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let mut per_op: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = per_op.entry(&o.op).or_default();
        e.1 += 1;
        if o.result.is_ok() {
            e.0 += 1;
        }
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# ONNX node conformance\n");
    let _ = writeln!(
        w,
        "<!-- Generated by crates/strata/tests/conformance.rs; do not edit by hand. -->\n"
    );
    let _ = writeln!(
        w,
        "This file is generated on every run of `crates/strata/tests/conformance.rs` \
         (`cargo xtask conformance`, or `cargo xtask test`); do not edit it by hand. \
         It runs every node test case of the pinned `onnx` package \
         (`onnx.backend.test.case.node.collect_testcases()`, written to `testdata/node` by \
         `xtask/python/node_cases.py`) through Strata's CPU backend. Integer, bool and \
         string outputs must match exactly; floats by ONNX's rule \
         |a-e| <= 1e-7 + 1e-3*|e|. Cases whose model holds a random op (Bernoulli, \
         Multinomial, RandomNormal[Like], RandomUniform[Like]) are checked for dtype and \
         shape only: their reference values come from numpy's RNG. A case that panics or runs past the time limit fails. \
         The expected outcome of each case is kept in \
         `crates/strata/tests/conformance_status.txt`.\n"
    );
    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(w, "| Passing | Failing | Total | Pass rate |");
    let _ = writeln!(w, "|--------:|--------:|------:|----------:|");
    let _ = writeln!(
        w,
        "| {passed} | {} | {total} | {} |\n",
        total - passed,
        rate(passed, total)
    );

    let _ = writeln!(w, "## Pass rate per op type\n");
    let _ = writeln!(
        w,
        "The op type of a case is that of the first node of its model that is not a \
         `Constant`; `_expanded` cases (the function body of an op) count for the op they \
         expand.\n"
    );
    let _ = writeln!(w, "| Op type | Passing | Total | Pass rate |");
    let _ = writeln!(w, "|---------|--------:|------:|----------:|");
    for (op, (p, t)) in &per_op {
        let _ = writeln!(w, "| {} | {p} | {t} | {} |", cell(op), rate(*p, *t));
    }

    let _ = writeln!(w, "\n## Failing cases\n");
    let mut failing: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    failing.sort_by(|a, b| (&a.op, &a.name).cmp(&(&b.op, &b.name)));
    if failing.is_empty() {
        let _ = writeln!(w, "None.");
    } else {
        let _ = writeln!(
            w,
            "Each failure is explained in `crates/strata/tests/conformance_known_failures.txt`.\n"
        );
        let _ = writeln!(w, "| Op type | Case | Reason | Why |");
        let _ = writeln!(w, "|---------|------|--------|-----|");
        for o in failing {
            let reason = o.result.as_ref().err().map(String::as_str).unwrap_or("");
            let why = explanation(explanations, &o.name).unwrap_or("(unexplained)");
            let _ = writeln!(
                w,
                "| {} | `{}` | {} | {} |",
                cell(&o.op),
                o.name,
                cell(reason),
                cell(why)
            );
        }
    }

    let _ = writeln!(w, "\n## CPU kernels\n");
    let _ = writeln!(
        w,
        "Every op the CPU backend implements (`OpRegistry::with_cpu_kernels()`), with the \
         opset versions each implementation covers.\n"
    );
    let _ = writeln!(w, "| Domain | Op type | Opsets |");
    let _ = writeln!(w, "|--------|---------|--------|");
    for (domain, op, impls) in OpRegistry::with_cpu_kernels().iter() {
        let domain = if domain.is_empty() { "ai.onnx" } else { domain };
        let _ = writeln!(w, "| {domain} | {op} | {} |", ranges(impls));
    }
    md
}

#[test]
fn onnx_node_conformance() {
    let Some(dir) = cases_dir() else { return };
    let cases = cases_in(&dir, "node");
    assert!(
        !cases.is_empty(),
        "no test cases in {}: run `cargo xtask conformance`",
        dir.display()
    );
    let limit = time_limit();
    println!(
        "conformance: {} cases from {} ({} s per case)",
        cases.len(),
        dir.display(),
        limit.as_secs_f64()
    );

    // Failing cases may panic by the hundred; their messages are kept as reasons, so the
    // default hook's printing would only bury the summary.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcomes = run_all(cases, limit);
    std::panic::set_hook(hook);

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let explanations = read_explanations(&manifest.join(EXPLANATIONS_FILE));
    let report_path = manifest.join(REPORT_FILE);
    std::fs::write(&report_path, report(&outcomes, &explanations))
        .unwrap_or_else(|e| panic!("writing {}: {e}", report_path.display()));
    let unexplained: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err() && explanation(&explanations, &o.name).is_none())
        .map(|o| o.name.as_str())
        .collect();

    let status_path = manifest.join(STATUS_FILE);
    let passed = outcomes.iter().filter(|o| o.result.is_ok()).count();
    println!(
        "conformance: {passed}/{} cases pass ({}); report in docs/conformance.md",
        outcomes.len(),
        rate(passed, outcomes.len())
    );
    if std::env::var("STRATA_CONFORMANCE_BLESS").as_deref() == Ok("1") {
        std::fs::write(&status_path, status_text(&outcomes))
            .unwrap_or_else(|e| panic!("writing {}: {e}", status_path.display()));
        println!("conformance: blessed {}", status_path.display());
        assert_every_failure_explained(&unexplained);
        return;
    }

    let status = read_status(&status_path);
    if status.is_empty() {
        println!(
            "conformance: {} is missing or empty; run `cargo xtask conformance --bless`",
            status_path.display()
        );
    }
    let mut regressions = Vec::new();
    let mut now_passing = Vec::new();
    let mut unlisted = Vec::new();
    for o in &outcomes {
        match (status.get(&o.name), &o.result) {
            (Some(true), Err(reason)) => regressions.push(format!("{}: {reason}", o.name)),
            (Some(false), Ok(())) => now_passing.push(o.name.as_str()),
            (None, _) => unlisted.push(o.name.as_str()),
            _ => {}
        }
    }
    let names: BTreeSet<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    let vanished: Vec<&str> = status
        .keys()
        .map(String::as_str)
        .filter(|n| !names.contains(n))
        .collect();
    for (what, list) in [
        ("now pass (bless to record)", &now_passing),
        ("are not in the status file (bless to add)", &unlisted),
        (
            "of the status file no longer exist (bless to drop)",
            &vanished,
        ),
    ] {
        if !list.is_empty() {
            println!(
                "conformance: {} cases {what}: {}",
                list.len(),
                list.join(", ")
            );
        }
    }
    assert!(
        regressions.is_empty(),
        "{} conformance regressions (cases listed as `pass` in {STATUS_FILE}):\n{}",
        regressions.len(),
        regressions.join("\n")
    );
    assert_every_failure_explained(&unexplained);
}

fn assert_every_failure_explained(unexplained: &[&str]) {
    assert!(
        unexplained.is_empty(),
        "{} failing cases have no explanation in {EXPLANATIONS_FILE}: {}",
        unexplained.len(),
        unexplained.join(", ")
    );
}

#[test]
fn worker_reports_timeouts_and_panics() {
    let slow = run_with_timeout(Duration::from_millis(50), || {
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    });
    assert_eq!(slow, Err("timeout after 0.05 s".to_string()));
    let panicking = run_with_timeout::<()>(Duration::from_secs(10), || panic!("boom"));
    assert_eq!(panicking, Err("panic: boom".to_string()));
    assert_eq!(run_with_timeout(Duration::from_secs(10), || Ok(7)), Ok(7));
}

#[test]
fn expanded_and_unloadable_cases_get_their_op() {
    let found: BTreeMap<String, Option<String>> = [
        ("test_softmax_axis_0", Some("Softmax")),
        ("test_softmax_axis_0_expanded_ver18", Some("ReduceMax")),
        ("test_reduce_sum_keepdims", None),
        ("test_zzz_unheard_of", None),
    ]
    .into_iter()
    .map(|(n, op)| (n.to_string(), op.map(str::to_string)))
    .collect();
    let ops = resolve_ops(&found);
    assert_eq!(ops["test_softmax_axis_0_expanded_ver18"], "Softmax");
    assert_eq!(ops["test_reduce_sum_keepdims"], "ReduceSum");
    assert_eq!(ops["test_zzz_unheard_of"], "(unknown)");
}
