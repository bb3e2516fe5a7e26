//! The constants the lexer meets, and their values.

use std::borrow::Cow;

/// What kind of constant a [`Literal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteralKind {
    /// `'…'`, with `''` escapes.
    String,
    /// `E'…'`, with backslash escapes as well.
    EscapeString,
    /// `N'…'`.
    NationalString,
    /// `B'…'` or `X'…'`.
    BitString,
    /// `U&'…'`, with Unicode escapes (its value is not decoded).
    UnicodeString,
    /// `$$…$$` or `$tag$…$tag$`.
    DollarQuoted,
    /// A numeric constant (unsigned: a leading `-` is an operator).
    Number,
    /// `$n`, a parameter. `usize::MAX` when the number does not fit.
    Param(usize),
}

/// A constant or parameter as the lexer met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal<'a> {
    /// The kind of constant.
    pub kind: LiteralKind,
    /// Byte offset of its first byte, including an `E`/`N`/`B`/`X` prefix.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
    /// The source text `sql[start..end]`, quotes and prefix included.
    pub text: &'a str,
}

impl<'a> Literal<'a> {
    /// The value of a string constant (quotes removed, escapes applied), or `None` for
    /// numbers, bit strings, parameters, unterminated strings and escapes other than `\\`,
    /// `\'` and `''` in `E'…'` strings (a timestamp never needs them).
    pub fn string_value(&self) -> Option<Cow<'a, str>> {
        let t = self.text;
        match self.kind {
            LiteralKind::String | LiteralKind::NationalString | LiteralKind::EscapeString => {
                let body = match self.kind {
                    LiteralKind::String => t,
                    _ => t.get(1..)?,
                };
                let body = body.strip_prefix('\'')?.strip_suffix('\'')?;
                let escapes = self.kind == LiteralKind::EscapeString;
                let plain = !body.contains('\'') && (!escapes || !body.contains('\\'));
                if plain {
                    return Some(Cow::Borrowed(body));
                }
                let mut out = String::with_capacity(body.len());
                let mut chars = body.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\'' => {
                            // Inside a terminated literal a quote is always doubled.
                            if chars.next() != Some('\'') {
                                return None;
                            }
                            out.push('\'');
                        }
                        '\\' if escapes => match chars.next()? {
                            c @ ('\\' | '\'') => out.push(c),
                            _ => return None,
                        },
                        c => out.push(c),
                    }
                }
                Some(Cow::Owned(out))
            }
            LiteralKind::DollarQuoted => {
                let tag_len = t.get(1..)?.find('$')? + 2;
                if t.len() < 2 * tag_len {
                    return None;
                }
                let (tag, rest) = t.split_at(tag_len);
                rest.strip_suffix(tag).map(Cow::Borrowed)
            }
            LiteralKind::BitString
            | LiteralKind::UnicodeString
            | LiteralKind::Number
            | LiteralKind::Param(_) => None,
        }
    }
}
