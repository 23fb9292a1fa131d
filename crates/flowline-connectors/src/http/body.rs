//! Splitting and checking request bodies before decoding: NDJSON lines or a JSON array into
//! rows, and the structure checks (nesting depth) that bound what one row may cost.

/// Why a JSON row is refused before decoding: too deep, or not an object.
pub(super) fn json_row_error(row: &[u8], depth_max: usize) -> Option<String> {
    match json_depth(row) {
        d if d > depth_max => Some(format!(
            "nesting depth {d} exceeds 'ingest.max-json-depth' = {depth_max}"
        )),
        _ if !row.trim_ascii_start().starts_with(b"{") => {
            Some("a row must be a JSON object".to_string())
        }
        _ => None,
    }
}

/// The lines of a CSV body, blank ones left out (spaces are kept: they may be data).
pub(super) fn split_lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// The rows of a body: NDJSON lines, or the elements of one JSON array.
pub(super) fn split_rows(body: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let trimmed = body.trim_ascii();
    if trimmed.starts_with(b"[") {
        return split_array(trimmed);
    }
    Ok(body
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Calls `f(index, byte)` for every `[`, `]`, `{`, `}` and `,` outside JSON strings.
pub(super) fn scan_structure(
    bytes: &[u8],
    mut f: impl FnMut(usize, u8) -> std::result::Result<(), String>,
) -> std::result::Result<bool, String> {
    let (mut in_str, mut esc) = (false, false);
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b']' | b'{' | b'}' | b',' => f(i, c)?,
            _ => {}
        }
    }
    Ok(!in_str)
}

/// The top-level elements of a JSON array.
pub(super) fn split_array(a: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 1usize);
    let closed = scan_structure(a, |i, c| {
        match c {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("the JSON array is malformed (unbalanced brackets)")?;
                if depth == 0 {
                    let last = a[start..i].trim_ascii();
                    if !last.is_empty() {
                        out.push(last);
                    }
                    if i + 1 != a.len() {
                        return Err("the body has text after its JSON array".into());
                    }
                }
            }
            _ if depth == 1 => {
                out.push(a[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    if depth != 0 || !closed {
        return Err("the JSON array is not closed".into());
    }
    Ok(out)
}

/// Deepest nesting of arrays and objects in `l`.
pub(super) fn json_depth(l: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let _ = scan_structure(l, |_, c| {
        match c {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        Ok(())
    });
    max
}
