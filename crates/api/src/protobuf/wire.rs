//! The protobuf wire format, read against the schema table into JSON.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::{Card, Field, Message, ProtoError, Ty, MAGIC};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// The runtime.Unknown envelope of a body.
pub(super) struct Unknown<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
    pub content_encoding: String,
}

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";

impl<'a> Unknown<'a> {
    /// Reads `runtime.Unknown {1: typeMeta {1: apiVersion, 2: kind}, 2: raw,
    /// 3: contentEncoding, 4: contentType}`; contentType is not needed.
    pub fn parse(data: &'a [u8]) -> Result<Self, ProtoError> {
        let mut unknown = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(data, UNKNOWN);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 => {
                    let mut tm = Reader::new(r.len_field(wire, "typeMeta")?, TYPE_META);
                    while let Some((tag, wire)) = tm.key()? {
                        match tag {
                            1 => unknown.api_version = tm.string_field(wire, "apiVersion")?,
                            2 => unknown.kind = tm.string_field(wire, "kind")?,
                            _ => tm.skip(wire)?,
                        }
                    }
                }
                2 => unknown.raw = r.len_field(wire, "raw")?,
                3 => unknown.content_encoding = r.string_field(wire, "contentEncoding")?,
                _ => r.skip(wire)?,
            }
        }
        Ok(unknown)
    }
}

/// Reads the fields of `message` from `data` into `out`, merging into what `out` holds (as
/// protobuf merges a message field that occurs twice).
pub(super) fn decode_message(
    message: &'static Message,
    data: &[u8],
    out: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    let mut r = Reader::new(data, message.name);
    while let Some((tag, wire)) = r.key()? {
        match message.field(tag) {
            Some(field) => decode_field(&mut r, field, wire, out)?,
            None => r.skip(wire)?,
        }
    }
    Ok(())
}

fn decode_field(
    r: &mut Reader<'_>,
    field: &'static Field,
    wire: u8,
    out: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    if let Ty::Inline(inner) = field.ty {
        return decode_message(inner, r.len_field(wire, &field.label())?, out);
    }
    match field.card {
        Card::Repeated => {
            let mut items = Vec::new();
            let packable = matches!(field.ty, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double);
            if packable && wire == LEN {
                let mut packed = Reader::new(r.len_field(wire, field.json)?, r.message);
                let item_wire = if matches!(field.ty, Ty::Double) {
                    FIXED64
                } else {
                    VARINT
                };
                while !packed.done() {
                    items.extend(value(&mut packed, field, item_wire)?);
                }
            } else {
                items.extend(value(r, field, wire)?);
            }
            match out.get_mut(field.json) {
                Some(Value::Array(list)) => list.extend(items),
                _ => {
                    out.insert(field.json.into(), Value::Array(items));
                }
            }
        }
        Card::Map => {
            let (key, item) = map_entry(r, field, wire)?;
            match out.get_mut(field.json) {
                Some(Value::Object(map)) => {
                    map.insert(key, item);
                }
                _ => {
                    out.insert(
                        field.json.into(),
                        Value::Object(Map::from_iter([(key, item)])),
                    );
                }
            }
        }
        Card::Optional | Card::OmitZero => {
            let item = if let Ty::Message(inner) = field.ty {
                // A message field seen twice merges into the first.
                let mut object = match out.remove(field.json) {
                    Some(Value::Object(object)) => object,
                    _ => Map::new(),
                };
                decode_message(inner, r.len_field(wire, field.json)?, &mut object)?;
                Some(Value::Object(object))
            } else {
                value(r, field, wire)?
            };
            match item {
                Some(item) if !(field.card == Card::OmitZero && is_zero(&item)) => {
                    out.insert(field.json.into(), item);
                }
                // The last occurrence of a field wins, also when it is a zero left out.
                _ => {
                    out.remove(field.json);
                }
            }
        }
    }
    Ok(())
}

/// One `map<string, ty>` entry: a message {1: key, 2: value}; either may be absent (zero).
fn map_entry(
    r: &mut Reader<'_>,
    field: &'static Field,
    wire: u8,
) -> Result<(String, Value), ProtoError> {
    let mut entry = Reader::new(r.len_field(wire, field.json)?, r.message);
    let (mut key, mut item) = (String::new(), None);
    while let Some((tag, wire)) = entry.key()? {
        match tag {
            1 => key = entry.string_field(wire, field.json)?,
            2 => {
                item = match field.ty {
                    Ty::Message(inner) => {
                        let mut object = Map::new();
                        decode_message(inner, entry.len_field(wire, field.json)?, &mut object)?;
                        Some(Value::Object(object))
                    }
                    _ => value(&mut entry, field, wire)?,
                }
            }
            _ => entry.skip(wire)?,
        }
    }
    let item = item.unwrap_or_else(|| match field.ty {
        Ty::Message(_) => Value::Object(Map::new()),
        Ty::Quantity => Value::String("0".into()),
        _ => Value::String(String::new()),
    });
    Ok((key, item))
}

/// One value of a non-message type; `None` for a value the JSON leaves out (a zero Time,
/// an empty RawExtension).
fn value(r: &mut Reader<'_>, field: &Field, wire: u8) -> Result<Option<Value>, ProtoError> {
    let name = field.json;
    Ok(Some(match field.ty {
        Ty::String => Value::String(r.string_field(wire, name)?),
        Ty::Bytes => Value::String(
            base64::engine::general_purpose::STANDARD.encode(r.len_field(wire, name)?),
        ),
        Ty::Bool => Value::Bool(r.varint_field(wire, name)? != 0),
        // int32 is sign-extended to 64 bits on the wire: truncating gives it back.
        Ty::Int32 => Value::from(r.varint_field(wire, name)? as i32),
        Ty::Int64 => Value::from(r.varint_field(wire, name)? as i64),
        Ty::Double => {
            let value = f64::from_bits(r.fixed64_field(wire, name)?);
            Value::Number(
                Number::from_f64(value).ok_or_else(|| ProtoError::NotJsonNumber {
                    message: r.message,
                    field: name.into(),
                    value,
                })?,
            )
        }
        // decode_field merges an inline message into its parent before getting here.
        Ty::Message(inner) | Ty::Inline(inner) => {
            let mut object = Map::new();
            decode_message(inner, r.len_field(wire, name)?, &mut object)?;
            Value::Object(object)
        }
        Ty::Time | Ty::MicroTime => return time(r, field, wire),
        Ty::Duration => {
            let duration = small(r, field, wire, &DURATION)?;
            Value::String(go_duration(
                duration
                    .get("duration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ))
        }
        Ty::Quantity => {
            let quantity = small(r, field, wire, &QUANTITY)?;
            Value::String(
                quantity
                    .get("string")
                    .and_then(Value::as_str)
                    .unwrap_or("0")
                    .to_string(),
            )
        }
        Ty::IntOrString => {
            let mut value = small(r, field, wire, &INT_OR_STRING)?;
            let key = if value.get("type").and_then(Value::as_i64) == Some(1) {
                "strVal"
            } else {
                "intVal"
            };
            value.remove(key).unwrap_or_else(|| {
                if key == "strVal" {
                    Value::String(String::new())
                } else {
                    Value::from(0)
                }
            })
        }
        Ty::RawExtension | Ty::FieldsV1 => {
            // {1: raw}, read by hand: the generic decoder would give base64.
            let mut raw: &[u8] = &[];
            let mut inner = Reader::new(r.len_field(wire, name)?, r.message);
            while let Some((tag, wire)) = inner.key()? {
                match tag {
                    1 => raw = inner.len_field(wire, "raw")?,
                    _ => inner.skip(wire)?,
                }
            }
            if raw.is_empty() {
                return Ok(None);
            }
            if raw.starts_with(MAGIC) {
                // An object embedded as protobuf; no served kind embeds one, and decoding it
                // would recurse as deep as the body lets it.
                return Err(ProtoError::EmbeddedProtobuf {
                    message: r.message,
                    field: field.label(),
                });
            }
            serde_json::from_slice(raw).map_err(|source| ProtoError::RawJson {
                message: r.message,
                field: field.label(),
                source,
            })?
        }
    }))
}

/// The apimachinery messages behind the [`Ty`]s with a JSON form of their own, read with
/// the generic decoder and then turned into that form.
static TIME: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    fields: &[
        Field {
            tag: 1,
            json: "seconds",
            ty: Ty::Int64,
            card: Card::Optional,
        },
        Field {
            tag: 2,
            json: "nanos",
            ty: Ty::Int32,
            card: Card::Optional,
        },
    ],
};
static DURATION: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    fields: &[Field {
        tag: 1,
        json: "duration",
        ty: Ty::Int64,
        card: Card::Optional,
    }],
};
static QUANTITY: Message = Message {
    name: "k8s.io.apimachinery.pkg.api.resource.Quantity",
    fields: &[Field {
        tag: 1,
        json: "string",
        ty: Ty::String,
        card: Card::Optional,
    }],
};
static INT_OR_STRING: Message = Message {
    name: "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    fields: &[
        Field {
            tag: 1,
            json: "type",
            ty: Ty::Int64,
            card: Card::Optional,
        },
        Field {
            tag: 2,
            json: "intVal",
            ty: Ty::Int32,
            card: Card::Optional,
        },
        Field {
            tag: 3,
            json: "strVal",
            ty: Ty::String,
            card: Card::Optional,
        },
    ],
};

/// The fields of one of the small messages above.
fn small(
    r: &mut Reader<'_>,
    field: &Field,
    wire: u8,
    message: &'static Message,
) -> Result<Map<String, Value>, ProtoError> {
    let mut object = Map::new();
    decode_message(message, r.len_field(wire, field.json)?, &mut object)?;
    Ok(object)
}

/// Time and MicroTime: {1: seconds, 2: nanos}; the zero time is an empty message, which the
/// JSON shows as null and which is left out here.
fn time(r: &mut Reader<'_>, field: &Field, wire: u8) -> Result<Option<Value>, ProtoError> {
    let data = r.len_field(wire, field.json)?;
    if data.is_empty() {
        return Ok(None);
    }
    let mut object = Map::new();
    decode_message(&TIME, data, &mut object)?;
    let seconds = object.get("seconds").and_then(Value::as_i64).unwrap_or(0);
    // nanos is an int32, which as_i64 reads whole.
    let nanos = object.get("nanos").and_then(Value::as_i64).unwrap_or(0) as i32;
    let at = u32::try_from(nanos)
        .ok()
        .and_then(|n| chrono::DateTime::from_timestamp(seconds, n))
        .ok_or_else(|| ProtoError::TimeRange {
            message: r.message,
            field: field.label(),
            seconds,
            nanos,
        })?;
    let format = if matches!(field.ty, Ty::MicroTime) {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Some(Value::String(at.format(format).to_string())))
}

/// Whether a value is the zero of its type, which `omitempty` leaves out of the JSON.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5µs`, `2ms`, `1h2m3.5s`.
pub(super) fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_string()
    } else if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        format!("{}{}{unit}", u / scale, fraction(u % scale, scale))
    } else {
        let secs = u / 1_000_000_000;
        let frac = fraction(u % 1_000_000_000, 1_000_000_000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h}h{m}m{s}{frac}s")
        } else if m > 0 {
            format!("{m}m{s}{frac}s")
        } else {
            format!("{s}{frac}s")
        }
    };
    format!("{sign}{body}")
}

/// `.5` for 500 of 1000: the digits of `rem / scale` without trailing zeros.
fn fraction(rem: u64, scale: u64) -> String {
    if rem == 0 {
        return String::new();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rem:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

/// A cursor over the bytes of one message; `message` names it in errors.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], message: &'static str) -> Self {
        Reader { data, message }
    }

    fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn truncated(&self) -> ProtoError {
        ProtoError::Truncated {
            message: self.message,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.data.len() {
            return Err(self.truncated());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for i in 0..10 {
            let [byte, rest @ ..] = self.data else {
                return Err(self.truncated());
            };
            self.data = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::BadVarint {
            message: self.message,
        })
    }

    /// The next field's (tag, wire type), or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u64, u8)>, ProtoError> {
        if self.done() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (tag, wire) = (key >> 3, (key & 7) as u8);
        if tag == 0 || !matches!(wire, VARINT | FIXED64 | LEN | FIXED32) {
            return Err(ProtoError::BadKey {
                message: self.message,
                tag,
                wire,
            });
        }
        Ok(Some((tag, wire)))
    }

    /// Skips the value of a field this schema does not know.
    fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => {
                let n = self.varint()?;
                self.take(usize::try_from(n).map_err(|_| self.truncated())?)
                    .map(drop)
            }
        }
    }

    fn expect(&self, wire: u8, want: u8, field: &str) -> Result<(), ProtoError> {
        if wire == want {
            return Ok(());
        }
        Err(ProtoError::WireType {
            message: self.message,
            field: field.to_string(),
            wire,
            expected: match want {
                VARINT => "a varint",
                FIXED64 => "a 64-bit value",
                FIXED32 => "a 32-bit value",
                _ => "a length-delimited value",
            },
        })
    }

    fn varint_field(&mut self, wire: u8, field: &str) -> Result<u64, ProtoError> {
        self.expect(wire, VARINT, field)?;
        self.varint()
    }

    fn fixed64_field(&mut self, wire: u8, field: &str) -> Result<u64, ProtoError> {
        self.expect(wire, FIXED64, field)?;
        let bytes = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    }

    fn len_field(&mut self, wire: u8, field: &str) -> Result<&'a [u8], ProtoError> {
        self.expect(wire, LEN, field)?;
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| self.truncated())?)
    }

    fn string_field(&mut self, wire: u8, field: &str) -> Result<String, ProtoError> {
        let bytes = self.len_field(wire, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::Utf8 {
            message: self.message,
            field: field.to_string(),
        })
    }
}
