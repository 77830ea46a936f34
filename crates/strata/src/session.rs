//! Sessions: an optimized, planned graph bound to a thread pool and a buffer pool.

use crate::model::unsupported_in;
use crate::{Model, Result, StrataError};
use std::collections::HashMap;
use strata_graph::batch::{batch_axis, batch_stages};
use strata_graph::{infer, passes, Dim, ExecutionPlan, Fact, Graph, NodeId};
use strata_memory::{
    peak_buffers_by_class, size_class, AlignedBuffer, Allocator, BufferPool, PoolStats,
};
use strata_onnx::ValueKind;
use strata_ops::{OpResult, TensorAlloc, Value};
use strata_sched::{Executor, Profile, SlotRecycler, ThreadPool};
use strata_tensor::{DType, Tensor};

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Threads for kernels and independent branches; 0 means one per core.
    pub threads: usize,
    /// Whether to run the graph optimization passes (constant folding, dead-code and identity
    /// elimination). Disable to run the graph exactly as written.
    pub optimize: bool,
    /// A batch-independent graph (see [`strata_graph::batch`]) runs a larger batch in
    /// sub-batches whose largest activation takes at most this many bytes (at least one item
    /// each), so activations stay in cache from one layer to the next; where activations
    /// shrink along the graph, in stages with sub-batches of their own size
    /// ([`strata_graph::batch::batch_stages`]), so late layers take many items per pass over
    /// their weights. 0 runs every batch whole. Outputs are the same either way (up to the
    /// rounding of a product's summation order). Default [`SUB_BATCH_BYTES`].
    pub sub_batch_bytes: usize,
    /// A pool to run on instead of one of the session's own (`threads` is then ignored).
    /// Sessions given clones of one pool share its workers: runs at once never start more
    /// threads than the pool has (a run that finds the pool busy runs its kernels on its own
    /// thread), so several sessions in one process do not oversubscribe the cores.
    pub thread_pool: Option<ThreadPool>,
}

/// The most bytes the largest activation of one sub-batch may take: this host's per-core L2
/// (1 MiB on Zen 4), so that each layer's output is still in cache when the next reads it.
pub const SUB_BATCH_BYTES: usize = 1 << 20;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: 0,
            optimize: true,
            sub_batch_bytes: SUB_BATCH_BYTES,
            thread_pool: None,
        }
    }
}

impl SessionOptions {
    /// These options with `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// These options running on `pool`, shared with every session given a clone of it.
    pub fn with_thread_pool(mut self, pool: ThreadPool) -> Self {
        self.thread_pool = Some(pool);
        self
    }

    /// These options without graph optimizations.
    pub fn without_optimizations(mut self) -> Self {
        self.optimize = false;
        self
    }

    /// These options with sub-batches of at most `bytes` bytes of activation (0: none).
    pub fn with_sub_batch_bytes(mut self, bytes: usize) -> Self {
        self.sub_batch_bytes = bytes;
        self
    }
}

/// Output buffers come from, and intermediate buffers return to, a size-class pool.
#[derive(Debug, Default)]
struct PooledAlloc(BufferPool);

impl TensorAlloc for PooledAlloc {
    fn buffer(&self, bytes: usize) -> OpResult<AlignedBuffer> {
        Ok(self.0.allocate(bytes)?)
    }

    fn buffer_for_overwrite(&self, bytes: usize) -> OpResult<AlignedBuffer> {
        Ok(self.0.allocate_for_overwrite(bytes)?)
    }

    fn release(&self, buffer: AlignedBuffer) {
        self.0.release(buffer);
    }
}

/// The outputs of a run, by name, in graph order.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    entries: Vec<(String, Value)>,
}

impl Outputs {
    /// The tensor output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.value(name).and_then(Value::as_tensor)
    }

    /// The output value called `name` (tensor, sequence or optional).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Outputs in graph order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The outputs as (name, value) pairs.
    pub fn into_vec(self) -> Vec<(String, Value)> {
        self.entries
    }
}

/// A model ready to run: optimized graph, execution plan, threads and memory.
///
/// `run` takes `&self`: a session can serve concurrent callers (each run has its own values;
/// the buffer pool is shared and thread-safe).
#[derive(Debug)]
pub struct Session {
    graph: Graph,
    declared_inputs: Vec<Fact>,
    input_kinds: Vec<ValueKind>,
    plan: ExecutionPlan,
    pool: ThreadPool,
    buffers: PooledAlloc,
    /// Value tables reused from run to run.
    slots: SlotRecycler,
    /// Items per sub-batch when the graph is batch-independent and sub-batches are on (of
    /// the first stage, when there are stages).
    sub_batch: Option<usize>,
    /// The graph cut into stages with sub-batches of their own (see
    /// [`strata_graph::batch::batch_stages`]); empty when it runs whole.
    stages: Vec<Stage>,
    passes_applied: Vec<&'static str>,
}

/// A part of the session's graph that runs a large batch in sub-batches of its own size.
#[derive(Debug)]
struct Stage {
    graph: Graph,
    plan: ExecutionPlan,
    /// The session graph's id of each node of `graph`.
    node_ids: Vec<NodeId>,
    /// Items per sub-batch.
    items: usize,
}

/// The graph, or one stage of it, and its plan.
#[derive(Debug, Clone, Copy)]
struct Part<'a> {
    graph: &'a Graph,
    plan: &'a ExecutionPlan,
    node_ids: Option<&'a [NodeId]>,
}

impl Session {
    pub(crate) fn new(model: &Model, options: SessionOptions) -> Result<Session> {
        Self::with_graph(
            model.graph().clone(),
            model.onnx().input_kinds.clone(),
            options,
        )
    }

    /// A session over `graph` (which the session optimizes and owns).
    pub(crate) fn with_graph(
        mut graph: Graph,
        input_kinds: Vec<ValueKind>,
        options: SessionOptions,
    ) -> Result<Session> {
        let declared_inputs = graph
            .inputs
            .iter()
            .map(|&v| graph.values[v].fact.clone())
            .collect();
        let passes_applied = if options.optimize {
            let mut applied = passes::optimize(&mut graph)?;
            applied.extend(passes::prepack_for_cpu(&mut graph)?);
            applied
        } else {
            infer::infer_facts(&mut graph)?;
            Vec::new()
        };
        if let Some(error) = unsupported_in(&graph).into_iter().next() {
            return Err(error);
        }
        let plan = ExecutionPlan::new(&graph)?;
        let items = |bytes: usize| (options.sub_batch_bytes / bytes.max(1)).max(1);
        let mut sub_batch = batch_axis(&graph)
            .filter(|_| options.sub_batch_bytes > 0)
            .map(|b| items(b.largest_item_bytes));
        let mut stages = Vec::new();
        if sub_batch.is_some() {
            let cut = batch_stages(&graph, &plan.order, options.sub_batch_bytes);
            if cut.len() > 1 {
                for stage in cut {
                    stages.push(Stage {
                        plan: ExecutionPlan::new(&stage.graph)?,
                        graph: stage.graph,
                        node_ids: stage.node_ids,
                        items: items(stage.largest_item_bytes),
                    });
                }
                sub_batch = stages.first().map(|s| s.items);
            }
        }
        let buffers = PooledAlloc::default();
        for (class, count) in peak_buffers_by_class(&plan.lifetimes, size_class) {
            buffers.0.reserve(class, count);
        }
        Ok(Session {
            graph,
            declared_inputs,
            input_kinds,
            plan,
            pool: match options.thread_pool {
                Some(pool) => pool,
                None => ThreadPool::new(options.threads),
            },
            buffers,
            slots: SlotRecycler::default(),
            sub_batch,
            stages,
            passes_applied,
        })
    }

    /// The graph this session runs (after optimization).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Names of the passes that changed the graph, in order.
    pub fn passes_applied(&self) -> &[&'static str] {
        &self.passes_applied
    }

    /// Threads the session uses.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Items per sub-batch when this session runs larger batches in sub-batches (the graph
    /// is batch-independent and [`SessionOptions::sub_batch_bytes`] is not 0).
    pub fn sub_batch_items(&self) -> Option<usize> {
        self.sub_batch
    }

    /// Reuse statistics of the session's buffer pool.
    pub fn memory_stats(&self) -> PoolStats {
        self.buffers.0.stats()
    }

    /// Names of the inputs, in graph order.
    pub fn input_names(&self) -> Vec<&str> {
        self.graph
            .inputs
            .iter()
            .map(|&v| self.graph.values[v].name.as_str())
            .collect()
    }

    /// Names of the outputs, in graph order.
    pub fn output_names(&self) -> Vec<&str> {
        self.graph
            .outputs
            .iter()
            .map(|&v| self.graph.values[v].name.as_str())
            .collect()
    }

    /// Runs the model on named tensors.
    pub fn run<I, S>(&self, inputs: I) -> Result<Outputs>
    where
        I: IntoIterator<Item = (S, Tensor)>,
        S: AsRef<str>,
    {
        self.run_values(
            inputs
                .into_iter()
                .map(|(n, t)| (n.as_ref().to_string(), Value::Tensor(t)))
                .collect(),
        )
    }

    /// Runs the model on tensors given in graph-input order.
    pub fn run_positional(&self, inputs: Vec<Tensor>) -> Result<Outputs> {
        let names = self.input_names();
        if inputs.len() > names.len() {
            return Err(StrataError::TooManyInputs {
                given: inputs.len(),
                expected: names.len(),
            });
        }
        let named = names
            .iter()
            .map(|n| n.to_string())
            .zip(inputs.into_iter().map(Value::Tensor))
            .collect();
        self.run_values(named)
    }

    /// Runs the model on named values (tensors, sequences or optionals).
    pub fn run_values(&self, inputs: Vec<(String, Value)>) -> Result<Outputs> {
        self.run_with(inputs, None)
    }

    /// Like [`Session::run_values`], adding each node's kernel time to `profile` (made with
    /// [`Profile::new`] for `self.graph().nodes.len()` nodes; node ids index
    /// [`Session::graph`]).
    pub fn run_profiled(&self, inputs: Vec<(String, Value)>, profile: &Profile) -> Result<Outputs> {
        self.run_with(inputs, Some(profile))
    }

    fn run_with(&self, inputs: Vec<(String, Value)>, profile: Option<&Profile>) -> Result<Outputs> {
        let bound = self.bind_inputs(inputs)?;
        if let Some(profile) = profile {
            profile.count_run();
        }
        let whole = Part {
            graph: &self.graph,
            plan: &self.plan,
            node_ids: None,
        };
        let values = match self.sub_batches(&bound) {
            Some((items, _)) if !self.stages.is_empty() => {
                self.run_stages(bound, items, profile)?
            }
            Some((items, per_run)) => {
                self.run_sub_batches(whole, &bound, items, per_run, profile)?
            }
            None => self.execute(whole, bound, profile)?,
        };
        let entries = self
            .graph
            .outputs
            .iter()
            .map(|&v| self.graph.values[v].name.clone())
            .zip(values)
            .collect();
        Ok(Outputs { entries })
    }

    /// One run of `part`'s plan on bound inputs.
    fn execute(
        &self,
        part: Part<'_>,
        bound: Vec<(usize, Value)>,
        profile: Option<&Profile>,
    ) -> Result<Vec<Value>> {
        let executor = Executor::new(part.graph, part.plan, &self.pool, &self.buffers)
            .with_slots(&self.slots)
            .with_profile_of(profile, part.node_ids);
        Ok(executor.run(bound)?)
    }

    /// Runs the stages in turn, each over all `items` in sub-batches of its own size (or
    /// whole), each stage's output joined along the batch and handed to the next.
    fn run_stages(
        &self,
        mut bound: Vec<(usize, Value)>,
        items: usize,
        profile: Option<&Profile>,
    ) -> Result<Vec<Value>> {
        let mut stages = self.stages.iter().enumerate().peekable();
        while let Some((index, stage)) = stages.next() {
            let part = Part {
                graph: &stage.graph,
                plan: &stage.plan,
                node_ids: Some(&stage.node_ids),
            };
            let outputs = match items > stage.items {
                true => self.run_sub_batches(part, &bound, items, stage.items, profile)?,
                false => self.execute(part, bound.clone(), profile)?,
            };
            if index > 0 {
                // The previous stage's outputs, made by this session.
                bound.into_iter().for_each(|(_, value)| self.recycle(value));
            }
            if stages.peek().is_none() {
                return Ok(outputs);
            }
            bound = stage.graph.outputs.iter().copied().zip(outputs).collect();
        }
        Ok(Vec::new())
    }

    /// `(batch items, items per sub-batch)` when these inputs are to run in sub-batches:
    /// the graph is batch-independent, sub-batches are on, and every input is a tensor with
    /// the same, larger than one sub-batch, leading dimension.
    fn sub_batches(&self, bound: &[(usize, Value)]) -> Option<(usize, usize)> {
        let per_run = self.sub_batch?;
        let mut items = None;
        for (_, value) in bound {
            let n = *value.as_tensor()?.shape().first()?;
            if items.is_some_and(|items| items != n) {
                return None;
            }
            items = Some(n);
        }
        items.filter(|&n| n > per_run).map(|n| (n, per_run))
    }

    /// Runs `items` batch items `per_run` at a time (views of the inputs along their first
    /// axis) and copies each output's pieces into one tensor per output, taken from the
    /// session's buffer pool; each piece's buffer goes back to the pool for the next.
    fn run_sub_batches(
        &self,
        part: Part<'_>,
        bound: &[(usize, Value)],
        items: usize,
        per_run: usize,
        profile: Option<&Profile>,
    ) -> Result<Vec<Value>> {
        let mut joined: Vec<Joined> = Vec::new();
        for start in (0..items).step_by(per_run) {
            let end = (start + per_run).min(items);
            let slice = bound
                .iter()
                .map(|(v, value)| {
                    let t = value.as_tensor().ok_or_else(|| {
                        StrataError::BatchSplit("an input is not a tensor".into())
                    })?;
                    Ok((*v, Value::Tensor(t.slice_axis(0, start, end as isize, 1)?)))
                })
                .collect::<Result<Vec<_>>>()?;
            let pieces = self.execute(part, slice, profile)?;
            if joined.is_empty() {
                joined = pieces
                    .iter()
                    .map(|piece| Joined::new(piece, items, end - start, &self.buffers))
                    .collect::<Result<_>>()?;
            }
            for (out, piece) in joined.iter_mut().zip(pieces) {
                out.copy_in(start, end - start, &piece)?;
                self.recycle(piece);
            }
        }
        joined.into_iter().map(Joined::finish).collect()
    }

    /// Hands a value the session made and no longer needs back to its buffer pool.
    fn recycle(&self, value: Value) {
        if let Some(buffer) = value.into_tensor().and_then(Tensor::into_buffer) {
            self.buffers.0.release(buffer);
        }
    }

    /// Matches inputs to graph inputs, checking names, dtypes and shapes (symbols must agree
    /// across inputs).
    fn bind_inputs(&self, inputs: Vec<(String, Value)>) -> Result<Vec<(usize, Value)>> {
        let mut by_name: HashMap<String, Value> = HashMap::new();
        for (name, value) in inputs {
            if !self
                .graph
                .inputs
                .iter()
                .any(|&v| self.graph.values[v].name == name)
            {
                return Err(StrataError::UnknownInput {
                    name,
                    expected: self.input_names().join(", "),
                });
            }
            by_name.insert(name, value);
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        let mut bound = Vec::with_capacity(self.graph.inputs.len());
        for (i, &v) in self.graph.inputs.iter().enumerate() {
            let name = &self.graph.values[v].name;
            let value = by_name
                .remove(name)
                .ok_or_else(|| StrataError::MissingInput(name.clone()))?;
            if let (Value::Tensor(t), Some(ValueKind::Tensor) | None) =
                (&value, self.input_kinds.get(i))
            {
                check_tensor(name, &self.declared_inputs[i], t, &mut symbols)?;
            }
            bound.push((v, value));
        }
        Ok(bound)
    }
}

fn check_tensor<'a>(
    name: &str,
    fact: &'a Fact,
    tensor: &Tensor,
    symbols: &mut HashMap<&'a str, usize>,
) -> Result<()> {
    if let Some(expected) = fact.dtype {
        if expected != tensor.dtype() {
            return Err(StrataError::InputDType {
                name: name.to_string(),
                expected,
                found: tensor.dtype(),
            });
        }
    }
    let Some(dims) = &fact.shape else {
        return Ok(());
    };
    let shape_error = || StrataError::InputShape {
        name: name.to_string(),
        expected: format!(
            "[{}]",
            dims.iter()
                .map(Dim::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        found: tensor.shape().to_vec(),
    };
    if dims.len() != tensor.rank() {
        return Err(shape_error());
    }
    for (dim, &size) in dims.iter().zip(tensor.shape()) {
        let consistent = match dim {
            Dim::Known(n) => *n == size,
            Dim::Symbol(s) => *symbols.entry(s.as_str()).or_insert(size) == size,
        };
        if !consistent {
            return Err(shape_error());
        }
    }
    Ok(())
}

/// One output of a run in sub-batches: a buffer for all items, filled piece by piece.
struct Joined {
    dtype: DType,
    shape: Vec<usize>,
    item_bytes: usize,
    buffer: AlignedBuffer,
}

impl Joined {
    /// Room for `items` items shaped like `first`, the output of the first sub-batch (of
    /// `piece_items` items).
    fn new(first: &Value, items: usize, piece_items: usize, pool: &PooledAlloc) -> Result<Joined> {
        let t = piece_tensor(first, piece_items)?;
        let mut shape = t.shape().to_vec();
        shape[0] = items;
        let item_bytes = t.len() / piece_items * t.dtype().size_of();
        let bytes = items.checked_mul(item_bytes).ok_or_else(|| {
            StrataError::BatchSplit(format!("{items} items of {item_bytes} bytes overflow"))
        })?;
        let buffer = pool.buffer_for_overwrite(bytes).map_err(|e| {
            StrataError::BatchSplit(format!("an output of {bytes} bytes for the batch: {e}"))
        })?;
        Ok(Joined {
            dtype: t.dtype(),
            shape,
            item_bytes,
            buffer,
        })
    }

    /// Copies `piece`, the output for items `start..start + piece_items`, into place.
    fn copy_in(&mut self, start: usize, piece_items: usize, piece: &Value) -> Result<()> {
        let t = piece_tensor(piece, piece_items)?;
        if t.dtype() != self.dtype || t.shape()[1..] != self.shape[1..] {
            return Err(StrataError::BatchSplit(format!(
                "output pieces of shapes {:?} and {:?}",
                self.shape,
                t.shape()
            )));
        }
        let at = start * self.item_bytes;
        let bytes = &mut self.buffer.as_bytes_mut()[at..at + piece_items * self.item_bytes];
        bytes.copy_from_slice(t.contiguous().raw_bytes()?);
        Ok(())
    }

    fn finish(self) -> Result<Value> {
        Ok(Value::Tensor(Tensor::from_buffer(
            self.dtype,
            &self.shape,
            self.buffer,
        )?))
    }
}

/// `value` as a host tensor of fixed-size elements whose first dimension is `items`.
fn piece_tensor(value: &Value, items: usize) -> Result<&Tensor> {
    let t = value
        .as_tensor()
        .ok_or_else(|| StrataError::BatchSplit("an output is not a tensor".into()))?;
    if t.dtype() == DType::String || t.is_on_device() || t.shape().first() != Some(&items) {
        return Err(StrataError::BatchSplit(format!(
            "an output piece of {} {:?} for {items} items",
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t)
}
