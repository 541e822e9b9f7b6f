//! The number rules: which JSON numbers busbar accepts.
//!
//! A number is accepted when every reader can take it back: at most
//! [`MAX_NUMBER_DIGITS`] digits before its exponent, at most
//! [`MAX_EXPONENT_DIGITS`] in it, and a value a 64-bit float holds. The
//! scan looks closer only at the few numbers that could break them: over
//! 40 digits, or with an exponent of three digits or more.

/// Most digits a number may have before its exponent: a 128-bit integer
/// has 39, a SQL `DECIMAL(38)` 38, the shortest text of any 64-bit float
/// 17. More digits than any reader keeps are noise that only costs them
/// (some refuse long integers outright: Python's `int` stops at 4300).
pub(crate) const MAX_NUMBER_DIGITS: usize = 40;

/// Most digits a number's exponent may have: a 64-bit float's decimal
/// exponents run from -324 to 308.
pub(crate) const MAX_EXPONENT_DIGITS: usize = 4;

/// Checks a number literal (valid JSON) against the number rules: at most
/// [`MAX_NUMBER_DIGITS`] digits before the exponent, at most
/// [`MAX_EXPONENT_DIGITS`] in it, and a value a 64-bit float holds (a
/// smaller one rounds to zero, which every reader reads; a larger one is
/// refused by serde_json, and read as infinity or refused elsewhere).
/// `Err` holds what is wrong.
#[cold]
#[inline(never)]
pub(crate) fn number_rules(literal: &[u8]) -> Result<(), &'static str> {
    let unsigned = literal.strip_prefix(b"-").unwrap_or(literal);
    let (mantissa, exponent) = match unsigned.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => (&unsigned[..e], Some(&unsigned[e + 1..])),
        None => (unsigned, None),
    };
    let (int, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &b""[..]),
    };
    if int.len() + fraction.len() > MAX_NUMBER_DIGITS {
        return Err("has more than 40 digits before its exponent");
    }
    let Some(exponent) = exponent else {
        return Ok(()); // At most 40 digits: below 1e40.
    };
    let (negative, digits) = match exponent.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, exponent),
    };
    if digits.len() > MAX_EXPONENT_DIGITS {
        return Err("has an exponent of more than 4 digits");
    }
    let power = digits
        .iter()
        .fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
    let power = if negative { -power } else { power };
    // The power of ten of the first significant digit: the value lies in
    // [10^lead, 10^(lead+1)).
    let lead = if int != b"0" {
        int.len() as i32 - 1
    } else {
        match fraction.iter().position(|&d| d != b'0') {
            Some(zeros) => -(zeros as i32) - 1,
            None => return Ok(()), // Zero, whatever its exponent.
        }
    };
    const OUT_OF_RANGE: &str = "is out of the range of a 64-bit float";
    match (lead + power).cmp(&308) {
        std::cmp::Ordering::Less => Ok(()),
        std::cmp::Ordering::Greater => Err(OUT_OF_RANGE),
        // Around f64::MAX (1.797...e308) the reader's own rounding decides:
        // ask it.
        std::cmp::Ordering::Equal => serde_json::from_slice::<serde_json::Value>(literal)
            .map(drop)
            .map_err(|_| OUT_OF_RANGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers_and_floats_pass() {
        for n in [
            "0",
            "-0",
            "1",
            "-12.5",
            "1e2",
            "1E+2",
            "-1e-2",
            "0e9999",
            "0.000e9999",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "17976931348623157e292",
            "5e-324",
            "1e-400",
            "1e-9999",
            "123456789012345678901234567890123456789",
            "1234567890123456789012345678901234567890",
            "-1234567890123456789012345678901234567890",
            "0.123456789012345678901234567890123456789",
            "9999999999999999999999999999999999999999e268",
        ] {
            assert_eq!(number_rules(n.as_bytes()), Ok(()), "{n}");
            assert!(serde_json::from_str::<serde_json::Value>(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn long_numbers_and_overflows_are_refused() {
        for (n, why) in [
            ("12345678901234567890123456789012345678901", "digits"),
            ("0.0000000000000000000000000000000000000001", "digits"),
            ("1.0000000000000000000000000000000000000000", "digits"),
            ("1e00001", "exponent"),
            ("1e-99999", "exponent"),
            ("1e999999", "exponent"),
            ("1e309", "range"),
            ("-1e309", "range"),
            ("0.1e310", "range"),
            ("1.7976931348623159e308", "range"),
            // A correctly rounding parser rounds it down to f64::MAX, but
            // serde_json's reading of it overflows: the reader decides.
            ("1.7976931348623158e308", "range"),
            ("99999999999999999999e9999", "range"),
        ] {
            let got = number_rules(n.as_bytes()).unwrap_err();
            let want = match why {
                "digits" => "has more than 40 digits before its exponent",
                "exponent" => "has an exponent of more than 4 digits",
                _ => "is out of the range of a 64-bit float",
            };
            assert_eq!(got, want, "{n}");
        }
    }
}
