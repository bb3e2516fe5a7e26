//! `client_encoding` as PostgreSQL names it: the server reads a client's spelling (`utf-8`,
//! `unicode`, `euc-jp`, `windows-1252`) by lower-casing it and dropping everything but letters
//! and digits, looks it up among its names and aliases, and reports the canonical name (`UTF8`,
//! `EUC_JP`, `WIN1252`) in ParameterStatus and `SHOW`. The broker greets the client before any
//! server has seen the setting, so it does the same.

/// PostgreSQL's encoding names and aliases (src/common/encnames.c), normalized, with the name
/// the server reports.
const NAMES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

/// The name PostgreSQL reports for the client encoding `value`, or `None` when it knows no
/// such encoding (it refuses the connection then, with 22023).
pub fn canonical(value: &str) -> Option<&'static str> {
    let key: String = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    NAMES
        .binary_search_by(|(alias, _)| alias.cmp(&key.as_str()))
        .ok()
        .map(|i| NAMES[i].1)
}

#[cfg(test)]
mod tests {
    use super::{canonical, NAMES};

    #[test]
    fn spellings_become_postgresql_names() {
        assert!(
            NAMES.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted for the search"
        );
        assert_eq!(canonical("utf-8"), Some("UTF8"));
        assert_eq!(canonical("UTF8"), Some("UTF8"));
        assert_eq!(canonical("unicode"), Some("UTF8"));
        assert_eq!(canonical("euc-jp"), Some("EUC_JP"));
        assert_eq!(canonical("ISO-8859-1"), Some("LATIN1"));
        assert_eq!(canonical("Windows-1252"), Some("WIN1252"));
        assert_eq!(canonical("SQL_ASCII"), Some("SQL_ASCII"));
        assert_eq!(canonical("klingon"), None);
    }
}
