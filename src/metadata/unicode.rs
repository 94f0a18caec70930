//! Unicode spoofing checks (issue #12 item 8; UTS #39).
//!
//! Human-readable text (`client_name` and every other string member) may not carry invisible
//! characters that change how it renders: format characters (general category Cf: bidi
//! embeddings, overrides and isolates, zero-width space/joiners, word joiner, BOM, tag
//! characters, ...) and line/paragraph separators (Zl, Zp). A consent screen that shows
//! "Photos\u{202E}gpj.exe" shows something else than what was registered.
//!
//! URIs are ASCII (RFC 3986 §2); one with non-ASCII characters is refused with its ASCII form in
//! the message, so what is stored and echoed is always the ASCII serialization. A host with an
//! internationalized (punycode `xn--`) label is refused unless `metadata.allow_idn_hosts`; when
//! allowed, each label's Unicode form must be single-script or one of UTS #39's "highly
//! restrictive" combinations (Latin with Han/Kana/Hangul), and may contain nothing whose
//! confusable skeleton is `/`, `.`, `:`, `@`, `?` or `#` (`accounts.google.com⁄.evil.com`, with a
//! U+2044 fraction slash, is really a host under evil.com).

use unicode_security::{skeleton, RestrictionLevel, RestrictionLevelDetection};
use url::{Host, Url};

/// General category Cf (Unicode 15.1), as ranges.
const FORMAT: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// The first character of `s` that is invisible formatting (Cf) or a line/paragraph separator
/// (Zl U+2028, Zp U+2029), if any.
pub fn invisible_char(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        c == '\u{2028}' || c == '\u{2029}' || FORMAT.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    })
}

/// Refuse a URI with non-ASCII characters, naming its ASCII form.
pub fn ascii_uri(raw: &str) -> Result<(), String> {
    if raw.is_ascii() {
        return Ok(());
    }
    let hint = match Url::parse(raw) {
        Ok(url) => format!("; its ASCII form is {:?}", url.as_str()),
        Err(_) => String::new(),
    };
    Err(format!(
        "{raw:?} contains non-ASCII characters; a URI is ASCII (RFC 3986 §2): send the host in punycode and percent-encode the rest{hint}"
    ))
}

/// Characters a spoofed host uses to look like a URL delimiter.
const DELIMITERS: &[char] = &['/', '.', ':', '@', '?', '#', '\\'];

/// Check the host of an ASCII URI for internationalized labels (see the module documentation).
pub fn idn_host(url: &Url, allow_idn: bool) -> Result<(), String> {
    let Some(Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    if !host
        .split('.')
        .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"))
    {
        return Ok(());
    }
    let (unicode, result) = idna::domain_to_unicode(host);
    if result.is_err() {
        return Err(format!(
            "host {host:?} is not a valid internationalized domain name"
        ));
    }
    if !allow_idn {
        return Err(format!(
            "host {host:?} is an internationalized domain name ({unicode:?}); this server accepts ASCII host names only (metadata.allow_idn_hosts)"
        ));
    }
    for label in unicode.split('.') {
        if let Some(c) = label
            .chars()
            .find(|c| skeleton(&c.to_string()).any(|s| DELIMITERS.contains(&s)))
        {
            return Err(format!(
                "host {host:?} ({unicode:?}) contains {c:?} (U+{:04X}), which renders like a URL delimiter",
                c as u32
            ));
        }
        if !label.check_restriction_level(RestrictionLevel::HighlyRestrictive) {
            return Err(format!(
                "host {host:?} ({unicode:?}) mixes scripts in the label {label:?} (UTS #39 highly restrictive)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_found() {
        for s in [
            "Photos\u{202E}gpj.exe",
            "a\u{2066}b",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "tag\u{E0041}",
            "line\u{2028}sep",
            "para\u{2029}sep",
            "soft\u{00AD}hyphen",
        ] {
            assert!(invisible_char(s).is_some(), "{s:?}");
        }
        for s in ["Example", "Приложение", "写真アプリ", "café", "emoji 📷"] {
            assert_eq!(invisible_char(s), None, "{s:?}");
        }
    }

    #[test]
    fn non_ascii_uris_are_refused_with_their_ascii_form() {
        let e = ascii_uri("https://accounts.google.com\u{2044}.evil.com/cb").unwrap_err();
        assert!(e.contains("xn--"), "{e}");
        assert!(ascii_uri("https://a.example/cb").is_ok());
    }

    #[test]
    fn idn_hosts_are_refused_unless_allowed_and_then_checked() {
        let u = |s: &str| Url::parse(s).unwrap();
        let fraction_slash = u("https://accounts.google.xn--com-qt0a.evil.com/cb");
        let cyrillic_a = u("https://xn--pple-43d.com/cb"); // "аpple": Cyrillic а + Latin
        let german = u("https://xn--mnchen-3ya.de/cb"); // münchen
        let japanese = u("https://xn--eckwd4c7c.xn--zckzah/"); // katakana
        for url in [&fraction_slash, &cyrillic_a, &german] {
            assert!(idn_host(url, false).is_err(), "{url}");
        }
        assert!(idn_host(&u("https://plain.example/"), false).is_ok());
        let e = idn_host(&fraction_slash, true).unwrap_err();
        assert!(e.contains("delimiter"), "{e}");
        let e = idn_host(&cyrillic_a, true).unwrap_err();
        assert!(e.contains("mixes scripts"), "{e}");
        assert!(idn_host(&german, true).is_ok());
        assert!(idn_host(&japanese, true).is_ok());
    }
}
