//! NVlabs `torch_utils.persistence` pickles (EDM, StyleGAN2-ADA/3 network snapshots), read as
//! data. Nothing in them is executed: their classes' source code travels inside the file and
//! is never run; the object graph is walked instead.
//!
//! Layout (from NVlabs/edm `torch_utils/persistence.py` and `training/training_loop.py`, and
//! what `pickle.dump` of torch 2.x objects writes):
//! - A snapshot `network-snapshot-*.pkl` is `pickle.dump(dict(ema=…, loss_fn=…, augment_pipe=…,
//!   dataset_kwargs=dict(…)))`, protocol 4 (not a torch.save container).
//! - Every instance of a `@persistent_class` (the preconditioners, networks and layers of
//!   `training/networks.py`, the losses, the augment pipe) reduces to
//!   `torch_utils.persistence._reconstruct_persistent_obj(meta)` with `meta = dict(type='class',
//!   version=6, module_src=<source of the class's whole module>, class_name=…, state=…)`, where
//!   `state` is the instance `__dict__`. For a `torch.nn.Module` that is `training`,
//!   `_parameters`, `_buffers`, `_non_persistent_buffers_set` (a set), the hook `OrderedDict`s,
//!   `_modules` (name → submodule), then the attributes set in `__init__` (e.g. `img_resolution`,
//!   `sigma_data`, `skip_scale` as a NumPy float64), and `_init_args` / `_init_kwargs`: the
//!   constructor arguments (for EDM's preconditioners the flat `img_resolution, img_channels,
//!   label_dim, use_fp16, model_type, <model kwargs>`).
//! - Containers that are not persistent, like `torch.nn.ModuleDict` (`enc`, `dec`), are
//!   `NEWOBJ torch.nn.modules.container.ModuleDict ()` followed by `BUILD <__dict__>`.
//! - Parameters are `torch._utils._rebuild_parameter(<tensor>, requires_grad, OrderedDict())`,
//!   tensors `torch._utils._rebuild_tensor_v2(<storage>, offset, size, stride, requires_grad,
//!   OrderedDict())`, and each storage `torch.storage._load_from_bytes(<bytes>)` whose bytes are a
//!   legacy-format torch.save of that storage alone (see [`super::legacy`]).
//!
//! Here `_reconstruct_persistent_obj(meta)` becomes an [`Object`] named by `meta.class_name`
//! with `meta.state` as its state; `module_src` is dropped unread.
use std::collections::BTreeMap;

use tch::Tensor;

use super::pickle::{InertObj, Obj};
use super::{Object, Value};

const RECONSTRUCT: (&str, &str) = ("torch_utils.persistence", "_reconstruct_persistent_obj");

/// A persistent object's `meta` as an [`Object`]; `None` if `o` is not such a call.
pub(super) fn reconstruct(
    o: &InertObj,
    rec: &mut dyn FnMut(&Obj) -> Result<Value, String>,
) -> Result<Option<Object>, String> {
    if (o.callee.module.as_str(), o.callee.name.as_str()) != RECONSTRUCT {
        return Ok(None);
    }
    let [Obj::Dict(meta)] = o.args.as_slice() else {
        return Err("_reconstruct_persistent_obj expects one meta dict".into());
    };
    let meta = meta.borrow();
    let field = |name: &str| {
        meta.iter()
            .find(|(k, _)| matches!(k, Obj::Str(s) if s == name))
            .map(|(_, v)| v)
    };
    match field("type") {
        Some(Obj::Str(t)) if t == "class" => {}
        _ => return Err("persistent object meta: `type` must be 'class'".into()),
    }
    let Some(Obj::Str(class)) = field("class_name") else {
        return Err("persistent object meta has no `class_name`".into());
    };
    let state = match field("state") {
        Some(s) => rec(s)?,
        None => Value::None,
    };
    Ok(Some(Object {
        class: class.clone(),
        persistent: true,
        args: vec![],
        kwargs: vec![],
        state,
        items: vec![],
        list: vec![],
    }))
}

/// `torch.nn.Module.state_dict()` of a module object: its parameters and buffers (`None`
/// entries skipped), then each submodule's under `<name>.`, in the file's order.
pub fn module_tensors(module: &Value) -> Result<BTreeMap<String, Tensor>, String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, Tensor>, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("modules nested deeper than 64 levels".into());
        }
        let here = if prefix.is_empty() { "the root".to_string() } else { format!("`{}`", prefix.trim_end_matches('.')) };
        let Value::Object(o) = v else {
            return Err(format!("{here} is a {}, not a torch.nn.Module", v.kind()));
        };
        let table = |name: &str| -> Result<&[(Value, Value)], String> {
            match o.state.get(name) {
                Some(Value::Dict(items)) => Ok(items.as_slice()),
                _ => Err(format!("{here} ({}) has no `{name}`: not a torch.nn.Module", o.class)),
            }
        };
        for name in ["_parameters", "_buffers"] {
            for (k, t) in table(name)? {
                let Value::Str(k) = k else {
                    return Err(format!("{here}: non-string key in `{name}`"));
                };
                match t {
                    Value::None => {}
                    Value::Tensor(t) => {
                        out.insert(format!("{prefix}{k}"), t.shallow_clone());
                    }
                    other => return Err(format!("`{prefix}{k}` is a {}, not a tensor", other.kind())),
                }
            }
        }
        for (k, m) in table("_modules")? {
            let Value::Str(k) = k else {
                return Err(format!("{here}: non-string key in `_modules`"));
            };
            if !matches!(m, Value::None) {
                walk(m, &format!("{prefix}{k}."), out, depth + 1)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(module, "", &mut out, 0)?;
    Ok(out)
}
