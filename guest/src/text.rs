//! Tiny string builders used instead of `format!`.
//!
//! Every `format!` call site expands to formatting machinery in the wasm module; with some
//! seventy messages and CEL snippets that alone took the module over its 100 KB budget.
//! [`fill`] is one monomorphic function, so a call site costs only a slice of pairs.

/// Replaces each `{name}` in `template` with the value paired with `name` in `vars`, in one
/// pass: substituted values are never scanned again, so user text containing `{…}` is safe.
/// A `{…}` whose name is not in `vars` is kept as written.
pub fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    // split_once instead of slicing: no panicking path (and no string-Debug code) in wasm.
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let var = after.split_once('}').and_then(|(name, tail)| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, tail))
        });
        match var {
            Some((v, tail)) => {
                out.push_str(v);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `"<path> must be <what>, got <type of v>"`: the shape error used throughout.
pub fn must_be(path: &str, what: &str, v: &crate::json::Value) -> String {
    fill(
        "{path} must be {what}, got {got}",
        &[("path", path), ("what", what), ("got", v.type_name())],
    )
}

/// `items` separated by `sep` (a plain loop: smaller in wasm than `[String]::join`).
pub fn join(items: &[String], sep: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(item);
    }
    out
}

/// The decimal text of `n`.
pub fn num(n: usize) -> String {
    let mut digits = Vec::new();
    let mut n = n;
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().map(|d| char::from(*d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for n in [0usize, 7, 10, 253, 1_000_000, usize::MAX] {
            assert_eq!(num(n), n.to_string());
        }
    }

    #[test]
    fn joining() {
        assert_eq!(join(&[], ", "), "");
        assert_eq!(join(&["a".into()], ", "), "a");
        assert_eq!(join(&["a".into(), "b".into()], "; "), "a; b");
    }

    #[test]
    fn filling() {
        assert_eq!(
            fill("a {x} b {y}{x}", &[("x", "1"), ("y", "2")]),
            "a 1 b 21"
        );
        assert_eq!(
            fill("{x}", &[("x", "{y}"), ("y", "no")]),
            "{y}",
            "values are not rescanned"
        );
        assert_eq!(fill("{unknown} {x", &[("x", "1")]), "{unknown} {x");
        assert_eq!(fill("é{x}ü", &[("x", "ß")]), "éßü");
        assert_eq!(fill("", &[]), "");
    }
}
