//! The little of the DNS wire format (RFC 1035 §4.1) the forwarder reads:
//! the id and the query name. Everything else is relayed untouched.

/// Length of the fixed header.
const HEADER: usize = 12;

/// The message id.
pub fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// The name of the first question, lowercase, without the trailing dot
/// (empty for the root); None when the message has no question or the name
/// is malformed (compression pointers are not allowed in a query's name).
pub fn query_name(msg: &[u8]) -> Option<String> {
    if msg.len() < HEADER || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return None;
    }
    let (labels, _) = question_labels(msg)?;
    let labels: Vec<String> = labels
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    Some(labels.join("."))
}

/// The labels of the first question's name and the offset just after it.
/// A length byte above 63 is a compression pointer (or reserved), which a
/// question's name never needs: refused, as is a label past the end.
fn question_labels(msg: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let mut labels = Vec::new();
    let mut at = HEADER;
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            return Some((labels, at));
        }
        if len > 63 {
            return None;
        }
        labels.push(msg.get(at..at + len)?);
        at += len;
    }
}

/// Whether `name` is `domain` or a name below it.
pub fn within(name: &str, domain: &str) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

/// The PvD of the longest declared domain `name` falls within.
pub fn route(name: &str, domains: &[(String, u32)]) -> Option<u32> {
    domains
        .iter()
        .filter(|(domain, _)| within(name, domain))
        .max_by_key(|(domain, _)| domain.len())
        .map(|(_, pvd)| *pvd)
}

/// A SERVFAIL answer to `query` (same id and question), for when no
/// resolver can be asked: the client then tries its next server at once
/// instead of waiting out its timeout.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < HEADER {
        return None;
    }
    let mut reply = query.to_vec();
    // QR = 1, keep opcode and RD; RA = 1, RCODE = 2 (SERVFAIL).
    reply[2] = (query[2] & 0x79) | 0x80;
    reply[3] = 0x80 | 2;
    // Only the question is kept: no answer, authority or additional
    // records (an EDNS OPT record of the query is dropped with them).
    let question_end = question_end(query)?;
    reply.truncate(question_end);
    reply[6..12].fill(0);
    Some(reply)
}

fn question_end(msg: &[u8]) -> Option<usize> {
    let (_, at) = question_labels(msg)?;
    // QTYPE and QCLASS.
    (at + 4 <= msg.len()).then_some(at + 4)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A query for `name`, type A, with an EDNS OPT record.
    pub fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend(label.as_bytes());
        }
        m.extend([0, 0, 1, 0, 1]);
        m.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn reads_the_id_and_the_lowercase_name() {
        let q = query(0xbeef, "Host.Corp.Example");
        assert_eq!(id(&q), Some(0xbeef));
        assert_eq!(query_name(&q).as_deref(), Some("host.corp.example"));
        assert_eq!(query_name(&query(1, "")).as_deref(), Some(""));
        assert_eq!(query_name(&q[..15]), None, "cut inside a label");
        let mut pointer = q.clone();
        pointer[12] = 0xc0;
        assert_eq!(query_name(&pointer), None);
    }

    #[test]
    fn the_longest_declared_domain_wins_on_label_boundaries() {
        let domains = vec![("example".to_string(), 0), ("corp.example".to_string(), 1)];
        assert_eq!(route("a.corp.example", &domains), Some(1));
        assert_eq!(route("corp.example", &domains), Some(1));
        assert_eq!(route("www.example", &domains), Some(0));
        assert_eq!(route("notcorp.example", &domains), Some(0));
        assert_eq!(route("example.org", &domains), None);
        assert!(!within("xexample", "example"));
    }

    #[test]
    fn servfail_keeps_id_and_question() {
        let q = query(7, "a.b");
        let r = servfail(&q).unwrap();
        assert_eq!(id(&r), Some(7));
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 2, "SERVFAIL");
        assert_eq!(query_name(&r).as_deref(), Some("a.b"));
        assert_eq!(&r[10..12], &[0, 0], "no additional records");
        assert_eq!(r.len(), 12 + 5 + 4);
    }

    /// Regression (review of issue 16): `question_end` walked compression
    /// pointers as label lengths where `query_name` refused them.
    #[test]
    fn servfail_refuses_a_compressed_question_like_query_name() {
        // A length byte of 0xc0 (a pointer) followed by 192 bytes, a root
        // label and QTYPE/QCLASS: walked as a label, it "ended" there.
        let mut m = query(7, "a.lab")[..HEADER].to_vec();
        m.push(0xc0);
        m.extend([b'x'; 192]);
        m.extend([0, 0, 1, 0, 1]);
        assert_eq!(query_name(&m), None);
        assert_eq!(servfail(&m), None);
        assert!(servfail(&query(7, "a.lab")).is_some());
    }
}
