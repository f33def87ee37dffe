//! RFC 3339 for the one spelling nearly every record uses,
//! `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, without a general date library.
//!
//! Every event's time is parsed and every decision's written, so this is on
//! the hot path. Anything else (offsets, leap seconds, years outside
//! 0000–9999) returns `None`, and the caller asks chrono.

const MS_PER_DAY: i64 = 86_400_000;

/// Milliseconds since the epoch of a UTC timestamp in the common spelling.
pub(super) fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59
    {
        return None;
    }
    let millis = match (b[19], b.last()) {
        (b'Z', _) if b.len() == 20 => 0,
        (b'.', Some(b'Z')) => {
            let fraction = &b[20..b.len() - 1];
            if fraction.is_empty() || fraction.len() > 9 {
                return None;
            }
            // Truncated to the millisecond, as chrono does.
            let first = &fraction[..fraction.len().min(3)];
            let scale = [100, 10, 1][first.len() - 1];
            digits(fraction)?;
            digits(first)? * scale
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, for years 0000 to 9999.
pub(super) fn format_utc(ms: i64) -> Option<String> {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (secs, millis) = (in_day / 1000, in_day % 1000);
    let mut out = [0u8; 24];
    put(&mut out[0..4], year);
    out[4] = b'-';
    put(&mut out[5..7], month);
    out[7] = b'-';
    put(&mut out[8..10], day);
    out[10] = b'T';
    put(&mut out[11..13], secs / 3600);
    out[13] = b':';
    put(&mut out[14..16], secs / 60 % 60);
    out[16] = b':';
    put(&mut out[17..19], secs % 60);
    out[19] = b'.';
    put(&mut out[20..23], millis);
    out[23] = b'Z';
    std::str::from_utf8(&out).ok().map(str::to_owned)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
}

/// Writes `n` as decimal digits filling `out`, zero-padded.
fn put(out: &mut [u8], mut n: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of the above).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn chrono_parse(text: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
    }

    fn chrono_format(ms: i64) -> Option<String> {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    #[test]
    fn edges_match_chrono() {
        for text in [
            "2026-11-28T09:00:00Z",
            "2026-11-28T09:00:00.250Z",
            "2026-11-28T09:00:00.2Z",
            "2026-11-28T09:00:00.123456789Z",
            "2024-02-29T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "1969-12-31T23:59:59.5Z",
        ] {
            assert_eq!(super::parse_utc(text), chrono_parse(text), "{text}");
        }
        for text in ["2023-02-29T00:00:00Z", "2026-11-28T09:00:00.Z", "2026-11-28T09:00:60Z", "2026-11-28 09:00:00Z"] {
            assert_eq!(super::parse_utc(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn formatting_matches_chrono(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            prop_assert_eq!(super::format_utc(ms), chrono_format(ms));
        }

        #[test]
        fn parsing_matches_chrono_where_it_answers(
            text in "[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,10})?Z?"
        ) {
            if let Some(ms) = super::parse_utc(&text) {
                prop_assert_eq!(Some(ms), chrono_parse(&text), "{}", text);
            }
        }

        #[test]
        fn every_formatted_time_parses_back(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let text = super::format_utc(ms).unwrap_or_default();
            prop_assert_eq!(super::parse_utc(&text), Some(ms));
        }
    }
}
