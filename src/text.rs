//! Wording every output shares: counts with their noun in the right number, and short
//! lists that say how many more there are.

/// `n` and a noun, singular or plural: `1 host`, `3 hosts`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// At most `max` items, comma-separated, then how many more: `a, b, … and 3 more`.
pub fn list_some(items: &[String], max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(max) {
        0 => shown,
        n => format!("{shown}, … and {n} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lists_read_as_english() {
        assert_eq!(count(1, "host"), "1 host");
        assert_eq!(count(0, "host"), "0 hosts");
        let items: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(list_some(&items, 5), "a, b, c");
        assert_eq!(list_some(&items, 2), "a, b, … and 1 more");
    }
}
