//! Model inputs for `run` and `bench`: read from `.npy` / `.pb` files given by name or in
//! graph order, or generated at random with a seed, with `--dim SYMBOL=N` for symbolic dims.

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::Path;
use strata::{DType, Dim, IoInfo, Model, OnnxError, StrataError, Tensor};

/// Options shared by the commands that feed a model.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// An input as NAME=FILE, or FILE for the next input in graph order (.npy or .pb).
    #[arg(long = "input", short = 'i', value_name = "[NAME=]FILE")]
    pub inputs: Vec<String>,
    /// Generate the inputs not given as files with seeded random values.
    #[arg(long)]
    pub random: bool,
    /// Seed for --random.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Size of a symbolic dimension, as SYMBOL=N (repeatable).
    #[arg(long = "dim", value_name = "SYMBOL=N")]
    pub dims: Vec<String>,
}

/// Parses `--dim` values.
pub fn dim_bindings(dims: &[String]) -> Result<BTreeMap<String, usize>> {
    dims.iter()
        .map(|d| {
            let (name, value) = d
                .split_once('=')
                .ok_or_else(|| anyhow!("--dim '{d}' must be SYMBOL=N"))?;
            let n = value
                .parse()
                .map_err(|_| anyhow!("--dim '{d}': '{value}' is not a size"))?;
            Ok((name.to_string(), n))
        })
        .collect()
}

/// Loads a model; errors other than a failed read (which names the file already) are
/// prefixed with the file's path, so that "not a valid ONNX model" says which file.
pub fn load_model(path: &Path) -> Result<Model> {
    Model::load(path).map_err(|e| match e {
        StrataError::Load(OnnxError::Io { .. }) => e.into(),
        e => anyhow::Error::new(e).context(path.display().to_string()),
    })
}

/// Reads a tensor from a `.npy` or `.pb` file.
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "npy" => strata::io::npy::read(path).with_context(|| format!("reading {}", path.display())),
        "pb" => strata::io::read_tensor_file(path)
            .with_context(|| format!("reading {}", path.display())),
        _ => bail!("input file {} must end in .npy or .pb", path.display()),
    }
}

fn concrete_shape(info: &IoInfo, bindings: &BTreeMap<String, usize>) -> Result<Vec<usize>> {
    let dims = info.dims.as_ref().ok_or_else(|| {
        anyhow!(
            "input '{}' has no declared shape; give it as a file",
            info.name
        )
    })?;
    Ok(dims
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Symbol(s) => bindings.get(s).copied().unwrap_or(1),
        })
        .collect())
}

/// A seeded random tensor of `dtype` and `shape`: standard normal floats, small non-negative
/// integers (valid as indices into most tables), random bools.
pub fn random_tensor(dtype: DType, shape: &[usize], rng: &mut impl Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let t = match dtype {
        DType::Bool => Tensor::from_bools(
            &(0..n).map(|_| rng.gen_bool(0.5)).collect::<Vec<_>>(),
            shape,
        )?,
        DType::String => Tensor::from_strings((0..n).map(|i| format!("s{i}")).collect(), shape)?,
        d if d.is_float() => {
            let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
            Tensor::from_vec(v, shape)?.cast(d)?
        }
        d => {
            let v: Vec<i64> = (0..n).map(|_| rng.gen_range(0..10)).collect();
            Tensor::from_vec(v, shape)?.cast(d)?
        }
    };
    Ok(t)
}

/// The inputs for one run, named and in graph order.
pub fn gather(
    model: &Model,
    args: &InputArgs,
    random_by_default: bool,
) -> Result<Vec<(String, Tensor)>> {
    let infos = model.inputs();
    let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    let mut given: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut next_positional = 0;
    for spec in &args.inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if names.contains(&n) => (n.to_string(), f),
            Some((n, _)) if !Path::new(spec).exists() => {
                bail!(
                    "unknown input '{n}'; the model's inputs are: {}",
                    names.join(", ")
                )
            }
            _ => {
                let name = names.get(next_positional).ok_or_else(|| {
                    anyhow!(
                        "{} inputs given but the model has {}",
                        next_positional + 1,
                        names.len()
                    )
                })?;
                next_positional += 1;
                (name.to_string(), spec.as_str())
            }
        };
        given.insert(name, read_tensor(Path::new(file))?);
    }
    let bindings = dim_bindings(&args.dims)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut out = Vec::with_capacity(infos.len());
    for info in &infos {
        if let Some(t) = given.remove(&info.name) {
            out.push((info.name.clone(), t));
        } else if args.random || random_by_default {
            let shape = concrete_shape(info, &bindings)?;
            out.push((
                info.name.clone(),
                random_tensor(info.dtype.unwrap_or(DType::F32), &shape, &mut rng)?,
            ));
        } else {
            bail!(
                "missing input '{}' (give --input {}=FILE or --random)",
                info.name,
                info.name
            );
        }
    }
    Ok(out)
}
