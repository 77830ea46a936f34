//! Running an execution plan.

use crate::ThreadPool;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use strata_graph::{ExecutionPlan, Graph, NodeId, ValueId};
use strata_ops::{EvalCtx, Inputs, OpError, TensorAlloc, Value};

/// Why a run failed; names the node and op.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A kernel failed.
    #[error("node '{node}' ({op}): {source}")]
    Node {
        /// The node's label.
        node: String,
        /// Its op type.
        op: String,
        /// The kernel's error.
        #[source]
        source: OpError,
    },
    /// A kernel returned fewer outputs than the graph reads.
    #[error("node '{node}' ({op}) produced {produced} outputs but output {missing} is used")]
    MissingOutput {
        /// The node's label.
        node: String,
        /// Its op type.
        op: String,
        /// How many it produced.
        produced: usize,
        /// The first missing position.
        missing: usize,
    },
    /// A graph input was not provided.
    #[error("graph value '{0}' has no value at run time")]
    Unbound(String),
}

/// The graph outputs of one run, in `graph.outputs` order.
pub type RunOutputs = Vec<Value>;

/// Wall time spent in each node's kernel, summed over the runs it was attached to (see
/// [`Executor::with_profile`]); what `strata bench --profile` prints.
#[derive(Debug)]
pub struct Profile {
    per_node: Mutex<Vec<Duration>>,
    runs: AtomicUsize,
}

impl Profile {
    /// An empty profile for a graph of `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Profile {
            per_node: Mutex::new(vec![Duration::ZERO; nodes]),
            runs: AtomicUsize::new(0),
        }
    }

    /// Counts one run (for runs made of several executor runs, such as a session's
    /// sub-batches, whose executors record into this profile with
    /// [`Executor::with_profile_of`]).
    pub fn count_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, node: NodeId, elapsed: Duration) {
        if let Some(total) = self.per_node.lock().get_mut(node) {
            *total += elapsed;
        }
    }

    /// Total time per node (indexed by node id), over all recorded runs.
    pub fn node_totals(&self) -> Vec<Duration> {
        self.per_node.lock().clone()
    }

    /// How many runs were recorded.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }
}

/// Spare value tables (one slot per graph value) kept between runs, so a steady-state run
/// does not allocate its table (see [`Executor::with_slots`]).
#[derive(Debug, Default)]
pub struct SlotRecycler(Mutex<Vec<Vec<Option<Value>>>>);

impl SlotRecycler {
    /// An empty table of `len` slots: a spare one when there is one.
    fn take(&self, len: usize) -> Vec<Option<Value>> {
        let mut slots = self.0.lock().pop().unwrap_or_default();
        slots.resize(len, None);
        slots
    }

    /// Empties `slots` (dropping what they still hold) and keeps them for a later run.
    fn give_back(&self, mut slots: Vec<Option<Value>>) {
        slots.clear();
        self.0.lock().push(slots);
    }
}

/// Runs one plan over one graph with a given pool and output allocator.
#[derive(Debug, Clone, Copy)]
pub struct Executor<'a> {
    graph: &'a Graph,
    plan: &'a ExecutionPlan,
    pool: &'a ThreadPool,
    alloc: &'a dyn TensorAlloc,
    profile: Option<&'a Profile>,
    /// Whether each run counts as one of the profile's runs.
    counts_runs: bool,
    /// Per node of `graph`, its id in the graph the profile and error labels speak of
    /// (`graph` being a part of it); `None`: the same ids.
    node_ids: Option<&'a [NodeId]>,
    slots: Option<&'a SlotRecycler>,
}

impl<'a> Executor<'a> {
    /// An executor for `graph` following `plan`.
    pub fn new(
        graph: &'a Graph,
        plan: &'a ExecutionPlan,
        pool: &'a ThreadPool,
        alloc: &'a dyn TensorAlloc,
    ) -> Self {
        Executor {
            graph,
            plan,
            pool,
            alloc,
            profile: None,
            counts_runs: false,
            node_ids: None,
            slots: None,
        }
    }

    /// This executor, taking its value table from `slots` and returning it there after a
    /// sequential run.
    pub fn with_slots(self, slots: &'a SlotRecycler) -> Self {
        Executor {
            slots: Some(slots),
            ..self
        }
    }

    /// This executor, adding each node's kernel time to `profile` (one entry per node).
    pub fn with_profile(self, profile: &'a Profile) -> Self {
        Executor {
            profile: Some(profile),
            counts_runs: true,
            ..self
        }
    }

    /// This executor adding each node's kernel time to `profile` (when given) without
    /// counting runs (the caller counts them with [`Profile::count_run`]); with `node_ids`,
    /// for a part of a larger graph: node `i` of `graph` is node `node_ids[i]` of the larger
    /// one, under which it is profiled and named in errors.
    pub fn with_profile_of(
        self,
        profile: Option<&'a Profile>,
        node_ids: Option<&'a [NodeId]>,
    ) -> Self {
        Executor {
            profile,
            counts_runs: false,
            node_ids,
            ..self
        }
    }

    /// `node`'s label, under its id in the larger graph when this runs a part of one.
    fn node_label(&self, node: NodeId) -> String {
        match self.node_ids.and_then(|ids| ids.get(node)) {
            Some(&id) if self.graph.nodes[node].name.is_empty() => {
                format!("#{id} ({})", self.graph.nodes[node].op_type)
            }
            _ => self.graph.node_label(node),
        }
    }

    fn initial_values(&self, inputs: Vec<(ValueId, Value)>) -> Vec<Option<Value>> {
        let len = self.graph.values.len();
        let mut values = match self.slots {
            Some(slots) => slots.take(len),
            None => vec![None; len],
        };
        for (&v, t) in &self.graph.constants {
            values[v] = Some(Value::Tensor(t.clone()));
        }
        for (v, value) in inputs {
            values[v] = Some(value);
        }
        values
    }

    fn node_inputs(&self, node: NodeId, values: &[Option<Value>]) -> Result<Inputs, ExecError> {
        let n = &self.graph.nodes[node];
        let mut list = Vec::with_capacity(n.inputs.len());
        for input in &n.inputs {
            match input {
                None => list.push(None),
                Some(v) => match &values[*v] {
                    Some(value) => list.push(Some(value.clone())),
                    None => return Err(ExecError::Unbound(self.graph.values[*v].name.clone())),
                },
            }
        }
        Ok(Inputs::new(list))
    }

    fn eval_node(&self, node: NodeId, inputs: Inputs) -> Result<Vec<Value>, ExecError> {
        let n = &self.graph.nodes[node];
        let ctx = EvalCtx {
            parallel: self.pool,
            alloc: self.alloc,
        };
        let start = self.profile.map(|_| Instant::now());
        let outputs = n.op.eval(&ctx, inputs).map_err(|source| ExecError::Node {
            node: self.node_label(node),
            op: n.op_type.clone(),
            source,
        })?;
        if let (Some(profile), Some(start)) = (self.profile, start) {
            let id = self.node_ids.and_then(|ids| ids.get(node)).copied();
            profile.record(id.unwrap_or(node), start.elapsed());
        }
        if let Some(missing) = n
            .outputs
            .iter()
            .enumerate()
            .skip(outputs.len())
            .find(|(_, o)| o.is_some())
            .map(|(i, _)| i)
        {
            return Err(ExecError::MissingOutput {
                node: self.node_label(node),
                op: n.op_type.clone(),
                produced: outputs.len(),
                missing,
            });
        }
        Ok(outputs)
    }

    fn store(&self, node: NodeId, outputs: Vec<Value>, values: &mut [Option<Value>]) {
        for (slot, value) in self.graph.nodes[node].outputs.iter().zip(outputs) {
            if let Some(v) = slot {
                values[*v] = Some(value);
            }
        }
    }

    fn release(&self, value: Option<Value>) {
        if let Some(Value::Tensor(t)) = value {
            if let Some(buffer) = t.into_buffer() {
                self.alloc.release(buffer);
            }
        }
    }

    fn collect_outputs(&self, values: &mut [Option<Value>]) -> Result<RunOutputs, ExecError> {
        self.graph
            .outputs
            .iter()
            .map(|&v| {
                values[v]
                    .clone()
                    .ok_or_else(|| ExecError::Unbound(self.graph.values[v].name.clone()))
            })
            .collect()
    }

    /// Runs the plan with the given graph-input values and returns the graph outputs: nodes
    /// in plan order, each kernel parallel over the pool (intra-op parallelism, like
    /// onnxruntime's default sequential mode), the calling thread taking part in each.
    pub fn run(&self, inputs: Vec<(ValueId, Value)>) -> Result<RunOutputs, ExecError> {
        if let (Some(profile), true) = (self.profile, self.counts_runs) {
            profile.count_run();
        }
        self.pool.install(|| self.run_sequential(inputs))
    }

    /// Walks the plan in order on the calling thread (kernels still use the pool).
    pub fn run_sequential(&self, inputs: Vec<(ValueId, Value)>) -> Result<RunOutputs, ExecError> {
        let mut values = self.initial_values(inputs);
        for (step, &node) in self.plan.order.iter().enumerate() {
            let node_inputs = self.node_inputs(node, &values)?;
            let outputs = self.eval_node(node, node_inputs)?;
            self.store(node, outputs, &mut values);
            for &v in &self.plan.release_after[step] {
                self.release(values[v].take());
            }
        }
        let outputs = self.collect_outputs(&mut values);
        if let Some(slots) = self.slots {
            slots.give_back(values);
        }
        outputs
    }

    /// Runs nodes as soon as their producers finish, on all the pool's threads (inter-op
    /// parallelism). Kernels run serially here (the pool's parallel-fors do not nest), so
    /// this only pays off for wide graphs of small kernels; [`Self::run`] does not use it.
    pub fn run_parallel(&self, inputs: Vec<(ValueId, Value)>) -> Result<RunOutputs, ExecError> {
        let consumers = self.graph.consumers();
        let state = Mutex::new(ParallelState {
            values: self.initial_values(inputs),
            pending: self.plan.dependency_count.clone(),
            readers_left: consumers.iter().map(Vec::len).collect(),
            ready: self
                .plan
                .order
                .iter()
                .copied()
                .filter(|&n| self.plan.dependency_count[n] == 0)
                .collect(),
            remaining: self.plan.order.len(),
            error: None,
        });
        let wake = Condvar::new();
        self.pool.broadcast(self.pool.threads(), &|_| {
            self.parallel_worker(&state, &wake)
        });
        let mut state = state.into_inner();
        if let Some(error) = state.error.take() {
            return Err(error);
        }
        self.collect_outputs(&mut state.values)
    }

    /// Takes ready nodes until the run is complete or failed.
    fn parallel_worker(&self, state: &Mutex<ParallelState>, wake: &Condvar) {
        loop {
            let (node, inputs) = {
                let mut s = state.lock();
                let node = loop {
                    if s.remaining == 0 || s.error.is_some() {
                        return;
                    }
                    if let Some(n) = s.ready.pop_front() {
                        break n;
                    }
                    wake.wait(&mut s);
                };
                match self.node_inputs(node, &s.values) {
                    Ok(inputs) => (node, inputs),
                    Err(e) => {
                        s.error.get_or_insert(e);
                        wake.notify_all();
                        return;
                    }
                }
            };
            let result = self.eval_node(node, inputs);
            let mut s = state.lock();
            match result {
                Err(e) => {
                    s.error.get_or_insert(e);
                    wake.notify_all();
                    return;
                }
                Ok(outputs) => self.finish_node(node, outputs, &mut s),
            }
            wake.notify_all();
        }
    }

    /// Stores a finished node's outputs, frees values nobody will read again and marks the
    /// node's dependents that became ready.
    fn finish_node(&self, node: NodeId, outputs: Vec<Value>, s: &mut ParallelState) {
        self.store(node, outputs, &mut s.values);
        let n = &self.graph.nodes[node];
        let mut read: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
        read.sort_unstable();
        read.dedup();
        for v in read {
            s.readers_left[v] -= 1;
            if s.readers_left[v] == 0 && self.plan.planned[v] {
                self.release(s.values[v].take());
            }
        }
        for &v in n.outputs.iter().flatten() {
            if s.readers_left[v] == 0 && self.plan.planned[v] {
                self.release(s.values[v].take());
            }
        }
        for &d in &self.plan.dependents[node] {
            s.pending[d] -= 1;
            if s.pending[d] == 0 {
                s.ready.push_back(d);
            }
        }
        s.remaining -= 1;
    }
}

/// Shared state of a parallel run.
struct ParallelState {
    values: Vec<Option<Value>>,
    pending: Vec<usize>,
    readers_left: Vec<usize>,
    ready: VecDeque<NodeId>,
    remaining: usize,
    error: Option<ExecError>,
}
