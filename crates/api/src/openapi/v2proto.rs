//! The Swagger 2.0 document in the protobuf encoding kubectl asks `/openapi/v2` for
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): the `openapi.v2`
//! messages of gnostic's OpenAPIv2.proto. client-go decodes nothing else there, and kubectl
//! reads it to validate manifests on the client when it cannot leave validation to the server:
//! a `kind: List` manifest always takes that path.
//!
//! The encoder walks the JSON document of [`super::docs`]; vendor extensions, defaults and
//! enum values travel as `Any.yaml` text (JSON is valid YAML).

use serde_json::{Map, Value};

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A string field; proto3 leaves empty strings out.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn string_of(&mut self, field: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str) {
            self.string(field, s);
        }
    }

    fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn bool_of(&mut self, field: u32, v: Option<&Value>) {
        self.bool(field, v.and_then(Value::as_bool).unwrap_or(false));
    }

    fn int64_of(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64) {
            self.key(field, 0);
            self.varint(n as u64);
        }
    }

    fn double_of(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64) {
            self.key(field, 1);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    fn strings_of(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }

    /// `NamedAny` entries for every `x-` key of `m`.
    fn extensions(&mut self, field: u32, m: &Map<String, Value>) {
        for (k, v) in m {
            if k.starts_with("x-") {
                let mut named = Msg::default();
                named.string(1, k);
                named.message(2, any(v));
                self.message(field, named);
            }
        }
    }
}

/// `openapi.v2.Any` carrying `v` as YAML.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &v.to_string());
    m
}

/// Encodes the Swagger 2.0 JSON document as an `openapi.v2.Document`.
pub(crate) fn encode(doc: &Value) -> Vec<u8> {
    let empty = Map::new();
    let d = doc.as_object().unwrap_or(&empty);
    let mut m = Msg::default();
    m.string_of(1, d.get("swagger"));
    if let Some(info) = d.get("info") {
        let mut i = Msg::default();
        i.string_of(1, info.get("title"));
        i.string_of(2, info.get("version"));
        m.message(2, i);
    }
    if let Some(Value::Object(paths)) = d.get("paths") {
        let mut p = Msg::default();
        for (name, item) in paths {
            let mut named = Msg::default();
            named.string(1, name);
            named.message(2, path_item(item));
            p.message(2, named);
        }
        m.message(8, p);
    }
    if let Some(Value::Object(defs)) = d.get("definitions") {
        let mut list = Msg::default();
        for (name, s) in defs {
            list.message(1, named_schema(name, s));
        }
        m.message(9, list);
    }
    for requirement in d
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut r = Msg::default();
        for (name, scopes) in requirement.as_object().into_iter().flatten() {
            let mut named = Msg::default();
            named.string(1, name);
            let mut array = Msg::default();
            array.strings_of(1, Some(scopes));
            named.message(2, array);
            r.message(1, named);
        }
        m.message(12, r);
    }
    if let Some(Value::Object(defs)) = d.get("securityDefinitions") {
        let mut list = Msg::default();
        for (name, def) in defs {
            let mut key = Msg::default();
            key.string_of(1, def.get("type"));
            key.string_of(2, def.get("name"));
            key.string_of(3, def.get("in"));
            key.string_of(4, def.get("description"));
            let mut item = Msg::default();
            item.message(2, key);
            let mut named = Msg::default();
            named.string(1, name);
            named.message(2, item);
            list.message(1, named);
        }
        m.message(13, list);
    }
    m.0
}

fn named_schema(name: &str, s: &Value) -> Msg {
    let mut named = Msg::default();
    named.string(1, name);
    named.message(2, schema(s));
    named
}

/// An `openapi.v2.Schema`.
fn schema(v: &Value) -> Msg {
    let empty = Map::new();
    let s = v.as_object().unwrap_or(&empty);
    let mut m = Msg::default();
    m.string_of(1, s.get("$ref"));
    m.string_of(2, s.get("format"));
    m.string_of(3, s.get("title"));
    m.string_of(4, s.get("description"));
    if let Some(d) = s.get("default") {
        m.message(5, any(d));
    }
    m.double_of(6, s.get("multipleOf"));
    m.double_of(7, s.get("maximum"));
    m.bool_of(8, s.get("exclusiveMaximum"));
    m.double_of(9, s.get("minimum"));
    m.bool_of(10, s.get("exclusiveMinimum"));
    m.int64_of(11, s.get("maxLength"));
    m.int64_of(12, s.get("minLength"));
    m.string_of(13, s.get("pattern"));
    m.int64_of(14, s.get("maxItems"));
    m.int64_of(15, s.get("minItems"));
    m.bool_of(16, s.get("uniqueItems"));
    m.int64_of(17, s.get("maxProperties"));
    m.int64_of(18, s.get("minProperties"));
    m.strings_of(19, s.get("required"));
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            // A oneof member is present even when false.
            a.key(2, 0);
            a.varint(u64::from(*b));
            m.message(21, a);
        }
        Some(v @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(v));
            m.message(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut t_msg = Msg::default();
            t_msg.string(1, t);
            m.message(22, t_msg);
        }
        Some(types @ Value::Array(_)) => {
            let mut t_msg = Msg::default();
            t_msg.strings_of(1, Some(types));
            m.message(22, t_msg);
        }
        _ => {}
    }
    match s.get("items") {
        Some(v @ Value::Object(_)) => {
            let mut i = Msg::default();
            i.message(1, schema(v));
            m.message(23, i);
        }
        Some(Value::Array(list)) => {
            let mut i = Msg::default();
            for v in list {
                i.message(1, schema(v));
            }
            m.message(23, i);
        }
        _ => {}
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(sub));
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        let mut p = Msg::default();
        for (name, sub) in props {
            p.message(1, named_schema(name, sub));
        }
        m.message(25, p);
    }
    m.bool_of(27, s.get("readOnly"));
    m.extensions(31, s);
    m
}

/// An `openapi.v2.PathItem`.
fn path_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("patch", 8),
    ] {
        if let Some(op) = v.get(method) {
            m.message(field, operation(op));
        }
    }
    for p in v
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameters_item(p));
    }
    m
}

/// An `openapi.v2.Operation`.
fn operation(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings_of(1, v.get("tags"));
    m.string_of(3, v.get("description"));
    m.string_of(5, v.get("operationId"));
    m.strings_of(6, v.get("produces"));
    m.strings_of(7, v.get("consumes"));
    for p in v
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameters_item(p));
    }
    if let Some(Value::Object(responses)) = v.get("responses") {
        let mut r = Msg::default();
        for (code, resp) in responses {
            let mut response = Msg::default();
            response.string_of(1, resp.get("description"));
            if let Some(s) = resp.get("schema") {
                let mut item = Msg::default();
                item.message(1, schema(s));
                response.message(2, item);
            }
            let mut value = Msg::default();
            value.message(1, response);
            let mut named = Msg::default();
            named.string(1, code);
            named.message(2, value);
            r.message(1, named);
        }
        m.message(9, r);
    }
    m.strings_of(10, v.get("schemes"));
    if let Some(o) = v.as_object() {
        m.extensions(13, o);
    }
    m
}

/// An `openapi.v2.ParametersItem` holding a body, query or path parameter.
fn parameters_item(v: &Value) -> Msg {
    let location = v.get("in").and_then(Value::as_str).unwrap_or("");
    let mut parameter = Msg::default();
    if location == "body" {
        let mut b = Msg::default();
        b.string_of(1, v.get("description"));
        b.string_of(2, v.get("name"));
        b.string_of(3, v.get("in"));
        b.bool_of(4, v.get("required"));
        if let Some(s) = v.get("schema") {
            b.message(5, schema(s));
        }
        parameter.message(1, b);
    } else {
        // Query and path sub-schemas differ from `type` on (path has no allowEmptyValue).
        let (which, type_field, unique_field) = if location == "path" {
            (4, 5, 19)
        } else {
            (3, 6, 20)
        };
        let mut p = Msg::default();
        p.bool_of(1, v.get("required"));
        p.string_of(2, v.get("in"));
        p.string_of(3, v.get("description"));
        p.string_of(4, v.get("name"));
        p.string_of(type_field, v.get("type"));
        p.bool_of(unique_field, v.get("uniqueItems"));
        let mut non_body = Msg::default();
        non_body.message(which, p);
        parameter.message(2, non_body);
    }
    let mut item = Msg::default();
    item.message(1, parameter);
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_fields_and_lengths() {
        let doc = json!({"swagger": "2.0", "info": {"title": "K", "version": "v"}});
        // Document{swagger=1:"2.0", info=2:{title=1:"K", version=2:"v"}}
        assert_eq!(
            encode(&doc),
            [0x0a, 3, b'2', b'.', b'0', 0x12, 6, 0x0a, 1, b'K', 0x12, 1, b'v']
        );
        let s = schema(&json!({"type": "string", "x-a": [1]}));
        // type=22 (key 0xb2 0x01) TypeItem{value=1:"string"}, vendor_extension=31 (0xfa 0x01)
        assert_eq!(&s.0[..3], &[0xb2, 0x01, 8]);
        assert_eq!(&s.0[11..13], &[0xfa, 0x01]);
        let mut big = Msg::default();
        big.varint(300);
        assert_eq!(big.0, [0xac, 0x02]);
    }
}
