//! Rollout policy: batches (`--serial 1,10%,100%`), the failure budget (`--max-fail`)
//! and the pause between batches. Parsed once, as small enums, and checked by the engine.

use std::time::Duration;

/// One batch size: a number of hosts or a percentage of the hosts to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Count(usize),
    Percent(u32),
}

/// `N%` → `Some(Ok(N))`; no `%` → `None` (a count, for the caller).
fn percent(s: &str) -> Option<Result<u32, String>> {
    let p = s.strip_suffix('%')?;
    Some(
        p.trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a percentage")),
    )
}

impl Size {
    fn parse(s: &str) -> Result<Size, String> {
        let s = s.trim();
        if let Some(p) = percent(s) {
            let p = p?;
            if p == 0 || p > 100 {
                return Err(format!("`{s}`: a percentage is between 1% and 100%"));
            }
            return Ok(Size::Percent(p));
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "`{s}` is not a batch size (a positive number or a percentage)"
            )),
            Ok(n) => Ok(Size::Count(n)),
        }
    }

    /// Hosts in a batch of this size out of `total` (at least one).
    fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n,
            Size::Percent(p) => (total * p as usize).div_ceil(100),
        }
        .max(1)
    }
}

/// Batch sizes in order; the last one repeats until every host is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serial(pub Vec<Size>);

impl Serial {
    pub fn parse(s: &str) -> Result<Serial, String> {
        let v: Vec<Size> = s.split(',').map(Size::parse).collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err("--serial needs at least one batch size".into());
        }
        Ok(Serial(v))
    }

    /// Everything in one batch.
    pub fn all() -> Serial {
        Serial(vec![Size::Percent(100)])
    }

    /// A canary host first, then the rest.
    pub fn canary() -> Serial {
        Serial(vec![Size::Count(1), Size::Percent(100)])
    }

    /// Split `n` hosts into batch lengths.
    pub fn batches(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = n;
        let mut i = 0;
        while left > 0 {
            let size = self.0[i.min(self.0.len() - 1)].of(n).min(left);
            out.push(size);
            left -= size;
            i += 1;
        }
        out
    }
}

/// The failure budget, counted across the whole rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxFail {
    /// Halt when more than this many hosts failed.
    Count(usize),
    /// Halt when more than this percentage of the hosts to change failed.
    Percent(u32),
}

impl MaxFail {
    pub fn parse(s: &str) -> Result<MaxFail, String> {
        let s = s.trim();
        if let Some(p) = percent(s) {
            let p = p?;
            if p > 100 {
                return Err(format!("`{s}`: at most 100%"));
            }
            return Ok(MaxFail::Percent(p));
        }
        s.parse::<usize>()
            .map(MaxFail::Count)
            .map_err(|_| format!("`{s}` is not a failure budget (a number or a percentage)"))
    }

    /// Is the budget exceeded with `failed` failures out of `total` hosts to change?
    pub fn is_exceeded(self, failed: usize, total: usize) -> bool {
        match self {
            MaxFail::Count(n) => failed > n,
            MaxFail::Percent(p) => total > 0 && failed * 100 > p as usize * total,
        }
    }

    pub fn describe(self) -> String {
        match self {
            MaxFail::Count(n) => format!("--max-fail {n}"),
            MaxFail::Percent(p) => format!("--max-fail {p}%"),
        }
    }
}

/// `30s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 2m, 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    }
}

/// The resolved rollout of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub serial: Serial,
    pub max_fail: MaxFail,
    /// Halt after a batch in which more than this share of hosts failed (per batch).
    pub max_fail_per_batch: Option<MaxFail>,
    pub pause: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_ansible_serial() {
        let s = Serial::parse("1,10%,100%").expect("valid");
        assert_eq!(s.batches(50), vec![1, 5, 44]);
        assert_eq!(Serial::parse("2").expect("valid").batches(5), vec![2, 2, 1]);
        assert_eq!(Serial::canary().batches(1), vec![1]);
        assert_eq!(Serial::all().batches(7), vec![7]);
        assert_eq!(
            Serial::parse("30%").expect("valid").batches(10),
            vec![3, 3, 3, 1]
        );
        assert!(Serial::parse("0").is_err());
        assert!(Serial::parse("1,x").is_err());
        assert!(Serial::parse("150%").is_err());
    }

    #[test]
    fn failure_budget() {
        assert!(MaxFail::parse("0").expect("valid").is_exceeded(1, 10));
        assert!(!MaxFail::parse("2").expect("valid").is_exceeded(2, 10));
        assert!(MaxFail::parse("2").expect("valid").is_exceeded(3, 10));
        let p = MaxFail::parse("20%").expect("valid");
        assert!(!p.is_exceeded(2, 10));
        assert!(p.is_exceeded(3, 10));
        assert!(MaxFail::parse("x").is_err());
    }

    #[test]
    fn percentages_are_checked() {
        assert_eq!(
            Serial::parse("5%").expect("valid").0,
            vec![Size::Percent(5)]
        );
        assert_eq!(
            Serial::parse("x%"),
            Err("`x%` is not a percentage".to_string())
        );
        assert_eq!(
            Serial::parse("0%"),
            Err("`0%`: a percentage is between 1% and 100%".to_string())
        );
        assert_eq!(MaxFail::parse(" 0% "), Ok(MaxFail::Percent(0)));
        assert_eq!(
            MaxFail::parse("101%"),
            Err("`101%`: at most 100%".to_string())
        );
        assert_eq!(
            MaxFail::parse("-%"),
            Err("`-%` is not a percentage".to_string())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 days").is_err());
    }
}
