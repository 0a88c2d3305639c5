//! Applying a strategic merge patch, following the server side of
//! k8s.io/apimachinery/pkg/util/strategicpatch (`mergeMap`, `mergeSlice`, with parallel lists
//! merged and unmatched nulls ignored).
//!
//! Ordering is Kubernetes': with `$setElementOrder` the named items take its order and the
//! others keep their place; without it, changed items keep their place and items new to the
//! list go first (Kubernetes' `mergeSortedSlice`), which is what `kubectl patch` users see.
//!
//! Deliberate differences, all where Kubernetes errors or stores garbage:
//! - a value new to the object has its directives applied to an empty value (Kubernetes stores
//!   a new map with its `$patch` key verbatim); no directive is ever stored;
//! - `$deleteFromPrimitiveList` for a list the object lacks does nothing (Kubernetes creates
//!   the list from the values to delete);
//! - `$patch: merge` is accepted as the default it names, in maps and list items;
//! - `$setElementOrder` of a list without merge strategy is ignored, and original items
//!   lacking the merge key are kept in place rather than failing the patch.

use serde_json::{Map, Value};

use super::{fields, ListStrategy, PatchError};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// The definition describing the map being merged, when known.
type Def = Option<&'static str>;

/// Merges `patch` into `original`, both maps of the type `def`.
pub(crate) fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    def: Def,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            // The patch (its own directives applied) replaces the map.
            Some("replace") => return merge_map(Map::new(), patch, def),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::BadPatchType {
                    directive: directive.to_string(),
                    map: Value::Object(patch).to_string(),
                })
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, def)?;

    for (key, value) in patch {
        if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(rest).ok_or(PatchError::BadPrimitiveList)?;
            delete_from_primitive_list(&mut original, field, value)?;
            continue;
        }
        if value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let child = def.and_then(|d| fields::child_definition(d, &key));
        let strategy = fields::strategy(def, &key);
        match original.get_mut(&key) {
            Some(slot) => {
                let old = std::mem::take(slot);
                *slot = merge_value(old, value, child, strategy, &key)?;
            }
            None => {
                let new = clean(value, child, strategy, &key)?;
                original.insert(key, new);
            }
        }
    }
    Ok(original)
}

/// Merges one value of the patch into the value it meets.
fn merge_value(
    old: Value,
    new: Value,
    child: Def,
    strategy: ListStrategy,
    field: &str,
) -> Result<Value, PatchError> {
    match (old, new) {
        (Value::Object(o), Value::Object(p)) => Ok(Value::Object(merge_map(o, p, child)?)),
        (Value::Array(o), Value::Array(p)) => {
            Ok(Value::Array(merge_list(o, p, strategy, child, field)?))
        }
        (_, new) => clean(new, child, strategy, field),
    }
}

/// A patch value that meets nothing, with its directives applied.
fn clean(
    value: Value,
    child: Def,
    strategy: ListStrategy,
    field: &str,
) -> Result<Value, PatchError> {
    match value {
        Value::Object(p) => Ok(Value::Object(merge_map(Map::new(), p, child)?)),
        Value::Array(p) if strategy != ListStrategy::Replace => Ok(Value::Array(merge_list(
            Vec::new(),
            p,
            strategy,
            child,
            field,
        )?)),
        other => Ok(other),
    }
}

/// `$retainKeys`: drops the keys of `original` the list does not name, after checking that the
/// patch sets nothing outside the list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(list) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(PatchError::BadRetainKeys);
    };
    let keep: Vec<&str> = list
        .iter()
        .map(|v| v.as_str().ok_or(PatchError::BadRetainKeys))
        .collect::<Result<_, _>>()?;
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(PatchError::BadRetainKeys);
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field's list now and orders the result: the items
/// the directive names in its order, the others where they stood in the original.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    def: Def,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let order = patch.shift_remove(&directive).unwrap_or_default();
        let field = directive_field(&directive[SET_ELEMENT_ORDER.len()..])
            .ok_or(PatchError::BadSetElementOrder)?
            .to_string();
        let Value::Array(order) = order else {
            return Err(PatchError::BadSetElementOrder);
        };
        let strategy = fields::strategy(def, &field);
        let merge_key = match strategy {
            ListStrategy::MergeByKey(key) => Some(key),
            ListStrategy::MergePrimitives => None,
            // The order of a replaced list is the patch's own: nothing to do.
            ListStrategy::Replace => continue,
        };
        if let Some(key) = merge_key {
            for item in &order {
                if item.get(key).is_none() {
                    return Err(no_merge_key(key, item));
                }
            }
        }
        let child = def.and_then(|d| fields::child_definition(d, &field));
        let original_list = match original.get(&field) {
            Some(Value::Array(a)) => Some(a.clone()),
            _ => None,
        };
        let patch_list = match patch.shift_remove(&field) {
            Some(Value::Array(a)) => Some(a),
            Some(_) => return Err(PatchError::BadSetElementOrder),
            None => None,
        };
        if let Some(p) = &patch_list {
            check_order(p, &order, merge_key)?;
        }
        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (Some(o), None) => o,
            (o, Some(p)) => merge_list(o.unwrap_or_default(), p, strategy, child, &field)?,
            (None, None) => continue,
        };
        let (named, others): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|v| index_of(&order, v, merge_key).is_some());
        let ordered = normalize_order(named, others, &order, &server_order, merge_key);
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// Checks that the items of a patch list appear in the order `$setElementOrder` gives them
/// (deletions and other directive items aside).
fn check_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch_list
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if same_identity(items[p], &order[o], merge_key) {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch: Value::Array(patch_list.to_vec()).to_string(),
            order: Value::Array(order.to_vec()).to_string(),
        });
    }
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: removes the listed scalars from the field's list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    values: Value,
) -> Result<(), PatchError> {
    let Value::Array(values) = values else {
        return Err(PatchError::BadPrimitiveList);
    };
    if values.iter().any(|v| v.is_object() || v.is_array()) {
        return Err(PatchError::BadPrimitiveList);
    }
    if let Some(Value::Array(list)) = original.get_mut(field) {
        if list.iter().any(|v| v.is_object() || v.is_array()) {
            return Err(PatchError::BadPrimitiveList);
        }
        list.retain(|v| !values.iter().any(|d| same_scalar(d, v)));
    }
    Ok(())
}

/// What a list holds.
#[derive(PartialEq, Eq)]
enum Elements {
    Maps,
    Scalars,
}

/// Merges two lists of the field `field` by `strategy`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    strategy: ListStrategy,
    child: Def,
    field: &str,
) -> Result<Vec<Value>, PatchError> {
    if strategy == ListStrategy::Replace {
        return Ok(patch);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match element_kind(&original, &patch)? {
        Elements::Scalars => Ok(merge_scalars(original, patch)),
        Elements::Maps => match strategy {
            ListStrategy::MergeByKey(key) => merge_maps_by_key(original, patch, key, child),
            _ => Err(PatchError::NoMergeKeyForList(field.to_string())),
        },
    }
}

/// The union of two lists of scalars, ordered as the patch and the original say.
fn merge_scalars(original: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch.iter()) {
        if !merged.iter().any(|m| same_scalar(m, v)) {
            merged.push(v.clone());
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| patch.iter().any(|p| same_scalar(p, v)));
    normalize_order(in_patch, server_only, &patch, &original, None)
}

/// Merges lists of maps keyed by `key`, applying `$patch: delete` and `$patch: replace` items.
fn merge_maps_by_key(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &'static str,
    child: Def,
) -> Result<Vec<Value>, PatchError> {
    let mut base = original;
    let mut items: Vec<Map<String, Value>> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(item) = item else {
            return Err(PatchError::MixedList(item.to_string()));
        };
        match item.get(DIRECTIVE).map(|d| d.as_str()) {
            None | Some(Some("merge")) => items.push(item),
            Some(Some("delete")) => {
                let value = item
                    .get(key)
                    .ok_or_else(|| no_merge_key(key, &Value::Object(item.clone())))?;
                base.retain(|o| !o.get(key).is_some_and(|v| same_scalar(v, value)));
            }
            Some(Some("replace")) => replace = true,
            Some(_) => {
                let directive = item.get(DIRECTIVE).cloned().unwrap_or_default();
                return Err(PatchError::BadPatchType {
                    directive: directive.to_string(),
                    map: Value::Object(item).to_string(),
                });
            }
        }
    }
    if replace {
        return items
            .into_iter()
            .map(|m| merge_map(Map::new(), m, child).map(Value::Object))
            .collect();
    }

    let server_order = base.clone();
    let mut patch_order: Vec<Value> = Vec::with_capacity(items.len());
    let mut merged = base;
    for item in items {
        let Some(value) = item.get(key).cloned() else {
            return Err(no_merge_key(key, &Value::Object(item)));
        };
        let found = merged
            .iter()
            .position(|o| o.get(key).is_some_and(|v| same_scalar(v, &value)));
        match found {
            Some(i) => {
                let Value::Object(old) = std::mem::take(&mut merged[i]) else {
                    return Err(PatchError::MixedList(value.to_string()));
                };
                merged[i] = Value::Object(merge_map(old, item, child)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), item, child)?)),
        }
        let mut identity = Map::new();
        identity.insert(key.to_string(), value);
        patch_order.push(Value::Object(identity));
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_of(&patch_order, v, Some(key)).is_some());
    Ok(normalize_order(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// The kind of items two lists hold together: all maps or all scalars of one JSON type.
fn element_kind(original: &[Value], patch: &[Value]) -> Result<Elements, PatchError> {
    let mut first: Option<&Value> = None;
    for v in original.iter().chain(patch.iter()) {
        if v.is_array() {
            return Err(PatchError::ListOfLists);
        }
        match first {
            None => first = Some(v),
            Some(f) if std::mem::discriminant(f) != std::mem::discriminant(v) => {
                return Err(PatchError::MixedList(
                    Value::Array(original.iter().chain(patch.iter()).cloned().collect())
                        .to_string(),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(match first {
        Some(Value::Object(_)) => Elements::Maps,
        _ => Elements::Scalars,
    })
}

/// Orders a merged list: `in_patch` sorted by `patch_order`, `server_only` by `server_order`,
/// then interleaved so that a server-only item stays before a patch item it preceded in the
/// original; patch items new to the original come first (Kubernetes' `normalizeElementOrder`
/// and `mergeSortedSlice`).
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    in_patch.sort_by_key(|v| index_of(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_of(server_order, v, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_of(server_order, l, key), index_of(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// The position in `list` of the item with `item`'s identity (its merge key's value, or the
/// scalar itself).
fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|v| same_identity(v, item, key))
}

fn same_identity(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(k) => match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => same_scalar(x, y),
            _ => false,
        },
        None => same_scalar(a, b),
    }
}

/// JSON equality, numbers compared by value (`80` and `80.0` are one port).
fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The field a `$deleteFromPrimitiveList` / `$setElementOrder` key names, from what follows
/// the prefix ("/finalizers").
fn directive_field(rest: &str) -> Option<&str> {
    rest.strip_prefix('/').filter(|f| !f.is_empty())
}

fn no_merge_key(key: &str, item: &Value) -> PatchError {
    PatchError::NoMergeKey {
        key: key.to_string(),
        item: item.to_string(),
    }
}

#[cfg(test)]
mod tests;
