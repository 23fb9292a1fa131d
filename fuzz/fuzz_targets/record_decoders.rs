//! One record per message (Kafka): every record format must turn any bytes into rows or an
//! error naming a record, never a panic. Input: format byte, flags byte, then records
//! separated by 0xFF 0x00.
#![no_main]

use flowline_formats::{RecordBuffer, RecordDecoder, RecordFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const FORMATS: &[&str] = &["json", "csv", "debezium-json", "canal-json", "maxwell-json", "avro", "protobuf"];

fuzz_target!(|data: &[u8]| {
    let [f, flags, rest @ ..] = data else { return };
    let name = FORMATS[*f as usize % FORMATS.len()];
    let format = RecordFormat::from_options(&common::options(name, flags & 1 == 1), "format").unwrap();
    let mut decoder = RecordDecoder::new(&format, common::schema()).unwrap();
    let mut records = RecordBuffer::default();
    for r in split(rest) {
        records.push(if r.is_empty() && flags & 2 == 2 { None } else { Some(r) }, decoder.is_json());
    }
    match decoder.decode(&records) {
        Ok(Some(batch)) => assert!(batch.num_rows() <= records.len() * 64),
        Ok(None) => {}
        Err(e) => assert!(e.index < records.len().max(1), "{e}"),
    }
    // The decoder stays usable after a bad buffer.
    let _ = decoder.decode(&records);
});

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == [0xFF, 0x00]) {
        out.push(&data[..i]);
        data = &data[i + 2..];
    }
    out.push(data);
    out
}
