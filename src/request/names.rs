//! How lenient backends read field names: the look-alikes of an owner field or of `_method`
//! (`read_as`), case-insensitive binding under Unicode simple case folding (`fold_eq`), and the
//! RFC 9110 token characters.

/// Whether some backend's query parser may take the (decoded) parameter `name` for `owner`:
/// - `qs` (Express) and Rack (Rails) read `owner[]`, `owner[0]`, `[owner]`, `]owner`, `owner]`
///   as `owner`: brackets around the first bracket-free run are dropped;
/// - PHP drops leading spaces, turns `.`, ` ` and a `[` left unclosed into `_`;
/// - Spring's data binder takes `!owner` as a default for `owner`, and ASP.NET falls back from
///   `prefix.owner` to `owner`;
/// - some frameworks match names without case;
/// - PHP ends a name at a NUL (`user_id%00x` is `user_id`).
pub fn read_as(name: &str, owner: &str) -> bool {
    let name = name.split('\0').next().unwrap_or(name);
    let name = name.trim_start_matches([' ', '!']);
    let same = |candidate: &str| {
        let php = |c: char| if matches!(c, '.' | ' ') { '_' } else { c };
        fold_eq_by(candidate, owner, php)
    };
    let bracket_free = name
        .trim_start_matches(['[', ']'])
        .split(['[', ']'])
        .next()
        .unwrap_or("");
    let after_last_dot = name.rsplit('.').next().unwrap_or(name);
    same(name)
        || same(bracket_free)
        || same(after_last_dot)
        || (name.contains('[') && same(&name.replacen('[', "_", 1)))
}

/// Whether two names are equal under Unicode simple case folding: how Go's `encoding/json` binds
/// a JSON key to a struct field (`USER_ID`, `uſer_id` with U+017F and `\u212Aey` with the Kelvin
/// sign all bind to `user_id`/`key`), and how ASP.NET Core and other case-insensitive binders
/// read names. Each character is folded to the lower case of its upper case when both are single
/// characters (`ſ` -> `S` -> `s`, `K` -> `k`, `ς` -> `Σ` -> `σ`), which puts every character of a
/// simple case-folding orbit on one representative. It may equate a few more names than Go does
/// (`ı` and `i`); for an owner field that errs on the safe side.
pub fn fold_eq(a: &str, b: &str) -> bool {
    fold_eq_by(a, b, |c| c)
}

pub(crate) fn fold_eq_by(a: &str, b: &str, also: impl Fn(char) -> char) -> bool {
    let fold = |c: char| fold_char(also(c));
    if a.is_ascii() && b.is_ascii() {
        // The common case, without Unicode tables. `also` only ever maps ASCII to ASCII.
        return a.len() == b.len() && a.chars().zip(b.chars()).all(|(x, y)| fold(x) == fold(y));
    }
    a.chars().map(fold).eq(b.chars().map(fold))
}

pub(crate) fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut upper = c.to_uppercase();
    let (Some(upper), None) = (upper.next(), upper.next()) else {
        return c;
    };
    let mut lower = upper.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(lower), None) => lower,
        _ => upper,
    }
}

/// An RFC 9110 tchar.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
