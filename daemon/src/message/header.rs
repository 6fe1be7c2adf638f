//! Header sections (RFC 5322 §2.2, §2.1; RFC 2045 §3 for MIME part headers): the one
//! splitter of header fields that every reader uses — the structure parser, the gate, the
//! header cleanup, IMAP FETCH and SEARCH. It works on byte ranges and never decodes.
//!
//! A field starts with a name of printable ASCII without a colon (RFC 5322 §2.2 `ftext`)
//! directly followed by `:`; lines starting with a space or tab continue it (folding,
//! RFC 5322 §2.2.3). The section ends at the first empty line. Anything else (a line
//! without a colon, white space before the colon, a continuation line without a field)
//! stops the splitter; the structure parser refuses such sections or, inside an
//! encapsulated message, ends the section there (see `structure`).

use std::ops::Range;

/// One header field, as byte ranges of the section it was split from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The whole field: first line, continuation lines and the final line break.
    pub range: Range<usize>,
    /// The name (before the colon).
    pub name: Range<usize>,
    /// The value: after the colon up to (not including) the final line break.
    pub value: Range<usize>,
}

impl Field {
    /// Is this field called `name` (ASCII case-insensitive, RFC 5322 §1.2.2)?
    pub fn is(&self, section: &[u8], name: &str) -> bool {
        section[self.name.clone()].eq_ignore_ascii_case(name.as_bytes())
    }

    /// Is the name one of `names`?
    pub fn is_any(&self, section: &[u8], names: &[&str]) -> bool {
        names.iter().any(|n| self.is(section, n))
    }

    /// The value with line breaks of folding removed (RFC 5322 §2.2.3) and leading and
    /// trailing white space trimmed. Nothing is decoded.
    pub fn unfolded(&self, section: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = section[self.value.clone()]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        let start = v.iter().position(|b| !is_wsp(*b)).unwrap_or(v.len());
        let end = v.iter().rposition(|b| !is_wsp(*b)).map_or(start, |i| i + 1);
        v.truncate(end);
        v.drain(..start);
        v
    }

    /// [`Field::unfolded`] as text: invalid UTF-8 replaced, control characters turned
    /// into spaces.
    pub fn text(&self, section: &[u8]) -> String {
        String::from_utf8_lossy(&self.unfolded(section))
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_string()
    }
}

/// Why the splitter stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Still splitting.
    Running,
    /// At the empty line; the body starts at this offset (after the empty line).
    Blank { body: usize },
    /// At the end of the data, without an empty line.
    End,
    /// At a line that is not a field, starting at this offset.
    NotAField { at: usize, why: NotAField },
}

/// Why a line is not a header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAField {
    /// No colon on the line.
    NoColon,
    /// Empty name, a character outside `ftext`, or white space before the colon.
    BadName,
    /// A continuation line (starting with white space) with no field before it.
    StrayContinuation,
}

/// Iterator over the fields of the header section at the start of `data`.
pub struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
    stop: Stop,
}

/// The fields of the header section at the start of `data` (which may include the body:
/// splitting stops at the empty line).
pub fn fields(data: &[u8]) -> Fields<'_> {
    Fields {
        data,
        pos: 0,
        stop: Stop::Running,
    }
}

impl Fields<'_> {
    /// Why splitting stopped (after the iterator returned `None`).
    pub fn stop(&self) -> Stop {
        self.stop
    }

    /// Offset just past the last field returned.
    pub fn position(&self) -> usize {
        self.pos
    }
}

pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// End of the line starting at `pos`: just past its LF, or the end of `data`.
pub(crate) fn line_end(data: &[u8], pos: usize) -> usize {
    match data[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => pos + i + 1,
        None => data.len(),
    }
}

/// RFC 5322 §3.6.8 `ftext`: printable US-ASCII except the colon.
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

impl Iterator for Fields<'_> {
    type Item = Field;

    fn next(&mut self) -> Option<Field> {
        if self.stop != Stop::Running {
            return None;
        }
        let data = self.data;
        let start = self.pos;
        if start >= data.len() {
            self.stop = Stop::End;
            return None;
        }
        let first_end = line_end(data, start);
        let line = &data[start..first_end];
        // RFC 5322 §2.1: the header section ends at the first empty line.
        if line == b"\r\n" || line == b"\n" {
            self.stop = Stop::Blank { body: first_end };
            return None;
        }
        if is_wsp(line[0]) {
            self.stop = Stop::NotAField {
                at: start,
                why: NotAField::StrayContinuation,
            };
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.stop = Stop::NotAField {
                at: start,
                why: NotAField::NoColon,
            };
            return None;
        };
        if colon == 0 || !line[..colon].iter().all(|&b| is_ftext(b)) {
            self.stop = Stop::NotAField {
                at: start,
                why: NotAField::BadName,
            };
            return None;
        }
        // RFC 5322 §2.2.3: lines starting with WSP continue the field.
        let mut end = first_end;
        while end < data.len() && is_wsp(data[end]) {
            end = line_end(data, end);
        }
        let value_end = if data[..end].ends_with(b"\r\n") {
            end - 2
        } else if data[..end].ends_with(b"\n") {
            end - 1
        } else {
            end
        };
        self.pos = end;
        Some(Field {
            range: start..end,
            name: start..start + colon,
            value: start + colon + 1..value_end.max(start + colon + 1),
        })
    }
}

/// The first field called `name` in the section.
pub fn first(section: &[u8], name: &str) -> Option<Field> {
    fields(section).find(|f| f.is(section, name))
}

/// The first field called `name`, as [`Field::text`].
pub fn first_text(section: &[u8], name: &str) -> Option<String> {
    first(section, name).map(|f| f.text(section))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(data: &[u8]) -> (Vec<String>, Stop) {
        let mut it = fields(data);
        let v = it
            .by_ref()
            .map(|f| String::from_utf8_lossy(&data[f.name]).into_owned())
            .collect();
        (v, it.stop())
    }

    #[test]
    fn splits_folded_fields_and_stops_at_the_empty_line() {
        let data = b"From: a@b.c\r\nSubject: x\r\n  y\r\n\tz\r\nTo: d@e.f\r\n\r\nbody\r\n";
        let (n, stop) = names(data);
        assert_eq!(n, ["From", "Subject", "To"]);
        assert_eq!(stop, Stop::Blank { body: 47 });
        assert_eq!(&data[47..], b"body\r\n");
        let subject = first(data, "subject").unwrap();
        assert_eq!(subject.unfolded(data), b"x  y\tz");
        assert_eq!(&data[subject.range], b"Subject: x\r\n  y\r\n\tz\r\n");
        assert_eq!(first_text(data, "FROM").as_deref(), Some("a@b.c"));
    }

    #[test]
    fn stops_at_lines_that_are_not_fields() {
        let cases: &[(&[u8], Stop)] = &[
            (
                b"From: a\r\nnot a field\r\n\r\n",
                Stop::NotAField {
                    at: 9,
                    why: NotAField::NoColon,
                },
            ),
            (
                b"From : a\r\n",
                Stop::NotAField {
                    at: 0,
                    why: NotAField::BadName,
                },
            ),
            (
                b": a\r\n",
                Stop::NotAField {
                    at: 0,
                    why: NotAField::BadName,
                },
            ),
            (
                b" folded: a\r\n",
                Stop::NotAField {
                    at: 0,
                    why: NotAField::StrayContinuation,
                },
            ),
            (b"From: a\r\n", Stop::End),
            (b"", Stop::End),
            (b"\r\nbody", Stop::Blank { body: 2 }),
        ];
        for (data, want) in cases {
            assert_eq!(names(data).1, *want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn text_replaces_controls_and_bad_utf8() {
        let data = b"X: a\x01b \xff\r\n\r\n";
        assert_eq!(first_text(data, "x").unwrap(), "a b \u{fffd}");
        // An empty value.
        let data = b"X:\r\n\r\n";
        assert_eq!(first(data, "x").unwrap().unfolded(data), b"");
    }
}
