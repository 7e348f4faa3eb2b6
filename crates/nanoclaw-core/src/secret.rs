//! Secret names, placeholders, and the byte-level search and replace that keeps secret values
//! out of what a sandbox or a model sees.
//!
//! A secret lives on the host only. Its sandbox-facing stand-in is a placeholder: a string
//! made of the secret's name and random hex, unguessable and unmistakable, which the egress
//! proxy swaps for the value on the way out and which every scanner can recognize.
//!
//! This module never holds a secret longer than the caller hands it over, and never formats a
//! value into a message: errors and `Debug` output name secrets, never their values.

use std::fmt;
use std::sync::Arc;

/// The shortest value `secret set` accepts: shorter values would match ordinary text and make
/// leak scans and redaction meaningless.
pub const MIN_VALUE_LEN: usize = 8;

/// Why a secret name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadSecretName {
    #[error(
        "secret name {0:?} must be 1-64 characters of A-Z, 0-9 and '_', starting with a letter (it becomes an environment variable)"
    )]
    Form(String),
    #[error(
        "secret name {0:?} is a variable the sandbox sets itself or that steers every program in it; choose another name"
    )]
    Reserved(String),
}

/// Variables the sandbox's environment sets (paths, locale, the proxy, the trusted roots):
/// a secret by one of these names would replace it with a placeholder and break every command.
const RESERVED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];

/// Check that `name` can be an environment variable name in the sandbox, and is not one the
/// sandbox needs for itself (nor `LD_*`, which the dynamic linker reads in every program).
pub fn check_name(name: &str) -> Result<(), BadSecretName> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(BadSecretName::Form(name.to_owned()));
    }
    if RESERVED_NAMES.contains(&name) || name.starts_with("LD_") {
        return Err(BadSecretName::Reserved(name.to_owned()));
    }
    Ok(())
}

/// The placeholder for secret `name`, given random bytes from the caller (the core does no
/// I/O, so it draws no randomness itself).
pub fn placeholder(name: &str, random: &[u8; 16]) -> String {
    format!("NANOCLAW_SECRET_{name}_{}", crate::hex::encode(random))
}

/// Whether `text` is a placeholder [`placeholder`] could have made for `name` (a hand-edited
/// secrets file is held to it: a short one would match everywhere).
pub fn is_placeholder_of(name: &str, text: &str) -> bool {
    text.strip_prefix("NANOCLAW_SECRET_")
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The forms of a secret's value a script reaches for first, besides the value itself:
/// ASCII case changes, hex (either case), percent-encoding (of every byte, and of the bytes
/// `quote` would encode, in either case), and base64 and base64url at each of the three
/// alignments the value can take inside a longer encoded text (only the characters that
/// depend on the value alone). Forms shorter than [`MIN_ENCODED`] are left out: they would
/// match by chance.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut add = |form: Vec<u8>| {
        if form.len() >= MIN_ENCODED && form != value && !out.contains(&form) {
            out.push(form);
        }
    };
    add(value.to_ascii_lowercase());
    add(value.to_ascii_uppercase());
    let hex = crate::hex::encode(value).into_bytes();
    add(hex.to_ascii_uppercase());
    add(hex);
    for upper in [true, false] {
        let pct = |b: u8| {
            let s = format!("%{b:02X}");
            if upper { s } else { s.to_ascii_lowercase() }
        };
        add(value.iter().flat_map(|&b| pct(b).into_bytes()).collect());
        add(value
            .iter()
            .flat_map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    vec![b]
                } else {
                    pct(b).into_bytes()
                }
            })
            .collect());
    }
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    for alphabet in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let text = alphabet.encode(&shifted).into_bytes();
            // Characters wholly inside the value's bits.
            let first = (8 * shift).div_ceil(6);
            let end = (8 * (shift + value.len())) / 6;
            if end > first {
                add(text[first..end].to_vec());
            }
        }
    }
    out
}

/// Shortest encoded form [`encodings`] keeps.
pub const MIN_ENCODED: usize = 8;

/// Standard base64 with padding (for a `Basic` credential rebuilt after substitution).
pub fn base64_padded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard or URL-safe base64 (either alphabet's two last digits, padding or not), as
/// `Basic` credentials arrive; `None` for anything else.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let standard: Vec<u8> = text
        .iter()
        .map(|&c| match c {
            b'-' => b'+',
            b'_' => b'/',
            c => c,
        })
        .collect();
    LENIENT.decode(standard).ok()
}

/// Replaces every occurrence of a set of needles (secret values, or placeholders) with a
/// replacement each. The search is left-most first; at one position the longest needle wins.
#[derive(Clone, Default)]
pub struct Replacer {
    needles: Vec<(Vec<u8>, Vec<u8>)>,
    longest: usize,
    /// All needles in one automaton; pattern ids are indexes into `needles`. `None` when
    /// there are no needles.
    matcher: Option<aho_corasick::AhoCorasick>,
}

impl fmt::Debug for Replacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Needles may be secret values: never print them.
        write!(f, "Replacer({} needles)", self.needles.len())
    }
}

impl Replacer {
    /// Empty needles are dropped: they would match everywhere.
    pub fn new(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Replacer {
        let mut needles: Vec<_> = pairs.into_iter().filter(|(n, _)| !n.is_empty()).collect();
        needles.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        let longest = needles.first().map_or(0, |(n, _)| n.len());
        // Building fails only past billions of patterns or states; secrets are a handful. A
        // failure leaves no matcher, and `find` searches needle by needle instead.
        let matcher = (!needles.is_empty())
            .then(|| {
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(needles.iter().map(|(n, _)| n))
                    .ok()
            })
            .flatten();
        Replacer {
            needles,
            longest,
            matcher,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The first needle found in `hay` (its index in the order given to `new`'s sorted list is
    /// not exposed; callers get the position and the needle's replacement).
    pub fn find(&self, hay: &[u8]) -> Option<(usize, usize)> {
        match &self.matcher {
            Some(m) => m
                .find(hay)
                .map(|found| (found.start(), found.pattern().as_usize())),
            // Only if the automaton could not be built: the same leftmost-longest search, one
            // needle at a time.
            None => self.find_each(hay),
        }
    }

    /// The first needle in `hay` by a search for each needle: what `find` falls back to.
    fn find_each(&self, hay: &[u8]) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, (needle, _)) in self.needles.iter().enumerate() {
            let limit = best.map_or(hay.len(), |(pos, _)| (pos + needle.len()).min(hay.len()));
            if let Some(pos) = memchr::memmem::find(&hay[..limit], needle)
                && best.is_none_or(|(b, _)| pos < b)
            {
                best = Some((pos, i));
            }
        }
        best
    }

    /// Whether any needle occurs in `hay`.
    pub fn contains(&self, hay: &[u8]) -> bool {
        !self.is_empty() && self.find(hay).is_some()
    }

    /// The replacement of the needle at `index` (as returned by [`Replacer::find`]).
    pub fn replacement(&self, index: usize) -> &[u8] {
        &self.needles[index].1
    }

    /// `hay` with every needle replaced.
    pub fn replace(&self, hay: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let rest = self.each_match(hay, |before, replacement| {
            out.extend_from_slice(before);
            out.extend_from_slice(replacement);
        });
        out.extend_from_slice(rest);
        out
    }

    /// `hay` with every needle taken out.
    pub fn remove(&self, hay: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let rest = self.each_match(hay, |before, _| out.extend_from_slice(before));
        out.extend_from_slice(rest);
        out
    }

    /// The replacements of the needles `replace` would replace in `hay`, in order.
    pub fn replacements_in<'a>(&'a self, hay: &[u8]) -> Vec<&'a [u8]> {
        let mut found = Vec::new();
        self.each_match(hay, |_, replacement| found.push(replacement));
        found
    }

    /// Walk `hay`'s matches left to right, handing `visit` the text before each and the
    /// match's replacement; returns what follows the last.
    fn each_match<'h, 's>(
        &'s self,
        hay: &'h [u8],
        mut visit: impl FnMut(&'h [u8], &'s [u8]),
    ) -> &'h [u8] {
        let mut rest = hay;
        while let Some((pos, i)) = self.find(rest) {
            visit(&rest[..pos], &self.needles[i].1);
            rest = &rest[pos + self.needles[i].0.len()..];
        }
        rest
    }

    /// Text with every needle replaced. Replacing inside valid UTF-8 with UTF-8 keeps it valid.
    pub fn replace_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        String::from_utf8_lossy(&self.replace(text.as_bytes())).into_owned()
    }

    /// A replacer for a stream of chunks: a needle split across chunks is still found.
    pub fn stream(self: &Arc<Self>) -> StreamReplacer {
        StreamReplacer {
            replacer: Arc::clone(self),
            held: Vec::new(),
        }
    }
}

/// Streaming form of [`Replacer`]: the output is the same as [`Replacer::replace`] over the
/// whole stream, however it is split. A match is taken only once the `longest` bytes from its
/// start have arrived, since a longer needle beginning at the same place (a secret value that
/// extends another) may still be completing; bytes that may begin a needle are held back.
pub struct StreamReplacer {
    replacer: Arc<Replacer>,
    held: Vec<u8>,
}

impl StreamReplacer {
    /// Feed a chunk; returns the bytes that are now safe to pass on.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let longest = self.replacer.longest;
        let mut out = Vec::with_capacity(self.held.len());
        let mut start = 0;
        while let Some((pos, i)) = self.replacer.find(&self.held[start..]) {
            let at = start + pos;
            if self.held.len() - at < longest {
                // Undecided: a longer needle may start here. `safe` below stays at or before
                // `at`, so the match is held for the next chunk.
                break;
            }
            let (needle, replacement) = &self.replacer.needles[i];
            out.extend_from_slice(&self.held[start..at]);
            out.extend_from_slice(replacement);
            start = at + needle.len();
        }
        // Any needle starting before `len - (longest - 1)` lies wholly in `held`, so it was
        // found above; bytes from there on may begin one the next chunk completes.
        let keep = longest.saturating_sub(1);
        let safe = self.held.len().saturating_sub(keep).max(start);
        out.extend_from_slice(&self.held[start..safe]);
        self.held.drain(..safe);
        out
    }

    /// The end of the stream: what was held back, with the needles in it replaced.
    pub fn finish(&mut self) -> Vec<u8> {
        self.replacer.replace(&std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, &str)]) -> Replacer {
        Replacer::new(
            pairs
                .iter()
                .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec())),
        )
    }

    #[test]
    fn names_are_environment_variable_names() {
        for good in ["GITHUB_TOKEN", "A", "X1_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "a", "A-B", "A B", "É", &"A".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(BadSecretName::Form(_))),
                "{bad}"
            );
        }
        for reserved in ["PATH", "HOME", "HTTPS_PROXY", "SSL_CERT_FILE", "LD_PRELOAD"] {
            assert!(
                matches!(check_name(reserved), Err(BadSecretName::Reserved(_))),
                "{reserved}"
            );
        }
    }

    #[test]
    fn placeholders_name_the_secret_and_carry_randomness() {
        let p = placeholder("TOKEN", &[0xab; 16]);
        assert_eq!(p, format!("NANOCLAW_SECRET_TOKEN_{}", "ab".repeat(16)));
    }

    #[test]
    fn encodings_are_found_inside_longer_encoded_text() {
        let value = b"s3cr3t-V4lue/with+marks";
        let forms = encodings(value);
        let rep = Replacer::new(forms.iter().map(|f| (f.clone(), b"X".to_vec())));
        // What a script would send: the value inside longer text, then encoded.
        for prefix in ["", "a", "ab", "user:"] {
            let mut text = prefix.as_bytes().to_vec();
            text.extend_from_slice(value);
            text.extend_from_slice(b"&tail");
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(&text)
                .into_bytes();
            let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&text)
                .into_bytes();
            let hex = crate::hex::encode(&text);
            for sent in [
                b64,
                b64url,
                hex.clone().into_bytes(),
                hex.to_ascii_uppercase().into_bytes(),
            ] {
                assert!(
                    rep.contains(&sent),
                    "{prefix:?}: {}",
                    String::from_utf8_lossy(&sent)
                );
            }
        }
        for sent in [
            "S3CR3T-V4LUE/WITH+MARKS".as_bytes(),
            b"s3cr3t-v4lue/with+marks",
            b"?d=s3cr3t-V4lue%2Fwith%2Bmarks",
            b"?d=s3cr3t-V4lue%2fwith%2bmarks",
        ] {
            assert!(rep.contains(sent), "{}", String::from_utf8_lossy(sent));
        }
        assert_eq!(
            base64_padded(b"any carnal pleas"),
            "YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert_eq!(
            base64_decode(b"YW55IGNhcm5hbCBwbGVhcw").as_deref(),
            Some(&b"any carnal pleas"[..])
        );
        assert!(!rep.contains(b"an ordinary request body with nothing in it"));
    }

    #[test]
    fn the_fallback_search_finds_what_the_automaton_finds() {
        let mut rep = r(&[("secret", "[S]"), ("secretive", "[L]"), ("cret", "[C]")]);
        let text = "a secret, secretive; cret";
        let with_automaton = rep.replace_str(text);
        rep.matcher = None;
        assert_eq!(rep.replace_str(text), with_automaton);
    }

    #[test]
    fn replaces_every_occurrence_leftmost_longest() {
        let rep = r(&[("secret", "[S]"), ("secretive", "[L]"), ("cret", "[C]")]);
        assert_eq!(
            rep.replace_str("a secret, secretive; cret"),
            "a [S], [L]; [C]"
        );
        assert_eq!(rep.replace_str("nothing here"), "nothing here");
        assert!(rep.contains(b"xxsecret"));
        assert!(!rep.contains(b"secre"));
        assert!(!Replacer::default().contains(b"anything"));
    }

    #[test]
    fn a_needle_split_across_chunks_is_found() {
        let rep = Arc::new(r(&[("hunter22", "***")]));
        let text = "pass=hunter22&again=hunter22&end";
        for split in 0..text.len() {
            for split2 in split..text.len() {
                let mut s = rep.stream();
                let mut out = s.push(&text.as_bytes()[..split]);
                out.extend(s.push(&text.as_bytes()[split..split2]));
                out.extend(s.push(&text.as_bytes()[split2..]));
                out.extend(s.finish());
                assert_eq!(String::from_utf8(out).unwrap(), "pass=***&again=***&end");
            }
        }
    }

    /// Every split of `text` into three chunks streams to what one `replace` gives.
    fn streams_like_one_shot(rep: &Arc<Replacer>, text: &str) {
        let whole = rep.replace(text.as_bytes());
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            for split2 in split..=bytes.len() {
                let mut s = rep.stream();
                let mut out = s.push(&bytes[..split]);
                out.extend(s.push(&bytes[split..split2]));
                out.extend(s.push(&bytes[split2..]));
                out.extend(s.finish());
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&whole),
                    "{text:?} split at {split} and {split2}"
                );
            }
        }
    }

    #[test]
    fn a_value_that_extends_another_is_never_half_replaced() {
        // Secret values may be prefixes or suffixes of one another; a stream split right after
        // the shorter must not let the longer one's tail through.
        let rep = Arc::new(r(&[
            ("abc", "[A]"),
            ("abcdef", "[B]"),
            ("cdefgh", "[C]"),
            ("x", "[X]"),
        ]));
        for text in [
            "abcdef",
            "..abcdefgh..",
            "abcabcdefabc",
            "abcdex",
            "xabcdefx",
            "cdefgh abcdefgh",
            "ab",
            "",
        ] {
            streams_like_one_shot(&rep, text);
        }
        let mut s = rep.stream();
        let mut out = s.push(b"token=abc");
        out.extend(s.push(b"def;"));
        out.extend(s.finish());
        assert_eq!(out, b"token=[B];");
    }

    /// Random needles over a three-letter alphabet (so they overlap, nest and extend one
    /// another), random texts, random chunkings: the stream gives what one `replace` gives, and
    /// no needle survives in either (the replacements use letters outside the alphabet).
    #[test]
    fn random_needles_and_chunkings_stream_like_one_shot_and_leave_no_needle() {
        let mut rng = fastrand::Rng::with_seed(0x5ec2e7);
        let word = |rng: &mut fastrand::Rng, len: usize| -> Vec<u8> {
            (0..len).map(|_| b"abc"[rng.usize(..3)]).collect()
        };
        for case in 0..3_000 {
            let needles: Vec<Vec<u8>> = (0..rng.usize(1..5))
                .map(|_| {
                    let len = rng.usize(1..7);
                    word(&mut rng, len)
                })
                .collect();
            let rep = Arc::new(Replacer::new(
                needles.iter().map(|n| (n.clone(), b"[X]".to_vec())),
            ));
            let len = rng.usize(0..40);
            let text = word(&mut rng, len);
            let whole = rep.replace(&text);
            for needle in &needles {
                assert!(
                    memchr::memmem::find(&whole, needle).is_none(),
                    "case {case}: a needle survived"
                );
            }
            for _ in 0..10 {
                let mut s = rep.stream();
                let mut out = Vec::new();
                let mut at = 0;
                while at < text.len() {
                    let end = (at + rng.usize(0..8)).min(text.len());
                    out.extend(s.push(&text[at..end]));
                    at = end;
                }
                out.extend(s.finish());
                assert_eq!(out, whole, "case {case}: stream and one-shot differ");
            }
        }
    }

    #[test]
    fn debug_never_shows_needles() {
        let rep = r(&[("topsecretvalue", "x")]);
        assert!(!format!("{rep:?}").contains("topsecret"));
    }
}
