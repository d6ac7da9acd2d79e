//! The clock and date formats behind `ngx.now`, `ngx.time`,
//! `ngx.update_time`, `ngx.today`, `ngx.localtime`, `ngx.utctime`,
//! `ngx.http_time`, `ngx.cookie_time` and `ngx.parse_http_time`.
//!
//! Formatting and parsing are pure functions of a Unix time (and, for
//! local time, an offset from UTC), byte-exact with nginx's
//! `ngx_http_time`, `ngx_http_cookie_time` and `ngx_parse_http_time`.
//! [`CachedClock`] is the per-worker cached time of ngx_lua: it moves only
//! when [`CachedClock::update_time`] is called.
//!
//! Local time follows nginx: the offset from UTC is read from the system
//! time zone when the clock is updated (the `TZ` variable, else
//! `/etc/localtime`, through `jiff`, with no libc calls), kept in whole
//! minutes, and added to the Unix time before formatting. With no time
//! zone configured, local time is UTC.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const WEEK: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time broken down in UTC (proleptic Gregorian calendar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tm {
    year: i64,
    /// 1..=12
    month: usize,
    day: i64,
    hour: i64,
    min: i64,
    sec: i64,
    /// 0 = Sunday
    wday: usize,
}

fn gmtime(secs: i64) -> Tm {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Tm {
        year,
        // `month` is 1..=12 by construction.
        month: usize::try_from(month).unwrap_or(1),
        day,
        hour: rem / 3600,
        min: rem / 60 % 60,
        sec: rem % 60,
        wday: usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
    }
}

fn month_name(tm: &Tm) -> &'static str {
    MONTHS
        .get(tm.month.wrapping_sub(1))
        .copied()
        .unwrap_or("Jan")
}

fn week_name(tm: &Tm) -> &'static str {
    WEEK.get(tm.wday).copied().unwrap_or("Sun")
}

/// `ngx.http_time(secs)`: "Thu, 18 Nov 2010 11:27:35 GMT". Times before
/// 1970 use the proleptic calendar (nginx itself prints nonsense there).
pub fn http_time(secs: i64) -> String {
    let tm = gmtime(secs);
    format!(
        "{}, {:02} {} {:4} {:02}:{:02}:{:02} GMT",
        week_name(&tm),
        tm.day,
        month_name(&tm),
        tm.year,
        tm.hour,
        tm.min,
        tm.sec
    )
}

/// `ngx.cookie_time(secs)`: "Thu, 18-Nov-10 11:27:35 GMT", with a
/// four-digit year after 2037 as nginx does.
pub fn cookie_time(secs: i64) -> String {
    let tm = gmtime(secs);
    let year = if tm.year > 2037 {
        tm.year.to_string()
    } else {
        format!("{:02}", tm.year.rem_euclid(100))
    };
    format!(
        "{}, {:02}-{}-{} {:02}:{:02}:{:02} GMT",
        week_name(&tm),
        tm.day,
        month_name(&tm),
        year,
        tm.hour,
        tm.min,
        tm.sec
    )
}

/// "yyyy-mm-dd" of `secs` shifted by `gmtoff_secs` (`ngx.today`).
pub fn today(secs: i64, gmtoff_secs: i32) -> String {
    let tm = gmtime(secs.saturating_add(i64::from(gmtoff_secs)));
    format!("{:04}-{:02}-{:02}", tm.year, tm.month, tm.day)
}

/// "yyyy-mm-dd hh:mm:ss" of `secs` shifted by `gmtoff_secs`
/// (`ngx.localtime`).
pub fn localtime(secs: i64, gmtoff_secs: i32) -> String {
    let tm = gmtime(secs.saturating_add(i64::from(gmtoff_secs)));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.min, tm.sec
    )
}

/// "yyyy-mm-dd hh:mm:ss" of `secs` in UTC (`ngx.utctime`).
pub fn utctime(secs: i64) -> String {
    localtime(secs, 0)
}

/// `ngx.parse_http_time(str)`: nginx's `ngx_parse_http_time`, which reads
/// RFC 1123 ("Thu, 18 Nov 2010 11:27:35 GMT"), RFC 850 ("Thursday,
/// 18-Nov-10 11:27:35 GMT") and asctime ("Thu Nov 18 11:27:35 2010")
/// dates. Like nginx it checks neither the weekday nor the zone name, and
/// like ngx_lua it returns `None` (Lua `nil`) for the one time equal to -1.
pub fn parse_http_time(value: impl AsRef<[u8]>) -> Option<i64> {
    #[derive(PartialEq, Eq)]
    enum Fmt {
        Unknown,
        Rfc822,
        Rfc850,
        Isoc,
    }
    const MDAY: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

    let value = value.as_ref();
    let end = value.len();
    let at = |i: usize| value.get(i).copied().unwrap_or(0);
    let digit = |i: usize| {
        let b = at(i);
        b.is_ascii_digit().then(|| i64::from(b - b'0'))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let four = |i: usize| Some(two(i)? * 100 + two(i + 2)?);

    let mut fmt = Fmt::Unknown;
    let mut p = 0;
    while p < end {
        if at(p) == b',' {
            break;
        }
        if at(p) == b' ' {
            fmt = Fmt::Isoc;
            break;
        }
        p += 1;
    }
    p += 1;
    while p < end && at(p) == b' ' {
        p += 1;
    }
    if end.saturating_sub(p) < 18 {
        return None;
    }

    let mut day = 0;
    let mut year = 0;
    if fmt != Fmt::Isoc {
        day = two(p)?;
        p += 2;
        match at(p) {
            b' ' if end.saturating_sub(p) >= 18 => fmt = Fmt::Rfc822,
            b'-' => fmt = Fmt::Rfc850,
            _ => return None,
        }
        p += 1;
    }

    let month: usize = match at(p) {
        b'J' if at(p + 1) == b'a' => 0,
        b'J' if at(p + 2) == b'n' => 5,
        b'J' => 6,
        b'F' => 1,
        b'M' if at(p + 2) == b'r' => 2,
        b'M' => 4,
        b'A' if at(p + 1) == b'p' => 3,
        b'A' => 7,
        b'S' => 8,
        b'O' => 9,
        b'N' => 10,
        b'D' => 11,
        _ => return None,
    };
    p += 3;
    if (fmt == Fmt::Rfc822 && at(p) != b' ') || (fmt == Fmt::Rfc850 && at(p) != b'-') {
        return None;
    }
    p += 1;

    if fmt == Fmt::Rfc822 {
        year = four(p)?;
        p += 4;
    } else if fmt == Fmt::Rfc850 {
        year = two(p)?;
        year += if year < 70 { 2000 } else { 1900 };
        p += 2;
    }

    if fmt == Fmt::Isoc {
        if at(p) == b' ' {
            p += 1;
        }
        day = digit(p)?;
        p += 1;
        if at(p) != b' ' {
            day = day * 10 + digit(p)?;
            p += 1;
        }
        if end.saturating_sub(p) < 14 {
            return None;
        }
    }

    if at(p) != b' ' {
        return None;
    }
    p += 1;
    let hour = two(p)?;
    p += 2;
    if at(p) != b':' {
        return None;
    }
    p += 1;
    let min = two(p)?;
    p += 2;
    if at(p) != b':' {
        return None;
    }
    p += 1;
    let sec = two(p)?;

    if fmt == Fmt::Isoc {
        p += 2;
        if at(p) != b' ' {
            return None;
        }
        p += 1;
        year = four(p)?;
    }

    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    if day == 29 && month == 1 {
        if year & 3 != 0 || (year % 100 == 0 && year % 400 != 0) {
            return None;
        }
    } else if day > MDAY[month] {
        return None;
    }

    // Gauss' formula, with the year shifted to start on March 1.
    let mut month = month as i64 - 1;
    if month <= 0 {
        month += 12;
        year -= 1;
    }
    let days =
        365 * year + year / 4 - year / 100 + year / 400 + 367 * month / 12 - 30 + day - 1 - 719_527
            + 31
            + 28;
    let time = days * 86_400 + hour * 3600 + min * 60 + sec;
    (time != -1).then_some(time)
}

/// The system time zone's offset from UTC at `unix_secs`, in seconds,
/// truncated to whole minutes as nginx keeps it; 0 when no zone is set.
pub fn system_gmtoff(unix_secs: i64) -> i32 {
    let Ok(ts) = jiff::Timestamp::from_second(unix_secs) else {
        return 0;
    };
    let off = jiff::tz::TimeZone::system().to_offset(ts).seconds();
    off - off % 60
}

fn system_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// ngx_lua's cached time: `ngx.now()`/`ngx.time()` and the local-time
/// functions read it, and only `update_time()` (`ngx.update_time`, and the
/// server at the start of each request, as nginx does per event-loop turn)
/// moves it. One per worker (it is `Sync`, so it may also be shared).
#[derive(Debug)]
pub struct CachedClock {
    /// Unix time in milliseconds at the last update.
    millis: AtomicI64,
    /// The system zone's offset from UTC at the last update, in seconds.
    gmtoff: AtomicI32,
}

impl Default for CachedClock {
    fn default() -> Self {
        Self::new()
    }
}

impl CachedClock {
    /// A clock set to the current system time.
    pub fn new() -> Self {
        let millis = system_millis();
        Self {
            millis: AtomicI64::new(millis),
            gmtoff: AtomicI32::new(system_gmtoff(millis.div_euclid(1000))),
        }
    }

    /// A clock stopped at `unix_millis` with the given UTC offset, until
    /// the next [`update_time`](Self::update_time) (for tests and replays).
    pub fn fixed(unix_millis: i64, gmtoff_secs: i32) -> Self {
        Self {
            millis: AtomicI64::new(unix_millis),
            gmtoff: AtomicI32::new(gmtoff_secs),
        }
    }

    /// Re-reads the system clock (`ngx.update_time()`); the zone offset is
    /// re-read when the second changes.
    pub fn update_time(&self) {
        let millis = system_millis();
        let old = self.millis.swap(millis, Ordering::Relaxed);
        if old.div_euclid(1000) != millis.div_euclid(1000) {
            self.gmtoff
                .store(system_gmtoff(millis.div_euclid(1000)), Ordering::Relaxed);
        }
    }

    /// Unix time in milliseconds, as cached.
    pub fn millis(&self) -> i64 {
        self.millis.load(Ordering::Relaxed)
    }

    /// `ngx.now()`: seconds with millisecond precision, as cached
    /// (computed as nginx does: `sec + msec / 1000.0`).
    pub fn now(&self) -> f64 {
        let ms = self.millis();
        ms.div_euclid(1000) as f64 + ms.rem_euclid(1000) as f64 / 1000.0
    }

    /// `ngx.time()`: whole seconds, as cached.
    pub fn time(&self) -> i64 {
        self.millis().div_euclid(1000)
    }

    /// The cached offset of local time from UTC, in seconds.
    pub fn gmtoff(&self) -> i32 {
        self.gmtoff.load(Ordering::Relaxed)
    }

    /// `ngx.today()`: "yyyy-mm-dd" in local time.
    pub fn today(&self) -> String {
        today(self.time(), self.gmtoff())
    }

    /// `ngx.localtime()`: "yyyy-mm-dd hh:mm:ss" in local time.
    pub fn localtime(&self) -> String {
        localtime(self.time(), self.gmtoff())
    }

    /// `ngx.utctime()`: "yyyy-mm-dd hh:mm:ss" in UTC.
    pub fn utctime(&self) -> String {
        utctime(self.time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_290_079_655;

    #[test]
    fn formats_a_fixed_time() {
        assert_eq!(http_time(T), "Thu, 18 Nov 2010 11:27:35 GMT");
        assert_eq!(cookie_time(T), "Thu, 18-Nov-10 11:27:35 GMT");
        assert_eq!(http_time(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(cookie_time(0), "Thu, 01-Jan-70 00:00:00 GMT");
        assert_eq!(http_time(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        // Four-digit years after 2037, two before.
        assert_eq!(cookie_time(2_240_611_200), "Tue, 01-Jan-2041 00:00:00 GMT");
        assert_eq!(http_time(2_240_611_200), "Tue, 01 Jan 2041 00:00:00 GMT");
        assert_eq!(cookie_time(2_145_916_799), "Thu, 31-Dec-37 23:59:59 GMT");
        assert_eq!(http_time(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn local_and_utc() {
        assert_eq!(utctime(T), "2010-11-18 11:27:35");
        assert_eq!(localtime(T, 0), "2010-11-18 11:27:35");
        assert_eq!(localtime(T, 13 * 3600), "2010-11-19 00:27:35");
        assert_eq!(today(T, 0), "2010-11-18");
        assert_eq!(today(T, -12 * 3600), "2010-11-17");
    }

    #[test]
    fn parses_the_three_formats() {
        assert_eq!(parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"), Some(T));
        assert_eq!(parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT"), Some(T));
        assert_eq!(parse_http_time("Thu Nov 18 11:27:35 2010"), Some(T));
        assert_eq!(
            parse_http_time("Thu Nov  8 11:27:35 2010"),
            Some(T - 10 * 86_400)
        );
        assert_eq!(
            parse_http_time("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        // nginx checks neither the weekday nor the zone, and reads a month
        // from its first letters only.
        assert_eq!(parse_http_time("Xyz, 18 Nov 2010 11:27:35"), Some(T));
        assert_eq!(
            parse_http_time("Thu, 18 Fxx 2010 11:27:35 GMT"),
            parse_http_time("Thu, 18 Feb 2010 11:27:35 GMT")
        );
        for t in [
            0,
            951_782_400,
            T,
            2_145_916_799,
            2_240_611_200,
            4_102_444_799,
        ] {
            assert_eq!(parse_http_time(http_time(t)), Some(t), "{}", http_time(t));
        }
        // Cookie dates read back while their two-digit years are unambiguous.
        for t in [0, 951_782_400, T, 2_145_916_799] {
            assert_eq!(
                parse_http_time(cookie_time(t)),
                Some(t),
                "{}",
                cookie_time(t)
            );
        }
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in [
            "",
            "garbage",
            "Thu, 18 Nov 2010 11:27",
            "Thu, 18 Xov 2010 11:27:35 GMT",
            "Thu, 18 Nov 2010 24:00:00 GMT",
            "Thu, 18 Nov 2010 11:60:00 GMT",
            "Thu, 31 Nov 2010 11:27:35 GMT",
            "Thu, 29 Feb 2010 11:27:35 GMT",
            "Thu, 29 Feb 1900 11:27:35 GMT",
            "Thu, 1x Nov 2010 11:27:35 GMT",
            "Thu Nov 18 11:27:35 20x0",
            // One second before the epoch is -1, which ngx_lua reports as nil.
            "Wed, 31 Dec 1969 23:59:59 GMT",
        ] {
            assert_eq!(parse_http_time(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_http_time("Thu, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
        assert_eq!(parse_http_time("Wed, 31 Dec 1969 23:59:58 GMT"), Some(-2));
    }

    #[test]
    fn cached_clock_moves_only_on_update() {
        let clock = CachedClock::fixed(T * 1000 + 123, 3600);
        assert_eq!(clock.time(), T);
        assert_eq!(clock.now(), 1_290_079_655.123);
        assert_eq!(clock.localtime(), "2010-11-18 12:27:35");
        assert_eq!(clock.today(), "2010-11-18");
        assert_eq!(clock.utctime(), "2010-11-18 11:27:35");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(clock.millis(), T * 1000 + 123);
        clock.update_time();
        assert!(clock.time() > T);
        let live = CachedClock::new();
        let before = live.millis();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(live.millis(), before);
        live.update_time();
        assert!(live.millis() >= before + 5);
    }

    #[test]
    fn gmtoff_is_whole_minutes() {
        let off = system_gmtoff(T);
        assert_eq!(off % 60, 0);
        assert!(off.abs() <= 14 * 3600);
    }
}
