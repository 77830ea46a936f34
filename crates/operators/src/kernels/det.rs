//! `Det`: determinants of square matrices `[..., M, M]`, by LU decomposition with partial
//! pivoting in f64, cast back to the input dtype.

use super::staging::{f64_output, float_values};
use crate::{EvalCtx, Inputs, OpError, OpRegistry, OpResult, Operator, Value};

/// Registers `Det`.
pub fn register(registry: &mut OpRegistry) {
    registry.register("", "Det", 11, |_| Ok(Box::new(Det)));
}

/// The `Det` op.
#[derive(Debug, Clone, Copy)]
pub struct Det;

/// The determinant of the row-major `m x m` matrix `a` (overwritten).
fn determinant(a: &mut [f64], m: usize) -> f64 {
    let mut det = 1.0;
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&i, &j| a[i * m + col].abs().total_cmp(&a[j * m + col].abs()))
            .unwrap_or(col);
        if a[pivot * m + col] == 0.0 {
            return 0.0;
        }
        if pivot != col {
            for k in 0..m {
                a.swap(pivot * m + k, col * m + k);
            }
            det = -det;
        }
        let p = a[col * m + col];
        det *= p;
        for row in col + 1..m {
            let f = a[row * m + col] / p;
            for k in col..m {
                a[row * m + k] -= f * a[col * m + k];
            }
        }
    }
    det
}

impl Operator for Det {
    crate::op_boilerplate!("Det");

    fn eval(&self, ctx: &EvalCtx<'_>, inputs: Inputs) -> OpResult<Vec<Value>> {
        let x = inputs.tensor(0)?;
        let shape = x.shape();
        let r = shape.len();
        if r < 2 || shape[r - 1] != shape[r - 2] {
            return Err(OpError::invalid(
                0,
                format!("expected square matrices [..., M, M], got {shape:?}"),
            ));
        }
        let m = shape[r - 1];
        let mut data = float_values(x, 0)?;
        let dets: Vec<f64> = if m == 0 {
            vec![1.0; shape[..r - 2].iter().product()]
        } else {
            data.chunks_mut(m * m).map(|a| determinant(a, m)).collect()
        };
        Ok(vec![
            f64_output(ctx, &dets, &shape[..r - 2], x.dtype())?.into()
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::Tensor;

    #[test]
    fn determinants_by_hand() {
        let x =
            Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0], &[2, 2, 2]).unwrap();
        let y = Det
            .eval(&EvalCtx::default(), Inputs::from_tensors([x]))
            .unwrap();
        assert_eq!(
            y[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[-2.0, -1.0]
        );
        let x = Tensor::from_vec(
            vec![2.0f64, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 2.0],
            &[3, 3],
        )
        .unwrap();
        let y = Det
            .eval(&EvalCtx::default(), Inputs::from_tensors([x]))
            .unwrap();
        let d = y[0].as_tensor().unwrap().as_slice::<f64>().unwrap()[0];
        assert!((d - 6.0).abs() < 1e-12, "{d}");
        let bad = Tensor::from_vec(vec![1.0f32; 6], &[2, 3]).unwrap();
        assert!(Det
            .eval(&EvalCtx::default(), Inputs::from_tensors([bad]))
            .is_err());
    }
}
