//! Whole files read as batches: Avro Object Container Files and length-delimited protobuf. Any
//! bytes give batches or an error, never a panic or an allocation the input does not justify.
//! Input: format byte, flags byte, then the file.
#![no_main]

use flowline_formats::{avro::AvroFileReader, protobuf::ProtobufFileReader, protobuf::ProtobufFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let [f, flags, rest @ ..] = data else { return };
    let bytes = Box::new(std::io::Cursor::new(rest.to_vec()));
    let batches: Box<dyn Iterator<Item = _>> = if f % 2 == 0 {
        match AvroFileReader::from_reader(bytes, common::schema(), 64) {
            Ok(r) => Box::new(r),
            Err(_) => return,
        }
    } else {
        let format = ProtobufFormat::from_options(&common::options("protobuf", flags & 1 == 1)).unwrap();
        Box::new(ProtobufFileReader::from_reader(bytes, &format, common::schema(), 64).unwrap())
    };
    // Stop at the first error, as the filesystem source does.
    for b in batches.take(10_000) {
        if b.is_err() {
            break;
        }
    }
});
