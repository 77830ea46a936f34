//! Control-flow kernels: If, Loop, Scan (opset 8 with a batch axis, opset 9 on without) and
//! SequenceMap. Each runs one or more nested graphs through the [`SubgraphBody`] interface;
//! the graphs themselves are compiled by the frontend.
//!
//! Outer-scope values a body reads arrive as implicit trailing inputs of the node, after the
//! inputs the model lists, in the order of [`node_captures`]; [`Body`] picks out those that
//! each body needs.

use super::shape::Concat;
use crate::{
    node_captures, op_boilerplate, BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult,
    Operator, Subgraph, SubgraphBody, Value,
};
use std::sync::Arc;
use strata_tensor::{normalize_axis, DType, Tensor};

/// Registers the control-flow ops.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "If", 1, build_if);
    registry.register("", "Loop", 1, build_loop);
    registry.register_range("", "Scan", 8, 8, build_scan8);
    registry.register("", "Scan", 9, build_scan);
    registry.register("", "SequenceMap", 17, build_sequence_map);
}

// ----- bodies -------------------------------------------------------------------------------

/// One nested graph of a node and where its captured values sit among the node's inputs.
#[derive(Debug, Clone)]
pub struct Body {
    /// The attribute name (`body`, `then_branch`, ...), for error messages.
    pub name: String,
    /// The compiled graph.
    pub graph: Arc<dyn SubgraphBody>,
    /// Input position of each of `graph.captures()`.
    pub capture_positions: Vec<usize>,
}

impl Body {
    /// The graph attribute `name` of the node being built; its captures are looked up after
    /// the node's `explicit` listed inputs.
    pub fn from_attr(b: &BuildCtx<'_>, name: &str) -> OpResult<Body> {
        let Subgraph(graph) = b
            .attrs
            .graph(name)?
            .ok_or_else(|| OpError::attribute(name, "required graph attribute is missing"))?;
        let union = node_captures(b.attrs);
        let capture_positions = graph
            .captures()
            .iter()
            .map(|c| {
                union
                    .iter()
                    .position(|u| u == c)
                    .map(|p| b.input_count + p)
                    .ok_or_else(|| OpError::BadSubgraph(format!("capture '{c}' is not bound")))
            })
            .collect::<OpResult<Vec<_>>>()?;
        Ok(Body {
            name: name.to_string(),
            graph,
            capture_positions,
        })
    }

    /// Number of formal inputs.
    pub fn inputs(&self) -> usize {
        self.graph.input_names().len()
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.graph.output_names().len()
    }

    /// The captured values from the node's inputs.
    pub fn captured(&self, inputs: &Inputs) -> OpResult<Vec<Value>> {
        self.capture_positions
            .iter()
            .map(|&p| {
                inputs.value(p).cloned().ok_or_else(|| {
                    OpError::BadSubgraph(format!(
                        "{}: captured value at input {p} is missing",
                        self.name
                    ))
                })
            })
            .collect()
    }

    /// Runs the body once and checks that it returned one value per output.
    pub fn run(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: Vec<Value>,
        captured: &[Value],
    ) -> OpResult<Vec<Value>> {
        let outputs = self.graph.run(ctx, inputs, captured)?;
        if outputs.len() != self.outputs() {
            return Err(OpError::BadSubgraph(format!(
                "{} returned {} values for {} outputs",
                self.name,
                outputs.len(),
                self.outputs()
            )));
        }
        Ok(outputs)
    }
}

fn arity_error(what: &str, expected: usize, found: usize) -> OpError {
    OpError::BadSubgraph(format!("{what}: expected {expected}, found {found}"))
}

/// Takes the tensor out of a body output, naming the output when it is something else.
fn tensor_output(body: &Body, index: usize, value: Value) -> OpResult<Tensor> {
    match value {
        Value::Tensor(t) => Ok(t),
        other => Err(OpError::BadSubgraph(format!(
            "{} output {index} must be a tensor, got {}",
            body.name,
            other.describe()
        ))),
    }
}

/// Stacks equally shaped tensors along a new axis `axis`. With no tensors, an empty tensor
/// of `empty_dtype` and shape `[0]` with `empty_rest` inserted around the new axis.
fn stack(
    ctx: &EvalCtx<'_>,
    parts: &[Tensor],
    axis: usize,
    empty_dtype: DType,
    empty_rest: &[usize],
) -> OpResult<Tensor> {
    if parts.is_empty() {
        let mut shape = empty_rest.to_vec();
        shape.insert(axis.min(shape.len()), 0);
        return ctx.alloc(empty_dtype, &shape);
    }
    let expanded = parts
        .iter()
        .map(|t| t.insert_axis(axis))
        .collect::<Result<Vec<_>, _>>()?;
    let concat = Concat { axis: axis as i64 };
    let mut out = concat.eval(ctx, Inputs::from_tensors(expanded))?;
    match out.pop() {
        Some(Value::Tensor(t)) => Ok(t.contiguous()),
        _ => Err(OpError::Shape("stacking produced no tensor".into())),
    }
}

/// The dtype and element shape a body declares for output `index`, for empty stacks.
fn declared_element(body: &Body, index: usize) -> (DType, Vec<usize>) {
    let fact = body.graph.output_facts().get(index);
    (
        fact.and_then(|f| f.dtype).unwrap_or(DType::F32),
        fact.and_then(|f| f.concrete_shape()).unwrap_or_default(),
    )
}

/// Element `index` along `axis`, with that axis removed.
fn take_along(t: &Tensor, axis: usize, index: usize) -> OpResult<Tensor> {
    if axis >= t.rank() || index >= t.shape()[axis] {
        return Err(OpError::Shape(format!(
            "cannot take element {index} along axis {axis} of shape {:?}",
            t.shape()
        )));
    }
    let mut shape = t.shape().to_vec();
    shape.remove(axis);
    Ok(t.slice_axis(axis, index, index as isize + 1, 1)?
        .reshape(&shape)?)
}

// ----- If -----------------------------------------------------------------------------------

/// `If`: runs `then_branch` or `else_branch` depending on a one-element bool condition. The
/// branches may produce values of different shapes (or kinds).
#[derive(Debug, Clone)]
pub struct If {
    /// Run when the condition is true.
    pub then_branch: Body,
    /// Run when the condition is false.
    pub else_branch: Body,
}

fn build_if(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let then_branch = Body::from_attr(b, "then_branch")?;
    let else_branch = Body::from_attr(b, "else_branch")?;
    for branch in [&then_branch, &else_branch] {
        if branch.outputs() != b.output_count {
            return Err(arity_error(
                &format!("{} outputs (one per If output)", branch.name),
                b.output_count,
                branch.outputs(),
            ));
        }
    }
    Ok(Box::new(If {
        then_branch,
        else_branch,
    }))
}

/// The value of a one-element bool (or numeric) condition tensor.
fn condition(t: &Tensor, index: usize) -> OpResult<bool> {
    if t.len() != 1 {
        return Err(OpError::invalid(
            index,
            format!("condition must have one element, got shape {:?}", t.shape()),
        ));
    }
    if t.dtype() == DType::Bool {
        let c = t.contiguous();
        return Ok(c.as_bool_slice()?.first().is_some_and(|&b| b != 0));
    }
    Ok(t.first_as_f64()? != 0.0)
}

impl Operator for If {
    op_boilerplate!("If");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let branch = if condition(inputs.tensor(0)?, 0)? {
            &self.then_branch
        } else {
            &self.else_branch
        };
        let captured = branch.captured(&inputs)?;
        branch.run(ctx, Vec::new(), &captured)
    }

    fn is_deterministic(&self) -> bool {
        self.then_branch.graph.is_deterministic() && self.else_branch.graph.is_deterministic()
    }
}

// ----- Loop ---------------------------------------------------------------------------------

/// `Loop`: runs `body` while the condition holds and fewer than `M` iterations ran. Carries
/// `N` values from one iteration to the next (their shapes may change) and stacks the body's
/// `K` scan outputs along a new first axis.
#[derive(Debug, Clone)]
pub struct Loop {
    /// The body: inputs (iteration, condition, N carried), outputs (condition, N carried,
    /// K scan outputs).
    pub body: Body,
    /// Number of loop-carried values.
    pub carried: usize,
    /// Number of scan outputs.
    pub scans: usize,
}

fn build_loop(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let body = Body::from_attr(b, "body")?;
    if b.input_count < 2 {
        return Err(arity_error("Loop inputs (M, cond, ...)", 2, b.input_count));
    }
    let carried = b.input_count - 2;
    if body.inputs() != b.input_count {
        return Err(arity_error(
            "body inputs (iteration, condition, carried values)",
            b.input_count,
            body.inputs(),
        ));
    }
    let scans = body
        .outputs()
        .checked_sub(1 + carried)
        .ok_or_else(|| arity_error("body outputs (at least)", 1 + carried, body.outputs()))?;
    if b.output_count > carried + scans {
        return Err(arity_error(
            "Loop outputs (at most)",
            carried + scans,
            b.output_count,
        ));
    }
    Ok(Box::new(Loop {
        body,
        carried,
        scans,
    }))
}

/// The state of a running loop.
struct LoopState {
    carried: Vec<Value>,
    scans: Vec<Vec<Tensor>>,
}

impl Loop {
    /// Runs one iteration; returns the body's new condition.
    fn step(
        &self,
        ctx: &EvalCtx<'_>,
        state: &mut LoopState,
        iteration: i64,
        cond: bool,
        captured: &[Value],
    ) -> OpResult<bool> {
        let mut inputs = vec![
            Value::Tensor(Tensor::scalar(iteration)),
            Value::Tensor(Tensor::from_bools(&[cond], &[])?),
        ];
        inputs.append(&mut state.carried);
        let mut outputs = self.body.run(ctx, inputs, captured)?.into_iter();
        let next = match outputs.next() {
            Some(Value::Tensor(t)) => condition(&t, 0)
                .map_err(|e| OpError::BadSubgraph(format!("body condition output: {e}")))?,
            _ => {
                return Err(OpError::BadSubgraph(
                    "body condition must be a tensor".into(),
                ))
            }
        };
        state.carried = outputs.by_ref().take(self.carried).collect();
        for (k, value) in outputs.enumerate() {
            let t = tensor_output(&self.body, 1 + self.carried + k, value)?;
            if let Some(list) = state.scans.get_mut(k) {
                list.push(t);
            }
        }
        Ok(next)
    }
}

impl Operator for Loop {
    op_boilerplate!("Loop");

    fn eval(&self, ctx: &EvalCtx<'_>, mut inputs: Inputs) -> OpResult<Vec<Value>> {
        let max_trips = match inputs.opt_tensor(0)? {
            Some(m) => Some(
                m.to_i64_vec()?
                    .first()
                    .copied()
                    .ok_or_else(|| OpError::invalid(0, "trip count M must have one element"))?,
            ),
            None => None,
        };
        let mut cond = match inputs.opt_tensor(1)? {
            Some(c) => condition(c, 1)?,
            None => true,
        };
        let captured = self.body.captured(&inputs)?;
        let mut state = LoopState {
            carried: (2..2 + self.carried)
                .map(|i| inputs.take(i).ok_or(OpError::MissingInput { index: i }))
                .collect::<OpResult<_>>()?,
            scans: vec![Vec::new(); self.scans],
        };
        let mut iteration = 0i64;
        while cond && max_trips.is_none_or(|m| iteration < m) {
            cond = self.step(ctx, &mut state, iteration, cond, &captured)?;
            iteration += 1;
        }
        let mut outputs = state.carried;
        for (k, parts) in state.scans.iter().enumerate() {
            let (dtype, rest) = declared_element(&self.body, 1 + self.carried + k);
            outputs.push(Value::Tensor(stack(ctx, parts, 0, dtype, &rest)?));
        }
        Ok(outputs)
    }

    fn is_deterministic(&self) -> bool {
        self.body.graph.is_deterministic()
    }
}

// ----- Scan ---------------------------------------------------------------------------------

/// How one scan input is read or one scan output written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanAxis {
    /// The axis (negative counts from the end).
    pub axis: i64,
    /// Whether iteration runs from the end.
    pub reverse: bool,
}

/// `Scan` (opset 9 on): runs `body` once per slice of the scan inputs along their scan axes,
/// carrying `N` state values and stacking the `K` scan outputs along their output axes.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The body: inputs (N states, M scan slices), outputs (N states, K scan slices).
    pub body: Body,
    /// Number of state values.
    pub states: usize,
    /// Per scan input.
    pub inputs: Vec<ScanAxis>,
    /// Per scan output.
    pub outputs: Vec<ScanAxis>,
}

/// The axes (attribute `axes`, all 0 when `None` or absent) and directions of `count` scan
/// inputs or outputs.
fn scan_axes(
    b: &BuildCtx<'_>,
    axes: Option<&str>,
    dirs: &str,
    count: usize,
) -> OpResult<Vec<ScanAxis>> {
    let axes_v = match axes {
        Some(name) => b.attrs.ints(name)?,
        None => None,
    }
    .unwrap_or_else(|| vec![0; count]);
    let dirs_v = b.attrs.ints(dirs)?.unwrap_or_else(|| vec![0; count]);
    if axes_v.len() != count {
        return Err(OpError::attribute(
            axes.unwrap_or_default(),
            format!("expected {count} values"),
        ));
    }
    if dirs_v.len() != count || dirs_v.iter().any(|d| !matches!(d, 0 | 1)) {
        return Err(OpError::attribute(
            dirs,
            format!("expected {count} values of 0 or 1"),
        ));
    }
    Ok(axes_v
        .into_iter()
        .zip(dirs_v)
        .map(|(axis, d)| ScanAxis {
            axis,
            reverse: d == 1,
        })
        .collect())
}

/// The body and the split of its inputs into `(states, scan inputs)`, checked against a node
/// with `listed` state and scan inputs.
fn scan_body(b: &BuildCtx<'_>, listed: usize) -> OpResult<(Body, usize, usize)> {
    let body = Body::from_attr(b, "body")?;
    let m = b
        .attrs
        .int("num_scan_inputs")?
        .and_then(|m| usize::try_from(m).ok())
        .filter(|&m| m > 0 && m <= listed)
        .ok_or_else(|| OpError::attribute("num_scan_inputs", format!("must be in 1..={listed}")))?;
    if body.inputs() != listed {
        return Err(arity_error(
            "body inputs (states and scan slices)",
            listed,
            body.inputs(),
        ));
    }
    let states = listed - m;
    if body.outputs() < states {
        return Err(arity_error(
            "body outputs (at least)",
            states,
            body.outputs(),
        ));
    }
    Ok((body, states, m))
}

fn build_scan(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let (body, states, m) = scan_body(b, b.input_count)?;
    let k = body.outputs() - states;
    Ok(Box::new(Scan {
        inputs: scan_axes(b, Some("scan_input_axes"), "scan_input_directions", m)?,
        outputs: scan_axes(b, Some("scan_output_axes"), "scan_output_directions", k)?,
        body,
        states,
    }))
}

/// A scan input with its axis resolved.
struct ScanInput {
    tensor: Tensor,
    axis: usize,
    reverse: bool,
}

/// The states and per-output slices of one scan.
struct ScanResult {
    states: Vec<Value>,
    slices: Vec<Vec<Tensor>>,
}

impl Scan {
    /// Runs the body over `len` steps of the scan inputs (each with its resolved axis).
    fn run_steps(
        &self,
        ctx: &EvalCtx<'_>,
        mut states: Vec<Value>,
        scan_inputs: &[ScanInput],
        len: usize,
        captured: &[Value],
    ) -> OpResult<ScanResult> {
        let mut slices = vec![Vec::with_capacity(len); self.outputs.len()];
        for step in 0..len {
            let mut inputs = std::mem::take(&mut states);
            for input in scan_inputs {
                let at = if input.reverse { len - 1 - step } else { step };
                inputs.push(Value::Tensor(take_along(&input.tensor, input.axis, at)?));
            }
            let mut outputs = self.body.run(ctx, inputs, captured)?.into_iter();
            states = outputs.by_ref().take(self.states).collect();
            for (k, value) in outputs.enumerate() {
                let t = tensor_output(&self.body, self.states + k, value)?;
                if let Some(list) = slices.get_mut(k) {
                    list.push(t);
                }
            }
        }
        Ok(ScanResult { states, slices })
    }

    /// Resolves the scan inputs' axes and their common length.
    fn resolve_inputs(&self, tensors: Vec<(usize, Tensor)>) -> OpResult<(Vec<ScanInput>, usize)> {
        let mut len = None;
        let mut resolved = Vec::with_capacity(tensors.len());
        for ((index, t), spec) in tensors.into_iter().zip(&self.inputs) {
            let axis = normalize_axis(spec.axis, t.rank()).map_err(|_| {
                OpError::invalid(
                    index,
                    format!(
                        "scan axis {} is out of range for shape {:?}",
                        spec.axis,
                        t.shape()
                    ),
                )
            })?;
            let n = t.shape()[axis];
            if *len.get_or_insert(n) != n {
                return Err(OpError::invalid(
                    index,
                    format!("scan length {n} differs from {}", len.unwrap_or(0)),
                ));
            }
            resolved.push(ScanInput {
                tensor: t,
                axis,
                reverse: spec.reverse,
            });
        }
        Ok((resolved, len.unwrap_or(0)))
    }

    /// Stacks each scan output's slices along its axis and direction.
    fn stack_outputs(&self, ctx: &EvalCtx<'_>, slices: Vec<Vec<Tensor>>) -> OpResult<Vec<Value>> {
        let mut out = Vec::with_capacity(slices.len());
        for (k, (mut parts, spec)) in slices.into_iter().zip(&self.outputs).enumerate() {
            if spec.reverse {
                parts.reverse();
            }
            let (dtype, rest) = declared_element(&self.body, self.states + k);
            let rank = parts.first().map_or(rest.len(), Tensor::rank) + 1;
            let axis = normalize_axis(spec.axis, rank).map_err(|_| {
                OpError::attribute(
                    "scan_output_axes",
                    format!("{} is out of range for rank {rank}", spec.axis),
                )
            })?;
            out.push(Value::Tensor(stack(ctx, &parts, axis, dtype, &rest)?));
        }
        Ok(out)
    }
}

impl Operator for Scan {
    op_boilerplate!("Scan");

    fn eval(&self, ctx: &EvalCtx<'_>, mut inputs: Inputs) -> OpResult<Vec<Value>> {
        let captured = self.body.captured(&inputs)?;
        let states = (0..self.states)
            .map(|i| inputs.take(i).ok_or(OpError::MissingInput { index: i }))
            .collect::<OpResult<Vec<_>>>()?;
        let tensors = (self.states..self.states + self.inputs.len())
            .map(|i| Ok((i, inputs.tensor(i)?.clone())))
            .collect::<OpResult<Vec<_>>>()?;
        let (scan_inputs, len) = self.resolve_inputs(tensors)?;
        let result = self.run_steps(ctx, states, &scan_inputs, len, &captured)?;
        let mut out = result.states;
        out.extend(self.stack_outputs(ctx, result.slices)?);
        Ok(out)
    }

    fn is_deterministic(&self) -> bool {
        self.body.graph.is_deterministic()
    }
}

// ----- Scan 8 -------------------------------------------------------------------------------

/// `Scan` at opset 8: every state and scan input has a leading batch axis, scan inputs are
/// scanned along axis 1, and optional input 0 gives each batch entry's sequence length
/// (shorter sequences leave zeros in the scan outputs).
#[derive(Debug, Clone)]
pub struct Scan8 {
    /// The per-batch-entry scan (axes 0 after the batch axis is removed).
    pub inner: Scan,
}

fn build_scan8(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let listed = b
        .input_count
        .checked_sub(1)
        .ok_or(OpError::MissingInput { index: 1 })?;
    let (body, states, m) = scan_body(b, listed)?;
    let dirs = scan_axes(b, None, "directions", m)?;
    let k = body.outputs() - states;
    Ok(Box::new(Scan8 {
        inner: Scan {
            inputs: dirs,
            outputs: vec![
                ScanAxis {
                    axis: 0,
                    reverse: false
                };
                k
            ],
            body,
            states,
        },
    }))
}

impl Scan8 {
    /// Runs batch entry `b`; scan outputs are padded with zeros to `max_len` steps.
    fn run_entry(
        &self,
        ctx: &EvalCtx<'_>,
        inputs: &Inputs,
        entry: usize,
        lens: Option<&[i64]>,
        captured: &[Value],
    ) -> OpResult<(Vec<Tensor>, Vec<Tensor>)> {
        let s = &self.inner;
        let states = (1..=s.states)
            .map(|i| Ok(Value::Tensor(take_along(inputs.tensor(i)?, 0, entry)?)))
            .collect::<OpResult<Vec<_>>>()?;
        let tensors = (1 + s.states..1 + s.states + s.inputs.len())
            .map(|i| Ok((i, take_along(inputs.tensor(i)?, 0, entry)?)))
            .collect::<OpResult<Vec<_>>>()?;
        let (scan_inputs, max_len) = s.resolve_inputs(tensors)?;
        let len = match lens {
            None => max_len,
            Some(l) => l
                .get(entry)
                .and_then(|&n| usize::try_from(n).ok())
                .filter(|&n| n <= max_len)
                .ok_or_else(|| {
                    OpError::invalid(
                        0,
                        format!("sequence length of entry {entry} is out of 0..={max_len}"),
                    )
                })?,
        };
        let result = s.run_steps(ctx, states, &scan_inputs, len, captured)?;
        let states = result
            .states
            .into_iter()
            .enumerate()
            .map(|(i, v)| tensor_output(&s.body, i, v))
            .collect::<OpResult<Vec<_>>>()?;
        let mut outs = Vec::with_capacity(result.slices.len());
        for (k, mut parts) in result.slices.into_iter().enumerate() {
            let (dtype, rest) = declared_element(&s.body, s.states + k);
            if let Some(first) = parts.first().cloned() {
                while parts.len() < max_len {
                    parts.push(ctx.alloc(first.dtype(), first.shape())?);
                }
            }
            outs.push(stack(ctx, &parts, 0, dtype, &rest)?);
        }
        Ok((states, outs))
    }
}

impl Operator for Scan8 {
    op_boilerplate!("Scan");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let s = &self.inner;
        let captured = s.body.captured(&inputs)?;
        let lens = inputs.opt_tensor(0)?.map(Tensor::to_i64_vec).transpose()?;
        let first = inputs.tensor(1)?;
        let batch = *first
            .shape()
            .first()
            .ok_or_else(|| OpError::invalid(1, "Scan-8 inputs need a batch axis"))?;
        let mut per_output: Vec<Vec<Tensor>> = vec![Vec::new(); s.body.outputs()];
        for entry in 0..batch {
            let (states, scans) =
                self.run_entry(ctx, &inputs, entry, lens.as_deref(), &captured)?;
            for (list, t) in per_output.iter_mut().zip(states.into_iter().chain(scans)) {
                list.push(t);
            }
        }
        per_output
            .iter()
            .enumerate()
            .map(|(k, parts)| {
                let (dtype, rest) = declared_element(&s.body, k);
                Ok(Value::Tensor(stack(ctx, parts, 0, dtype, &rest)?))
            })
            .collect()
    }

    fn is_deterministic(&self) -> bool {
        self.inner.body.graph.is_deterministic()
    }
}

// ----- SequenceMap --------------------------------------------------------------------------

/// `SequenceMap`: runs `body` once per element of the input sequence. Additional inputs that
/// are sequences are walked alongside (same length); tensors are passed whole each time. Each
/// body output is collected into an output sequence.
#[derive(Debug, Clone)]
pub struct SequenceMap {
    /// The body: one input per node input, one output per node output.
    pub body: Body,
}

fn build_sequence_map(b: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let body = Body::from_attr(b, "body")?;
    if body.inputs() != b.input_count {
        return Err(arity_error(
            "body inputs (one per node input)",
            b.input_count,
            body.inputs(),
        ));
    }
    if body.outputs() != b.output_count {
        return Err(arity_error(
            "body outputs (one per node output)",
            b.output_count,
            body.outputs(),
        ));
    }
    Ok(Box::new(SequenceMap { body }))
}

impl SequenceMap {
    /// The body inputs of step `i`.
    fn step_inputs(&self, inputs: &Inputs, i: usize, len: usize) -> OpResult<Vec<Value>> {
        (0..self.body.inputs())
            .map(|j| match inputs.value(j) {
                Some(Value::Sequence(s)) if s.len() == len => s
                    .get(i)
                    .cloned()
                    .map(Value::Tensor)
                    .ok_or(OpError::MissingInput { index: j }),
                Some(Value::Sequence(s)) => Err(OpError::invalid(
                    j,
                    format!("sequence of {} tensors, expected {len}", s.len()),
                )),
                Some(Value::Tensor(t)) if j > 0 => Ok(Value::Tensor(t.clone())),
                Some(other) => Err(OpError::invalid(
                    j,
                    format!("expected a sequence or tensor, got {}", other.describe()),
                )),
                None => Err(OpError::MissingInput { index: j }),
            })
            .collect()
    }
}

impl Operator for SequenceMap {
    op_boilerplate!("SequenceMap");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let len = match inputs.value(0) {
            Some(Value::Sequence(s)) => s.len(),
            Some(other) => {
                return Err(OpError::invalid(
                    0,
                    format!("expected a sequence, got {}", other.describe()),
                ))
            }
            None => return Err(OpError::MissingInput { index: 0 }),
        };
        let captured = self.body.captured(&inputs)?;
        let mut outputs = vec![Vec::with_capacity(len); self.body.outputs()];
        for i in 0..len {
            let step = self
                .body
                .run(ctx, self.step_inputs(&inputs, i, len)?, &captured)?;
            for (k, (list, value)) in outputs.iter_mut().zip(step).enumerate() {
                list.push(tensor_output(&self.body, k, value)?);
            }
        }
        Ok(outputs.into_iter().map(Value::Sequence).collect())
    }

    fn is_deterministic(&self) -> bool {
        self.body.graph.is_deterministic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes, Fact};

    type BodyFn = fn(Vec<Value>, &[Value]) -> OpResult<Vec<Value>>;

    /// A body computed by a Rust function.
    #[derive(Debug)]
    struct FnBody {
        inputs: Vec<String>,
        outputs: Vec<String>,
        facts: Vec<Fact>,
        captures: Vec<String>,
        f: BodyFn,
    }

    impl SubgraphBody for FnBody {
        fn input_names(&self) -> &[String] {
            &self.inputs
        }
        fn output_names(&self) -> &[String] {
            &self.outputs
        }
        fn output_facts(&self) -> &[Fact] {
            &self.facts
        }
        fn captures(&self) -> &[String] {
            &self.captures
        }
        fn run(
            &self,
            _: &EvalCtx<'_>,
            inputs: Vec<Value>,
            captured: &[Value],
        ) -> OpResult<Vec<Value>> {
            (self.f)(inputs, captured)
        }
    }

    fn body(inputs: usize, outputs: usize, captures: &[&str], f: BodyFn) -> Attribute {
        let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect();
        Attribute::Graph(Subgraph(Arc::new(FnBody {
            inputs: names("in", inputs),
            outputs: names("out", outputs),
            facts: vec![Fact::known(DType::F32, &[2]); outputs],
            captures: captures.iter().map(|c| c.to_string()).collect(),
            f,
        })))
    }

    fn build(
        builder: OpBuilder,
        attrs: &Attributes,
        inputs: usize,
        outputs: usize,
    ) -> OpResult<Box<dyn Operator>> {
        builder(&BuildCtx {
            node_name: "n",
            op_type: "ControlFlow",
            domain: "",
            opset: 17,
            attrs,
            input_count: inputs,
            output_count: outputs,
        })
    }

    fn t(data: &[f32], shape: &[usize]) -> Value {
        Value::Tensor(Tensor::from_vec(data.to_vec(), shape).unwrap())
    }

    fn floats(v: &Value) -> (Vec<usize>, Vec<f32>) {
        let t = v.as_tensor().unwrap();
        (t.shape().to_vec(), t.contiguous().to_vec::<f32>().unwrap())
    }

    fn tensor(v: &Value) -> &Tensor {
        v.as_tensor().unwrap()
    }

    fn add(a: &Value, b: &Value) -> Value {
        let (shape, x) = floats(a);
        let (_, y) = floats(b);
        let sum: Vec<f32> = x.iter().zip(y.iter().cycle()).map(|(a, b)| a + b).collect();
        t(&sum, &shape)
    }

    use crate::OpBuilder;

    #[test]
    fn if_runs_the_chosen_branch_with_captures() {
        let attrs = Attributes::new()
            .with(
                "then_branch",
                body(0, 1, &["x"], |_, c| Ok(vec![c[0].clone()])),
            )
            .with(
                "else_branch",
                body(0, 1, &["y"], |_, c| Ok(vec![c[0].clone()])),
            );
        let op = build(build_if, &attrs, 1, 1).unwrap();
        // captures follow the listed input, sorted by name: x then y
        for (cond, expected) in [(true, 1.0), (false, 2.0)] {
            let inputs = Inputs::new(vec![
                Some(Value::Tensor(Tensor::from_bools(&[cond], &[]).unwrap())),
                Some(t(&[1.0], &[1])),
                Some(t(&[2.0], &[1])),
            ]);
            let out = op.eval(&EvalCtx::default(), inputs).unwrap();
            assert_eq!(floats(&out[0]).1, vec![expected]);
        }
        let bad = Inputs::new(vec![Some(Value::Tensor(
            Tensor::from_bools(&[true, false], &[2]).unwrap(),
        ))]);
        assert!(op.eval(&EvalCtx::default(), bad).is_err());
        let err = build(build_if, &attrs, 1, 2).unwrap_err().to_string();
        assert!(err.contains("then_branch outputs"), "{err}");
    }

    /// Loop body: carried + iteration, scan output = carried; stops when carried > 4.
    fn counting(inputs: Vec<Value>, _: &[Value]) -> OpResult<Vec<Value>> {
        let i = tensor(&inputs[0]).to_i64_vec()?[0] as f32;
        let next = add(&inputs[2], &t(&[i], &[1]));
        let go = floats(&next).1[0] <= 4.0;
        Ok(vec![
            Value::Tensor(Tensor::from_bools(&[go], &[])?),
            next.clone(),
            next,
        ])
    }

    #[test]
    fn loop_carries_values_stacks_scans_and_stops() {
        let attrs = Attributes::new().with("body", body(3, 3, &[], counting));
        let op = build(build_loop, &attrs, 3, 2).unwrap();
        let run = |m: Option<i64>| {
            let inputs = Inputs::new(vec![
                m.map(|m| Value::Tensor(Tensor::scalar(m))),
                None,
                Some(t(&[0.0, 10.0], &[2])),
            ]);
            op.eval(&EvalCtx::default(), inputs).unwrap()
        };
        let out = run(Some(2));
        assert_eq!(floats(&out[0]), (vec![2], vec![1.0, 11.0]));
        assert_eq!(floats(&out[1]), (vec![2, 2], vec![0.0, 10.0, 1.0, 11.0]));
        // without M the condition stops it: 0, 1, 3, 6 (> 4)
        let out = run(None);
        assert_eq!(floats(&out[0]).1, vec![6.0, 16.0]);
        assert_eq!(floats(&out[1]).0, vec![4, 2]);
        // zero trips: initial values and an empty stack of the declared element shape
        let out = run(Some(0));
        assert_eq!(floats(&out[0]).1, vec![0.0, 10.0]);
        assert_eq!(floats(&out[1]).0, vec![0, 2]);
        assert!(build(build_loop, &attrs, 2, 1).is_err());
    }

    #[test]
    fn loop_rejects_non_tensor_scan_outputs() {
        let attrs = Attributes::new().with(
            "body",
            body(2, 2, &[], |_, _| {
                Ok(vec![
                    Value::Tensor(Tensor::from_bools(&[false], &[])?),
                    Value::Sequence(Vec::new()),
                ])
            }),
        );
        let op = build(build_loop, &attrs, 2, 1).unwrap();
        let err = op
            .eval(&EvalCtx::default(), Inputs::new(vec![None, None]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a tensor"), "{err}");
    }

    /// Scan body: state + slice, and the new state as scan output.
    fn running_sum(inputs: Vec<Value>, _: &[Value]) -> OpResult<Vec<Value>> {
        let s = add(&inputs[0], &inputs[1]);
        Ok(vec![s.clone(), s])
    }

    #[test]
    fn scan_honours_axes_and_directions() {
        let attrs = Attributes::new()
            .with("body", body(2, 2, &[], running_sum))
            .with("num_scan_inputs", Attribute::Int(1))
            .with("scan_input_axes", Attribute::Ints(vec![1]))
            .with("scan_input_directions", Attribute::Ints(vec![1]))
            .with("scan_output_axes", Attribute::Ints(vec![-1]));
        let op = build(build_scan, &attrs, 2, 2).unwrap();
        // x is [2, 3]: scanned along axis 1 from the end: columns [3,6], [2,5], [1,4]
        let inputs = Inputs::new(vec![
            Some(t(&[0.0, 0.0], &[2])),
            Some(t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])),
        ]);
        let out = op.eval(&EvalCtx::default(), inputs).unwrap();
        assert_eq!(floats(&out[0]).1, vec![6.0, 15.0]);
        // stacked along the last axis: [[3, 5, 6], [6, 11, 15]]
        assert_eq!(
            floats(&out[1]),
            (vec![2, 3], vec![3.0, 5.0, 6.0, 6.0, 11.0, 15.0])
        );
        let bad = attrs.clone().with("num_scan_inputs", Attribute::Int(3));
        assert!(build(build_scan, &bad, 2, 2).is_err());
    }

    #[test]
    fn scan8_walks_each_batch_entry_up_to_its_length() {
        let attrs = Attributes::new()
            .with("body", body(2, 2, &[], running_sum))
            .with("num_scan_inputs", Attribute::Int(1));
        let op = build(build_scan8, &attrs, 3, 2).unwrap();
        // batch 2, sequence 2, element [1]; entry 1 only runs one step
        let inputs = Inputs::new(vec![
            Some(Value::Tensor(
                Tensor::from_vec(vec![2i64, 1], &[2]).unwrap(),
            )),
            Some(t(&[0.0, 100.0], &[2, 1])),
            Some(t(&[1.0, 2.0, 3.0, 4.0], &[2, 2, 1])),
        ]);
        let out = op.eval(&EvalCtx::default(), inputs).unwrap();
        assert_eq!(floats(&out[0]), (vec![2, 1], vec![3.0, 103.0]));
        assert_eq!(floats(&out[1]), (vec![2, 2, 1], vec![1.0, 3.0, 103.0, 0.0]));
    }

    #[test]
    fn scan8_rejects_inputs_without_a_batch_axis() {
        let attrs = Attributes::new()
            .with("body", body(2, 2, &[], running_sum))
            .with("num_scan_inputs", Attribute::Int(1));
        let op = build(build_scan8, &attrs, 3, 2).unwrap();
        let inputs = Inputs::new(vec![
            None,
            Some(Value::Tensor(Tensor::scalar(1.0f32))),
            Some(t(&[1.0, 2.0], &[1, 2])),
        ]);
        let err = op
            .eval(&EvalCtx::default(), inputs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch axis") || err.contains("cannot take"),
            "{err}"
        );
    }

    #[test]
    fn sequence_map_walks_sequences_and_repeats_tensors() {
        let attrs = Attributes::new().with(
            "body",
            body(2, 1, &[], |inputs, _| Ok(vec![add(&inputs[0], &inputs[1])])),
        );
        let op = build(build_sequence_map, &attrs, 2, 1).unwrap();
        let seq = |v: &[f32]| {
            Value::Sequence(
                v.iter()
                    .map(|&x| Tensor::from_vec(vec![x], &[1]).unwrap())
                    .collect(),
            )
        };
        let out = op
            .eval(
                &EvalCtx::default(),
                Inputs::new(vec![Some(seq(&[1.0, 2.0])), Some(t(&[10.0], &[1]))]),
            )
            .unwrap();
        let Value::Sequence(s) = &out[0] else {
            panic!("expected a sequence")
        };
        let got: Vec<f32> = s.iter().map(|t| t.to_vec::<f32>().unwrap()[0]).collect();
        assert_eq!(got, vec![11.0, 12.0]);
        let err = op
            .eval(
                &EvalCtx::default(),
                Inputs::new(vec![Some(seq(&[1.0, 2.0])), Some(seq(&[1.0]))]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 2"), "{err}");
    }
}
