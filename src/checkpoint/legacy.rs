//! The legacy `torch.save` container (PyTorch < 1.6, and `_use_new_zipfile_serialization=False`):
//! pickles of the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001 and a sys_info
//! dict; the main pickle (storages as persistent ids `('storage', <Kind>Storage, key, location,
//! numel, view_metadata)`); a pickle of the storage keys; then per key an int64 element count
//! followed by the raw elements.
//!
//! Besides whole checkpoints, plain `pickle.dump` of a tensor writes each storage this way:
//! `torch.storage._load_from_bytes(<legacy torch.save of the storage alone>)` ([`inline_storage`]).
use std::collections::HashMap;
use std::rc::Rc;

use super::pickle::{self, InlineBytes, Obj, StorageDtype, StorageRef};

const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// A parsed legacy container: the main pickle's value and where each storage's raw bytes lie.
pub(super) struct Legacy {
    pub root: Obj,
    /// Storage key → (byte offset, byte length) in the container.
    pub raw: HashMap<String, (usize, usize)>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Legacy, String> {
    let mut pos = 0usize;
    let mut next = |what: &str| -> Result<Obj, String> {
        let (o, used) = pickle::unpickle(&bytes[pos..]).map_err(|m| format!("{what}: {m}"))?;
        pos += used;
        Ok(o)
    };
    let not_torch = "not a PyTorch checkpoint (neither a zip archive nor the legacy format's magic number)";
    match next("magic number") {
        Ok(Obj::Int(m)) if m == LEGACY_MAGIC => {}
        _ => return Err(not_torch.into()),
    }
    match next("protocol version")? {
        Obj::Int(p) if p == LEGACY_PROTOCOL => {}
        other => return Err(format!("unsupported legacy protocol version {other:?} (expected 1001)")),
    }
    if let Obj::Dict(info) = next("sys_info")? {
        let little = info.borrow().iter().find_map(|(k, v)| match (k, v) {
            (Obj::Str(k), Obj::Bool(b)) if k == "little_endian" => Some(*b),
            _ => None,
        });
        if little == Some(false) {
            return Err("big-endian checkpoint is not supported".into());
        }
    }
    let root = next("main pickle")?;
    let keys = match next("storage keys")? {
        Obj::List(l) => l
            .borrow()
            .iter()
            .map(|k| match k {
                Obj::Str(s) => Ok(s.clone()),
                o => Err(format!("storage key of type {o:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("storage key list is not a list".into()),
    };
    // Element types come from the main pickle's persistent ids; the raw section stores counts only.
    let mut dtypes: HashMap<String, StorageDtype> = HashMap::new();
    collect_storages(&root, &mut dtypes, 0);
    let mut raw: HashMap<String, (usize, usize)> = HashMap::new();
    for key in keys {
        let dtype = *dtypes
            .get(&key)
            .ok_or_else(|| format!("storage `{key}` is listed but no tensor uses it"))?;
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| format!("file truncated at the header of storage `{key}`"))?;
        let count = i64::from_le_bytes(head.try_into().expect("8 bytes"));
        let n = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.element_size()))
            .ok_or_else(|| format!("storage `{key}` has invalid element count {count}"))?;
        pos += 8;
        if pos.checked_add(n).is_none_or(|end| end > bytes.len()) {
            return Err(format!(
                "file truncated inside storage `{key}`: {n} bytes needed, {} left",
                bytes.len() - pos
            ));
        }
        raw.insert(key, (pos, n));
        pos += n;
    }
    Ok(Legacy { root, raw })
}

/// The storage inside a `_load_from_bytes` blob, under a fresh `key`; its bytes stay in the blob.
pub(super) fn inline_storage(blob: Rc<Vec<u8>>, key: String) -> Result<StorageRef, String> {
    let Legacy { root, raw } = parse(&blob)?;
    let Obj::Storage(s) = root else {
        return Err(format!("expected a storage, found a {}", root_kind(&root)));
    };
    let &(start, len) = raw
        .get(&s.key)
        .ok_or_else(|| format!("storage `{}` has no data", s.key))?;
    Ok(StorageRef {
        key,
        dtype: s.dtype,
        numel: s.numel,
        inline: Some(InlineBytes::new(blob.clone(), start, len)?),
    })
}

fn root_kind(o: &Obj) -> &'static str {
    match o {
        Obj::Tensor(_) => "tensor",
        Obj::Dict(_) => "dict",
        Obj::List(_) => "list",
        Obj::Tuple(_) => "tuple",
        _ => "non-storage value",
    }
}

fn collect_storages(o: &Obj, out: &mut HashMap<String, StorageDtype>, depth: usize) {
    if depth > 256 {
        return;
    }
    match o {
        Obj::Tensor(t) => {
            out.insert(t.storage.key.clone(), t.storage.dtype);
        }
        Obj::Storage(s) => {
            out.insert(s.key.clone(), s.dtype);
        }
        Obj::Tuple(v) => v.iter().for_each(|x| collect_storages(x, out, depth + 1)),
        Obj::List(v) => v.borrow().iter().for_each(|x| collect_storages(x, out, depth + 1)),
        Obj::Dict(v) => v.borrow().iter().for_each(|(k, x)| {
            collect_storages(k, out, depth + 1);
            collect_storages(x, out, depth + 1)
        }),
        _ => {}
    }
}
