//! MD5, SHA1, SHA224, SHA256, SHA384, SHA512 and SHA2(s, bits): lower-case hex strings of the
//! UTF-8 bytes of a string (or of BYTES), as Flink's; NULL in, NULL out.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::ScalarUDF;
use sha2::Digest;

use super::{arity, immutable, udf};

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(
            "md5",
            immutable(&[1]),
            |a| hex_type("MD5", a),
            hex_of::<md5::Md5>,
        ),
        udf(
            "sha1",
            immutable(&[1]),
            |a| hex_type("SHA1", a),
            hex_of::<sha1::Sha1>,
        ),
        udf(
            "sha224",
            immutable(&[1]),
            |a| hex_type("SHA224", a),
            hex_of::<sha2::Sha224>,
        ),
        udf(
            "sha256",
            immutable(&[1]),
            |a| hex_type("SHA256", a),
            hex_of::<sha2::Sha256>,
        ),
        udf(
            "sha384",
            immutable(&[1]),
            |a| hex_type("SHA384", a),
            hex_of::<sha2::Sha384>,
        ),
        udf(
            "sha512",
            immutable(&[1]),
            |a| hex_type("SHA512", a),
            hex_of::<sha2::Sha512>,
        ),
        udf(
            "sha2",
            immutable(&[2]),
            |a| arity("SHA2", a, &[2]).map(|_| DataType::Utf8),
            sha2_eval,
        ),
    ]
}

fn hex_type(name: &str, args: &[DataType]) -> Result<DataType> {
    arity(name, args, &[1]).map(|_| DataType::Utf8)
}

/// The hex digest `D` of each value.
fn hex_of<D: Digest>(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    hex_digest(args, rows, |b| D::digest(b).to_vec())
}

fn bytes(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Binary => a.clone(),
        DataType::LargeBinary | DataType::BinaryView => cast(a, &DataType::Binary)?,
        _ => cast(&cast(a, &DataType::Utf8)?, &DataType::Binary)?,
    })
}

fn hex_digest(
    args: &[ArrayRef],
    rows: usize,
    digest: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<ArrayRef> {
    let b = bytes(&args[0])?;
    let b = b.as_binary::<i32>();
    let mut out = StringBuilder::with_capacity(rows, rows * 64);
    let mut buf = String::new();
    for i in 0..rows {
        if b.is_null(i) {
            out.append_null();
            continue;
        }
        write_hex(&mut buf, &digest(b.value(i)));
        out.append_value(&buf);
    }
    Ok(Arc::new(out.finish()))
}

/// SHA2(s, bits): bits is 224, 256, 384 or 512 (a constant in practice; checked per row).
fn sha2_eval(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let bits = cast(&args[1], &DataType::Int64)?;
    let bits = bits.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let b = bytes(&args[0])?;
    let b = b.as_binary::<i32>();
    let mut out = StringBuilder::with_capacity(rows, rows * 64);
    let mut buf = String::new();
    for i in 0..rows {
        if b.is_null(i) || bits.is_null(i) {
            out.append_null();
            continue;
        }
        let v = b.value(i);
        let digest = match bits.value(i) {
            224 => sha2::Sha224::digest(v).to_vec(),
            256 => sha2::Sha256::digest(v).to_vec(),
            384 => sha2::Sha384::digest(v).to_vec(),
            512 => sha2::Sha512::digest(v).to_vec(),
            other => {
                return exec_err!("SHA2: the hash length must be 224, 256, 384 or 512, got {other}")
            }
        };
        write_hex(&mut buf, &digest);
        out.append_value(&buf);
    }
    Ok(Arc::new(out.finish()))
}

/// `buf` becomes the lower-case hex of `bytes`.
fn write_hex(buf: &mut String, bytes: &[u8]) {
    buf.clear();
    for byte in bytes {
        let _ = write!(buf, "{byte:02x}");
    }
}
