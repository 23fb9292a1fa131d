//! Files of lines: json, csv and the changelog formats decode any chunk into rows or an error
//! naming a line, never a panic. Input: format byte, flags byte, then the chunk.
#![no_main]

use flowline_formats::format_from_options;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const FORMATS: &[&str] = &["json", "csv", "debezium-json", "canal-json", "maxwell-json"];

fuzz_target!(|data: &[u8]| {
    let [f, flags, rest @ ..] = data else { return };
    let name = FORMATS[*f as usize % FORMATS.len()];
    let format = format_from_options(&common::options(name, flags & 1 == 1), "format").unwrap();
    let mut decoder = format.line_decoder(&common::schema()).unwrap().unwrap();
    match decoder.decode_chunk(rest) {
        Ok(_) => {}
        Err(e) => assert!(e.line >= 1, "{e:?}"),
    }
});
