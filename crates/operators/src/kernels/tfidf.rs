//! `TfIdfVectorizer`: counts the n-grams of a pool (integers or strings) in each row of the
//! input, with optional skips between items, and weights the counts (TF, IDF or TF-IDF).
//! The pool is loaded once at build time into a trie keyed by item.

use crate::{BuildCtx, EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};
use std::collections::HashMap;
use strata_tensor::{DType, Tensor};

/// Registers `TfIdfVectorizer`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "TfIdfVectorizer", 9, build);
}

/// One pool item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Int(i64),
    Str(String),
}

/// A trie node: the n-gram id ending here (0 for none) and the continuations.
#[derive(Debug, Clone, Default)]
struct Node {
    id: usize,
    next: HashMap<Item, usize>,
}

/// Weighting of the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Raw counts.
    Tf,
    /// The weight (or 1) where the count is non-zero.
    Idf,
    /// Weight times count.
    TfIdf,
}

/// The `TfIdfVectorizer` op.
#[derive(Debug, Clone)]
pub struct TfIdfVectorizer {
    nodes: Vec<Node>,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    /// Output column of each n-gram id (minus one).
    indexes: Vec<usize>,
    out_size: usize,
    weights: Vec<f32>,
    mode: Weighting,
}

fn usize_attr(ctx: &BuildCtx<'_>, name: &str) -> OpResult<usize> {
    let v = ctx
        .attrs
        .int(name)?
        .ok_or_else(|| OpError::attribute(name, "required"))?;
    usize::try_from(v).map_err(|_| OpError::attribute(name, format!("{v} is negative")))
}

fn build(ctx: &BuildCtx<'_>) -> OpResult<Box<dyn Operator>> {
    let a = ctx.attrs;
    let mode = match a.string_or("mode", "")?.as_str() {
        "TF" => Weighting::Tf,
        "IDF" => Weighting::Idf,
        "TFIDF" => Weighting::TfIdf,
        m => {
            return Err(OpError::attribute(
                "mode",
                format!("'{m}' is not TF, IDF or TFIDF"),
            ))
        }
    };
    let pool: Vec<Item> = match (a.ints("pool_int64s")?, a.strings("pool_strings")?) {
        (Some(v), None) => v.into_iter().map(Item::Int).collect(),
        (None, Some(v)) => v.into_iter().map(Item::Str).collect(),
        _ => {
            return Err(OpError::attribute(
                "pool_int64s",
                "exactly one of pool_int64s and pool_strings is required",
            ))
        }
    };
    let indexes = a
        .ints("ngram_indexes")?
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            usize::try_from(i)
                .map_err(|_| OpError::attribute("ngram_indexes", format!("{i} is negative")))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let out_size = indexes.iter().max().map_or(0, |m| m + 1);
    let counts = a.ints("ngram_counts")?.unwrap_or_default();
    let mut op = TfIdfVectorizer {
        nodes: vec![Node::default()],
        min_gram: usize_attr(ctx, "min_gram_length")?,
        max_gram: usize_attr(ctx, "max_gram_length")?,
        max_skip: usize_attr(ctx, "max_skip_count")?,
        indexes,
        out_size,
        weights: a.floats("weights")?.unwrap_or_default(),
        mode,
    };
    op.load_pool(&pool, &counts)?;
    Ok(Box::new(op))
}

impl TfIdfVectorizer {
    /// Loads the n-grams of each size whose length is in `min_gram..=max_gram`; ids count
    /// every pool n-gram in order (from 1) so they index `ngram_indexes`.
    fn load_pool(&mut self, pool: &[Item], counts: &[i64]) -> OpResult<()> {
        let mut id = 1;
        for (i, &start) in counts.iter().enumerate() {
            let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
            let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
                return Err(OpError::attribute(
                    "ngram_counts",
                    format!("{counts:?} has negative entries"),
                ));
            };
            let grams = pool.get(start..end.max(start)).ok_or_else(|| {
                OpError::attribute(
                    "ngram_counts",
                    format!("{counts:?} does not fit a pool of {}", pool.len()),
                )
            })?;
            let size = i + 1;
            let count = grams.len() / size;
            if (self.min_gram..=self.max_gram).contains(&size) {
                for gram in grams.chunks_exact(size) {
                    self.insert(gram, id);
                    id += 1;
                }
            } else {
                id += count;
            }
        }
        if id - 1 > self.indexes.len() {
            return Err(OpError::attribute(
                "ngram_indexes",
                format!("{} entries for {} n-grams", self.indexes.len(), id - 1),
            ));
        }
        Ok(())
    }

    fn insert(&mut self, gram: &[Item], id: usize) {
        let mut at = 0;
        for item in gram {
            let fresh = self.nodes.len();
            let next = *self.nodes[at].next.entry(item.clone()).or_insert(fresh);
            if next == fresh {
                self.nodes.push(Node::default());
            }
            at = next;
        }
        self.nodes[at].id = id;
    }

    /// Counts the n-grams of one row into `freq` (one slot per output column).
    fn count_row(&self, row: &[Item], freq: &mut [u64]) {
        let mut start_size = self.min_gram.max(1);
        for skip in 1..=self.max_skip + 1 {
            for begin in 0..row.len() {
                if begin + skip * (start_size - 1) >= row.len() {
                    break;
                }
                let mut at = 0;
                let mut size = 1;
                let mut pos = begin;
                while size <= self.max_gram {
                    let Some(next) = row.get(pos).and_then(|it| self.nodes[at].next.get(it)) else {
                        break;
                    };
                    at = *next;
                    let id = self.nodes[at].id;
                    if size >= start_size && id != 0 {
                        if let Some(f) = self.indexes.get(id - 1).and_then(|&c| freq.get_mut(c)) {
                            *f += 1;
                        }
                    }
                    size += 1;
                    pos += skip;
                }
            }
            // Unigrams do not depend on the skip distance: count them once.
            if start_size == 1 {
                start_size = 2;
                if start_size > self.max_gram {
                    break;
                }
            }
        }
    }

    fn weigh(&self, freq: &[u64]) -> Vec<f32> {
        freq.iter()
            .enumerate()
            .map(|(i, &f)| {
                let w = self.weights.get(i % self.out_size.max(1)).copied();
                match (self.mode, w) {
                    (Weighting::Tf, _) | (Weighting::TfIdf, None) => f as f32,
                    (Weighting::Idf, w) if f > 0 => w.unwrap_or(1.0),
                    (Weighting::Idf, _) => 0.0,
                    (Weighting::TfIdf, Some(w)) => w * f as f32,
                }
            })
            .collect()
    }
}

fn items(x: &Tensor) -> OpResult<Vec<Item>> {
    let x = x.contiguous();
    match x.dtype() {
        DType::String => Ok(x.as_strings()?.iter().cloned().map(Item::Str).collect()),
        DType::I32 | DType::I64 => Ok(x.to_i64_vec()?.into_iter().map(Item::Int).collect()),
        dtype => Err(OpError::UnsupportedDType { index: 0, dtype }),
    }
}

impl Operator for TfIdfVectorizer {
    crate::op_boilerplate!("TfIdfVectorizer");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let (rows, cols, oshape) = match *x.shape() {
            [] => (1, 1, vec![self.out_size]),
            [c] => (1, c, vec![self.out_size]),
            [b, c] if b > 0 => (b, c, vec![b, self.out_size]),
            _ => {
                return Err(OpError::invalid(
                    0,
                    format!(
                        "expected shape [C] or [B, C] with B > 0, got {:?}",
                        x.shape()
                    ),
                ))
            }
        };
        let data = items(x)?;
        let mut freq = vec![0u64; rows * self.out_size];
        if cols > 0 && self.out_size > 0 {
            for (row, f) in data.chunks(cols).zip(freq.chunks_mut(self.out_size)) {
                self.count_row(row, f);
            }
        }
        let values = self.weigh(&freq);
        let mut out = ctx.alloc(DType::F32, &oshape)?;
        out.as_slice_mut::<f32>()?.copy_from_slice(&values);
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes};

    fn op(
        mode: &str,
        min: i64,
        max: i64,
        skip: i64,
        weights: Option<Vec<f32>>,
    ) -> Box<dyn Operator> {
        // Pool: unigrams [2, 3, 5, 4], bigrams [(5, 6), (7, 8), (6, 7)].
        let mut attrs = Attributes::new()
            .with("mode", Attribute::String(mode.into()))
            .with("min_gram_length", Attribute::Int(min))
            .with("max_gram_length", Attribute::Int(max))
            .with("max_skip_count", Attribute::Int(skip))
            .with("ngram_counts", Attribute::Ints(vec![0, 4]))
            .with("ngram_indexes", Attribute::Ints((0..7).collect()))
            .with(
                "pool_int64s",
                Attribute::Ints(vec![2, 3, 5, 4, 5, 6, 7, 8, 6, 7]),
            );
        if let Some(w) = weights {
            attrs.insert("weights", Attribute::Floats(w));
        }
        let ctx = BuildCtx {
            node_name: "",
            op_type: "TfIdfVectorizer",
            domain: "",
            opset: 9,
            attrs: &attrs,
            input_count: 1,
            output_count: 1,
        };
        build(&ctx).unwrap()
    }

    fn eval(op: &dyn Operator, x: Tensor) -> Vec<f32> {
        let out = op
            .eval(&EvalCtx::default(), Inputs::from_tensors([x]))
            .unwrap();
        out[0].as_tensor().unwrap().to_vec::<f32>().unwrap()
    }

    #[test]
    fn counts_unigrams_and_skipped_bigrams() {
        let x = Tensor::from_vec(vec![1i32, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8], &[12]).unwrap();
        // Bigrams only, no skip: (7, 8), (6, 7) and (5, 6) once each.
        let y = eval(&*op("TF", 2, 2, 0, None), x.clone());
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // Unigrams and bigrams with skips up to 5.
        let y = eval(&*op("TF", 1, 2, 5, None), x.clone());
        assert_eq!(y, [0.0, 3.0, 1.0, 0.0, 1.0, 3.0, 1.0]);
        let w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let y = eval(&*op("TFIDF", 2, 2, 0, Some(w.clone())), x.clone());
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0]);
        let y = eval(&*op("IDF", 1, 1, 0, None), x);
        assert_eq!(y, [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn batches_and_rejects_bad_input() {
        let x = Tensor::from_vec(vec![2i64, 3, 3, 4], &[2, 2]).unwrap();
        let o = op("TF", 1, 1, 0, None);
        assert_eq!(
            eval(&*o, x),
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        );
        let bad = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        assert!(o
            .eval(&EvalCtx::default(), Inputs::from_tensors([bad]))
            .is_err());
        let three_d = Tensor::from_vec(vec![1i64], &[1, 1, 1]).unwrap();
        assert!(o
            .eval(&EvalCtx::default(), Inputs::from_tensors([three_d]))
            .is_err());
    }
}
