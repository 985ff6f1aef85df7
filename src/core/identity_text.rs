//! Which texts may travel to the backend in an identity or claim header.
//!
//! Threat: the gateway compares a user id (with a path segment, a query or body field) and then
//! writes it into `X-User-Id`. If the backend's header parser reads back something else, the
//! backend acts for a user the gateway never authorized. Every common parser (Node, Python, Go,
//! Java) trims spaces and tabs around a field value, so a token whose `sub` is `" bob"` would be
//! `bob` to the backend while the owner rule compared `" bob"`. So a value is refused unless a
//! parser reads it back byte for byte. Do not relax this to "whatever `HeaderValue` accepts".

/// Whether `user_id` reaches the backend exactly as the gateway compared it: non-empty visible
/// ASCII (`!` to `~`), so no space, tab, control or non-ASCII byte anywhere, and neither `,` nor
/// `;`.
///
/// `,` is refused because a field value is a comma-separated list to HTTP (RFC 9110 5.3): Node
/// joins repeated headers with `, `, and ASP.NET's `StringValues` or a `split(",")` in the
/// backend takes the first or last element, so `alice,bob` is bob to some of them. `;` starts
/// parameters for parsers that read the value as a parameterised field (`value; k=v`), which
/// keep only what precedes it. Neither appears in the ids Better Auth or any common issuer mints.
pub(crate) fn is_plain_user_id(user_id: &str) -> bool {
    !user_id.is_empty()
        && user_id
            .bytes()
            .all(|b| matches!(b, 0x21..=0x7e) && b != b',' && b != b';')
}

/// Whether one claim value (a string claim, or one element of an array claim, which the gateway
/// joins with `,`) reaches the backend unchanged in a claim header: the user id rule, except that
/// a single space may stand between visible characters, since a parser keeps inner spaces (a
/// display name like `Ada Lovelace` survives) and only trims the ends.
pub(crate) fn is_plain_claim_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' '
        && !value.contains("  ")
        && bytes
            .iter()
            .all(|&b| matches!(b, 0x20..=0x7e) && b != b',' && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_a_header_parser_reads_back_unchanged() {
        for good in ["alice", "u_123", "a@b.c", "x-Y.z~!#$%&'*+^`|", "K2fGq9"] {
            assert!(is_plain_user_id(good), "{good:?}");
        }
        for bad in [
            "",
            " bob",
            "bob ",
            "\tbob",
            "bob\t",
            "b ob",
            "bob\r\n",
            "alice,bob",
            "bob;x=1",
            "bo\u{7f}b",
            "bøb",
            "\u{a0}bob",
            "bob\0",
        ] {
            assert!(!is_plain_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn claim_values_keep_inner_single_spaces_only() {
        for good in ["admin", "Ada Lovelace", "a@b.c", "1"] {
            assert!(is_plain_claim_value(good), "{good:?}");
        }
        for bad in [
            "",
            " admin",
            "admin ",
            "admin\t",
            "a  b",
            "user,admin",
            "a;b",
            "é",
            "a\r\nb",
        ] {
            assert!(!is_plain_claim_value(bad), "{bad:?}");
        }
    }
}
