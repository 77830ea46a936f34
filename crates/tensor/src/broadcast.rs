//! Multidirectional (numpy) broadcasting.

use crate::{Result, Shape, Strides, TensorError};

/// The shape two shapes broadcast to: aligned from the right, each pair of dimensions equal or
/// one of them 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Shape> {
    let rank = a.len().max(b.len());
    let mut out = Shape::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(TensorError::Broadcast {
                    a: a.to_vec(),
                    b: b.to_vec(),
                })
            }
        });
    }
    Ok(out)
}

/// Strides that view a tensor of `shape`/`strides` as `target` (stride 0 on broadcast axes).
pub fn broadcast_strides(shape: &[usize], strides: &[isize], target: &[usize]) -> Result<Strides> {
    if shape.len() > target.len() {
        return Err(TensorError::Broadcast {
            a: shape.to_vec(),
            b: target.to_vec(),
        });
    }
    let lead = target.len() - shape.len();
    let mut out = Strides::from_elem(0, target.len());
    for (i, &t) in target.iter().enumerate().skip(lead) {
        let d = shape[i - lead];
        out[i] = if d == t {
            strides[i - lead]
        } else if d == 1 {
            0
        } else {
            return Err(TensorError::Broadcast {
                a: shape.to_vec(),
                b: target.to_vec(),
            });
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn numpy_rules() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 4], &[3, 1]).unwrap().as_slice(),
            &[2, 3, 4]
        );
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap().as_slice(), &[5]);
        assert_eq!(
            broadcast_shapes(&[0, 1], &[1, 3]).unwrap().as_slice(),
            &[0, 3]
        );
        assert!(broadcast_shapes(&[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn broadcast_view_repeats_values() {
        let t = Tensor::from_vec(vec![1i32, 2, 3], &[3]).unwrap();
        let b = t.broadcast_to(&[2, 3]).unwrap();
        assert_eq!(b.strides(), &[0, 1]);
        assert_eq!(b.to_vec::<i32>().unwrap(), vec![1, 2, 3, 1, 2, 3]);
        assert!(t.broadcast_to(&[2, 4]).is_err());
    }
}
