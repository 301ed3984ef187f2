//! Data-only reader for PyTorch checkpoints (`torch.save`, both the zip format of PyTorch ≥ 1.6
//! and the legacy format before it) and for safetensors files.
//!
//! Nothing pickled is ever executed: [`pickle`] understands only the data opcodes and a fixed
//! whitelist of tensor/storage/container constructors, so a checkpoint that references any
//! other Python callable is refused with an error naming it.
//!
//! Containers, as `torch/serialization.py` writes them:
//! - zip: `<prefix>/data.pkl` (main pickle; storages are persistent ids
//!   `('storage', <Kind>Storage, key, location, numel)`) and `<prefix>/data/<key>` (raw bytes).
//! - legacy: see [`legacy`].
//!
//! Plain pickles of Python objects (NVlabs `persistence` network snapshots, [`persistence`]) are
//! read with unknown classes kept as inert [`Object`]s that were never constructed.
pub mod legacy;
pub mod persistence;
pub mod pickle;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{BenchError, Result};
use pickle::{Obj, StorageDtype, StorageRef};

/// A checkpoint's content as data: what the pickle built, with tensors materialised on the CPU.
#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Insertion-ordered, like the `OrderedDict`s torch saves. Keys are usually strings.
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
    /// A Python object the pickle describes but that was never constructed (see [`Object`]).
    Object(Box<Object>),
    /// A class or function the pickle names as a value (never imported): `module.name`.
    Global(String),
}

/// An object of a class this reader does not know, as data: what would have been called, with
/// which arguments, and the state the pickle then gave it. Nothing was ever called.
#[derive(Debug)]
pub struct Object {
    /// `module.name` of the callee the pickle names; for NVlabs persistence objects the pickled
    /// class name (e.g. `EDMPrecond`), whose module exists only as source text in the file.
    pub class: String,
    /// Made by `torch_utils.persistence._reconstruct_persistent_obj` (see [`persistence`]).
    pub persistent: bool,
    pub args: Vec<Value>,
    pub kwargs: Vec<(Value, Value)>,
    /// BUILD state, or a persistent object's `meta.state`: for a `torch.nn.Module` the instance
    /// `__dict__` (`_parameters`, `_buffers`, `_modules`, attributes). `None` when absent.
    pub state: Value,
    /// Items set on a dict subclass (SETITEMS), e.g. a `dnnlib.EasyDict`.
    pub items: Vec<(Value, Value)>,
    /// Items appended to a list subclass (APPENDS).
    pub list: Vec<Value>,
}

impl Object {
    /// Attribute lookup as Python does it for a `torch.nn.Module`: the instance `__dict__` first,
    /// then `_parameters`, `_buffers`, `_modules`; for dict subclasses, their items.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.state.get(name) {
            return Some(v);
        }
        for table in ["_parameters", "_buffers", "_modules"] {
            if let Some(v) = self.state.get(table).and_then(|t| t.get(name)) {
                return Some(v);
            }
        }
        self.items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == name))
            .map(|(_, v)| v)
    }
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
            Value::Global(_) => "class or function",
        }
    }

    /// The entry under string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a dot-separated path: names index dicts and object attributes ([`Object::attr`]),
    /// numbers index lists/tuples (and int-keyed dicts). The empty path is the value itself.
    /// E.g. `"state_dict"`, `"4"` (the EMA weights in the DDIM authors' `[model, optimizer,
    /// epoch, step, ema]` list), `"model.ema"`, `"ema.model.enc.16x16_conv.weight"`.
    pub fn at(&self, path: &str) -> std::result::Result<&Value, String> {
        let mut v = self;
        if path.is_empty() {
            return Ok(v);
        }
        for step in path.split('.') {
            let next = match v {
                Value::Object(o) => o.attr(step),
                Value::List(items) | Value::Tuple(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Dict(items) => items
                    .iter()
                    .find(|(k, _)| match k {
                        Value::Str(s) => s == step,
                        Value::Int(i) => step.parse::<i64>().ok() == Some(*i),
                        _ => false,
                    })
                    .map(|(_, v)| v),
                _ => None,
            };
            v = next.ok_or_else(|| match v {
                Value::Object(o) => format!("no attribute `{step}` in {} ({})", o.class, describe_entries(v)),
                _ => format!("no entry `{step}` in a {} ({})", v.kind(), describe_entries(v)),
            })?;
        }
        Ok(v)
    }

    /// This value as a state dict: a dict of string keys to tensors; nested dicts of tensors are
    /// flattened with dots (like `nn.Module.state_dict`). Tensors are shallow copies.
    pub fn to_state_dict(&self) -> std::result::Result<BTreeMap<String, Tensor>, String> {
        fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, Tensor>) -> std::result::Result<(), String> {
            let Value::Dict(items) = v else {
                return Err(format!("expected a dict of tensors, found a {}", v.kind()));
            };
            for (k, v) in items {
                let Value::Str(k) = k else {
                    return Err(format!("state dict key of type {} (keys must be strings)", k.kind()));
                };
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    Value::Tensor(t) => {
                        out.insert(name, t.shallow_clone());
                    }
                    Value::Dict(_) => walk(v, &name, out)?,
                    other => return Err(format!("entry `{name}` is a {}, not a tensor", other.kind())),
                }
            }
            Ok(())
        }
        let mut out = BTreeMap::new();
        walk(self, "", &mut out)?;
        Ok(out)
    }

    fn is_tensor_dict(&self) -> bool {
        matches!(self, Value::Dict(items) if !items.is_empty() && items.iter().all(|(k, v)| matches!(k, Value::Str(_)) && matches!(v, Value::Tensor(_))))
    }
}

fn describe_entries(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut names: Vec<String> = vec![];
            if let Value::Dict(items) = &o.state {
                for (k, v) in items {
                    let Value::Str(k) = k else { continue };
                    match (k.as_str(), v) {
                        ("_parameters" | "_buffers" | "_modules", Value::Dict(inner)) => names.extend(
                            inner.iter().filter_map(|(k, _)| if let Value::Str(s) = k { Some(s.clone()) } else { None }),
                        ),
                        (k, _) if !k.starts_with('_') && k != "training" => names.push(k.to_string()),
                        _ => {}
                    }
                }
            }
            names.extend(o.items.iter().filter_map(|(k, _)| if let Value::Str(s) = k { Some(s.clone()) } else { None }));
            let n = names.len();
            format!(
                "attributes: {}{}",
                names.into_iter().take(8).collect::<Vec<_>>().join(", "),
                if n > 8 { ", ..." } else { "" }
            )
        }
        Value::List(items) | Value::Tuple(items) => format!("{} entries", items.len()),
        Value::Dict(items) => {
            let keys: Vec<String> = items
                .iter()
                .take(8)
                .map(|(k, _)| match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    o => o.kind().to_string(),
                })
                .collect();
            format!(
                "keys: {}{}",
                keys.join(", "),
                if items.len() > 8 { ", ..." } else { "" }
            )
        }
        _ => "no entries".into(),
    }
}

/// Where in a checkpoint the state dict lives. `Auto` takes the root if it is a dict of
/// tensors, else the first of `state_dict`, `model`, `ema` that is.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    Auto,
    /// A path for [`Value::at`], e.g. `"4"` or `"ema"`.
    Path(String),
}

/// Reads a `torch.save` file (zip or legacy) into a [`Value`]. Zip checkpoints are read entry by
/// entry from the file, so only the tensors are held in memory, not also the file's bytes.
pub fn load(path: &Path) -> Result<Value> {
    let io = |e| BenchError::io(format!("reading checkpoint {}", path.display()), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 4];
    let res = if file.read_exact(&mut magic).is_ok() && &magic == b"PK\x03\x04" {
        file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        load_zip(std::io::BufReader::new(file))
    } else {
        let bytes = std::fs::read(path).map_err(io)?;
        load_legacy(&bytes)
    };
    res.map_err(|m| BenchError::file(path, m))
}

/// Reads the state dict at `select` from a `.safetensors` file or a `torch.save` checkpoint.
pub fn load_state_dict(path: &Path, select: &Select) -> Result<BTreeMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return load_safetensors(path);
    }
    let root = load(path)?;
    select_state_dict(&root, select).map_err(|m| BenchError::file(path, m))
}

/// Picks the state dict out of a loaded checkpoint (see [`Select`]).
pub fn select_state_dict(root: &Value, select: &Select) -> std::result::Result<BTreeMap<String, Tensor>, String> {
    match select {
        Select::Path(p) => root.at(p)?.to_state_dict().map_err(|m| format!("at `{p}`: {m}")),
        Select::Auto => {
            if root.is_tensor_dict() {
                return root.to_state_dict();
            }
            for key in ["state_dict", "model", "ema"] {
                if let Some(v) = root.get(key).filter(|v| v.is_tensor_dict()) {
                    return v.to_state_dict();
                }
            }
            Err(format!(
                "no state dict found: the checkpoint is a {} ({}); select one by path (e.g. `state_dict`, or `4` for the EMA entry of a DDIM [model, optimizer, epoch, step, ema] list)",
                root.kind(),
                describe_entries(root)
            ))
        }
    }
}

/// Reads every tensor of a `.safetensors` file onto the CPU.
pub fn load_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(format!("reading weights {}", path.display()), e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| BenchError::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        use safetensors::Dtype as D;
        let kind = match view.dtype() {
            D::F32 => Kind::Float,
            D::F64 => Kind::Double,
            D::F16 => Kind::Half,
            D::BF16 => Kind::BFloat16,
            D::I64 => Kind::Int64,
            D::I32 => Kind::Int,
            D::I16 => Kind::Int16,
            D::I8 => Kind::Int8,
            D::U8 => Kind::Uint8,
            D::BOOL => Kind::Bool,
            other => {
                return Err(BenchError::file(
                    path,
                    format!("tensor `{name}` has unsupported dtype {other:?}"),
                ))
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| BenchError::file(path, format!("tensor `{name}`: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// A NumPy array (little-endian or byte-sized numeric dtypes) as a contiguous CPU tensor.
fn ndarray_tensor(a: &pickle::NdArray) -> std::result::Result<Tensor, String> {
    let d = a.dtype.as_ref().ok_or("numpy array without dtype")?;
    let (kind, size) = match d.code.as_str() {
        "u1" => (Kind::Uint8, 1),
        "i1" => (Kind::Int8, 1),
        "b1" => (Kind::Bool, 1),
        "i2" => (Kind::Int16, 2),
        "f2" => (Kind::Half, 2),
        "i4" => (Kind::Int, 4),
        "f4" => (Kind::Float, 4),
        "i8" => (Kind::Int64, 8),
        "f8" => (Kind::Double, 8),
        other => return Err(format!("numpy dtype `{other}` is not supported")),
    };
    if d.byte_order == '>' && size > 1 {
        return Err(format!("big-endian numpy dtype `>{}` is not supported", d.code));
    }
    let numel: i64 = a.shape.iter().product();
    if a.shape.iter().any(|&s| s < 0) || a.data.len() as i64 != numel * size {
        return Err(format!(
            "numpy array of shape {:?} ({}) has {} data bytes",
            a.shape,
            d.code,
            a.data.len()
        ));
    }
    if a.fortran_order {
        let rev: Vec<i64> = a.shape.iter().rev().copied().collect();
        let perm: Vec<i64> = (0..rev.len() as i64).rev().collect();
        let t = Tensor::f_from_data_size(&a.data, &rev, kind).map_err(|e| e.to_string())?;
        return t
            .f_permute(perm.as_slice())
            .and_then(|t| t.f_contiguous())
            .map_err(|e| e.to_string());
    }
    Tensor::f_from_data_size(&a.data, &a.shape, kind).map_err(|e| e.to_string())
}

/// Reads a plain pickle file (e.g. CIFAR-10's python batches) with the same data-only VM;
/// NumPy arrays become CPU tensors.
pub fn load_pickle(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(format!("reading pickle {}", path.display()), e))?;
    let (root, _) = pickle::unpickle(&bytes).map_err(|m| BenchError::file(path, m))?;
    let mut storages = HashMap::new();
    let mut fetch = |s: &StorageRef| Err(format!("storage `{}` referenced outside a torch checkpoint", s.key));
    materialise(&root, &mut storages, &mut fetch, 0).map_err(|m| BenchError::file(path, m))
}

/// Reads a plain pickle of Python objects (e.g. an NVlabs/edm network snapshot) without running
/// any of it: unknown classes and functions become inert [`Object`]s / [`Value::Global`]s, while
/// globals that run code or reach the system are refused with an error naming them. Tensors
/// (pickled with their storages inline) become CPU tensors.
pub fn load_object_pickle(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(format!("reading pickle {}", path.display()), e))?;
    let (root, _) = pickle::unpickle_with(&bytes, pickle::Globals::Inert).map_err(|m| BenchError::file(path, m))?;
    // The tree holds its own copies of the storage blobs: free the file before making tensors.
    drop(bytes);
    let mut storages = HashMap::new();
    let mut fetch = |s: &StorageRef| Err(format!("storage `{}` has no data in a plain pickle", s.key));
    materialise(&root, &mut storages, &mut fetch, 0).map_err(|m| BenchError::file(path, m))
}

fn kind_of(d: StorageDtype) -> Kind {
    match d {
        StorageDtype::F32 => Kind::Float,
        StorageDtype::F64 => Kind::Double,
        StorageDtype::F16 => Kind::Half,
        StorageDtype::BF16 => Kind::BFloat16,
        StorageDtype::I64 => Kind::Int64,
        StorageDtype::I32 => Kind::Int,
        StorageDtype::I16 => Kind::Int16,
        StorageDtype::I8 => Kind::Int8,
        StorageDtype::U8 => Kind::Uint8,
        StorageDtype::Bool => Kind::Bool,
    }
}

/// A storage's bytes as a 1-D tensor of its element type.
fn storage_tensor(s: &StorageRef, bytes: &[u8]) -> std::result::Result<Tensor, String> {
    let want = (s.numel as usize)
        .checked_mul(s.dtype.element_size())
        .ok_or("storage size overflows")?;
    if bytes.len() < want {
        return Err(format!(
            "storage `{}` truncated: {} bytes present, {} needed for {} elements of {:?}",
            s.key,
            bytes.len(),
            want,
            s.numel,
            s.dtype
        ));
    }
    Tensor::f_from_data_size(&bytes[..want], &[s.numel as i64], kind_of(s.dtype)).map_err(|e| e.to_string())
}

/// Turns the VM's tree into a [`Value`], materialising each storage once (views share it).
fn materialise(
    obj: &Obj,
    storages: &mut HashMap<String, Tensor>,
    fetch: &mut dyn FnMut(&StorageRef) -> std::result::Result<Tensor, String>,
    depth: usize,
) -> std::result::Result<Value, String> {
    if depth > 256 {
        return Err("checkpoint nesting deeper than 256 levels (self-referencing container?)".into());
    }
    let mut rec = |o: &Obj| materialise(o, storages, fetch, depth + 1);
    Ok(match obj {
        Obj::None => Value::None,
        Obj::Bool(b) => Value::Bool(*b),
        Obj::Int(i) => Value::Int(i64::try_from(*i).map_err(|_| format!("integer {i} does not fit in 64 bits"))?),
        Obj::Float(f) => Value::Float(*f),
        Obj::Str(s) => Value::Str(s.clone()),
        Obj::Bytes(b) => Value::Bytes(b.to_vec()),
        Obj::Tuple(items) => Value::Tuple(items.iter().map(&mut rec).collect::<std::result::Result<_, _>>()?),
        Obj::List(items) => Value::List(
            items
                .borrow()
                .iter()
                .map(&mut rec)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Obj::Dict(items) => Value::Dict(
            items
                .borrow()
                .iter()
                .map(|(k, v)| Ok((rec(k)?, rec(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        Obj::Tensor(spec) => {
            let base = match storages.get(&spec.storage.key) {
                Some(t) => t.shallow_clone(),
                None => {
                    let t = match &spec.storage.inline {
                        Some(inline) => storage_tensor(&spec.storage, inline.bytes())?,
                        None => fetch(&spec.storage)?,
                    };
                    storages.insert(spec.storage.key.clone(), t.shallow_clone());
                    t
                }
            };
            // Bounds were checked against numel in the VM; the copy detaches from the shared storage.
            let t = base
                .f_as_strided(spec.size.as_slice(), spec.stride.as_slice(), spec.offset)
                .and_then(|t| t.f_contiguous())
                .map_err(|e| format!("tensor view on storage `{}`: {e}", spec.storage.key))?;
            Value::Tensor(t)
        }
        Obj::Storage(s) => return Err(format!("bare storage `{}` outside a tensor is not supported", s.key)),
        Obj::NdArray(a) => Value::Tensor(ndarray_tensor(&a.borrow())?),
        Obj::NpDtype(d) => return Err(format!("bare numpy dtype `{}` is not supported as data", d.code)),
        Obj::Name(n) => Value::Global(n.to_string()),
        Obj::Inert(o) => {
            let o = o.borrow();
            match persistence::reconstruct(&o, &mut rec)? {
                Some(obj) => Value::Object(Box::new(obj)),
                None => Value::Object(Box::new(inert_object(&o, &mut rec)?)),
            }
        }
        Obj::Global(_) | Obj::Mark => return Err("pickle left a callable/mark as data".into()),
    })
}

/// An inert object as data. `copyreg._reconstructor(cls, base, state)` (protocols 0–1 objects)
/// is named by its class.
fn inert_object(
    o: &pickle::InertObj,
    rec: &mut dyn FnMut(&Obj) -> std::result::Result<Value, String>,
) -> std::result::Result<Object, String> {
    let mut args: &[Obj] = &o.args;
    let mut class = o.callee.to_string();
    if class == "copyreg._reconstructor" {
        if let Some(Obj::Name(cls)) = args.first() {
            class = cls.to_string();
            args = &args[1..];
        }
    }
    let kwargs = match &o.kwargs {
        Some(k) => match rec(k)? {
            Value::Dict(items) => items,
            other => return Err(format!("keyword arguments of `{class}` are a {}, not a dict", other.kind())),
        },
        None => vec![],
    };
    Ok(Object {
        class,
        persistent: false,
        args: args.iter().map(&mut *rec).collect::<std::result::Result<_, _>>()?,
        kwargs,
        state: match &o.state {
            Some(s) => rec(s)?,
            None => Value::None,
        },
        items: o
            .items
            .iter()
            .map(|(k, v)| Ok((rec(k)?, rec(v)?)))
            .collect::<std::result::Result<_, String>>()?,
        list: o.list.iter().map(&mut *rec).collect::<std::result::Result<_, _>>()?,
    })
}

fn load_zip<R: Read + Seek>(reader: R) -> std::result::Result<Value, String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a valid zip checkpoint: {e}"))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .map(str::to_string)
        .ok_or("zip checkpoint has no data.pkl (not written by torch.save?)")?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    let read = |zip: &mut zip::ZipArchive<R>, name: &str| -> std::result::Result<Vec<u8>, String> {
        let mut f = zip.by_name(name).map_err(|e| format!("zip checkpoint entry `{name}`: {e}"))?;
        let mut buf = Vec::with_capacity((f.size() as usize).min(1 << 30));
        f.read_to_end(&mut buf).map_err(|e| format!("reading zip entry `{name}`: {e}"))?;
        Ok(buf)
    };
    if let Ok(order) = read(&mut zip, &format!("{prefix}byteorder")) {
        if order != b"little" {
            return Err(format!(
                "big-endian checkpoint (byteorder `{}`) is not supported",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let pkl = read(&mut zip, &pkl_name)?;
    let (root, _) = pickle::unpickle(&pkl).map_err(|m| format!("data.pkl: {m}"))?;
    let mut storages = HashMap::new();
    let mut fetch = |s: &StorageRef| {
        let data = read(&mut zip, &format!("{prefix}data/{}", s.key))?;
        storage_tensor(s, &data)
    };
    materialise(&root, &mut storages, &mut fetch, 0)
}

fn load_legacy(bytes: &[u8]) -> std::result::Result<Value, String> {
    let legacy::Legacy { root, raw } = legacy::parse(bytes)?;
    let mut storages = HashMap::new();
    let mut fetch = |s: &StorageRef| {
        let &(start, n) = raw
            .get(&s.key)
            .ok_or_else(|| format!("storage `{}` missing from the file", s.key))?;
        storage_tensor(s, &bytes[start..start + n])
    };
    materialise(&root, &mut storages, &mut fetch, 0)
}
