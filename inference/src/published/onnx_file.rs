//! What an `.onnx` file needs from beside it: the external-data files its initializers point at and
//! how many bytes of each it reads. Published models keep their weights in `decoder.onnx_data` (and
//! `_data_1`, ...); a download that lacks one, or stopped half-way, must be named before ONNX Runtime
//! fails on it with a message about an offset.
//!
//! A minimal protobuf walk over `ModelProto.graph.initializer[*].external_data` (field numbers from
//! onnx.proto3); every other field is skipped without being read, so a 2 GB graph with embedded
//! weights costs a few seeks.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use crate::error::BundleError;

const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_SPARSE_INITIALIZER: u64 = 15;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const SPARSE_VALUES: u64 = 1;
const SPARSE_INDICES: u64 = 2;
const ENTRY_KEY: u64 = 1;
const ENTRY_VALUE: u64 = 2;

/// Checks that every external-data file `onnx` references exists beside it and is long enough.
pub(crate) fn check_external_data(onnx: &Path) -> Result<(), BundleError> {
    let needs = external_data(onnx)?;
    let dir = onnx.parent().unwrap_or(Path::new("."));
    for (location, end) in needs {
        let path = dir.join(&location);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                return Err(BundleError::Missing {
                    path,
                    message: format!(
                        "{} keeps its weights in this external data file: {e}",
                        name(onnx)
                    ),
                });
            }
        };
        if len < end {
            return Err(BundleError::Invalid {
                path,
                message: format!(
                    "{len} bytes, but {} reads up to byte {end}: an incomplete download?",
                    name(onnx)
                ),
            });
        }
    }
    Ok(())
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// External data file (relative location) -> the highest byte offset read from it.
pub(crate) fn external_data(onnx: &Path) -> Result<BTreeMap<String, u64>, BundleError> {
    let invalid = |message: String| BundleError::Invalid {
        path: onnx.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(onnx).map_err(|e| BundleError::io(onnx, e))?;
    let len = file.metadata().map_err(|e| invalid(e.to_string()))?.len();
    if len == 0 {
        return Err(invalid("empty file (an incomplete download?)".into()));
    }
    let mut r = Walker {
        r: BufReader::new(file),
        pos: 0,
    };
    let mut out = BTreeMap::new();
    r.fields(len, &mut |r, field, end| {
        if field == MODEL_GRAPH {
            r.fields(end, &mut |r, field, end| match field {
                GRAPH_INITIALIZER => r.tensor(end, &mut out),
                GRAPH_SPARSE_INITIALIZER => r.fields(end, &mut |r, field, end| match field {
                    SPARSE_VALUES | SPARSE_INDICES => r.tensor(end, &mut out),
                    _ => r.skip_to(end),
                }),
                _ => r.skip_to(end),
            })
        } else {
            r.skip_to(end)
        }
    })
    .map_err(|m| invalid(format!("not a readable ONNX model: {m}")))?;
    Ok(out)
}

struct Walker<R> {
    r: R,
    pos: u64,
}

type Visit<'a, R> = dyn FnMut(&mut Walker<R>, u64, u64) -> Result<(), String> + 'a;

impl<R: Read + Seek> Walker<R> {
    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("at byte {}: {e}", self.pos))?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("at byte {}: varint longer than 10 bytes", self.pos))
    }

    fn skip_to(&mut self, end: u64) -> Result<(), String> {
        if end != self.pos {
            let delta = i64::try_from(end - self.pos).map_err(|e| e.to_string())?;
            self.r.seek_relative(delta).map_err(|e| e.to_string())?;
            self.pos = end;
        }
        Ok(())
    }

    /// Calls `visit(field, end)` for every length-delimited field up to `end`; skips the others.
    fn fields(&mut self, end: u64, visit: &mut Visit<'_, R>) -> Result<(), String> {
        while self.pos < end {
            let key = self.varint()?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    self.varint()?;
                }
                1 => self.skip_to(self.pos + 8)?,
                5 => self.skip_to(self.pos + 4)?,
                2 => {
                    let n = self.varint()?;
                    let stop = self
                        .pos
                        .checked_add(n)
                        .filter(|&s| s <= end)
                        .ok_or_else(|| {
                            format!(
                                "at byte {}: field {field} claims {n} bytes past its message (a truncated file?)",
                                self.pos
                            )
                        })?;
                    visit(self, field, stop)?;
                    if self.pos != stop {
                        self.skip_to(stop)?;
                    }
                }
                w => return Err(format!("at byte {}: unknown wire type {w}", self.pos)),
            }
        }
        if self.pos != end {
            return Err(format!("a field runs past byte {end}"));
        }
        Ok(())
    }

    fn string(&mut self, end: u64) -> Result<String, String> {
        let n = usize::try_from(end - self.pos).map_err(|e| e.to_string())?;
        if n > 1 << 20 {
            return Err("a string field longer than 1 MiB".into());
        }
        let mut buf = vec![0u8; n];
        self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        self.pos = end;
        String::from_utf8(buf).map_err(|e| e.to_string())
    }

    /// A TensorProto: records its external data location and the end of its byte range.
    fn tensor(&mut self, end: u64, out: &mut BTreeMap<String, u64>) -> Result<(), String> {
        let mut entries: Vec<(String, String)> = Vec::new();
        self.fields(end, &mut |r, field, end| {
            if field != TENSOR_EXTERNAL_DATA {
                return r.skip_to(end);
            }
            let (mut key, mut value) = (String::new(), String::new());
            r.fields(end, &mut |r, field, end| match field {
                ENTRY_KEY => r.string(end).map(|s| key = s),
                ENTRY_VALUE => r.string(end).map(|s| value = s),
                _ => r.skip_to(end),
            })?;
            entries.push((key, value));
            Ok(())
        })?;
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let Some(location) = get("location") else {
            return Ok(());
        };
        let number = |k: &str| -> Result<u64, String> {
            get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|e| format!("external data {k} `{v}`: {e}"))
                })
                .transpose()
                .map(|v| v.unwrap_or(0))
        };
        let stop = number("offset")?.saturating_add(number("length")?);
        let e = out.entry(location.clone()).or_insert(0);
        *e = (*e).max(stop);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn entry(k: &str, v: &str) -> Vec<u8> {
        let mut e = Vec::new();
        len_field(ENTRY_KEY, k.as_bytes(), &mut e);
        len_field(ENTRY_VALUE, v.as_bytes(), &mut e);
        e
    }

    fn model(tensors: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut graph = Vec::new();
        len_field(1, b"node-bytes-are-skipped", &mut graph);
        for (loc, off, len) in tensors {
            let mut t = Vec::new();
            varint(1 << 3, &mut t); // dims (varint)
            varint(64, &mut t);
            len_field(8, b"weight", &mut t); // name
            len_field(TENSOR_EXTERNAL_DATA, &entry("location", loc), &mut t);
            len_field(
                TENSOR_EXTERNAL_DATA,
                &entry("offset", &off.to_string()),
                &mut t,
            );
            len_field(
                TENSOR_EXTERNAL_DATA,
                &entry("length", &len.to_string()),
                &mut t,
            );
            varint(14 << 3, &mut t); // data_location = EXTERNAL
            varint(1, &mut t);
            len_field(GRAPH_INITIALIZER, &t, &mut graph);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version
        varint(9, &mut m);
        len_field(MODEL_GRAPH, &graph, &mut m);
        m
    }

    #[test]
    fn finds_each_external_file_and_the_bytes_it_needs() {
        let dir = std::env::temp_dir().join(format!("onnx-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let onnx = dir.join("decoder.onnx");
        std::fs::write(
            &onnx,
            model(&[
                ("decoder.onnx_data", 0, 100),
                ("decoder.onnx_data", 100, 50),
                ("x_1", 0, 8),
            ]),
        )
        .unwrap();
        let needs = external_data(&onnx).unwrap();
        assert_eq!(needs.get("decoder.onnx_data"), Some(&150));
        assert_eq!(needs.get("x_1"), Some(&8));

        let err = check_external_data(&onnx).unwrap_err().to_string();
        assert!(
            err.contains("decoder.onnx_data") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(dir.join("decoder.onnx_data"), vec![0u8; 120]).unwrap();
        std::fs::write(dir.join("x_1"), vec![0u8; 8]).unwrap();
        let err = check_external_data(&onnx).unwrap_err().to_string();
        assert!(err.contains("120 bytes") && err.contains("150"), "{err}");
        std::fs::write(dir.join("decoder.onnx_data"), vec![0u8; 150]).unwrap();
        check_external_data(&onnx).unwrap();

        // A graph cut short names itself.
        let bytes = std::fs::read(&onnx).unwrap();
        std::fs::write(&onnx, &bytes[..bytes.len() - 7]).unwrap();
        let err = check_external_data(&onnx).unwrap_err().to_string();
        assert!(
            err.contains("decoder.onnx") && err.contains("not a readable ONNX"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
