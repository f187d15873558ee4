//! Mangling a text at random for the hostile-input tests: edits at byte
//! offsets (kept on char boundaries) that delete, insert or cut short.
//! Each test file chooses its own offsets and junk to insert.

use proptest::prelude::*;

/// One edit of a text at a byte offset (taken modulo the text's length
/// and moved back to a char boundary when applied).
#[derive(Debug, Clone)]
pub enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, what: String },
    Truncate { at: usize },
}

/// Edits at offsets from `at`, deleting up to `max_delete - 1` bytes and
/// inserting `junk`.
pub fn edit(
    at: impl Strategy<Value = usize> + Clone,
    max_delete: usize,
    junk: impl Strategy<Value = String>,
) -> impl Strategy<Value = Edit> {
    prop_oneof![
        (at.clone(), 1usize..max_delete).prop_map(|(at, len)| Edit::Delete { at, len }),
        (at.clone(), junk).prop_map(|(at, what)| Edit::Insert { at, what }),
        at.prop_map(|at| Edit::Truncate { at }),
    ]
}

/// `at` modulo the text's length, moved back to a char boundary.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `text` with `edits` applied in order.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_owned();
    for edit in edits {
        match edit {
            Edit::Delete { at, len } => {
                let start = boundary(&text, *at);
                let end = boundary(&text, (start + len).min(text.len())).max(start);
                text.replace_range(start..end, "");
            }
            Edit::Insert { at, what } => {
                let at = boundary(&text, *at);
                text.insert_str(at, what);
            }
            Edit::Truncate { at } => {
                let at = boundary(&text, *at);
                text.truncate(at);
            }
        }
    }
    text
}
