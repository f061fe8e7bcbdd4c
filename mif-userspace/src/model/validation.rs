//! Validation: whether a PvD that is up (link, address, gateway) really
//! reaches the internet, decided per family from probes of an HTTP URL
//! that answers `204 No Content` (Android's NetworkMonitor does the same).
//! Pure: the settings from the config file and the state machine of one
//! (PvD, family); the probes themselves are in [`crate::validation`].
//!
//! States ([`Verdict`]):
//! - `unknown`: not probed yet, validation off, or the probe could not be
//!   made (no resolver for the URL's name); the PvD is used as before.
//! - `validated`: the URL answered 204.
//! - `captive`: it answered anything else, a redirect above all (a portal;
//!   its target is kept to show).
//! - `failing`: no answer within the timeout, refused, reset, or the name
//!   did not resolve, twice in a row (one lost probe is not an outage).
//!
//! Schedule (see [`Check::record`]): a validated or captive PvD is probed
//! every `interval`; after a failed probe, at once again, so a dead network
//! is declared failing within `interval + 2 × timeout` of dying (at most
//! 2 × interval with the default timeout of interval / 2); while failing,
//! after 1 s, 2 s, 4 s, ... up to `interval`, so a recovery is noticed
//! quickly after a short outage and a long-dead network costs little.
//!
//! Passive detection ([`Check::hurry`]): TCP retransmission timeouts on the
//! PvD's sockets bring the next probe forward to now, and its failure needs
//! no confirmation (the traffic already failed): a dead network is then
//! failing one timeout after the first application's retransmission timer
//! fired, whatever the interval.
use std::{
    fmt,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

/// `[validation] interval` when not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest interval accepted: probes more often than this would be most of
/// a small link's traffic.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Longest interval accepted (a day).
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// Longest default timeout: a probe is a DNS query (for a name), a TCP
/// handshake and one request, a few round trips even over cellular.
pub const MAX_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failed probes that make a PvD failing.
pub const FAILURES_TO_FAIL: u32 = 2;
/// First back-off while failing; it doubles up to the interval.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// An `http://` URL to probe, split as the probe needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    /// As written in the config file.
    pub text: String,
    pub host: ProbeHost,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeHost {
    /// Resolved through the probed PvD's own resolvers.
    Name(String),
    Addr(IpAddr),
}

impl ProbeHost {
    /// Whether a probe of the family can be made: an address literal has
    /// one family; a name may have addresses of both.
    pub fn serves(&self, v6: bool) -> bool {
        match self {
            ProbeHost::Name(_) => true,
            ProbeHost::Addr(a) => a.is_ipv6() == v6,
        }
    }

    /// The `Host` header's value (brackets around an IPv6 literal).
    pub fn header(&self, port: u16) -> String {
        let host = match self {
            ProbeHost::Name(n) => n.clone(),
            ProbeHost::Addr(IpAddr::V6(a)) => format!("[{a}]"),
            ProbeHost::Addr(a) => a.to_string(),
        };
        match port {
            80 => host,
            _ => format!("{host}:{port}"),
        }
    }
}

impl ProbeUrl {
    /// Parses an absolute `http://` URL. HTTPS is refused: a connectivity
    /// check is plain HTTP so that a portal can answer it (with TLS, a
    /// portal can only break the handshake, which looks like an outage).
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); write http://HOST/PATH"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https cannot detect captive portals (a portal cannot answer a TLS handshake); use an http:// URL that answers 204".into())
            }
            _ => return Err("must be an http:// URL".into()),
        }
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry a user name or password".into());
        }
        let host_text = authority.host();
        let bare = host_text.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(addr) => ProbeHost::Addr(addr),
            Err(_) => ProbeHost::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
        };
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        Ok(Self {
            text: text.to_string(),
            host,
            port: authority.port_u16().unwrap_or(80),
            path: if path.is_empty() { "/".into() } else { path },
        })
    }
}

impl fmt::Display for ProbeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `[validation]`: probing on, with these defaults for every PvD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    pub url: ProbeUrl,
    pub timing: Timing,
}

/// How often a PvD is probed and how long a probe may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Timing {
    /// The default timeout for an interval: half of it, at most
    /// [`MAX_DEFAULT_TIMEOUT`], so detection stays within 2 × interval.
    pub fn with_interval(interval: Duration) -> Self {
        Self {
            interval,
            timeout: (interval / 2).min(MAX_DEFAULT_TIMEOUT),
        }
    }
}

/// A PvD's `validation` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PvdValidation {
    /// As `[validation]` says (nothing without it).
    #[default]
    Inherit,
    /// `validation = false`: never probed, always `unknown`.
    Off,
    /// `validation = "http://..."`: this URL instead (probed even without
    /// `[validation]`, then with the default interval).
    Url(ProbeUrl),
}

/// What to probe for one PvD, if anything.
pub fn effective(
    global: Option<&ValidationConfig>,
    own: &PvdValidation,
) -> Option<ValidationConfig> {
    match (own, global) {
        (PvdValidation::Off, _) | (PvdValidation::Inherit, None) => None,
        (PvdValidation::Inherit, Some(g)) => Some(g.clone()),
        (PvdValidation::Url(url), g) => Some(ValidationConfig {
            url: url.clone(),
            timing: g.map_or(Timing::with_interval(DEFAULT_INTERVAL), |g| g.timing),
        }),
    }
}

/// The validation state of one (PvD, family).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Verdict {
    #[default]
    Unknown,
    Validated,
    Captive {
        /// Where the portal redirected the probe, if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        portal: Option<String>,
    },
    Failing,
}

impl Verdict {
    /// Whether non-strict policies pass this PvD over while another of
    /// theirs is usable.
    pub fn degraded(&self) -> bool {
        matches!(self, Verdict::Captive { .. } | Verdict::Failing)
    }

    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Validated => "validated",
            Verdict::Captive { .. } => "captive",
            Verdict::Failing => "failing",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Captive { portal: Some(p) } => write!(f, "captive (portal {p})"),
            other => f.write_str(other.word()),
        }
    }
}

/// A PvD's verdicts, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PvdVerdicts {
    pub v4: Verdict,
    pub v6: Verdict,
}

impl PvdVerdicts {
    pub fn get(&self, v6: bool) -> &Verdict {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 204 No Content.
    NoContent,
    /// Any other answer; `location` is a redirect's target.
    Answered {
        status: u16,
        location: Option<String>,
    },
    /// No usable answer: timeout, refused, reset, no address for the name.
    Failed(String),
    /// The probe could not be made at all (no resolver for the name): says
    /// nothing about the network.
    NotProbed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::NoContent => f.write_str("204 No Content"),
            Outcome::Answered {
                status,
                location: Some(l),
            } => write!(f, "HTTP {status} to {l}"),
            Outcome::Answered { status, .. } => write!(f, "HTTP {status}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::NotProbed(why) => write!(f, "not probed: {why}"),
        }
    }
}

/// The validation of one (PvD, family): its verdict and when to probe next.
#[derive(Debug, Clone)]
pub struct Check {
    pub verdict: Verdict,
    /// Consecutive failed probes.
    failures: u32,
    /// The delay after the next failed probe while failing.
    backoff: Duration,
    /// Traffic on the PvD timed out since the last probe that got an
    /// answer (passive detection): a failed probe then needs no second one
    /// to confirm it, the traffic already did.
    suspect: bool,
    /// When the next probe is due.
    pub due: Instant,
    /// The last probe's wall-clock time and outcome, for `mif pvd list`.
    pub last: Option<(SystemTime, Outcome)>,
}

impl Check {
    /// A check not probed yet, due at once.
    pub fn new(now: Instant) -> Self {
        Self {
            verdict: Verdict::Unknown,
            failures: 0,
            backoff: FIRST_BACKOFF,
            suspect: false,
            due: now,
            last: None,
        }
    }

    /// Takes a probe's outcome; returns whether the verdict changed.
    pub fn record(&mut self, outcome: Outcome, timing: &Timing, now: Instant) -> bool {
        let before = self.verdict.clone();
        let first_backoff = FIRST_BACKOFF.min(timing.interval);
        let suspect = std::mem::take(&mut self.suspect);
        match &outcome {
            Outcome::NoContent => {
                self.verdict = Verdict::Validated;
                self.failures = 0;
                self.backoff = first_backoff;
                self.due = now + timing.interval;
            }
            Outcome::Answered { location, .. } => {
                self.verdict = Verdict::Captive {
                    portal: location.clone(),
                };
                self.failures = 0;
                self.backoff = first_backoff;
                self.due = now + timing.interval;
            }
            Outcome::Failed(_) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < FAILURES_TO_FAIL && !suspect {
                    // Confirm at once: one lost probe is not an outage.
                    self.due = now;
                } else {
                    self.verdict = Verdict::Failing;
                    self.due = now + self.backoff.min(timing.interval);
                    self.backoff = (self.backoff * 2).min(timing.interval);
                }
            }
            Outcome::NotProbed(_) => {
                self.verdict = Verdict::Unknown;
                self.failures = 0;
                self.due = now + timing.interval;
            }
        }
        self.last = Some((SystemTime::now(), outcome));
        self.verdict != before
    }

    /// A hint that the PvD may have stopped working (TCP timeouts on it):
    /// probe now, and let a failure of that probe count as confirmed.
    /// Returns whether it moved the probe earlier. Ignored while failing
    /// (the back-off decides) and while a probe is due anyway.
    pub fn hurry(&mut self, now: Instant) -> bool {
        if self.verdict == Verdict::Failing {
            return false;
        }
        self.suspect = true;
        if self.due <= now {
            return false;
        }
        self.due = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(secs: u64) -> Timing {
        Timing::with_interval(Duration::from_secs(secs))
    }

    fn failed() -> Outcome {
        Outcome::Failed("timed out".into())
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let u = ProbeUrl::parse("http://Connectivity.Example./generate_204").unwrap();
        assert_eq!(u.host, ProbeHost::Name("connectivity.example".into()));
        assert_eq!((u.port, u.path.as_str()), (80, "/generate_204"));
        assert_eq!(u.host.header(u.port), "connectivity.example");
        let u = ProbeUrl::parse("http://[2001:db8::1]:8080/check?x=1").unwrap();
        assert_eq!(u.host, ProbeHost::Addr("2001:db8::1".parse().unwrap()));
        assert_eq!((u.port, u.path.as_str()), (8080, "/check?x=1"));
        assert_eq!(u.host.header(u.port), "[2001:db8::1]:8080");
        assert!(u.host.serves(true) && !u.host.serves(false));
        let u = ProbeUrl::parse("http://203.0.113.1").unwrap();
        assert_eq!(u.path, "/");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(ProbeUrl::parse("https://example.org/generate_204")
            .unwrap_err()
            .contains("captive"));
        assert!(ProbeUrl::parse("ftp://example.org/").is_err());
        assert!(ProbeUrl::parse("/generate_204").is_err());
        assert!(ProbeUrl::parse("http://user:pw@example.org/").is_err());
    }

    #[test]
    fn the_default_timeout_keeps_detection_within_two_intervals() {
        assert_eq!(timing(1).timeout, Duration::from_millis(500));
        assert_eq!(timing(10).timeout, Duration::from_secs(5));
        assert_eq!(timing(300).timeout, MAX_DEFAULT_TIMEOUT);
    }

    #[test]
    fn a_pvd_own_url_or_off_overrides_the_section() {
        let global = ValidationConfig {
            url: ProbeUrl::parse("http://a.example/").unwrap(),
            timing: timing(3),
        };
        let own = PvdValidation::Url(ProbeUrl::parse("http://b.example/").unwrap());
        assert_eq!(effective(None, &PvdValidation::Inherit), None);
        assert_eq!(effective(Some(&global), &PvdValidation::Off), None);
        assert_eq!(
            effective(Some(&global), &PvdValidation::Inherit),
            Some(global.clone())
        );
        let e = effective(Some(&global), &own).unwrap();
        assert_eq!(
            (e.url.text.as_str(), e.timing),
            ("http://b.example/", timing(3))
        );
        assert_eq!(effective(None, &own).unwrap().timing, timing(10));
    }

    #[test]
    fn validated_then_probed_every_interval() {
        let t = timing(10);
        let now = Instant::now();
        let mut c = Check::new(now);
        assert_eq!(c.due, now, "a new check is due at once");
        assert!(c.record(Outcome::NoContent, &t, now));
        assert_eq!(c.verdict, Verdict::Validated);
        assert_eq!(c.due, now + t.interval);
        assert!(!c.record(Outcome::NoContent, &t, now), "no change");
    }

    #[test]
    fn one_failure_is_confirmed_at_once_and_two_make_it_failing() {
        let t = timing(10);
        let now = Instant::now();
        let mut c = Check::new(now);
        c.record(Outcome::NoContent, &t, now);
        assert!(!c.record(failed(), &t, now), "one failure changes nothing");
        assert_eq!((c.verdict.clone(), c.due), (Verdict::Validated, now));
        assert!(c.record(failed(), &t, now));
        assert_eq!(c.verdict, Verdict::Failing);
        // Back-off while failing: 1 s, 2 s, 4 s, 8 s, then the interval.
        let mut delays = vec![c.due - now];
        for _ in 0..5 {
            c.record(failed(), &t, now);
            delays.push(c.due - now);
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        // Recovery resets the back-off.
        assert!(c.record(Outcome::NoContent, &t, now));
        c.record(failed(), &t, now);
        c.record(failed(), &t, now);
        assert_eq!(c.due - now, FIRST_BACKOFF);
    }

    #[test]
    fn worst_case_detection_is_an_interval_and_two_timeouts() {
        // Dies just after a good probe: the next is due an interval later,
        // times out, is confirmed at once and times out again.
        for secs in [1, 10] {
            let t = timing(secs);
            let start = Instant::now();
            let mut c = Check::new(start);
            c.record(Outcome::NoContent, &t, start);
            let mut now = c.due + t.timeout;
            c.record(failed(), &t, now);
            now = c.due + t.timeout;
            c.record(failed(), &t, now);
            assert_eq!(c.verdict, Verdict::Failing);
            assert!(now - start <= 2 * t.interval, "{secs} s: {:?}", now - start);
        }
    }

    #[test]
    fn answers_other_than_204_are_a_portal() {
        let t = timing(10);
        let now = Instant::now();
        let mut c = Check::new(now);
        let redirect = Outcome::Answered {
            status: 302,
            location: Some("http://portal.example/login".into()),
        };
        assert!(c.record(redirect, &t, now));
        assert_eq!(
            c.verdict,
            Verdict::Captive {
                portal: Some("http://portal.example/login".into())
            }
        );
        assert!(c.verdict.degraded());
        assert_eq!(
            c.verdict.to_string(),
            "captive (portal http://portal.example/login)"
        );
        let page = Outcome::Answered {
            status: 200,
            location: None,
        };
        assert!(c.record(page, &t, now), "the portal moved");
        assert_eq!(c.verdict, Verdict::Captive { portal: None });
    }

    #[test]
    fn a_probe_that_cannot_be_made_says_unknown() {
        let t = timing(10);
        let now = Instant::now();
        let mut c = Check::new(now);
        c.record(Outcome::NoContent, &t, now);
        assert!(c.record(Outcome::NotProbed("no resolver".into()), &t, now));
        assert_eq!(c.verdict, Verdict::Unknown);
        assert!(!c.verdict.degraded());
    }

    #[test]
    fn a_hint_brings_the_next_probe_forward_and_confirms_its_failure() {
        let t = timing(10);
        let now = Instant::now();
        let mut c = Check::new(now);
        c.record(Outcome::NoContent, &t, now);
        assert!(c.hurry(now));
        assert_eq!(c.due, now);
        assert!(!c.hurry(now), "already due");
        assert!(c.record(failed(), &t, now), "one failure suffices");
        assert_eq!(c.verdict, Verdict::Failing);
        assert!(!c.hurry(now), "failing: the back-off decides");
        // An answer clears the suspicion: the next failure needs two again.
        c.record(Outcome::NoContent, &t, now);
        c.hurry(now);
        c.record(Outcome::NoContent, &t, now);
        assert!(!c.record(failed(), &t, now));
        assert_eq!(c.verdict, Verdict::Validated);
    }
}
