//! A data-only pickle virtual machine: the opcodes `pickle` emits for data and objects
//! (protocols 2–5), building plain values. It never imports or calls anything: `GLOBAL` resolves
//! the whitelisted names below to inert markers, and `REDUCE` only "calls" those markers by
//! rebuilding data (tensor specs, storages, empty ordered dicts, NumPy scalars).
//!
//! What happens to any other global depends on [`Globals`]:
//! - [`Globals::DataOnly`] (torch.save checkpoints): it is an error naming it, so a checkpoint that
//!   would run `os.system` or `builtins.eval` is refused.
//! - [`Globals::Inert`] (plain pickles of Python objects, e.g. NVlabs `persistence` network
//!   snapshots): it becomes an inert [`Obj::Name`]; calling or instantiating it (REDUCE, NEWOBJ,
//!   INST, OBJ) builds an [`InertObj`] that records the arguments, and BUILD / SETITEMS / APPENDS
//!   on it record state and items, all as data. Nothing is ever called. Globals whose only use in
//!   a pickle is to run code or reach the system (`os`, `subprocess`, `builtins.eval`, ...) are
//!   still refused outright (see [`runs_code`]): such a file is not a model.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Element type of a torch storage, named by its `torch.<Kind>Storage` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    pub fn element_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A storage referenced by a persistent id: `('storage', <Kind>Storage, key, location, numel[, view])`,
/// or carried inside the pickle itself (`inline`, see [`InlineBytes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageDtype,
    pub numel: u64,
    pub inline: Option<InlineBytes>,
}

/// A storage's bytes inside the pickle: plain `pickle.dump` of a tensor writes its storage as
/// `torch.storage._load_from_bytes(<legacy torch.save of the storage>)`. A window into that
/// shared blob, not a copy.
#[derive(Clone)]
pub struct InlineBytes {
    blob: Rc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl InlineBytes {
    /// `start..start + len` must lie inside `blob` (the legacy parser checks it).
    pub(super) fn new(blob: Rc<Vec<u8>>, start: usize, len: usize) -> Result<Self, String> {
        if start.checked_add(len).is_none_or(|end| end > blob.len()) {
            return Err(format!("inline storage {start}+{len} outside its {}-byte blob", blob.len()));
        }
        Ok(InlineBytes { blob, start, len })
    }
    pub fn bytes(&self) -> &[u8] {
        &self.blob[self.start..self.start + self.len]
    }
}

impl PartialEq for InlineBytes {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl std::fmt::Debug for InlineBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlineBytes({} bytes)", self.len)
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` as data.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub storage: StorageRef,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// What the VM does with globals outside the data whitelist (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Globals {
    /// Refuse them: torch.save checkpoints hold only tensors and containers.
    DataOnly,
    /// Keep them as inert names, never called; refuse only those that run code.
    Inert,
}

/// The whitelisted callables. Each is a data constructor, none has side effects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    /// `_rebuild_tensor` (PyTorch < 0.4) has the same leading arguments as v2.
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    /// `_rebuild_parameter_with_state(data, requires_grad, hooks, state)`: a Parameter with
    /// Python attributes; the data is all we keep.
    RebuildParameterWithState,
    /// `torch.storage._load_from_bytes(blob)`: a storage pickled inline as a legacy torch.save
    /// (read by our own legacy parser, never by torch.load). Only in [`Globals::Inert`] pickles.
    LoadFromBytes,
    /// `numpy.core.multiarray.scalar(dtype, raw)`: a NumPy scalar (e.g. `np.float64`) as a number.
    NumpyScalar,
    /// `builtins.set` / `builtins.frozenset` (protocol 2 writes sets this way): kept as a list.
    Set,
    OrderedDict,
    Storage(StorageDtype),
    /// `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`: an empty array that BUILD fills.
    NumpyReconstruct,
    NumpyNdarray,
    NumpyDtype,
    /// `_codecs.encode(text, 'latin1')`: how Python 3 writes bytes in protocol 2.
    CodecsEncode,
}

fn data_global(module: &str, name: &str, policy: Globals) -> Option<Global> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch.storage", "_load_from_bytes") if policy == Globals::Inert => Global::LoadFromBytes,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch", n) | ("torch.storage", n) => return StorageDtype::from_storage_class(n).map(Global::Storage),
        // NumPy arrays (the CIFAR-10 python batches): data, rebuilt from (shape, dtype, bytes).
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::NumpyReconstruct,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NumpyScalar,
        ("numpy", "ndarray") => Global::NumpyNdarray,
        ("numpy", "dtype") => Global::NumpyDtype,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
        _ => return None,
    })
}

/// Globals whose only use in a pickle is to run code, import it, or reach the file system,
/// processes or network (the gadgets of pickle exploits). An inert placeholder would be harmless
/// here since nothing is called, but such a file is not a model: it is refused, naming the global.
pub fn runs_code(module: &str, name: &str) -> bool {
    const MODULES: &[&str] = &[
        "os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib", "runpy", "ctypes",
        "pty", "multiprocessing", "pickle", "_pickle", "marshal", "code", "codeop", "types", "io", "_io",
        "pathlib", "tempfile", "signal", "threading", "_thread", "urllib", "http", "webbrowser",
        "operator", "_operator", "functools", "inspect", "pdb", "timeit", "zipimport", "pkgutil", "site",
        "dill", "cloudpickle", "joblib",
    ];
    // Data types are the only builtins a model pickle names; everything else (eval, exec,
    // compile, __import__, open, getattr, setattr, globals, breakpoint, ...) can run code.
    const BUILTIN_DATA: &[&str] = &[
        "set", "frozenset", "bytearray", "bytes", "complex", "slice", "range", "list", "dict", "tuple",
        "int", "float", "str", "bool", "object",
    ];
    const NAMES: &[(&str, &str)] = &[
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("torch.jit", "load"),
        ("torch._C", "import_ir_module"),
        ("torch_utils.persistence", "_src_to_module"),
        ("dnnlib.util", "call_func_by_name"),
        ("dnnlib.util", "construct_class_by_name"),
        ("dnnlib.util", "get_obj_by_name"),
        ("numpy.testing._private.utils", "runstring"),
    ];
    let under = |m: &str| module == m || module.strip_prefix(m).is_some_and(|rest| rest.starts_with('.'));
    if under("builtins") || under("__builtin__") {
        return !BUILTIN_DATA.contains(&name);
    }
    MODULES.iter().any(|m| under(m)) || NAMES.contains(&(module, name))
}

fn resolve_global(module: &str, name: &str, policy: Globals) -> Result<Obj, String> {
    if let Some(g) = data_global(module, name, policy) {
        return Ok(Obj::Global(GlobalMarker(g)));
    }
    match policy {
        Globals::DataOnly => Err(format!(
            "refusing to load: the pickle references `{module}.{name}`, which is not a tensor, storage or container (only data is loaded, no code is run)"
        )),
        Globals::Inert if runs_code(module, name) => Err(format!(
            "refusing to load: the pickle references `{module}.{name}`, which would run code or reach the system when unpickled; this is not a model file (nothing was executed)"
        )),
        Globals::Inert => Ok(Obj::Name(Rc::new(QualName { module: module.to_string(), name: name.to_string() }))),
    }
}

/// A global's `module.name`, as the pickle spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualName {
    pub module: String,
    pub name: String,
}

impl std::fmt::Display for QualName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// What calling / instantiating an inert global would have produced, as data: the callee, its
/// arguments, and whatever the pickle then set on the result (BUILD state, SETITEMS, APPENDS).
#[derive(Debug)]
pub struct InertObj {
    pub callee: Rc<QualName>,
    pub args: Vec<Obj>,
    /// NEWOBJ_EX keyword arguments.
    pub kwargs: Option<Obj>,
    pub state: Option<Obj>,
    pub items: Vec<(Obj, Obj)>,
    pub list: Vec<Obj>,
}

/// A value on the VM's stack. Lists and dicts are shared so that mutations after memoisation
/// (pickle builds containers after `BINPUT`) are seen through every reference.
#[derive(Clone, Debug)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// Shared: a blob can be memoised and referenced many times without copying.
    Bytes(Rc<Vec<u8>>),
    Tuple(Vec<Obj>),
    List(Rc<RefCell<Vec<Obj>>>),
    Dict(Rc<RefCell<Vec<(Obj, Obj)>>>),
    Storage(StorageRef),
    Tensor(TensorSpec),
    Global(GlobalMarker),
    /// A NumPy array; shared because BUILD fills it after it was memoised.
    NdArray(Rc<RefCell<NdArray>>),
    NpDtype(NpDtype),
    /// An unknown global, kept by name ([`Globals::Inert`] only).
    Name(Rc<QualName>),
    /// An object an inert global would have built ([`Globals::Inert`] only).
    Inert(Rc<RefCell<InertObj>>),
    Mark,
}

/// A NumPy dtype by its array-protocol code (`u1`, `f4`, ...) and byte order (`<`, `>`, `|`, `=`).
#[derive(Clone, Debug, PartialEq)]
pub struct NpDtype {
    pub code: String,
    pub byte_order: char,
}

#[derive(Clone, Debug, Default)]
pub struct NdArray {
    pub shape: Vec<i64>,
    pub dtype: Option<NpDtype>,
    pub fortran_order: bool,
    pub data: Vec<u8>,
}

/// Opaque marker for a whitelisted global on the stack.
#[derive(Clone, Copy, Debug)]
pub struct GlobalMarker(Global);

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
            Obj::Global(_) => "global",
            Obj::NdArray(_) => "ndarray",
            Obj::NpDtype(_) => "dtype",
            Obj::Name(_) => "class or function",
            Obj::Inert(_) => "object",
            Obj::Mark => "mark",
        }
    }
    fn as_int(&self, what: &str) -> Result<i64, String> {
        match self {
            Obj::Int(i) => i64::try_from(*i).map_err(|_| format!("{what}: integer {i} out of range")),
            o => Err(format!("{what}: expected an int, found {}", o.kind())),
        }
    }
    fn int_list(&self, what: &str) -> Result<Vec<i64>, String> {
        match self {
            Obj::Tuple(v) => v.iter().map(|o| o.as_int(what)).collect(),
            Obj::List(v) => v.borrow().iter().map(|o| o.as_int(what)).collect(),
            o => Err(format!("{what}: expected a tuple of ints, found {}", o.kind())),
        }
    }
}

/// How the container resolves persistent ids (the zip and legacy formats agree on the tuple).
fn persistent_load(pid: Obj) -> Result<Obj, String> {
    let Obj::Tuple(items) = pid else {
        return Err(format!("persistent id must be a tuple, found {}", pid.kind()));
    };
    match items.as_slice() {
        [Obj::Str(tag), Obj::Global(GlobalMarker(Global::Storage(dtype))), key, _location, numel, ..]
            if tag == "storage" =>
        {
            let key = match key {
                Obj::Str(s) => s.clone(),
                Obj::Int(i) => i.to_string(),
                o => return Err(format!("storage key must be a string, found {}", o.kind())),
            };
            let numel = numel.as_int("storage size")?;
            let numel = u64::try_from(numel).map_err(|_| format!("negative storage size {numel}"))?;
            Ok(Obj::Storage(StorageRef {
                key,
                dtype: *dtype,
                numel,
                inline: None,
            }))
        }
        _ => Err("unsupported persistent id (expected ('storage', <Kind>Storage, key, location, numel))".into()),
    }
}

/// Per-run state of the VM.
struct Ctx {
    policy: Globals,
    /// Inline storages get unique keys (`inline:N`) so views of one storage share it, and only them.
    inline_storages: usize,
}

fn call(g: Global, args: Obj, ctx: &mut Ctx) -> Result<Obj, String> {
    let Obj::Tuple(args) = args else {
        return Err(format!("REDUCE arguments must be a tuple, found {}", args.kind()));
    };
    match g {
        Global::OrderedDict if args.is_empty() => Ok(Obj::Dict(Rc::new(RefCell::new(Vec::new())))),
        Global::OrderedDict => Err("collections.OrderedDict called with arguments".into()),
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            // v2: (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]);
            // v1: (storage, storage_offset, size, stride).
            let allowed = if g == Global::RebuildTensor { 4..=4 } else { 6..=7 };
            if !allowed.contains(&args.len()) {
                return Err(format!(
                    "_rebuild_tensor{} got {} arguments",
                    if g == Global::RebuildTensor { "" } else { "_v2" },
                    args.len()
                ));
            }
            let Obj::Storage(storage) = &args[0] else {
                return Err(format!(
                    "_rebuild_tensor_v2: first argument must be a storage, found {}",
                    args[0].kind()
                ));
            };
            let spec = TensorSpec {
                storage: storage.clone(),
                offset: args[1].as_int("storage offset")?,
                size: args[2].int_list("tensor size")?,
                stride: args[3].int_list("tensor stride")?,
            };
            check_spec(&spec)?;
            Ok(Obj::Tensor(spec))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
            // (data, requires_grad, backward_hooks[, state]): a Parameter is its data for our purposes.
            Some(t @ Obj::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter: first argument must be a tensor".into()),
        },
        Global::LoadFromBytes => match args.as_slice() {
            [Obj::Bytes(blob)] => {
                let key = format!("inline:{}", ctx.inline_storages);
                ctx.inline_storages += 1;
                let storage = super::legacy::inline_storage(blob.clone(), key)
                    .map_err(|m| format!("tensor storage pickled inline (torch.storage._load_from_bytes): {m}"))?;
                Ok(Obj::Storage(storage))
            }
            _ => Err("torch.storage._load_from_bytes needs one bytes argument".into()),
        },
        Global::NumpyScalar => match args.as_slice() {
            [Obj::NpDtype(d), raw] => {
                let raw = match raw {
                    Obj::Bytes(b) => b.to_vec(),
                    Obj::Str(s) => latin1_bytes(s)?,
                    o => return Err(format!("numpy scalar data of type {}", o.kind())),
                };
                numpy_scalar(d, &raw)
            }
            _ => Err("numpy scalar needs (dtype, data)".into()),
        },
        Global::Set => match args.as_slice() {
            [] => Ok(Obj::List(Rc::new(RefCell::new(Vec::new())))),
            [Obj::List(l)] => Ok(Obj::List(Rc::new(RefCell::new(l.borrow().clone())))),
            [Obj::Tuple(t)] => Ok(Obj::List(Rc::new(RefCell::new(t.clone())))),
            _ => Err("set() of something other than a list".into()),
        },
        Global::Storage(_) => Err("storage classes cannot be called".into()),
        Global::NumpyReconstruct => match args.first() {
            Some(Obj::Global(GlobalMarker(Global::NumpyNdarray))) => {
                Ok(Obj::NdArray(Rc::new(RefCell::new(NdArray::default()))))
            }
            _ => Err("numpy _reconstruct of something other than numpy.ndarray".into()),
        },
        Global::NumpyNdarray => Err("numpy.ndarray called directly".into()),
        Global::NumpyDtype => match args.first() {
            Some(Obj::Str(code)) => Ok(Obj::NpDtype(NpDtype {
                code: code.clone(),
                byte_order: '=',
            })),
            _ => Err("numpy.dtype needs a type code string".into()),
        },
        Global::CodecsEncode => match args.as_slice() {
            [Obj::Str(text), Obj::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                Ok(Obj::Bytes(Rc::new(latin1_bytes(text)?)))
            }
            _ => Err("_codecs.encode is only allowed as (text, 'latin1')".into()),
        },
    }
}

/// A NumPy scalar's raw bytes as a number (little-endian or byte-sized dtypes).
fn numpy_scalar(d: &NpDtype, raw: &[u8]) -> Result<Obj, String> {
    if d.byte_order == '>' && !matches!(d.code.as_str(), "u1" | "i1" | "b1") {
        return Err(format!("big-endian numpy scalar `>{}` is not supported", d.code));
    }
    let want = match d.code.as_str() {
        "f8" | "i8" | "u8" => 8,
        "f4" | "i4" | "u4" => 4,
        "f2" | "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        other => return Err(format!("numpy scalar of dtype `{other}` is not supported")),
    };
    if raw.len() != want {
        return Err(format!("numpy scalar `{}` with {} data bytes", d.code, raw.len()));
    }
    let mut b8 = [0u8; 8];
    b8[..want].copy_from_slice(raw);
    let u = u64::from_le_bytes(b8);
    Ok(match d.code.as_str() {
        "f8" => Obj::Float(f64::from_bits(u)),
        "f4" => Obj::Float(f32::from_bits(u as u32) as f64),
        "f2" => Obj::Float(half::f16::from_bits(u as u16).to_f64()),
        "b1" => Obj::Bool(u != 0),
        "i8" => Obj::Int(u as i64 as i128),
        "i4" => Obj::Int(u as u32 as i32 as i128),
        "i2" => Obj::Int(u as u16 as i16 as i128),
        "i1" => Obj::Int(u as u8 as i8 as i128),
        _ => Obj::Int(u as i128),
    })
}

/// Python 2 `str` / protocol-2 `bytes` arrive as latin-1 text; every char is one byte.
fn latin1_bytes(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| u8::try_from(c as u32).map_err(|_| "non-latin-1 character in byte string".to_string()))
        .collect()
}

/// BUILD of numpy objects: dtype state `(version, byteorder, ...)`, array state
/// `(version, shape, dtype, is_fortran, rawdata)`.
fn build_numpy(target: &mut Obj, state: Obj) -> Result<(), String> {
    let Obj::Tuple(st) = state else {
        return Err(format!("numpy BUILD state must be a tuple, found {}", state.kind()));
    };
    match target {
        Obj::NpDtype(d) => {
            if let Some(Obj::Str(order)) = st.get(1) {
                d.byte_order = order.chars().next().unwrap_or('=');
            }
            Ok(())
        }
        Obj::NdArray(a) => {
            let [_version, shape, Obj::NpDtype(dtype), fortran, raw] = st.as_slice() else {
                return Err("numpy array state must be (version, shape, dtype, is_fortran, data)".into());
            };
            let data = match raw {
                Obj::Bytes(b) => b.to_vec(),
                Obj::Str(s) => latin1_bytes(s)?,
                other => {
                    return Err(format!(
                        "numpy array data of type {} (object arrays are not supported)",
                        other.kind()
                    ))
                }
            };
            let mut a = a.borrow_mut();
            a.shape = shape.int_list("array shape")?;
            a.dtype = Some(dtype.clone());
            a.fortran_order = match fortran {
                Obj::Bool(b) => *b,
                Obj::Int(i) => *i != 0,
                o => return Err(format!("numpy is_fortran flag of type {}", o.kind())),
            };
            a.data = data;
            Ok(())
        }
        _ => unreachable!("build_numpy is called on numpy objects only"),
    }
}

/// The view must stay inside its storage: as_strided on a short storage would read out of bounds.
fn check_spec(s: &TensorSpec) -> Result<(), String> {
    if s.size.len() != s.stride.len() {
        return Err(format!(
            "tensor size {:?} and stride {:?} differ in rank",
            s.size, s.stride
        ));
    }
    if s.offset < 0 || s.size.iter().any(|&d| d < 0) || s.stride.iter().any(|&d| d < 0) {
        return Err(format!(
            "negative offset/size/stride in tensor {:?}/{:?}+{}",
            s.size, s.stride, s.offset
        ));
    }
    if s.size.contains(&0) {
        return Ok(());
    }
    let mut last: i128 = s.offset as i128;
    for (&d, &st) in s.size.iter().zip(&s.stride) {
        last += (d as i128 - 1) * st as i128;
    }
    if last >= s.storage.numel as i128 {
        return Err(format!(
            "tensor of size {:?}, stride {:?}, offset {} reaches element {} of a storage with {} elements",
            s.size, s.stride, s.offset, last, s.storage.numel
        ));
    }
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle truncated: needed {n} bytes at offset {}, only {} left",
                    self.pos,
                    self.data.len() - self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated inside a text line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "non-UTF-8 text in pickle".to_string())?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 string in pickle".to_string())
    }
}

fn len(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("length {n} too large"))
}

/// Little-endian two's-complement integer of LONG1/LONG4; the legacy magic number needs 80 bits.
fn decode_long(bytes: &[u8]) -> Result<i128, String> {
    if bytes.is_empty() {
        return Ok(0);
    }
    if bytes.len() > 16 {
        return Err(format!("integer of {} bytes is too large", bytes.len()));
    }
    let fill = if bytes[bytes.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(i128::from_le_bytes(buf))
}

/// Runs one pickle from the start of `data` with [`Globals::DataOnly`]; returns the value and the
/// number of bytes consumed (the legacy format concatenates several pickles and raw storages).
pub fn unpickle(data: &[u8]) -> Result<(Obj, usize), String> {
    unpickle_with(data, Globals::DataOnly)
}

/// [`unpickle`] with a choice of what unknown globals become (see [`Globals`]).
pub fn unpickle_with(data: &[u8], policy: Globals) -> Result<(Obj, usize), String> {
    let mut ctx = Ctx { policy, inline_storages: 0 };
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Obj> = Vec::new();
    let mut memo: HashMap<u64, Obj> = HashMap::new();

    fn pop(stack: &mut Vec<Obj>) -> Result<Obj, String> {
        match stack.pop() {
            Some(Obj::Mark) | None => Err("pickle stack underflow".into()),
            Some(o) => Ok(o),
        }
    }
    fn pop_mark(stack: &mut Vec<Obj>) -> Result<Vec<Obj>, String> {
        let i = stack
            .iter()
            .rposition(|o| matches!(o, Obj::Mark))
            .ok_or("pickle MARK missing")?;
        let items = stack.split_off(i + 1);
        stack.pop();
        Ok(items)
    }
    fn top(stack: &mut [Obj]) -> Result<&mut Obj, String> {
        stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn set_items(target: &Obj, kv: Vec<Obj>) -> Result<(), String> {
        if kv.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let d = match target {
            Obj::Dict(d) => d,
            // A dict subclass (e.g. an EasyDict) built by an inert global: its items, as data.
            Obj::Inert(o) => {
                let mut it = kv.into_iter();
                let mut o = o.borrow_mut();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    o.items.push((k, v));
                }
                return Ok(());
            }
            _ => return Err(format!("SETITEM on a {}", target.kind())),
        };
        let mut d = d.borrow_mut();
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(slot) = d.iter_mut().find(|(ek, _)| same_key(ek, &k)) {
                slot.1 = v;
            } else {
                d.push((k, v));
            }
        }
        Ok(())
    }
    fn append(target: &Obj, items: Vec<Obj>) -> Result<(), String> {
        match target {
            Obj::List(l) => l.borrow_mut().extend(items),
            Obj::Inert(o) => o.borrow_mut().list.extend(items),
            _ => return Err(format!("APPEND on a {}", target.kind())),
        }
        Ok(())
    }
    /// What instantiating `cls` builds: an inert object for an inert name; anything else would
    /// need a real class and is refused.
    fn instantiate(cls: Obj, args: Vec<Obj>, kwargs: Option<Obj>) -> Result<Obj, String> {
        match cls {
            Obj::Name(callee) => Ok(Obj::Inert(Rc::new(RefCell::new(InertObj {
                callee,
                args,
                kwargs,
                state: None,
                items: vec![],
                list: vec![],
            })))),
            _ => Err("refusing to load: the pickle instantiates a class (NEWOBJ/INST/OBJ); only data is loaded".into()),
        }
    }

    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: length hint only
            }
            b'.' => {
                let v = pop(&mut stack)?;
                return Ok((v, r.pos));
            }
            b'}' => stack.push(Obj::Dict(Rc::new(RefCell::new(Vec::new())))),
            b']' => stack.push(Obj::List(Rc::new(RefCell::new(Vec::new())))),
            b')' => stack.push(Obj::Tuple(Vec::new())),
            b'(' => stack.push(Obj::Mark),
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                set_items(top(&mut stack)?, vec![k, v])?;
            }
            b'u' => {
                let kv = pop_mark(&mut stack)?;
                set_items(top(&mut stack)?, kv)?;
            }
            b'a' => {
                let v = pop(&mut stack)?;
                append(top(&mut stack)?, vec![v])?;
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                append(top(&mut stack)?, items)?;
            }
            b'J' => stack.push(Obj::Int(r.u32()? as i32 as i128)),
            b'K' => stack.push(Obj::Int(r.u8()? as i128)),
            b'M' => stack.push(Obj::Int(r.u16()? as i128)),
            0x8a => {
                let n = r.u8()? as usize;
                stack.push(Obj::Int(decode_long(r.take(n)?)?));
            }
            0x8b => {
                let n = len(r.u32()? as u64)?;
                stack.push(Obj::Int(decode_long(r.take(n)?)?));
            }
            b'G' => stack.push(Obj::Float(f64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")))),
            b'X' => {
                let n = len(r.u32()? as u64)?;
                stack.push(Obj::Str(r.utf8(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Obj::Str(r.utf8(n)?));
            }
            0x8d => {
                let n = len(r.u64()?)?;
                stack.push(Obj::Str(r.utf8(n)?));
            }
            // Python 2 str (BINSTRING/SHORT_BINSTRING): bytes decoded as latin-1 like encoding='latin1'.
            b'T' => {
                let n = len(r.u32()? as u64)?;
                stack.push(Obj::Str(r.take(n)?.iter().map(|&b| b as char).collect()));
            }
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Obj::Str(r.take(n)?.iter().map(|&b| b as char).collect()));
            }
            b'B' => {
                let n = len(r.u32()? as u64)?;
                stack.push(Obj::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Obj::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            0x8e => {
                let n = len(r.u64()?)?;
                stack.push(Obj::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            b'Q' => {
                if ctx.policy == Globals::Inert {
                    return Err("persistent id in a plain pickle (only torch.save containers resolve them)".into());
                }
                let pid = pop(&mut stack)?;
                stack.push(persistent_load(pid)?);
            }
            b'h' => {
                let i = r.u8()? as u64;
                stack.push(
                    memo.get(&i)
                        .cloned()
                        .ok_or_else(|| format!("pickle memo key {i} missing"))?,
                );
            }
            b'j' => {
                let i = r.u32()? as u64;
                stack.push(
                    memo.get(&i)
                        .cloned()
                        .ok_or_else(|| format!("pickle memo key {i} missing"))?,
                );
            }
            b'q' => {
                let i = r.u8()? as u64;
                memo.insert(i, top(&mut stack)?.clone());
            }
            b'r' => {
                let i = r.u32()? as u64;
                memo.insert(i, top(&mut stack)?.clone());
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(i, top(&mut stack)?.clone());
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Obj::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n || stack[stack.len() - n..].iter().any(|o| matches!(o, Obj::Mark)) {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Obj::Tuple(items));
            }
            0x88 => stack.push(Obj::Bool(true)),
            0x89 => stack.push(Obj::Bool(false)),
            b'N' => stack.push(Obj::None),
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(resolve_global(&module, &name, ctx.policy)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Obj::Str(m), Obj::Str(n)) => stack.push(resolve_global(&m, &n, ctx.policy)?),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                match f {
                    Obj::Global(GlobalMarker(g)) => stack.push(call(g, args, &mut ctx)?),
                    // Never called: the call is recorded.
                    Obj::Name(_) => {
                        let Obj::Tuple(args) = args else {
                            return Err(format!("REDUCE arguments must be a tuple, found {}", args.kind()));
                        };
                        stack.push(instantiate(f, args, None)?);
                    }
                    f => return Err(format!("REDUCE on a {}, not a callable", f.kind())),
                }
            }
            b'b' => {
                // BUILD sets object state; for OrderedDict that is `_metadata` (module versions),
                // for tensors the (unused) Python attributes. Data carries no such state: drop it.
                // Inert objects keep it: for a torch.nn.Module it is the instance `__dict__`.
                let state = pop(&mut stack)?;
                match top(&mut stack)? {
                    Obj::Dict(_) | Obj::Tensor(_) => {}
                    Obj::Inert(o) => o.borrow_mut().state = Some(state),
                    t @ (Obj::NpDtype(_) | Obj::NdArray(_)) => build_numpy(t, state)?,
                    o => return Err(format!("BUILD on a {}", o.kind())),
                }
            }
            // NEWOBJ: cls.__new__(cls, *args).
            0x81 => {
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                let Obj::Tuple(args) = args else {
                    return Err(format!("NEWOBJ arguments must be a tuple, found {}", args.kind()));
                };
                stack.push(instantiate(cls, args, None)?);
            }
            // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs).
            0x92 => {
                let kwargs = pop(&mut stack)?;
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                let Obj::Tuple(args) = args else {
                    return Err(format!("NEWOBJ_EX arguments must be a tuple, found {}", args.kind()));
                };
                stack.push(instantiate(cls, args, Some(kwargs))?);
            }
            // INST (protocol 0): module and name as text lines, arguments since the mark.
            b'i' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                let args = pop_mark(&mut stack)?;
                let cls = resolve_global(&module, &name, ctx.policy)?;
                stack.push(instantiate(cls, args, None)?);
            }
            // OBJ (protocol 1): class and arguments since the mark.
            b'o' => {
                let mut items = pop_mark(&mut stack)?;
                if items.is_empty() {
                    return Err("OBJ without a class".into());
                }
                let cls = items.remove(0);
                stack.push(instantiate(cls, items, None)?);
            }
            // EMPTY_SET / ADDITEMS / FROZENSET: sets are kept as lists.
            0x8f => stack.push(Obj::List(Rc::new(RefCell::new(Vec::new())))),
            0x90 => {
                let items = pop_mark(&mut stack)?;
                append(top(&mut stack)?, items)?;
            }
            0x91 => {
                let items = pop_mark(&mut stack)?;
                stack.push(Obj::List(Rc::new(RefCell::new(items))));
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let t = top(&mut stack)?.clone();
                stack.push(t);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at offset {}",
                    r.pos - 1
                ));
            }
        }
    }
}

/// Dict keys in checkpoints are strings or ints; compare those by value.
fn same_key(a: &Obj, b: &Obj) -> bool {
    match (a, b) {
        (Obj::Str(x), Obj::Str(y)) => x == y,
        (Obj::Int(x), Obj::Int(y)) => x == y,
        (Obj::Bool(x), Obj::Bool(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bytes below are `pickle.dumps(..., protocol=2)` output from CPython 3.11, written out.

    #[test]
    fn dict_list_scalars_protocol2() {
        // pickle.dumps({'a': [1, -2, 300, 70000, 1.5, True, None], 'b': ('x', 2**70)}, protocol=2)
        let mut p: Vec<u8> = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b']', b'q', 1, b'(',
        ];
        p.extend([
            b'K', 1, b'J', 0xfe, 0xff, 0xff, 0xff, b'M', 0x2c, 0x01, b'J', 0x70, 0x11, 0x01, 0x00,
        ]);
        p.push(b'G');
        p.extend(1.5f64.to_be_bytes());
        p.extend([0x88, b'N', b'e', b'X', 1, 0, 0, 0, b'b', b'X', 1, 0, 0, 0, b'x']);
        p.extend([0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x86, b'q', 2, b'u', b'.']);
        let (v, used) = unpickle(&p).unwrap();
        assert_eq!(used, p.len());
        let Obj::Dict(d) = v else { panic!("not a dict") };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        let Obj::List(l) = &d[0].1 else { panic!() };
        let l = l.borrow();
        let ints: Vec<i128> = l[..4]
            .iter()
            .map(|o| if let Obj::Int(i) = o { *i } else { panic!() })
            .collect();
        assert_eq!(ints, vec![1, -2, 300, 70000]);
        assert!(matches!(l[4], Obj::Float(f) if f == 1.5));
        assert!(matches!(l[5], Obj::Bool(true)));
        assert!(matches!(l[6], Obj::None));
        let Obj::Tuple(t) = &d[1].1 else { panic!() };
        assert!(matches!(&t[0], Obj::Str(s) if s == "x"));
        assert!(matches!(t[1], Obj::Int(i) if i == 1i128 << 70));
    }

    #[test]
    fn memo_shares_mutated_containers() {
        // l = []; pickle of [l, l] built as: ] q0 ( ] q1 h1 e  -> APPEND into shared list afterwards
        let p = [
            0x80, 2, b']', b'q', 0, b'(', b']', b'q', 1, b'h', 1, b'e', b'h', 1, b'K', 7, b'a', b'0', b'.',
        ];
        let (v, _) = unpickle(&p).unwrap();
        let Obj::List(outer) = v else { panic!() };
        let outer = outer.borrow();
        for inner in outer.iter() {
            let Obj::List(i) = inner else { panic!() };
            assert_eq!(i.borrow().len(), 1, "append through the memo reaches both references");
        }
    }

    #[test]
    fn refuses_non_whitelisted_globals() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ('echo hi',)), protocol 2
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"posix\nsystem\n");
        p.extend([b'q', 0, b'X', 7, 0, 0, 0]);
        p.extend(b"echo hi");
        p.extend([0x85, b'R', b'.']);
        let err = unpickle(&p).unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend(b"builtins");
        p.extend([0x8c, 4]);
        p.extend(b"eval");
        p.extend([0x93, b'.']);
        assert!(unpickle(&p).unwrap_err().contains("builtins.eval"));
    }

    #[test]
    fn rebuilds_tensor_spec_from_persistent_storage() {
        // _rebuild_tensor_v2(pid('storage', FloatStorage, '0', 'cpu', 6), 1, (2, 2), (3, 1), False, OrderedDict())
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"torch._utils\n_rebuild_tensor_v2\n");
        p.extend([b'(', b'(', b'X', 7, 0, 0, 0]);
        p.extend(b"storage");
        p.push(b'c');
        p.extend(b"torch\nFloatStorage\n");
        p.extend([b'X', 1, 0, 0, 0, b'0', b'X', 3, 0, 0, 0]);
        p.extend(b"cpu");
        p.extend([
            b'K', 6, b't', b'Q', b'K', 1, b'K', 2, b'K', 2, 0x86, b'K', 3, b'K', 1, 0x86, 0x89, b'c',
        ]);
        p.extend(b"collections\nOrderedDict\n");
        p.extend([b')', b'R', b't', b'R', b'.']);
        let (v, _) = unpickle(&p).unwrap();
        let Obj::Tensor(t) = v else { panic!("{v:?}") };
        assert_eq!(
            t.storage,
            StorageRef {
                key: "0".into(),
                dtype: StorageDtype::F32,
                numel: 6,
                inline: None,
            }
        );
        assert_eq!(
            (t.offset, t.size.clone(), t.stride.clone()),
            (1, vec![2, 2], vec![3, 1])
        );
        // The same view on a 4-element storage would read past its end: refused.
        let i = p.iter().position(|&b| b == 6).unwrap();
        p[i] = 4;
        assert!(unpickle(&p)
            .unwrap_err()
            .contains("reaches element 5 of a storage with 4 elements"));
    }

    #[test]
    fn numpy_array_as_python2_writes_it() {
        // cPickle (protocol 2) of {'data': np.arange(6, dtype=np.uint8).reshape(2, 3)}, the form
        // of CIFAR-10's python batches: SHORT_BINSTRING keys, dtype BUILD, BINSTRING raw data.
        let mut p = vec![0x80, 2, b'}', b'q', 1, b'(', b'U', 4];
        p.extend(b"data");
        p.push(b'c');
        p.extend(b"numpy.core.multiarray\n_reconstruct\n");
        p.push(b'c');
        p.extend(b"numpy\nndarray\n");
        p.extend([
            b'K', 0, 0x85, b'U', 1, b'b', 0x87, b'R', b'(', b'K', 1, b'K', 2, b'K', 3, 0x86, b'c',
        ]);
        p.extend(b"numpy\ndtype\n");
        p.extend([
            b'U', 2, b'u', b'1', b'K', 0, b'K', 1, 0x87, b'R', b'(', b'K', 3, b'U', 1, b'|',
        ]);
        p.extend([
            b'N', b'N', b'N', b'J', 0xff, 0xff, 0xff, 0xff, b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', b'b',
        ]);
        p.extend([0x89, b'T', 6, 0, 0, 0, 0, 1, 2, 3, 4, 0xff, b't', b'b', b'u', b'.']);
        let (v, _) = unpickle(&p).unwrap();
        let Obj::Dict(d) = v else { panic!() };
        let d = d.borrow();
        let Obj::NdArray(a) = &d[0].1 else {
            panic!("{:?}", d[0].1)
        };
        let a = a.borrow();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(
            a.dtype,
            Some(NpDtype {
                code: "u1".into(),
                byte_order: '|'
            })
        );
        assert_eq!(a.data, vec![0, 1, 2, 3, 4, 255]);
    }

    /// `mylib.Thing.__new__(Thing, 5)`, then BUILD {'a': 1}, then SETITEMS {'k': 2} (protocol 2).
    fn newobj_build_setitems() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"mylib\nThing\n");
        p.extend([b'K', 5, 0x85, 0x81, b'}', b'X', 1, 0, 0, 0, b'a', b'K', 1, b's', b'b']);
        p.extend([b'(', b'X', 1, 0, 0, 0, b'k', b'K', 2, b'u', b'.']);
        p
    }

    #[test]
    fn inert_mode_records_what_unknown_classes_would_build() {
        let (v, _) = unpickle_with(&newobj_build_setitems(), Globals::Inert).unwrap();
        let Obj::Inert(o) = v else { panic!("{v:?}") };
        let o = o.borrow();
        assert_eq!(o.callee.to_string(), "mylib.Thing");
        assert!(matches!(o.args.as_slice(), [Obj::Int(5)]));
        let Some(Obj::Dict(state)) = &o.state else { panic!() };
        assert!(matches!(state.borrow().as_slice(), [(Obj::Str(k), Obj::Int(1))] if k == "a"));
        assert!(matches!(o.items.as_slice(), [(Obj::Str(k), Obj::Int(2))] if k == "k"));
        // The same bytes in a torch checkpoint are refused.
        let err = unpickle(&newobj_build_setitems()).unwrap_err();
        assert!(err.contains("`mylib.Thing`, which is not a tensor"), "{err}");
    }

    #[test]
    fn inert_mode_still_refuses_code() {
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"posix\nsystem\n");
        p.extend([b'X', 7, 0, 0, 0]);
        p.extend(b"echo hi");
        p.extend([0x85, b'R', b'.']);
        let err = unpickle_with(&p, Globals::Inert).unwrap_err();
        assert_eq!(err, "refusing to load: the pickle references `posix.system`, which would run code or reach the system when unpickled; this is not a model file (nothing was executed)");
        for (m, n) in [("os", "system"), ("subprocess", "Popen"), ("builtins", "getattr"), ("builtins", "__import__"), ("importlib.util", "x"), ("shutil", "rmtree"), ("socket", "socket"), ("sys", "modules")] {
            assert!(runs_code(m, n), "{m}.{n}");
        }
        for (m, n) in [("builtins", "set"), ("torch_utils.persistence", "_reconstruct_persistent_obj"), ("ossify", "x"), ("torch.nn.modules.container", "ModuleDict")] {
            assert!(!runs_code(m, n), "{m}.{n}");
        }
        // Plain pickles have no container to resolve persistent ids.
        let err = unpickle_with(&[0x80, 2, b'K', 1, b'Q', b'.'], Globals::Inert).unwrap_err();
        assert!(err.contains("persistent id"), "{err}");
    }

    #[test]
    fn numpy_scalars_and_sets_are_data() {
        // numpy.core.multiarray.scalar(numpy.dtype('f8', False, True) + BUILD, b'<1.5 as f8>')
        let mut p = vec![0x80, 2, b'c'];
        p.extend(b"numpy.core.multiarray\nscalar\n");
        p.push(b'c');
        p.extend(b"numpy\ndtype\n");
        p.extend([b'X', 2, 0, 0, 0, b'f', b'8', 0x89, 0x88, 0x87, b'R']);
        p.extend([b'(', b'K', 3, b'X', 1, 0, 0, 0, b'<', b'N', b'N', b'N']);
        p.extend([b'J', 0xff, 0xff, 0xff, 0xff, b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', b'b', b'C', 8]);
        p.extend(1.5f64.to_le_bytes());
        p.extend([0x86, b'R', b'.']);
        assert!(matches!(unpickle(&p).unwrap().0, Obj::Float(f) if f == 1.5));
        // EMPTY_SET, MARK, 1, 2, ADDITEMS
        let (v, _) = unpickle(&[0x80, 4, 0x8f, b'(', b'K', 1, b'K', 2, 0x90, b'.']).unwrap();
        let Obj::List(l) = v else { panic!() };
        assert_eq!(l.borrow().len(), 2);
    }

    #[test]
    fn truncated_pickle_is_an_error() {
        let p = [0x80, 2, b'X', 10, 0, 0, 0, b'a', b'b'];
        assert!(unpickle(&p).unwrap_err().contains("truncated"));
        assert!(unpickle(&[0x80, 2, b']']).unwrap_err().contains("truncated"));
    }
}
