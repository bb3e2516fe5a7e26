//! PostgreSQL timestamp input, the common ISO forms only, to microseconds since the Unix epoch
//! (UTC). Whatever is not understood exactly gives `None`: a caller then treats the bound as
//! open, which is never wrong, only less precise.

use crate::TimeCast;

const MICROS_PER_SEC: i64 = 1_000_000;
/// PostgreSQL's limit on a time zone displacement (15:59:59).
const MAX_OFFSET_SECS: i32 = 16 * 3600 - 1;
/// PostgreSQL's last representable year is 294276; larger inputs are errors there.
const MAX_YEAR: i64 = 294_276;

/// Days from 1970-01-01 to the given proleptic Gregorian date (the days-from-civil algorithm:
/// shift the year to start in March so the leap day is last, then count 400-year eras).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month as i64 + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A time of day as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clock {
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    fraction_digits: usize,
}

/// The fields of an input string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    clock: Option<Clock>,
    /// Seconds east of UTC, when the input names a zone.
    offset: Option<i32>,
}

/// A cursor over ASCII input.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Between `min` and `max` digits as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut value: i64 = 0;
        while self.i - start < max {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    value = value * 10 + (d - b'0') as i64;
                    self.i += 1;
                }
                _ => break,
            }
        }
        let n = self.i - start;
        (n >= min).then_some((value, n))
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        self.i - start
    }

    fn at_end(&self) -> bool {
        self.i == self.s.len()
    }

    fn rest_eq_ignore_case(&self, word: &str) -> bool {
        self.s[self.i..].eq_ignore_ascii_case(word.as_bytes())
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][ ][zone]`, surrounded by optional whitespace.
fn parse_fields(input: &str) -> Option<Fields> {
    let input = input.trim_matches([' ', '\t', '\n', '\r']);
    let mut c = Cursor {
        s: input.as_bytes(),
        i: 0,
    };
    let (year, year_digits) = c.digits(4, 6)?;
    if !(1..=MAX_YEAR).contains(&year) || (year_digits > 4 && year < 10_000) {
        return None;
    }
    if !c.eat(b'-') {
        return None;
    }
    let (month, _) = c.digits(1, 2)?;
    if !c.eat(b'-') {
        return None;
    }
    let (day, _) = c.digits(1, 2)?;
    let (month, day) = (month as u32, day as u32);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut fields = Fields {
        year,
        month,
        day,
        clock: None,
        offset: None,
    };
    let spaces = c.skip_spaces();
    if c.at_end() {
        return Some(fields);
    }
    if spaces == 0 && !(c.eat(b'T') || c.eat(b't')) {
        return None;
    }
    fields.clock = Some(parse_clock(&mut c)?);
    c.skip_spaces();
    if !c.at_end() {
        fields.offset = Some(parse_zone(&mut c)?);
        c.skip_spaces();
    }
    c.at_end().then_some(fields)
}

/// `HH:MM[:SS[.ffffff]]`; 24:00:00 and a leap second 60 are accepted as PostgreSQL does.
fn parse_clock(c: &mut Cursor<'_>) -> Option<Clock> {
    let (hour, _) = c.digits(1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let (minute, _) = c.digits(2, 2)?;
    let mut clock = Clock {
        hour: hour as u32,
        minute: minute as u32,
        second: 0,
        micros: 0,
        fraction_digits: 0,
    };
    if c.eat(b':') {
        clock.second = c.digits(2, 2)?.0 as u32;
        if c.eat(b'.') {
            // More than microsecond precision would need PostgreSQL's rounding: refuse.
            let (fraction, digits) = c.digits(1, 6)?;
            if c.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
            clock.micros = (fraction * 10i64.pow(6 - digits as u32)) as u32;
            clock.fraction_digits = digits;
        }
    }
    let valid = clock.minute < 60
        && clock.second <= 60
        && (clock.hour < 24
            || (clock.hour == 24 && clock.minute == 0 && clock.second == 0 && clock.micros == 0));
    valid.then_some(clock)
}

/// `Z`, `UTC`, `GMT`, or `±HH`, `±HH:MM`, `±HH:MM:SS`, `±HHMM`: seconds east of UTC.
fn parse_zone(c: &mut Cursor<'_>) -> Option<i32> {
    for utc in ["z", "utc", "gmt"] {
        if c.rest_eq_ignore_case(utc) {
            c.i = c.s.len();
            return Some(0);
        }
    }
    let sign = match c.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    c.i += 1;
    let (first, digits) = c.digits(1, 4)?;
    let (hours, mut minutes, mut seconds) = match digits {
        1 | 2 => (first, 0, 0),
        4 => (first / 100, first % 100, 0),
        _ => return None,
    };
    if digits <= 2 && c.eat(b':') {
        minutes = c.digits(2, 2)?.0;
        if c.eat(b':') {
            seconds = c.digits(2, 2)?.0;
        }
    }
    if minutes >= 60 || seconds >= 60 {
        return None;
    }
    let offset = (hours * 3600 + minutes * 60 + seconds) as i32;
    (offset <= MAX_OFFSET_SECS).then_some(sign * offset)
}

/// A `default_offset_secs` meaning "the session's zone has no fixed offset" (it observes
/// daylight saving time, say): zone-less values are then not read at all.
pub const NO_DEFAULT_OFFSET: i32 = i32::MIN;

/// Microseconds since 1970-01-01 00:00 UTC of `input` read as PostgreSQL reads a constant of
/// type `cast` (an untyped constant is read as `timestamptz`). A zone-less input takes
/// `default_offset_secs` (seconds east of UTC: the session time zone's offset, which must hold
/// at that instant); an offset beyond ±15:59:59, such as [`NO_DEFAULT_OFFSET`], makes
/// zone-less inputs unreadable. `None` for anything not understood exactly: special values
/// (`now`, `infinity`, `epoch`), BC dates, named zones, more fractional digits than
/// microseconds or than the cast's precision keeps.
pub fn parse_timestamp(input: &str, cast: TimeCast, default_offset_secs: i32) -> Option<i64> {
    let fields = parse_fields(input)?;
    let default_offset = (-MAX_OFFSET_SECS..=MAX_OFFSET_SECS)
        .contains(&default_offset_secs)
        .then_some(default_offset_secs);
    let (clock, offset) = match cast {
        TimeCast::Date => {
            // A date becomes midnight in the session's zone when compared with a timestamp.
            if fields.clock.is_some() || fields.offset.is_some() {
                return None;
            }
            (None, default_offset?)
        }
        // PostgreSQL silently ignores a zone in a timestamp-without-time-zone constant.
        TimeCast::Timestamp { precision } => {
            (checked_precision(fields.clock, precision)?, default_offset?)
        }
        TimeCast::Timestamptz { precision } => (
            checked_precision(fields.clock, precision)?,
            fields.offset.or(default_offset)?,
        ),
        TimeCast::Untyped => (fields.clock, fields.offset.or(default_offset)?),
    };
    let days = days_from_civil(fields.year, fields.month, fields.day);
    let clock = clock.unwrap_or(Clock {
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
        fraction_digits: 0,
    });
    let seconds =
        days * 86_400 + clock.hour as i64 * 3600 + clock.minute as i64 * 60 + clock.second as i64
            - offset as i64;
    seconds
        .checked_mul(MICROS_PER_SEC)?
        .checked_add(clock.micros as i64)
}

/// The clock, unless the cast's precision would round its fraction.
fn checked_precision(clock: Option<Clock>, precision: Option<u64>) -> Option<Option<Clock>> {
    match (clock, precision) {
        (Some(c), Some(p)) if (c.fraction_digits as u64) > p => None,
        _ => Some(clock),
    }
}

/// Seconds since the epoch as UTC: `2026-12-05 00:00:00+00`, or `20261205_000000` for a name.
pub fn utc_text(secs: i64, compact: bool) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    if compact {
        format!("{y:04}{m:02}{d:02}_{hh:02}{mm:02}{ss:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}+00")
    }
}
