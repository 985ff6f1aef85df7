use std::time::Duration;

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`: one unsigned integer and one unit, nothing else, so
/// that `"30"` (seconds? milliseconds?) is an error rather than a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad =
        || format!("`{text}` is not a duration; write e.g. \"250ms\", \"30s\", \"5m\" or \"1h\"");
    if number.is_empty() || number.len() > 9 {
        return Err(bad());
    }
    let value: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn refuses_ambiguous_or_malformed() {
        for text in [
            "",
            "30",
            "s",
            "-1s",
            "1.5s",
            "1 s",
            "1d",
            "30S",
            "9999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }
}
