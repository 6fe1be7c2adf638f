//! Daily figures for the status page's charts: messages accepted and bytes written to
//! storage, per UTC day: what the block device under the data directory wrote (issue 14:
//! journal, metadata and the write-ahead log included, as the card sees it), or where
//! there is no such device (tmpfs, overlay, containers) what this process caused to be
//! written (`write_bytes` of `/proc/self/io`). Kept in memory only (LW-5: losing them in a restart costs
//! nothing); the day's value is the growth of the running totals since the last sample
//! of the day before. Samples are taken periodically (so growth lands on the right day)
//! and whenever the status page asks (issue 16: today's bar is today so far, at once).

use std::collections::VecDeque;

/// How many days the charts show.
pub const DAYS: usize = 14;

/// Seconds in a day (UTC days: Unix time has no leap seconds).
const DAY: u64 = 86_400;

/// Running totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    pub messages: u64,
    pub written: u64,
}

/// Per-day growth of the totals.
#[derive(Debug, Default)]
pub struct Daily {
    /// (day, messages, bytes written), oldest first, at most `DAYS`.
    days: VecDeque<(u64, u64, u64)>,
    last: Option<Sample>,
    /// When the first sample was taken (the figures count from there).
    since: Option<u64>,
}

impl Daily {
    /// Add a sample; totals that went down (a restart) count from zero again.
    pub fn record(&mut self, s: Sample) {
        let (dm, dw) = match self.last {
            Some(p) => (
                s.messages.checked_sub(p.messages).unwrap_or(s.messages),
                s.written.checked_sub(p.written).unwrap_or(s.written),
            ),
            None => (0, 0),
        };
        self.last = Some(s);
        self.since.get_or_insert(s.at);
        let day = s.at / DAY;
        match self.days.back_mut() {
            Some(last) if last.0 == day => {
                last.1 += dm;
                last.2 += dw;
            }
            _ => {
                self.days.push_back((day, dm, dw));
                while self.days.len() > DAYS {
                    self.days.pop_front();
                }
            }
        }
    }

    /// Unix seconds of the first sample: the figures count from there.
    pub fn since(&self) -> Option<u64> {
        self.since
    }

    /// (day, messages) oldest first.
    pub fn messages(&self) -> Vec<(u64, u64)> {
        self.days.iter().map(|d| (d.0, d.1)).collect()
    }

    /// (day, bytes written) oldest first.
    pub fn written(&self) -> Vec<(u64, u64)> {
        self.days.iter().map(|d| (d.0, d.2)).collect()
    }

    /// Bytes written on the last full day; `None` until one exists (the first day's
    /// figure is only "so far" and would read as a daily rate — issue 16).
    pub fn written_per_day(&self) -> Option<u64> {
        let n = self.days.len();
        (n >= 2).then(|| self.days[n - 2].2)
    }

    /// Bytes written today so far (the last, still open day).
    pub fn written_today(&self) -> Option<u64> {
        self.days.back().map(|d| d.2)
    }
}

/// Bytes written to storage so far: [`device_write_bytes`] of `data_dir`, else
/// [`process_write_bytes`].
pub fn written_bytes(data_dir: &std::path::Path) -> u64 {
    device_write_bytes(data_dir).unwrap_or_else(process_write_bytes)
}

/// Bytes the block device holding `path` has written since boot: sectors written (the
/// 7th field of `/sys/dev/block/MAJ:MIN/stat`, Documentation/block/stat.rst) × 512.
/// `None` where the file system has no block device.
pub fn device_write_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors.saturating_mul(512))
}

/// `write_bytes` of this process (Linux `/proc/self/io`), 0 when unavailable.
pub fn process_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_figure_follows_the_block_device_or_is_absent() {
        // /proc has no block device; the root file system usually has one.
        assert_eq!(device_write_bytes(std::path::Path::new("/proc")), None);
        if let Some(before) = device_write_bytes(std::path::Path::new("/")) {
            assert!(before > 0, "a mounted root device has written something");
        }
    }

    #[test]
    fn growth_per_day_and_restart() {
        let mut d = Daily::default();
        assert_eq!(d.since(), None);
        d.record(Sample {
            at: 10 * DAY,
            messages: 5,
            written: 100,
        });
        d.record(Sample {
            at: 10 * DAY,
            messages: 8,
            written: 150,
        });
        d.record(Sample {
            at: 11 * DAY,
            messages: 10,
            written: 400,
        });
        // Restart: totals fell; the new totals are the growth.
        d.record(Sample {
            at: 11 * DAY,
            messages: 3,
            written: 50,
        });
        assert_eq!(d.since(), Some(10 * DAY), "the first sample");
        assert_eq!(d.messages(), vec![(10, 3), (11, 5)]);
        assert_eq!(d.written(), vec![(10, 50), (11, 300)]);
        assert_eq!(d.written_per_day(), Some(50), "the last full day");
        assert_eq!(d.written_today(), Some(300), "today so far");
        for day in 12..40 {
            d.record(Sample {
                at: day * DAY + 5,
                messages: 0,
                written: 0,
            });
        }
        assert_eq!(d.messages().len(), DAYS);
        assert_eq!(d.messages()[DAYS - 1].0, 39);
    }
}
