//! Credentials as the proxy sees them: which secrets a group may use, the hosts each is bound
//! to, and the rules for one outbound request — refuse a raw secret value anywhere, refuse a
//! placeholder headed where its secret is not bound, otherwise swap placeholders for values
//! and add configured headers.
//!
//! Nothing here logs or formats a secret value; refusals name the secret.

use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use nanoclaw_core::secret::Replacer;

use crate::policy::{HostPattern, Refusal, normalize_host};

/// A header the proxy sets on requests to a bound host: `format` with `{}` replaced by the
/// secret's value (for example `Authorization` with `Bearer {}`).
#[derive(Clone, Debug)]
pub struct HeaderInjection {
    pub name: HeaderName,
    pub format: String,
}

/// One secret as the proxy holds it.
#[derive(Clone)]
pub struct Credential {
    pub name: String,
    pub value: String,
    pub placeholder: String,
    pub hosts: Vec<HostPattern>,
    pub header: Option<HeaderInjection>,
    /// Placeholders in the URL (path and query) are replaced too.
    pub in_query: bool,
    /// Placeholders in the request body are replaced too.
    pub in_body: bool,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn bound_to(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.iter().any(|p| p.matches(&host))
    }
}

/// Every secret the daemon knows (for scanning), and which of them one group may use.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    all: Vec<(Credential, bool)>,
    /// Secret value -> index into `all`, for the leak scan.
    values: Replacer,
    /// Placeholder -> index into `all`.
    placeholders: Replacer,
    /// Secret value -> placeholder, for responses going back into the sandbox.
    to_placeholders: Arc<Replacer>,
}

/// Where in a request a placeholder was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Url,
    Header,
    /// A header's name or the method: never substituted, only scanned.
    Scanned,
    /// What a `Basic` credential decodes to: substituted like a header, then encoded again.
    Basic,
    Body,
}

/// The text inside `Authorization: Basic …` (what `curl -u user:pass` sends), decoded.
fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    nanoclaw_core::secret::base64_decode(rest.trim().as_bytes())
}

impl Credentials {
    /// `all` secrets; the group may use those whose names are in `granted`.
    pub fn new(all: Vec<Credential>, granted: &[String]) -> Credentials {
        let all: Vec<(Credential, bool)> = all
            .into_iter()
            .map(|c| {
                let ok = granted.contains(&c.name);
                (c, ok)
            })
            .collect();
        let index = |i: usize| i.to_string().into_bytes();
        Credentials {
            // A value in any of the forms a script reaches for first is still the value.
            values: Replacer::new(all.iter().enumerate().flat_map(|(i, (c, _))| {
                let value = c.value.as_bytes();
                std::iter::once(value.to_vec())
                    .chain(nanoclaw_core::secret::encodings(value))
                    .map(move |form| (form, index(i)))
            })),
            // Placeholders in any case: HTTP lower-cases header names.
            placeholders: Replacer::new(all.iter().enumerate().flat_map(|(i, (c, _))| {
                let p = c.placeholder.as_bytes();
                [p.to_vec(), p.to_ascii_lowercase(), p.to_ascii_uppercase()]
                    .into_iter()
                    .map(move |form| (form, index(i)))
            })),
            to_placeholders: Arc::new(Replacer::new(all.iter().map(|(c, _)| {
                (
                    c.value.as_bytes().to_vec(),
                    c.placeholder.as_bytes().to_vec(),
                )
            }))),
            all,
        }
    }

    /// Whether any secret this group may use is bound to `host`: the proxy intercepts TLS
    /// to such hosts and tunnels all others untouched.
    pub fn intercepts(&self, host: &str) -> bool {
        self.all.iter().any(|(c, ok)| *ok && c.bound_to(host))
    }

    /// Secret values to placeholders, for responses headed back into the sandbox.
    pub fn response_redactor(&self) -> &Arc<Replacer> {
        &self.to_placeholders
    }

    /// Whether `text` carries a secret's value in any of the forms the scan knows.
    pub fn carries_value(&self, text: &[u8]) -> bool {
        self.values.contains(text)
    }

    /// Whether `value` is a credential and nothing more: placeholders, after at most one of
    /// the usual scheme words (`Bearer`, `token`, `Bot`). Such a header carries no data the
    /// sandbox chose.
    pub fn only_placeholders(&self, value: &[u8]) -> bool {
        let rest = self.placeholders.remove(value);
        if rest.len() == value.len() {
            return false;
        }
        let words: Vec<&[u8]> = rest
            .split(|b| *b == b' ')
            .filter(|w| !w.is_empty())
            .collect();
        match words[..] {
            [] => true,
            [scheme] => {
                value.starts_with(scheme)
                    && [&b"bearer"[..], b"token", b"bot"]
                        .iter()
                        .any(|s| scheme.eq_ignore_ascii_case(s))
            }
            _ => false,
        }
    }

    /// Whether the daemon holds any secret at all (then plain-HTTP bodies are scanned too).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Refuse a request whose method or target authority carries a secret's raw value: checked
    /// before the name is looked up, since the lookup itself would carry the value out. The
    /// host in the refusal shows placeholders, not values.
    pub fn check_target(&self, method: &str, authority: &str) -> Result<(), Refusal> {
        for piece in [method, authority] {
            if let Some((_, i)) = self.values.find(piece.as_bytes()) {
                // Values swapped for placeholders before the host is lower-cased, or a value
                // with capitals would no longer be found (and would reach the log and audit).
                return Err(Refusal::SecretValue {
                    secret: self.all[self.index_of(&self.values, i)].0.name.clone(),
                    host: normalize_host(&self.to_placeholders.replace_str(authority)),
                });
            }
        }
        Ok(())
    }

    /// Check one outbound request to `host` and prepare it: refuse raw values and misplaced
    /// placeholders, replace the placeholders this host may receive, set injected headers.
    /// `tls` says whether the request travels encrypted upstream; secrets never go out in the
    /// clear. Returns the names of the secrets injected.
    pub fn prepare(
        &self,
        host: &str,
        tls: bool,
        parts: &mut Parts,
        body: &mut Vec<u8>,
    ) -> Result<Vec<String>, Refusal> {
        if self.all.is_empty() {
            return Ok(Vec::new());
        }
        let url = parts.uri.to_string();
        let decoded: Vec<Vec<u8>> = parts
            .headers
            .iter()
            .filter_map(|(_, value)| basic_credentials(value.as_bytes()))
            .collect();
        let mut pieces: Vec<(Place, &[u8])> = vec![
            (Place::Url, url.as_bytes()),
            (Place::Scanned, parts.method.as_str().as_bytes()),
        ];
        for (name, value) in &parts.headers {
            pieces.push((Place::Scanned, name.as_str().as_bytes()));
            pieces.push((Place::Header, value.as_bytes()));
        }
        pieces.extend(decoded.iter().map(|d| (Place::Basic, d.as_slice())));
        pieces.push((Place::Body, body));
        // Raw values first: one anywhere refuses the request, whatever the host.
        for (_, piece) in &pieces {
            if let Some((_, i)) = self.values.find(piece) {
                return Err(Refusal::SecretValue {
                    secret: self.all[self.index_of(&self.values, i)].0.name.clone(),
                    host: normalize_host(host),
                });
            }
        }
        // Then every placeholder: it must be bound to this host, granted, encrypted, and in
        // a place its secret allows.
        let mut used: Vec<&Credential> = Vec::new();
        for (place, piece) in &pieces {
            let mut rest: &[u8] = piece;
            while let Some((pos, i)) = self.placeholders.find(rest) {
                let idx = self.index_of(&self.placeholders, i);
                let (cred, granted) = &self.all[idx];
                // Every form of a placeholder has its length.
                rest = &rest[pos + cred.placeholder.len()..];
                if !*granted || !cred.bound_to(host) {
                    return Err(Refusal::Exfiltration {
                        secret: cred.name.clone(),
                        host: normalize_host(host),
                    });
                }
                if !tls {
                    return Err(Refusal::Cleartext {
                        secret: cred.name.clone(),
                    });
                }
                let allowed = match place {
                    Place::Header | Place::Basic => true,
                    Place::Url => cred.in_query,
                    Place::Body => cred.in_body,
                    Place::Scanned => false,
                };
                if !allowed {
                    return Err(Refusal::PlaceholderPlace {
                        secret: cred.name.clone(),
                        place: match place {
                            Place::Url => "URL",
                            Place::Body => "body",
                            Place::Header | Place::Basic => "headers",
                            Place::Scanned => "method or header names",
                        },
                    });
                }
                if !used.iter().any(|c| c.name == cred.name) {
                    used.push(cred);
                }
            }
        }
        let injections: Vec<&Credential> = self
            .all
            .iter()
            .filter(|(c, ok)| *ok && c.header.is_some() && c.bound_to(host))
            .map(|(c, _)| c)
            .collect();
        if !tls && let Some(c) = injections.first() {
            return Err(Refusal::Cleartext {
                secret: c.name.clone(),
            });
        }
        if used.is_empty() && injections.is_empty() {
            return Ok(Vec::new());
        }
        // Substitute, only the secrets found above (all bound to this host and granted).
        let swap = Replacer::new(used.iter().map(|c| {
            (
                c.placeholder.as_bytes().to_vec(),
                c.value.as_bytes().to_vec(),
            )
        }));
        let bad_header = |name: &str| {
            Refusal::BadRequest(format!("header {name} is not valid after substitution"))
        };
        if swap.contains(url.as_bytes()) {
            let new = String::from_utf8_lossy(&swap.replace(url.as_bytes())).into_owned();
            parts.uri = new.parse().map_err(|_| {
                Refusal::BadRequest("the URL is not valid after substitution".into())
            })?;
        }
        for value in parts.headers.values_mut() {
            if let Some(decoded) = basic_credentials(value.as_bytes())
                && swap.contains(&decoded)
            {
                let encoded = nanoclaw_core::secret::base64_padded(&swap.replace(&decoded));
                *value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| bad_header("value"))?;
            } else if swap.contains(value.as_bytes()) {
                *value = HeaderValue::from_bytes(&swap.replace(value.as_bytes()))
                    .map_err(|_| bad_header("value"))?;
            }
        }
        if swap.contains(body) {
            *body = swap.replace(body);
        }
        let mut names: Vec<String> = used.iter().map(|c| c.name.clone()).collect();
        for c in injections {
            let Some(h) = &c.header else { continue };
            let value = HeaderValue::from_str(&h.format.replace("{}", &c.value))
                .map_err(|_| bad_header(h.name.as_str()))?;
            parts.headers.insert(h.name.clone(), value);
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        Ok(names)
    }

    /// The secret a needle of `replacer` belongs to: its replacement is the index in `all`.
    fn index_of(&self, replacer: &Replacer, i: usize) -> usize {
        std::str::from_utf8(replacer.replacement(i))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn cred(name: &str, host: &str) -> Credential {
        Credential {
            name: name.into(),
            value: format!("value-of-{name}-0123456789"),
            placeholder: format!("NANOCLAW_SECRET_{name}_abcdef"),
            hosts: vec![
                crate::policy::Rule::parse(host, None, false)
                    .unwrap()
                    .pattern,
            ],
            header: None,
            in_query: false,
            in_body: false,
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn creds() -> Credentials {
        let mut gh = cred("GH", "api.github.com");
        gh.in_query = true;
        let mut mail = cred("MAIL", "*.mail.example");
        mail.header = Some(HeaderInjection {
            name: HeaderName::from_static("authorization"),
            format: "Bearer {}".into(),
        });
        let other = cred("OTHER", "other.example");
        Credentials::new(vec![gh, mail, other], &["GH".into(), "MAIL".into()])
    }

    #[test]
    fn a_placeholder_in_a_header_is_replaced_toward_its_host() {
        let c = creds();
        let mut p = parts(
            "/user",
            &[("authorization", "token NANOCLAW_SECRET_GH_abcdef")],
        );
        let mut body = Vec::new();
        let names = c
            .prepare("API.github.com", true, &mut p, &mut body)
            .unwrap();
        assert_eq!(names, ["GH"]);
        assert_eq!(p.headers["authorization"], "token value-of-GH-0123456789");
    }

    #[test]
    fn a_placeholder_toward_another_host_is_exfiltration() {
        let c = creds();
        let mut p = parts("/", &[("x-token", "NANOCLAW_SECRET_GH_abcdef")]);
        let e = c
            .prepare("evil.example", true, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(&e, Refusal::Exfiltration { secret, .. } if secret == "GH"),
            "{e}"
        );
        // In the body, in the URL: the same.
        let mut p = parts("/?t=x", &[]);
        let mut body = b"token=NANOCLAW_SECRET_GH_abcdef".to_vec();
        assert!(matches!(
            c.prepare("evil.example", true, &mut p, &mut body),
            Err(Refusal::Exfiltration { .. })
        ));
        let mut p = parts("/NANOCLAW_SECRET_MAIL_abcdef", &[]);
        assert!(matches!(
            c.prepare("api.github.com", true, &mut p, &mut Vec::new()),
            Err(Refusal::Exfiltration { .. })
        ));
    }

    #[test]
    fn a_secret_the_group_was_not_granted_is_never_injected() {
        let c = creds();
        let mut p = parts("/", &[("x-token", "NANOCLAW_SECRET_OTHER_abcdef")]);
        assert!(matches!(
            c.prepare("other.example", true, &mut p, &mut Vec::new()),
            Err(Refusal::Exfiltration { .. })
        ));
    }

    #[test]
    fn a_raw_value_anywhere_is_refused_even_toward_its_own_host() {
        let c = creds();
        for (uri, header, body) in [
            ("/?k=value-of-OTHER-0123456789", "", ""),
            ("/", "xvalue-of-GH-0123456789", ""),
            ("/", "", "a=value-of-MAIL-0123456789"),
        ] {
            let mut p = parts(
                uri,
                &[("x-h", if header.is_empty() { "ok" } else { header })],
            );
            let mut b = body.as_bytes().to_vec();
            let e = c
                .prepare("api.github.com", true, &mut p, &mut b)
                .unwrap_err();
            assert!(
                matches!(e, Refusal::SecretValue { .. }),
                "{uri} {header} {body}: {e}"
            );
            assert!(
                !e.to_string().contains("0123456789"),
                "refusal shows a value: {e}"
            );
        }
    }

    #[test]
    fn url_and_body_substitution_only_where_enabled() {
        let c = creds();
        let mut p = parts("/search?token=NANOCLAW_SECRET_GH_abcdef", &[]);
        c.prepare("api.github.com", true, &mut p, &mut Vec::new())
            .unwrap();
        assert_eq!(p.uri, "/search?token=value-of-GH-0123456789");
        let mut p = parts("/", &[]);
        let mut body = b"{\"t\":\"NANOCLAW_SECRET_GH_abcdef\"}".to_vec();
        let e = c
            .prepare("api.github.com", true, &mut p, &mut body)
            .unwrap_err();
        assert!(
            matches!(e, Refusal::PlaceholderPlace { place: "body", .. }),
            "{e}"
        );
        let mut p = parts("/x/NANOCLAW_SECRET_MAIL_abcdef", &[]);
        let e = c
            .prepare("smtp.mail.example", true, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(e, Refusal::PlaceholderPlace { place: "URL", .. }),
            "{e}"
        );
    }

    #[test]
    fn configured_headers_are_set_for_bound_hosts_only() {
        let c = creds();
        let mut p = parts("/", &[("authorization", "whatever")]);
        let names = c
            .prepare("imap.mail.example", true, &mut p, &mut Vec::new())
            .unwrap();
        assert_eq!(names, ["MAIL"]);
        assert_eq!(
            p.headers["authorization"],
            "Bearer value-of-MAIL-0123456789"
        );
        let mut p = parts("/", &[]);
        assert!(
            c.prepare("mail.example", true, &mut p, &mut Vec::new())
                .unwrap()
                .is_empty()
        );
        assert!(!p.headers.contains_key("authorization"));
    }

    #[test]
    fn secrets_never_travel_in_the_clear() {
        let c = creds();
        let mut p = parts("/", &[("authorization", "token NANOCLAW_SECRET_GH_abcdef")]);
        let e = c
            .prepare("api.github.com", false, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, Refusal::Cleartext { .. }), "{e}");
        let mut p = parts("/", &[]);
        let e = c
            .prepare("a.mail.example", false, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, Refusal::Cleartext { .. }), "{e}");
    }

    #[test]
    fn interception_follows_granted_bindings() {
        let c = creds();
        assert!(c.intercepts("api.github.com"));
        assert!(c.intercepts("x.mail.example"));
        assert!(!c.intercepts("other.example"), "not granted to this group");
        assert!(!c.intercepts("example.com"));
    }

    // The red team's blind spots: curl -u (the placeholder base64'd in Authorization), a
    // placeholder as a header name (lower-cased on the way), and in the method.
    #[test]
    fn a_placeholder_in_basic_credentials_a_header_name_or_the_method_is_caught() {
        let c = creds();
        let basic = format!(
            "Basic {}",
            nanoclaw_core::secret::base64_padded(b"me:NANOCLAW_SECRET_GH_abcdef")
        );
        let mut p = parts("/", &[("authorization", &basic)]);
        let e = c
            .prepare("evil.example", true, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, Refusal::Exfiltration { .. }), "{e}");
        // Toward its own host the credential is substituted and encoded again.
        let mut p = parts("/", &[("authorization", &basic)]);
        assert_eq!(
            c.prepare("api.github.com", true, &mut p, &mut Vec::new())
                .unwrap(),
            ["GH"]
        );
        let sent = basic_credentials(p.headers["authorization"].as_bytes()).unwrap();
        assert_eq!(sent, b"me:value-of-GH-0123456789");

        let mut p = parts("/", &[("NANOCLAW_SECRET_GH_abcdef", "1")]);
        let e = c
            .prepare("evil.example", true, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, Refusal::Exfiltration { .. }), "{e}");

        let mut p = Request::builder()
            .method("NANOCLAW_SECRET_GH_abcdef")
            .uri("/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let e = c
            .prepare("evil.example", true, &mut p, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(e, Refusal::Exfiltration { .. }), "{e}");
    }

    #[test]
    fn a_value_encoded_as_scripts_do_is_still_refused() {
        let c = creds();
        let value = b"value-of-GH-0123456789";
        let hex = nanoclaw_core::hex::encode(value);
        let b64 = nanoclaw_core::secret::base64_padded(&[b"d=".as_slice(), value].concat());
        let pct: String = value.iter().map(|b| format!("%{b:02x}")).collect();
        for body in [
            hex.clone(),
            hex.to_uppercase(),
            b64,
            "VALUE-OF-GH-0123456789".into(),
            pct,
        ] {
            let mut body = body.into_bytes();
            let r = c.prepare("allowed.example", true, &mut parts("/", &[]), &mut body);
            assert!(
                matches!(r, Err(Refusal::SecretValue { .. })),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn responses_get_placeholders_for_values() {
        let c = creds();
        let out = c
            .response_redactor()
            .replace_str("{\"auth\":\"value-of-GH-0123456789\"}");
        assert_eq!(out, "{\"auth\":\"NANOCLAW_SECRET_GH_abcdef\"}");
    }
}
