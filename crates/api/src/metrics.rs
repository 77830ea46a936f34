//! Prometheus metrics, Triton's `nv_inference_*` set named `strata_*`: per model and version,
//! request success and failure counts, inferences (rows) and executions (batches), and the
//! cumulative request, queue and compute durations in microseconds; plus the queue depth of
//! each model and the process's resident memory, both sampled when /metrics is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt;
use std::time::Duration;

/// The labels of every per-model metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    success: Family<ModelLabels, Counter>,
    failure: Family<ModelLabels, Counter>,
    inferences: Family<ModelLabels, Counter>,
    executions: Family<ModelLabels, Counter>,
    request_us: Family<ModelLabels, Counter>,
    queue_us: Family<ModelLabels, Counter>,
    compute_us: Family<ModelLabels, Counter>,
    queue_depth: Family<ModelLabels, Gauge>,
    resident_bytes: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let success = Family::<ModelLabels, Counter>::default();
        let failure = Family::<ModelLabels, Counter>::default();
        let inferences = Family::<ModelLabels, Counter>::default();
        let executions = Family::<ModelLabels, Counter>::default();
        let request_us = Family::<ModelLabels, Counter>::default();
        let queue_us = Family::<ModelLabels, Counter>::default();
        let compute_us = Family::<ModelLabels, Counter>::default();
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let resident_bytes = Gauge::default();
        let counters = [
            (
                "strata_inference_request_success",
                "Successful inference requests",
                &success,
            ),
            (
                "strata_inference_request_failure",
                "Failed inference requests",
                &failure,
            ),
            (
                "strata_inference_count",
                "Inferences performed (a batch of n rows counts n)",
                &inferences,
            ),
            (
                "strata_inference_exec_count",
                "Model executions (batches) performed",
                &executions,
            ),
            (
                "strata_inference_request_duration_us",
                "Cumulative end-to-end inference request time in microseconds",
                &request_us,
            ),
            (
                "strata_inference_queue_duration_us",
                "Cumulative time requests waited in the queue in microseconds",
                &queue_us,
            ),
            (
                "strata_inference_compute_infer_duration_us",
                "Cumulative model execution time in microseconds",
                &compute_us,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "strata_inference_pending_request_count",
            "Requests waiting in the model's queue",
            queue_depth.clone(),
        );
        registry.register(
            "strata_process_resident_memory_bytes",
            "Resident memory of the server process",
            resident_bytes.clone(),
        );
        Metrics {
            registry,
            success,
            failure,
            inferences,
            executions,
            request_us,
            queue_us,
            compute_us,
            queue_depth,
            resident_bytes,
        }
    }
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, labels: &ModelLabels, ok: bool, duration: Duration) {
        let family = if ok { &self.success } else { &self.failure };
        family.get_or_create(labels).inc();
        self.request_us
            .get_or_create(labels)
            .inc_by(micros(duration));
    }

    /// Records one execution of `rows` rows for `requests` requests.
    pub fn execution(&self, labels: &ModelLabels, rows: usize, queue: Duration, compute: Duration) {
        self.executions.get_or_create(labels).inc();
        self.inferences.get_or_create(labels).inc_by(rows as u64);
        self.queue_us.get_or_create(labels).inc_by(micros(queue));
        self.compute_us
            .get_or_create(labels)
            .inc_by(micros(compute));
    }

    /// Sets a model's queue depth.
    pub fn set_queue_depth(&self, labels: &ModelLabels, depth: usize) {
        self.queue_depth
            .get_or_create(labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format, with the memory gauge sampled now.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size of this process (Linux: /proc/self/statm; elsewhere unknown).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_triton_style_names() {
        let m = Metrics::default();
        let l = ModelLabels {
            model: "m".into(),
            version: "1".into(),
        };
        m.request(&l, true, Duration::from_micros(10));
        m.request(&l, false, Duration::from_micros(5));
        m.execution(&l, 4, Duration::from_micros(3), Duration::from_micros(7));
        m.set_queue_depth(&l, 2);
        let text = m.render();
        for line in [
            "strata_inference_request_success_total{model=\"m\",version=\"1\"} 1",
            "strata_inference_request_failure_total{model=\"m\",version=\"1\"} 1",
            "strata_inference_count_total{model=\"m\",version=\"1\"} 4",
            "strata_inference_exec_count_total{model=\"m\",version=\"1\"} 1",
            "strata_inference_request_duration_us_total{model=\"m\",version=\"1\"} 15",
            "strata_inference_queue_duration_us_total{model=\"m\",version=\"1\"} 3",
            "strata_inference_compute_infer_duration_us_total{model=\"m\",version=\"1\"} 7",
            "strata_inference_pending_request_count{model=\"m\",version=\"1\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("strata_process_resident_memory_bytes"));
    }
}
