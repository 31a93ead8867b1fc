//! Quoting untrusted text in messages: a bad value is shown by a short
//! preview and its size, never in full, so an error about a 15 MiB field is a
//! few dozen bytes and a rejection cannot amplify memory.

/// Longest preview of a bad value quoted in an error message.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `text` for quoting in an error: at most [`MAX_QUOTED_CHARS`] characters,
/// with the full size stated when it was cut, so a 15 MiB value never turns
/// into a 15 MiB message.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// Cuts an error message to `max_bytes` (on a character boundary), saying how long it was.
pub fn truncate_message(message: String, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        return message;
    }
    let mut cut = max_bytes;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… (message cut, {} bytes in all)", &message[..cut], message.len())
}
