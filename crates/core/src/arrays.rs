//! Plain arrays in and out, for features, labels and fitted heads: safetensors (which PyTorch's
//! `safetensors.torch.load_file` and NumPy's `safetensors.numpy.load_file` open) and `.npy`
//! (`numpy.load`). Both formats are small enough to write by hand: a length-prefixed JSON header
//! and little-endian data.

use std::collections::BTreeMap;

use crate::CoreError;

/// An array's values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    fn dtype(&self) -> &'static str {
        match self {
            Values::F32(_) => "F32",
            Values::I64(_) => "I64",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A named array.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Values,
}

impl Array {
    pub fn f32(name: &str, shape: &[usize], values: Vec<f32>) -> Self {
        Self::new(name, shape, Values::F32(values))
    }

    pub fn i64(name: &str, shape: &[usize], values: Vec<i64>) -> Self {
        Self::new(name, shape, Values::I64(values))
    }

    fn new(name: &str, shape: &[usize], values: Values) -> Self {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}: {} values do not fill {shape:?}", values.len());
        Self { name: name.into(), shape: shape.to_vec(), values }
    }

    /// The values as f32 (an error for other types).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }
}

/// A safetensors file holding `arrays` (names must differ) and `metadata`.
pub fn safetensors_bytes(arrays: &[Array], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings serialise"));
    }
    let mut offset = 0usize;
    let mut names = std::collections::BTreeSet::new();
    for a in arrays {
        assert!(a.name != "__metadata__" && names.insert(a.name.as_str()), "array names must be distinct and not __metadata__ ({})", a.name);
        let size = a.values.bytes().len();
        header.insert(
            a.name.clone(),
            serde_json::json!({ "dtype": a.values.dtype(), "shape": a.shape, "data_offsets": [offset, offset + size] }),
        );
        offset += size;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("the header serialises");
    // The data starts at a multiple of 8 bytes.
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for a in arrays {
        out.extend_from_slice(&a.values.bytes());
    }
    out
}

/// Reads a safetensors file (`source` names it in errors) of F32 and I64 arrays, in header order
/// of their offsets; every size is checked against the file before anything is allocated.
pub fn read_safetensors(bytes: &[u8], source: &str) -> Result<(Vec<Array>, BTreeMap<String, String>), CoreError> {
    let bad = |reason: String| CoreError::Setting { setting: source.into(), reason };
    let len = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok_or_else(|| bad("shorter than a safetensors header".into()))?;
    let data_start = 8usize.checked_add(usize::try_from(len).unwrap_or(usize::MAX)).filter(|&e| e <= bytes.len()).ok_or_else(|| {
        bad(format!("the header claims {len} bytes, the file has {}: truncated or not safetensors", bytes.len()))
    })?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| bad(format!("the header is not valid JSON ({e})")))?;
    let data = &bytes[data_start..];
    let mut metadata = BTreeMap::new();
    let mut arrays = Vec::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(entry).map_err(|e| bad(format!("__metadata__ is not a map of strings ({e})")))?;
            continue;
        }
        let field = |key: &str| entry.get(key).ok_or_else(|| bad(format!("`{name}` has no {key}")));
        let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
        let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone()).map_err(|e| bad(format!("`{name}`: bad shape ({e})")))?;
        let [start, end]: [usize; 2] =
            serde_json::from_value(field("data_offsets")?.clone()).map_err(|e| bad(format!("`{name}`: bad data_offsets ({e})")))?;
        let width = match dtype.as_str() {
            "F32" => 4,
            "I64" => 8,
            other => return Err(bad(format!("`{name}` is {other}; only F32 and I64 arrays are read"))),
        };
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(format!("`{name}`: the shape {shape:?} overflows")))?;
        if start > end || end > data.len() || count.checked_mul(width) != Some(end - start) {
            return Err(bad(format!("`{name}`: bytes {start}..{end} of {} do not hold {count} values of {dtype}", data.len())));
        }
        let raw = &data[start..end];
        let values = match width {
            4 => Values::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()),
            _ => Values::I64(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
        };
        arrays.push((start, Array { name, shape, values }));
    }
    arrays.sort_by_key(|(start, _)| *start);
    Ok((arrays.into_iter().map(|(_, a)| a).collect(), metadata))
}

/// One array as a `.npy` file (format 1.0, little-endian, C order).
pub fn npy_bytes(array: &Array) -> Vec<u8> {
    let descr = match array.values {
        Values::F32(_) => "<f4",
        Values::I64(_) => "<i8",
    };
    let shape = match array.shape.len() {
        1 => format!("({},)", array.shape[0]),
        _ => format!("({})", array.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline: a multiple of 64.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&array.values.bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_layout() {
        let arrays = vec![Array::f32("weight", &[2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]), Array::i64("labels", &[2], vec![3, -1])];
        let meta = BTreeMap::from([("i".to_string(), "[0.5, 1.0]".to_string())]);
        let bytes = safetensors_bytes(&arrays, &meta);
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header_len) % 8, 0, "data aligned to 8 bytes");
        assert_eq!(bytes.len(), 8 + header_len + 6 * 4 + 2 * 8);
        let (back, m) = read_safetensors(&bytes, "t").unwrap();
        assert_eq!(back, arrays);
        assert_eq!(m, meta);
        // Truncation and lies are named, never allocated for.
        let msg = read_safetensors(&bytes[..bytes.len() - 1], "t").unwrap_err().to_string();
        assert!(msg.contains("`labels`") && msg.contains("do not hold"), "{msg}");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_safetensors(&huge, "t").unwrap_err().to_string().contains("truncated or not safetensors"));
    }

    #[test]
    fn npy_header_is_numpys() {
        let bytes = npy_bytes(&Array::f32("x", &[2, 3], vec![0.0; 6]));
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") && header.ends_with('\n'), "{header}");
        assert_eq!(bytes.len(), 10 + len + 24);
        let one = npy_bytes(&Array::i64("y", &[4], vec![1, 2, 3, 4]));
        let len = u16::from_le_bytes([one[8], one[9]]) as usize;
        assert!(std::str::from_utf8(&one[10..10 + len]).unwrap().contains("'descr': '<i8', 'fortran_order': False, 'shape': (4,)"));
    }
}
