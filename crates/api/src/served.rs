//! One servable model version: its session, its request queue (a
//! [`strata_sched::DynamicBatcher`]) and the executor that stacks queued requests, runs them
//! once and splits the outputs back.

use crate::config::ModelConfig;
use crate::error::ApiError;
use crate::metrics::{Metrics, ModelLabels};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::{
    DType, Dim, IoInfo, Model, Session, SessionOptions, Tensor, ThreadPool, Value, ValueKind,
};
use strata_sched::{
    split_rows, stack_rows, BatchExecutor, BatchJob, DynamicBatcher, FairGate, Queued, Rejection,
    SubmitError,
};
use tokio::sync::oneshot;

/// What an execution hands back to the request that queued it.
#[derive(Debug)]
pub struct JobOutput {
    /// Every model output, in graph order.
    pub outputs: Vec<(String, Tensor)>,
}

/// A validated request waiting in a model's queue.
#[derive(Debug)]
pub struct InferJob {
    /// Inputs in the model's input order.
    inputs: Vec<Tensor>,
    /// Rows along the batch dimension (1 when the model does not batch).
    rows: usize,
    /// Dtypes and shapes without the batch dimension: jobs with equal keys stack.
    key: Vec<(DType, Vec<usize>)>,
    reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

impl BatchJob for InferJob {
    type Key = Vec<(DType, Vec<usize>)>;

    fn key(&self) -> &Self::Key {
        &self.key
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn reject(self, why: Rejection) {
        let message = match why {
            Rejection::Timeout => "the request waited in the queue longer than its timeout",
        };
        let _ = self.reply.send(Err(ApiError::unavailable(message)));
    }
}

/// Runs batches of one model version.
struct ModelExecutor {
    session: Session,
    input_names: Vec<String>,
    metrics: Arc<Metrics>,
    labels: ModelLabels,
}

impl ModelExecutor {
    /// Runs the model once on `inputs`, turning panics and errors into [`ApiError`]s.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<(String, Tensor)>, ApiError> {
        let named: Vec<(String, Value)> = self
            .input_names
            .iter()
            .cloned()
            .zip(inputs.into_iter().map(Value::Tensor))
            .collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.session.run_values(named)));
        let outputs = match outcome {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return Err(ApiError::bad_request(format!("inference failed: {e}"))),
            Err(_) => {
                tracing::error!(model = %self.labels.model, "kernel panicked");
                return Err(ApiError::internal(
                    "inference failed: internal error in a kernel",
                ));
            }
        };
        outputs
            .into_vec()
            .into_iter()
            .map(|(name, value)| match value {
                Value::Tensor(t) => Ok((name, t)),
                _ => Err(ApiError::internal(format!(
                    "output '{name}' is a sequence or optional; the v2 protocol carries only tensors"
                ))),
            })
            .collect()
    }

    /// Runs `jobs` stacked along the batch dimension; `None` when they cannot be stacked or
    /// split back (the caller then runs them one by one).
    fn run_stacked(&self, jobs: &[Queued<InferJob>]) -> Option<Vec<Vec<(String, Tensor)>>> {
        let rows: Vec<usize> = jobs.iter().map(|q| q.job.rows).collect();
        let stacked: Vec<Tensor> = (0..self.input_names.len())
            .map(|i| {
                let parts: Vec<&Tensor> = jobs.iter().filter_map(|q| q.job.inputs.get(i)).collect();
                stack_rows(&parts)
            })
            .collect::<Result<_, _>>()
            .ok()?;
        let outputs = self.run(stacked).ok()?;
        let mut per_job: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); jobs.len()];
        for (name, tensor) in outputs {
            let parts = split_rows(&tensor, &rows).ok()?;
            for (slot, part) in per_job.iter_mut().zip(parts) {
                slot.push((name.clone(), part));
            }
        }
        Some(per_job)
    }
}

impl BatchExecutor<InferJob> for ModelExecutor {
    fn execute(&self, jobs: Vec<Queued<InferJob>>) {
        let queue: Duration = jobs.iter().map(|q| q.dequeued - q.enqueued).sum();
        let total_rows: usize = jobs.iter().map(|q| q.job.rows).sum();
        let start = Instant::now();
        if jobs.len() > 1 {
            if let Some(results) = self.run_stacked(&jobs) {
                self.metrics
                    .execution(&self.labels, total_rows, queue, start.elapsed());
                for (q, outputs) in jobs.into_iter().zip(results) {
                    let _ = q.job.reply.send(Ok(JobOutput { outputs }));
                }
                return;
            }
        }
        // One execution per job: a lone job, or a batch that could not run stacked (so one
        // bad request does not fail its neighbours).
        let mut queue_left = queue;
        for q in jobs {
            let start = Instant::now();
            let result = self.run(q.job.inputs).map(|outputs| JobOutput { outputs });
            self.metrics
                .execution(&self.labels, q.job.rows, queue_left, start.elapsed());
            queue_left = Duration::ZERO;
            let _ = q.job.reply.send(result);
        }
    }
}

/// A loaded model version ready to take requests.
#[derive(Debug)]
pub struct ServedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Serving settings.
    pub config: ModelConfig,
    /// Graph inputs.
    pub inputs: Vec<IoInfo>,
    /// Graph outputs.
    pub outputs: Vec<IoInfo>,
    /// Whether requests are stacked along the first dimension.
    pub batched: bool,
    /// Metric labels.
    pub labels: ModelLabels,
    batcher: Option<DynamicBatcher<InferJob>>,
}

impl Drop for ServedModel {
    fn drop(&mut self) {
        // Shutting the batcher down joins its workers after they finish the queue; do it off
        // the (possibly async) thread that dropped the last reference.
        if let Some(batcher) = self.batcher.take() {
            let _ = std::thread::Builder::new()
                .name("batcher-drain".into())
                .spawn(move || drop(batcher));
        }
    }
}

/// Whether every input has a free first dimension (a batch dimension).
fn has_batch_dim(inputs: &[IoInfo]) -> bool {
    !inputs.is_empty()
        && inputs.iter().all(|i| {
            i.kind == ValueKind::Tensor
                && matches!(i.dims.as_deref(), Some([first, ..]) if !matches!(first, Dim::Known(_)))
        })
}

impl ServedModel {
    /// Loads `bytes` as version `version` of `name`, its session on `pool` (of
    /// `config.threads` threads, shared with the other models of that many threads), and
    /// starts its queue.
    pub fn load(
        name: &str,
        version: u64,
        bytes: &[u8],
        config: ModelConfig,
        pool: ThreadPool,
        gate: Arc<FairGate>,
        metrics: Arc<Metrics>,
    ) -> Result<ServedModel, String> {
        let model = Model::from_bytes(bytes).map_err(|e| e.to_string())?;
        let session = model
            .session(SessionOptions::default().with_thread_pool(pool))
            .map_err(|e| e.to_string())?;
        let inputs = model.inputs();
        let outputs = model.outputs();
        if let Some(bad) = inputs.iter().chain(&outputs).find(|io| {
            io.kind != ValueKind::Tensor
                || io
                    .dtype
                    .is_some_and(|d| crate::protocol::datatype_name(d).is_none())
        }) {
            return Err(format!(
                "'{}' is not a tensor of a v2 datatype, so the protocol cannot carry it",
                bad.name
            ));
        }
        let batched = has_batch_dim(&inputs) && config.max_batch_size > 0;
        let labels = ModelLabels {
            model: name.to_string(),
            version: version.to_string(),
        };
        let executor = ModelExecutor {
            session,
            input_names: inputs.iter().map(|i| i.name.clone()).collect(),
            metrics,
            labels: labels.clone(),
        };
        let batcher =
            DynamicBatcher::start(name, config.batch_policy(batched), Arc::new(executor), gate)
                .map_err(|e| format!("cannot start the model's workers: {e}"))?;
        Ok(ServedModel {
            name: name.to_string(),
            version,
            config,
            inputs,
            outputs,
            batched,
            labels,
            batcher: Some(batcher),
        })
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.batcher.as_ref().map_or(0, DynamicBatcher::queued)
    }

    /// Stops taking requests; the queued ones still run.
    pub fn close(&self) {
        if let Some(b) = &self.batcher {
            b.close();
        }
    }

    /// Stops taking requests and waits until the queued ones have run.
    pub fn shutdown(&self) {
        if let Some(b) = &self.batcher {
            b.shutdown();
        }
    }

    /// Checks `inputs` (named) against the model and orders them as the model does.
    pub fn bind(&self, mut inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, ApiError> {
        if let Some((extra, _)) = inputs
            .iter()
            .find(|(n, _)| !self.inputs.iter().any(|i| &i.name == n))
        {
            return Err(ApiError::bad_request(format!(
                "model '{}' has no input '{extra}' (inputs: {})",
                self.name,
                self.input_list()
            )));
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for info in &self.inputs {
            let position = inputs
                .iter()
                .position(|(n, _)| n == &info.name)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "missing input '{}' of model '{}' (inputs: {})",
                        info.name,
                        self.name,
                        self.input_list()
                    ))
                })?;
            let (_, tensor) = inputs.swap_remove(position);
            check_input(info, &tensor, self.batched, self.config.max_batch_size)?;
            ordered.push(tensor);
        }
        Ok(ordered)
    }

    fn input_list(&self) -> String {
        self.inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Queues bound inputs; the receiver gets the outputs.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        priority: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<Result<JobOutput, ApiError>>, ApiError> {
        let rows = if self.batched {
            inputs
                .first()
                .and_then(|t| t.shape().first())
                .copied()
                .unwrap_or(1)
        } else {
            1
        };
        let (reply, receiver) = oneshot::channel();
        // Computed once here: the batcher compares keys on every scan of its queue.
        let skip = usize::from(self.batched);
        let key = inputs
            .iter()
            .map(|t| (t.dtype(), t.shape().get(skip..).unwrap_or(&[]).to_vec()))
            .collect();
        let job = InferJob {
            inputs,
            rows,
            key,
            reply,
        };
        let batcher = self.batcher.as_ref().ok_or_else(|| {
            ApiError::unavailable(format!("model '{}' is shutting down", self.name))
        })?;
        batcher
            .submit(job, priority, timeout)
            .map_err(|e| match e {
                SubmitError::QueueFull(_) => ApiError::too_many_requests(format!(
                    "model '{}': the queue is full ({} requests waiting)",
                    self.name,
                    batcher.policy().queue_capacity
                )),
                SubmitError::ShuttingDown(_) => {
                    ApiError::unavailable(format!("model '{}' is shutting down", self.name))
                }
                SubmitError::BadPriority(_, level) => ApiError::bad_request(format!(
                    "priority {level} is outside model '{}''s levels 1..={}",
                    self.name,
                    batcher.policy().priority_levels
                )),
            })?;
        Ok(receiver)
    }
}

/// Checks one input's dtype and shape against the model's declaration.
fn check_input(
    info: &IoInfo,
    tensor: &Tensor,
    batched: bool,
    max_batch: usize,
) -> Result<(), ApiError> {
    let name = &info.name;
    if let Some(dtype) = info.dtype {
        if dtype != tensor.dtype() {
            return Err(ApiError::bad_request(format!(
                "input '{name}' has datatype {}, the model expects {}",
                crate::protocol::datatype_name(tensor.dtype()).unwrap_or("?"),
                crate::protocol::datatype_name(dtype).unwrap_or("?")
            )));
        }
    }
    if let Some(dims) = &info.dims {
        let shape = tensor.shape();
        let fits = dims.len() == shape.len()
            && dims.iter().zip(shape).all(|(d, &s)| match d {
                Dim::Known(n) => *n == s,
                _ => true,
            });
        if !fits {
            return Err(ApiError::bad_request(format!(
                "input '{name}' has shape {shape:?}, the model expects {}",
                info.dims_string()
            )));
        }
    }
    if batched && tensor.shape().first().is_some_and(|&rows| rows > max_batch) {
        return Err(ApiError::bad_request(format!(
            "input '{name}' has batch size {}, above the model's max_batch_size {max_batch}",
            tensor.shape()[0]
        )));
    }
    Ok(())
}
